"""The in-process broker: each generation's ``Log`` in a dict, one worker.

The log is the store: an event is durable once appended, and listeners
follow the log itself (see ``log``). Finished generations are kept for
``ttl_s`` and then dropped, oldest first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import GenerationNotFound, Overloaded
from ..events import Event, Kind
from ..hotpath import Signal
from ..ticker import Ticker
from .log import Log

__all__ = ["MemoryBroker"]


class _Record:
    __slots__ = ("ended_at", "idle_since", "key", "listeners", "log", "meta", "model", "status")

    def __init__(self, log: Log, model: str, key: str | None, meta: str | None = None) -> None:
        self.log = log
        self.model = model
        self.key = key
        self.meta = meta
        self.status = "running"
        self.ended_at: float | None = None
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

    def create(self, generation_id: str, model: str, key: str | None = None, meta: str | None = None) -> Log:
        """Register a running generation and return its log; past the bound the oldest finished ones go first.

        :raise Overloaded: every generation kept is still running.
        """
        with self._lock:
            self._expire(time.monotonic())
            while len(self._records) >= self.max_generations and self._ended:
                oldest, _ = self._ended.popitem(last=False)
                self._records.pop(oldest, None)
            if len(self._records) >= self.max_generations:
                raise Overloaded()
            log = Log(self.ticker, on_end=lambda event: self._ended_with(generation_id, event))
            self._records[generation_id] = _Record(log, model, key, meta)
        return log

    def _ended_with(self, generation_id: str, event: Event) -> None:
        record = self._records.get(generation_id)
        if record is None:
            return
        record.status = _status_of(event)
        record.ended_at = time.monotonic()
        with self._lock:
            self._ended[generation_id] = record.ended_at

    def meta(self, generation_id: str) -> str | None:
        """The text given to ``create``."""
        return self._get(generation_id).meta

    def delete(self, generation_id: str) -> None:
        """Forget it; a listener still reading goes on to the end of what the log holds."""
        self._get(generation_id)
        with self._lock:
            self._records.pop(generation_id, None)
            self._ended.pop(generation_id, None)

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
        """Append ``event`` to the generation's log (producers hold the log itself)."""
        record = self._records.get(generation_id)
        if record is not None:
            record.log.publish(event)

    def listen(
        self, generation_id: str, after: int, idle_s: float, wake: Signal | None = None
    ) -> Iterator[list[Event] | None]:
        """Replay from ``after + 1`` in batches, then follow live until the end."""
        return self._get(generation_id).log.follow(after, idle_s, wake=wake)

    def key_of(self, generation_id: str) -> str | None:
        """The id of the API key that started it (None with keys off)."""
        return self._get(generation_id).key

    def renew(self, generation_ids: list[str]) -> None:
        """Leases only matter across processes: nothing to do here."""

    def reap(self) -> None:
        """Forget finished generations past their TTL (no worker can be lost: the process is the lease)."""
        with self._lock:
            self._expire(time.monotonic())

    def close(self, within_s: float | None = None) -> None:
        """Nothing to flush, and every listener here follows a generation of this worker (they have ended)."""

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
            "events": record.log.durable,
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
