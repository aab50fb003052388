"""One generation's events in this worker: appended by its producer, read by its listeners once durable.

::

    producer ── publish(event) ──▶ events [0 … n)          on_append ──▶ the store (Redis: write-behind)
                                     │  durable = k ◀─────── commit(k) ◀── the store holds events < k
                                     ▼
    listeners ◀── follow(after): events (after, k), in batches, then wait; None after an idle gap

A listener sees an event only once the store holds it (``durable``), so an
event a client has seen survives any single crash. The in-memory broker's
store is this log itself (``on_append`` is None: durable on append); the
Redis broker commits after each flush.

Backpressure: a listener that ``holds`` (a tied response) keeps the producer
at most ``hotpath.HOLD_LIMIT`` events ahead of it: ``wait_for_room`` parks
the producer until the listener reads on, leaves, or the generation is
aborted. Other listeners never slow the producer: each keeps its own
position, and the producer only appends and wakes them.

A store that cannot take the events any more ends the local listeners:
``fail(event)`` hands each the event (``generation_lost``, outside the
numbering) and stops; ``redirect()`` (another worker ended the generation as
lost) sends them on to read the store's own account of the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ..events import TERMINAL, Event, Kind
from ..hotpath import HOLD_LIMIT, Signal
from ..ticker import Deadline, Ticker

if TYPE_CHECKING:
    from ..provider import Abort

__all__ = ["BATCH", "Log", "Redirected"]

# At most this many events per batch: a long replay still lets other streams run.
BATCH = 256


class Redirected(Exception):
    """The log's listener must go on from the store (raised by ``follow`` at ``position``)."""

    def __init__(self, position: int) -> None:
        super().__init__(position)
        self.position = position  # the number of the last event the listener got


class _Listener:
    __slots__ = ("idle", "position", "signal")

    def __init__(self, position: int, signal: Signal | None = None) -> None:
        self.position = position  # index of the next event to hand over
        self.signal = signal or Signal()
        self.idle = False


class Log:
    """The events of one generation in this worker; see the module docstring."""

    __slots__ = (
        "_holders",
        "_listeners",
        "_on_append",
        "_on_end",
        "_room",
        "_ticker",
        "abort",
        "durable",
        "events",
        "failure",
        "redirected",
    )

    def __init__(
        self,
        ticker: Ticker,
        on_append: Callable[[Event], None] | None = None,
        on_end: Callable[[Event], None] | None = None,
    ) -> None:
        """:param on_append: hands each event to the store (None: durable when appended).
        :param on_end: called once the final event is durable.
        """
        self.events: list[Event] = []
        self.durable = 0  # events[:durable] are held by the store
        self.failure: Event | None = None
        self.redirected = False
        #: The generation's ``Abort`` while it runs here: a failed store aborts it.
        self.abort: Abort | None = None
        self._ticker = ticker
        self._on_append = on_append
        self._on_end = on_end
        self._listeners: list[_Listener] = []
        self._holders: list[_Listener] = []
        self._room = Signal()

    # -- the producer's side ----------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Append ``event`` (the next number); it reaches listeners once durable."""
        self.events.append(event)
        if self._on_append is None:
            self.commit(len(self.events))
        else:
            self._on_append(event)

    def commit(self, count: int) -> None:
        """The store holds the first ``count`` events: hand them to the listeners."""
        if count <= self.durable:
            return
        self.durable = count
        for listener in self._listeners:
            listener.signal.set()
        if self.events[count - 1].kind in TERMINAL and self._on_end is not None:
            self._on_end(self.events[count - 1])

    @property
    def ended(self) -> bool:
        """True once the final event is durable."""
        return self.durable > 0 and self.events[self.durable - 1].kind in TERMINAL

    def wait_for_room(self, abort: Abort) -> None:
        """Park while a holding listener is more than ``HOLD_LIMIT`` events behind (until it reads on or leaves).

        The caller registers ``self.wake_producer`` with ``abort``, so an abort ends the wait.
        """
        holders = self._holders
        while holders and not abort.is_set:
            slowest = min(holder.position for holder in holders)
            if len(self.events) - slowest <= HOLD_LIMIT:
                return
            self._room.wait()

    def wake_producer(self) -> None:
        """End a ``wait_for_room`` (an abort)."""
        self._room.set()

    # -- the store's side -----------------------------------------------------------------

    def fail(self, event: Event) -> None:
        """The store lost the generation: each listener gets ``event`` and ends; the producer is aborted."""
        if self.failure is None and not self.redirected:
            self.failure = event
            self._stop("lost")

    def redirect(self) -> None:
        """Another worker ended the generation: listeners go on from the store; the producer is aborted."""
        if self.failure is None and not self.redirected:
            self.redirected = True
            self._stop("lost")

    def _stop(self, reason: str) -> None:
        for listener in self._listeners:
            listener.signal.set()
        if self.abort is not None:
            self.abort.abort(reason)

    # -- listeners -------------------------------------------------------------------------

    def follow(
        self,
        after: int,
        idle_s: float,
        first_idle_s: float | None = None,
        hold: bool = False,
        wake: Signal | None = None,
    ) -> Iterator[list[Event] | None]:
        """Yield batches of the durable events numbered above ``after``, then live ones until the end.

        ``None`` is yielded after each idle gap (``first_idle_s`` for the first,
        then ``idle_s``). A ``hold``ing listener keeps the producer within
        ``HOLD_LIMIT`` events of it. With ``wake`` (the caller's own signal,
        which it may set to get control back, as the WebSocket session does on
        a client message), an empty batch is yielded when it was set and
        nothing else came.

        :raise Redirected: the listener must go on from the store.
        """
        listener = _Listener(max(after + 1, 0), wake)
        return self._follow(listener, idle_s, first_idle_s, hold, wake is not None)

    def _follow(
        self, listener: _Listener, idle_s: float, first_idle_s: float | None, hold: bool, woken_by_caller: bool
    ) -> Iterator[list[Event] | None]:
        signal = listener.signal

        def ping() -> None:
            listener.idle = True
            signal.set()

        gap = idle_s if first_idle_s is None else first_idle_s
        beat = Deadline(time.monotonic() + gap, ping)
        self._listeners.append(listener)
        if hold:
            self._holders.append(listener)
        self._ticker.add(beat)
        events = self.events
        try:
            while True:
                position = listener.position
                if position < self.durable:
                    end = min(self.durable, position + BATCH)
                    batch = events[position:end]
                    listener.position = end
                    if hold:
                        self._room.set()
                    if batch[-1].kind is not Kind.START:  # the start alone does not end the hold
                        beat.at = time.monotonic() + idle_s
                    yield batch
                    if batch[-1].kind in TERMINAL:
                        return
                    continue
                if self.failure is not None:
                    yield [self.failure]
                    return
                if self.redirected:
                    raise Redirected(position - 1)
                if self.ended:
                    return  # past the end
                signal.wait()
                nothing = listener.position >= self.durable and self.failure is None and not self.redirected
                if listener.idle:
                    listener.idle = False
                    beat.at = time.monotonic() + idle_s
                    self._ticker.add(beat)
                    if nothing:
                        yield None
                elif nothing and woken_by_caller:
                    yield []
        finally:
            self._listeners.remove(listener)
            if hold:
                self._holders.remove(listener)
                self._room.set()  # the producer may go on without this listener
            self._ticker.discard(beat)
