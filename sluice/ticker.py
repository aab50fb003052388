"""Many deadlines, one task: the first-token, idle and stream deadlines, and heartbeats.

A timer per wait (``queue.get(timeout=…)``, ``Event.wait(timeout)``) costs an
allocation and a timer on every event of every stream; profiling showed it at
a quarter of the worker's CPU. Instead each stream registers a ``Deadline``,
moves it forward with an attribute write as events pass, and one task per
worker wakes every ``interval`` seconds and runs the callback of those that
expired. Deadlines are therefore up to ``interval`` late, which is nothing
next to timeouts measured in seconds. The task runs only while there are
deadlines to watch.

The deadlines sit in a heap by the time they were queued for, so a tick looks
only at those due, not at every stream's (a scan of 10,000 deadlines five times
a second was 1.7% of a loaded worker). Moving a deadline later costs nothing
until its old time comes round (it is then queued again for its new time);
one moved earlier is added again, which queues it for its new time.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from .tasks import Task, spawn

__all__ = ["Deadline", "Ticker"]


def _nothing() -> None:
    pass


class Deadline:
    """Calls ``on_expire`` once ``at`` (``time.monotonic()``) has passed, unless moved or removed.

    Move it later by assigning ``at`` (free: a plain attribute, written on every
    event); to move it earlier, ``Ticker.add`` it again.
    """

    __slots__ = ("_queued", "_ticker", "at", "on_expire")

    def __init__(self, at: float, on_expire: Callable[[], None]) -> None:
        self.at = at
        self.on_expire = on_expire
        self._queued: float | None = None  # the time its heap entry is for, while watched
        self._ticker: Ticker | None = None


class Ticker:
    """Watches deadlines with one task per worker."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self._heap: list[tuple[float, int, Deadline]] = []
        self._watched = 0
        self._order = itertools.count()  # ties never compare two Deadlines
        self._lock = threading.Lock()
        self._task: Task | None = None

    def add(self, deadline: Deadline) -> Deadline:
        """Start watching ``deadline``, or queue it again for its ``at`` if watched already."""
        with self._lock:
            if deadline._ticker is not self:
                deadline._ticker = self
                self._watched += 1
            self._push(deadline)
            if self._task is None:
                self._task = spawn(self._run)
        return deadline

    def discard(self, deadline: Deadline) -> None:
        """Stop watching ``deadline`` (no effect if it already fired)."""
        with self._lock:
            if deadline._ticker is self:
                self._forget(deadline)
                # Its heap entry stays until its time; it must not keep the stream alive.
                deadline.on_expire = _nothing
                if len(self._heap) > 2 * self._watched + 1024:
                    self._compact()

    def _push(self, deadline: Deadline) -> None:
        deadline._queued = deadline.at
        heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))

    def _forget(self, deadline: Deadline) -> None:
        deadline._ticker = None
        deadline._queued = None
        self._watched -= 1

    def _compact(self) -> None:
        """Drop the entries of deadlines that were removed or queued again."""
        self._heap = [entry for entry in self._heap if entry[2]._queued == entry[0] and entry[2]._ticker is self]
        heapq.heapify(self._heap)

    def _due(self, now: float) -> list[Deadline]:
        heap = self._heap
        expired = []
        while heap and heap[0][0] <= now:
            queued, _, deadline = heapq.heappop(heap)
            if deadline._ticker is not self or deadline._queued != queued:
                continue  # removed, or queued again for another time
            if deadline.at > now:
                self._push(deadline)  # moved later meanwhile
                continue
            self._forget(deadline)
            expired.append(deadline)
        return expired

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            with self._lock:
                if not self._watched:
                    self._heap.clear()
                    self._task = None
                    return
                expired = self._due(now)
            for deadline in expired:
                try:
                    deadline.on_expire()
                except Exception:  # one bad callback must not stop the others' deadlines
                    pass
