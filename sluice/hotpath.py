"""The measured hot-path tricks, in one place: each earns its keep in ``make bench``.

Every stream runs through these on every event, so each replaces a general
tool with a narrower one. Each has a one-line contract; the figures behind
them are in ``docs/performance.md`` and ``docs/performance/``.

- ``Signal``: wakes one parked reader (a listener, or a producer waiting for
  room) from the hub, without gevent's ``Event`` machinery. Contract: a
  ``set`` is never lost (one made while nobody waits is kept for the next
  ``wait``), and a wake-up never resumes a greenlet that stopped waiting.
- ``Interrupt``: lets an abort stop the producer where it blocks, but only
  while it reads the provider. Contract: a write to the broker is never
  interrupted; a read (a socket, a demo's pause) is, at once.
- ``fairness()``: a hook that yields to the event loop after ``FAIR_EVERY``
  pieces that came without the loop turning. Contract: a provider that never
  blocks cannot starve other streams; one that blocks pays nothing.
- ``spawn_light``: a raw greenlet for the one task every stream has (its
  producer). Contract: ``target`` reports its own end; nothing joins it.
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
from typing import Any

from flask import Response
from greenlet import getcurrent

from .tasks import gevent_active

__all__ = [
    "FAIR_EVERY",
    "HOLD_LIMIT",
    "Interrupt",
    "Interrupted",
    "PassThroughResponse",
    "Signal",
    "fairness",
    "spawn_light",
]

# Events a producer may run ahead of the slowest listener that holds it back (a tied response).
HOLD_LIMIT = 64
# Pieces that may arrive without the event loop turning before the reader's task yields.
FAIR_EVERY = 8


class Signal:
    """Wakes one waiter: a listener waiting for events, or a producer waiting for room.

    Under gevent the waiter parks its own greenlet and ``set`` wakes it with
    one hub callback, as gevent's ``Event`` does but without its link list:
    every event of every stream passes here. The wake-up checks at run time
    that the greenlet still waits, so it can never resume it somewhere else.
    A wait with a timeout arms one timer for that wait only. Under threads, a
    ``threading.Event``.
    """

    __slots__ = ("_event", "_flag", "_hub", "_loop", "_scheduled", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: Any = None  # the greenlet parked in wait()
        self._scheduled = False  # a wake-up is queued in the hub and has not run yet
        if gevent_active():
            import gevent

            self._hub: Any = gevent.get_hub()
            self._loop: Any = self._hub.loop
            self._event: threading.Event | None = None
        else:
            self._hub = self._loop = None
            self._event = threading.Event()

    def set(self) -> None:
        """Wake the waiter (or the next one to wait); never blocks, callable from the hub."""
        self._flag = True
        if self._event is not None:
            self._event.set()
        elif self._waiter is not None and not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._wake)

    def _wake(self) -> None:
        # In the hub. The waiter may have been woken otherwise (killed) meanwhile.
        self._scheduled = False
        waiter = self._waiter
        if waiter is not None and self._flag:
            waiter.switch()

    def _time_out(self, waiter: Any) -> None:
        # In the hub: the timer of one wait, for the greenlet that armed it.
        if self._waiter is waiter:
            waiter.switch()

    def wait(self, timeout: float | None = None) -> bool:
        """Return True once ``set`` was called since the last wait returned True; False after ``timeout``."""
        if self._event is None:
            if not self._flag:
                timer = None
                me = getcurrent()
                if timeout is not None:
                    timer = self._loop.timer(max(0.0, timeout))
                    timer.start(self._time_out, me)
                try:
                    self._waiter = me
                    while not self._flag:
                        self._hub.switch()  # parked until _wake (or the timer) switches back
                        if timer is not None and not timer.active:
                            break  # timed out
                finally:
                    self._waiter = None
                    if timer is not None:
                        timer.stop()
                        timer.close()
        elif timeout is None:
            while not self._flag:
                self._event.wait()
                # Cleared before the next look at the flag: a set in between sets it again.
                self._event.clear()
        elif not self._flag:
            self._event.wait(timeout)
            self._event.clear()
        woken = self._flag
        self._flag = False
        return woken


class Interrupted(BaseException):
    """Raised in the producer, where it reads the provider, when its generation was aborted.

    A ``BaseException``: a provider's ``except Exception`` must not swallow it.
    """


class Interrupt:
    """An ``Abort`` closer that interrupts the producer's read of the provider.

    Made in the producer's own greenlet. The producer sets ``reading`` around
    each read; the interrupt is delivered from the hub, which checks
    ``reading`` when it runs (the producer is parked then, so the flag is
    exact): a producer that is writing to the broker, or waiting for a slow
    listener, is left alone and sees the abort when it next looks. Under
    threads nothing can be interrupted: closing the upstream does the work.
    """

    __slots__ = ("_greenlet", "_loop", "reading")

    def __init__(self) -> None:
        self.reading = False
        if gevent_active():
            import gevent

            self._greenlet: Any = getcurrent()
            self._loop: Any = gevent.get_hub().loop
        else:
            self._greenlet = self._loop = None

    def __call__(self) -> None:
        if self._loop is not None:
            self._loop.run_callback(self._throw)

    def _throw(self) -> None:
        greenlet = self._greenlet
        if self.reading and not greenlet.dead:
            greenlet.throw(Interrupted())


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


def spawn_light(target: Callable[..., Any], *args: Any) -> None:
    """Run ``target(*args)`` in the background: under gevent a raw greenlet.

    For the one task every stream has (its producer): a raw greenlet, without
    the ``Greenlet`` object's links, result and start callback, which nothing
    here uses. Nothing can join it: ``target`` must report its own end. Under
    threads, a daemon thread.
    """
    if gevent_active():
        import gevent

        gevent.spawn_raw(target, *args)
        return
    threading.Thread(target=target, args=args, daemon=True).start()
