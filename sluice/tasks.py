"""Start background work the same way under gevent and under plain threads.

Under gunicorn's gevent worker (socket monkey-patched) a task is a greenlet,
which ``kill`` can interrupt wherever it blocks, even inside a request that has
no response yet to close. Under ``flask run`` it is a daemon thread, which
nothing can interrupt: there, cancelling relies on closing the upstream.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Task", "gevent_active", "spawn"]


_patched = False


def gevent_active() -> bool:
    """True when gevent has patched the socket module (gunicorn's gevent worker)."""
    global _patched
    if _patched:  # asked on every token: once patched, a process stays patched
        return True
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    _patched = bool(monkey.is_module_patched("socket"))
    return _patched


class Task:
    """A handle on a spawned function."""

    def __init__(self, target: Callable[..., Any], *args: Any) -> None:
        if gevent_active():
            import gevent

            self._greenlet = gevent.spawn(target, *args)
            self._thread = None
        else:
            self._greenlet = None
            self._thread = threading.Thread(target=target, args=args, daemon=True)
            self._thread.start()

    def kill(self) -> None:
        """Interrupt the task where it blocks (greenlets only; threads ignore it)."""
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` for the task to end; True if it ended."""
        if self._greenlet is not None:
            self._greenlet.join(timeout)
            return bool(self._greenlet.dead)
        assert self._thread is not None
        self._thread.join(timeout)
        return not self._thread.is_alive()


def spawn(target: Callable[..., Any], *args: Any) -> Task:
    """Run ``target(*args)`` in the background."""
    return Task(target, *args)
