"""Many deadlines, one task: the first-token, idle and stream deadlines, and heartbeats.

A timer per wait (``queue.get(timeout=…)``, ``Event.wait(timeout)``) costs an
allocation and a timer on every event of every stream; profiling showed it at
a quarter of the worker's CPU. Instead each stream registers a ``Deadline``,
moves it forward with a plain attribute write as events pass, and one task per
worker checks them all every ``interval`` seconds, running the callback of
those that expired. Deadlines are therefore up to ``interval`` late, which is
nothing next to timeouts measured in seconds. The task runs only while there
are deadlines to watch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .tasks import Task, spawn

__all__ = ["Deadline", "Ticker"]


class Deadline:
    """Calls ``on_expire`` once ``at`` (``time.monotonic()``) has passed, unless moved or removed."""

    __slots__ = ("at", "on_expire")

    def __init__(self, at: float, on_expire: Callable[[], None]) -> None:
        self.at = at
        self.on_expire = on_expire


class Ticker:
    """Watches deadlines with one task per worker."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self._deadlines: set[Deadline] = set()
        self._lock = threading.Lock()
        self._task: Task | None = None

    def add(self, deadline: Deadline) -> Deadline:
        """Start watching ``deadline``."""
        with self._lock:
            self._deadlines.add(deadline)
            if self._task is None:
                self._task = spawn(self._run)
        return deadline

    def discard(self, deadline: Deadline) -> None:
        """Stop watching ``deadline`` (no effect if it already fired)."""
        with self._lock:
            self._deadlines.discard(deadline)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            with self._lock:
                if not self._deadlines:
                    self._task = None
                    return
                expired = [d for d in self._deadlines if d.at <= now]
                for deadline in expired:
                    self._deadlines.discard(deadline)
            for deadline in expired:
                try:
                    deadline.on_expire()
                except Exception:  # one bad callback must not stop the others' deadlines
                    pass
