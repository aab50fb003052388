"""The in-process broker: events in a list per generation, one worker.

Listeners never hold a reference into a shared buffer they could slow down:
each keeps its own position, and the producer only appends and notifies.
Finished generations are kept for ``ttl_s`` and then dropped, oldest first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import GenerationNotFound, Overloaded
from ..events import TERMINAL, Event, Kind
from ..ticker import Deadline, Ticker

__all__ = ["MemoryBroker"]

# At most this many events per batch: a long replay still lets other streams run.
_BATCH = 256


class _Record:
    __slots__ = ("ended_at", "events", "idle_since", "key", "listeners", "meta", "model", "status", "waiters")

    def __init__(self, model: str, key: str | None, meta: str | None = None) -> None:
        self.model = model
        self.key = key
        self.meta = meta
        self.events: list[Event] = []
        self.status = "running"
        self.ended_at: float | None = None
        # One Event per waiting listener: set() wakes exactly the waiting ones, and
        # a wait without a timeout allocates nothing (heartbeats come from the ticker).
        self.waiters: set[threading.Event] = set()
        self.listeners = 0
        self.idle_since: float | None = time.time()


class MemoryBroker:
    """Generations of this worker, in memory."""

    shared = False  # nobody else can see them, or ask to cancel them
    lease_s = 3.0  # the process is the lease: renewing only paces the janitor

    def __init__(self, ttl_s: float = 600.0, max_generations: int = 10_000, ticker: Ticker | None = None) -> None:
        self.ticker = ticker or Ticker()
        self.ttl_s = ttl_s
        self.max_generations = max_generations
        self._records: dict[str, _Record] = {}
        self._ended: OrderedDict[str, float] = OrderedDict()  # id -> end time, oldest first
        self._lock = threading.Lock()

    def follow_cancels(self, on_cancel: Callable[[str], None]) -> None:
        """Nothing to follow: every cancel of this worker's generations is made here."""

    def create(self, generation_id: str, model: str, key: str | None = None, meta: str | None = None) -> None:
        """Register a running generation; past the bound the oldest finished ones go first.

        :raise Overloaded: every generation kept is still running.
        """
        with self._lock:
            self._expire(time.monotonic())
            while len(self._records) >= self.max_generations and self._ended:
                oldest, _ = self._ended.popitem(last=False)
                self._records.pop(oldest, None)
            if len(self._records) >= self.max_generations:
                raise Overloaded()
            self._records[generation_id] = _Record(model, key, meta)

    def meta(self, generation_id: str) -> str | None:
        """The text given to ``create``."""
        return self._get(generation_id).meta

    def delete(self, generation_id: str) -> None:
        """Forget it; a listener still reading sees its end (or stops where it is)."""
        self._get(generation_id)
        with self._lock:
            record = self._records.pop(generation_id, None)
            self._ended.pop(generation_id, None)
        if record is not None and record.ended_at is None:
            record.ended_at = time.monotonic()  # listeners waiting on it stop waiting
            for waiter in tuple(record.waiters):
                waiter.set()

    def attach(self, generation_id: str) -> None:
        """Count a listener in."""
        record = self._get(generation_id)
        with self._lock:
            record.listeners += 1
            record.idle_since = None

    def detach(self, generation_id: str) -> None:
        """Count a listener out; the last one out starts the idle clock."""
        record = self._records.get(generation_id)
        if record is None:
            return
        with self._lock:
            record.listeners = max(0, record.listeners - 1)
            if record.listeners == 0:
                record.idle_since = time.time()

    def idle_since(self, generation_id: str) -> float | None:
        """When the last listener left (``time.time()``), or None while one listens."""
        return self._get(generation_id).idle_since

    def request_cancel(self, generation_id: str) -> bool:
        """Ask the worker running it to cancel; in one process that worker is the caller."""
        self._get(generation_id)
        return False

    def publish(self, generation_id: str, event: Event) -> None:
        """Append ``event`` and wake the listeners."""
        record = self._records.get(generation_id)
        if record is None:
            return
        # Appending before marking the end: a listener that sees the end sees the event.
        record.events.append(event)
        if event.kind in TERMINAL:
            record.status = _status_of(event)
            record.ended_at = time.monotonic()
            with self._lock:
                self._ended[generation_id] = record.ended_at
        for waiter in tuple(record.waiters):
            waiter.set()

    def listen(self, generation_id: str, after: int, idle_s: float) -> Iterator[list[Event] | None]:
        """Replay from ``after + 1`` in batches, then follow live until the end."""
        record = self._get(generation_id)
        return self._follow(record, max(after + 1, 0), idle_s)

    def _follow(self, record: _Record, position: int, idle_s: float) -> Iterator[list[Event] | None]:
        wake = threading.Event()
        idle = [False]

        def ping() -> None:
            idle[0] = True
            wake.set()

        beat = Deadline(time.monotonic() + idle_s, ping)
        record.waiters.add(wake)
        self.ticker.add(beat)
        try:
            while True:
                events = record.events
                if position < len(events):
                    batch = events[position : position + _BATCH]
                    position += len(batch)
                    beat.at = time.monotonic() + idle_s
                    yield batch
                    if batch[-1].kind in TERMINAL:
                        return
                    continue
                if record.ended_at is not None:
                    return
                wake.clear()
                if position < len(record.events) or record.ended_at is not None:
                    continue
                wake.wait()
                if idle[0]:
                    idle[0] = False
                    beat.at = time.monotonic() + idle_s
                    self.ticker.add(beat)
                    if position >= len(record.events):
                        yield None
        finally:
            record.waiters.discard(wake)
            self.ticker.discard(beat)

    def key_of(self, generation_id: str) -> str | None:
        """The id of the API key that started it (None with keys off)."""
        return self._get(generation_id).key

    def renew(self, generation_ids: list[str]) -> None:
        """Leases only matter across processes: nothing to do here."""

    def ping(self) -> bool:
        """The in-process broker is always there."""
        return True

    def state(self, generation_id: str) -> dict[str, Any]:
        """The generation's id, model, status and number of events so far."""
        record = self._get(generation_id)
        return {
            "id": generation_id,
            "model": record.model,
            "status": record.status,
            "events": len(record.events),
        }

    def _get(self, generation_id: str) -> _Record:
        record = self._records.get(generation_id)
        if record is None:
            raise GenerationNotFound()
        return record

    def _expire(self, now: float) -> None:
        while self._ended:
            generation_id, ended_at = next(iter(self._ended.items()))
            if now - ended_at < self.ttl_s:
                break
            del self._ended[generation_id]
            self._records.pop(generation_id, None)


def _status_of(event: Event) -> str:
    if event.kind is Kind.ERROR:
        return "error"
    return "cancelled" if event.piece.reason == "cancelled" else "done"
