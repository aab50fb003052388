"""The measured hot-path tricks, in one place: each earns its keep in ``make bench``.

Every stream runs through these on every event, so each replaces a general
tool with a narrower one. Each has a one-line contract; the figures behind
them are in ``docs/performance.md`` and ``docs/performance/``.

- ``Inbox``: a one-reader queue that parks the reader's greenlet and wakes it
  from the hub, and makes a fast writer wait past ``INBOX_LIMIT`` items
  (backpressure). Contract: items come out in order, all at once, and a put
  never resumes a greenlet that stopped waiting.
- ``fairness()``: a hook that yields to the event loop after ``FAIR_EVERY``
  pieces that came without the loop turning. Contract: a provider that never
  blocks cannot starve other streams; one that blocks pays nothing.
- ``spawn_light``: a raw greenlet for the one task every stream has.
  Contract: ``target`` reports its own end; the returned function interrupts it.
- ``PassThroughResponse``: the WSGI server iterates the body's byte chunks
  itself. Contract: the same bytes as Werkzeug's wrapped iterator, and
  ``close`` runs however the response ends.

Elsewhere, kept beside what they speed up: ``events.Event`` keeps its JSON
text (serialised once, with orjson) instead of a dict; ``sse.encode`` skips
the line split for one-line data; ``ticker`` moves a deadline later with an
attribute write; a provider's plain text is a bare ``str``, not a wrapper.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from flask import Response
from greenlet import getcurrent

from .tasks import gevent_active

if TYPE_CHECKING:
    from .provider import Abort

__all__ = ["FAIR_EVERY", "INBOX_LIMIT", "Inbox", "PassThroughResponse", "fairness", "spawn_light"]

# Items a writer may queue ahead of the reader before ``put_piece`` waits.
INBOX_LIMIT = 64
# Pieces that may arrive without the event loop turning before the reader's task yields.
FAIR_EVERY = 8


class Inbox:
    """What the pump, the ticker and an abort tell the runner, in order; one reader.

    A list, where ``queue.SimpleQueue`` (gevent's, once patched) carries three
    deques: a couple of kilobytes per open stream. The runner takes all that is
    queued at once, so pieces that came together leave together. ``put_piece``
    waits while ``INBOX_LIMIT`` items are queued (backpressure); every other
    message goes in at once.

    Under gevent the reader (and a waiting writer) parks its own greenlet and
    is woken by one hub callback, as gevent's ``Event`` does but without its
    link list and timeout machinery: every event of every stream passes here.
    The wake-up checks at run time that the greenlet still waits, so it can
    never resume it somewhere else. Under threads, ``threading.Event``s.
    """

    __slots__ = ("_drained", "_hub", "_items", "_loop", "_reader", "_ready", "_waking", "_writer")

    def __init__(self) -> None:
        self._items: list[tuple[Any, Any]] = []
        self._reader: Any = None  # the greenlet parked in take()
        self._writer: Any = None  # the greenlet parked in put_piece()
        self._waking = False  # a wake-up of the reader is scheduled and has not run yet
        if gevent_active():
            import gevent

            self._hub: Any = gevent.get_hub()
            self._loop: Any = self._hub.loop
            self._ready: threading.Event | None = None
            self._drained: threading.Event | None = None
        else:
            self._hub = self._loop = None
            self._ready = threading.Event()
            self._drained = threading.Event()

    def put(self, item: tuple[Any, Any]) -> None:
        """Queue ``item`` and wake the reader; never waits."""
        self._items.append(item)
        if self._ready is not None:
            self._ready.set()
        elif self._reader is not None and not self._waking:
            self._waking = True
            self._loop.run_callback(self._wake)

    def put_piece(self, kind: Any, piece: Any, abort: Abort) -> None:
        """Queue ``(kind, piece)``, first waiting while the inbox is full (or until ``abort``)."""
        items = self._items
        if len(items) >= INBOX_LIMIT:
            if self._drained is None:
                while len(items) >= INBOX_LIMIT:
                    # An abort kills this greenlet where it parks (GreenletExit).
                    self._writer = getcurrent()
                    try:
                        self._hub.switch()
                    finally:
                        self._writer = None
            else:
                # Threads cannot be interrupted: look at the abort flag now and then.
                while len(items) >= INBOX_LIMIT and not abort.is_set:
                    self._drained.clear()
                    if len(items) >= INBOX_LIMIT:
                        self._drained.wait(0.1)
        self.put((kind, piece))

    def _wake(self) -> None:
        # In the hub. The reader may have been woken otherwise (killed) meanwhile.
        self._waking = False
        reader = self._reader
        if reader is not None and self._items:
            reader.switch()

    def _wake_writer(self) -> None:
        writer = self._writer
        if writer is not None and len(self._items) < INBOX_LIMIT:
            writer.switch()

    def take(self) -> list[tuple[Any, Any]]:
        """Everything queued, oldest first; waits until there is something."""
        items = self._items
        if self._ready is None:
            while not items:
                self._reader = getcurrent()
                try:
                    self._hub.switch()
                finally:
                    self._reader = None
        else:
            while not items:
                # Cleared before the second look: a put in between sets it again.
                self._ready.clear()
                if not items:
                    self._ready.wait()
        # Copy, then delete what was copied: a put in between (another thread)
        # lands after it and stays for the next take.
        taken = items[:]
        del items[: len(taken)]
        if self._drained is not None:
            self._drained.set()
        elif self._writer is not None:
            self._loop.run_callback(self._wake_writer)
        return taken


def fairness() -> Callable[[], None]:
    """A hook to call after each piece: yields once ``FAIR_EVERY`` pieces came unblocked.

    Unblocked means without the event loop turning in between. A provider that
    never blocks (a fast upstream, a replay, a zero-delay demo)
    would otherwise run its whole answer before anyone else's turn; one that
    blocks between pieces (nearly every real stream) lets the loop turn anyway
    and pays nothing. The loop's cached clock (``loop.now()``) only moves when
    the loop turns. Under plain threads the OS is fair already.
    """
    if not gevent_active():
        return lambda: None
    import gevent

    loop = gevent.get_hub().loop
    last = loop.now()
    streak = 0

    def turn() -> None:
        nonlocal last, streak
        now = loop.now()
        streak = streak + 1 if now == last else 0
        if streak >= FAIR_EVERY:
            streak = 0
            time.sleep(0)
            now = loop.now()
        last = now

    return turn


class _Body:
    """The WSGI body of a stream: the server iterates ``chunks`` itself and calls ``close``.

    Werkzeug would wrap a streamed body in a re-encoding generator and a
    ``ClosingIterator``: two more layers to resume for every event. The bytes
    are the same either way.
    """

    __slots__ = ("chunks", "close")

    def __init__(self, chunks: Iterator[bytes], close: Callable[[], None]) -> None:
        self.chunks = chunks
        self.close = close

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks


class PassThroughResponse(Response):
    """A response whose body (bytes chunks) goes to the WSGI server as it is."""

    def get_app_iter(self, environ: Mapping[str, Any]) -> Any:
        status = self.status_code
        if environ["REQUEST_METHOD"] == "HEAD" or 100 <= status < 200 or status in (204, 304):
            return super().get_app_iter(environ)  # type: ignore[arg-type]
        # ``close`` closes the chunks, then runs the call_on_close callbacks.
        return _Body(self.response, self.close)  # type: ignore[arg-type]


def spawn_light(target: Callable[..., Any], *args: Any) -> Callable[[], None]:
    """Run ``target(*args)`` in the background; return a function that interrupts it.

    For the one task every stream has (the runner's pump): under gevent a raw
    greenlet, without the ``Greenlet`` object's links, result and start
    callback, which nothing here uses. Nothing can join it; ``target`` must report its own end. The interrupt raises
    ``GreenletExit`` where it blocks, or does nothing once it has ended; under
    threads it does nothing.
    """
    if gevent_active():
        import gevent

        greenlet = gevent.spawn_raw(target, *args)
        return lambda: gevent.kill(greenlet)
    threading.Thread(target=target, args=args, daemon=True).start()
    return lambda: None
