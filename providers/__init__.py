"""The provider interface, the registry that resolves ``provider/model``, and ``Abort``.

A provider turns a ``ChatRequest`` into plain text pieces::

    def stream(self, request, model, abort) -> Generator[str, None, Finish]

It yields each piece as it arrives and *returns* a ``Finish`` (finish reason and
usage). It knows nothing of SSE, event ids or JSON events: numbering, timeouts
and error events happen once, in ``sluice.runner``. Foreign exceptions (requests,
the openai SDK) are translated into ``sluice.errors`` classes inside the
provider, with ``raise ... from exc``.

A running generator cannot be closed from another greenlet, so cancelling is
done by closing the upstream connection: the provider registers a closer with
``abort.on_abort`` as soon as it holds a connection, and the reader then fails
(or sees EOF) at once, wherever it is blocked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sluice.chat import ChatRequest

__all__ = ["Abort", "Finish", "Provider", "ModelInfo", "Registry", "retry_after_seconds"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Finish:
    """How a provider's answer ended: ``stop`` or ``length``, and usage where known."""

    reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One entry of a model listing."""

    id: str  # "provider/model"
    provider: str


class Abort:
    """Lets any thread or greenlet stop a running provider stream.

    ``abort(reason)`` records why (``cancelled``, ``timeout``, ``disconnected``),
    wakes ``wait`` and calls every registered closer once.
    """

    __slots__ = ("reason", "_event", "_closers", "_lock")

    def __init__(self) -> None:
        self.reason: str | None = None
        self._event = threading.Event()
        self._closers: list[Callable[[], object]] = []
        self._lock = threading.Lock()

    @property
    def is_set(self) -> bool:
        """True once ``abort`` was called."""
        return self._event.is_set()

    def wait(self, timeout: float | None) -> bool:
        """Pause up to ``timeout`` seconds; True (at once) if aborted meanwhile."""
        return self._event.wait(timeout)

    def pause(self, seconds: float) -> bool:
        """Pause between pieces; True if aborted.

        Under gevent a plain sleep, the cheapest timer there is (a wait with a
        timeout allocates one per call, a cost profiling showed on every token),
        and the runner interrupts the sleeping task on abort anyway. Under plain
        threads, which nothing can interrupt, a wait on the abort flag.
        """
        from sluice.tasks import gevent_active

        if gevent_active():
            time.sleep(seconds)
            return self._event.is_set()
        return self._event.wait(seconds)

    def on_abort(self, closer: Callable[[], object]) -> None:
        """Call ``closer`` on abort (at once if already aborted)."""
        with self._lock:
            if not self._event.is_set():
                self._closers.append(closer)
                return
        _call(closer)

    def abort(self, reason: str) -> None:
        """Stop the stream for ``reason``; only the first call counts."""
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            closers, self._closers = self._closers, []
        for closer in closers:
            _call(closer)


def _call(closer: Callable[[], object]) -> None:
    try:
        closer()
    except Exception:  # a failing closer must not stop the others
        log.debug("closer failed", exc_info=True)


def retry_after_seconds(value: str | None) -> float | None:
    """An upstream's ``Retry-After`` in seconds (delta form only; dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class Provider(Protocol):
    """What every provider implements."""

    name: str

    def stream(
        self, request: ChatRequest, model: str, abort: Abort
    ) -> Generator[str, None, Finish]:
        """Yield text pieces of ``model``'s answer to ``request``, then return a ``Finish``.

        :raise sluice.errors.SluiceError: the contract's error for any failure.
        """
        ...

    def models(self) -> Iterable[str]:
        """The model names this provider serves (without the provider prefix).

        :raise sluice.errors.SluiceError: the provider cannot be reached.
        """
        ...


class Registry:
    """The configured providers, and the rule that resolves a model name to one."""

    def __init__(self, providers: Iterable[Provider], default_provider: str) -> None:
        self.providers: dict[str, Provider] = {p.name: p for p in providers}
        self.default_provider = default_provider

    def resolve(self, name: str) -> tuple[Provider, str]:
        """Split ``provider/model`` (or a bare name for the default provider).

        :raise sluice.errors.ModelNotFound: no such provider.
        """
        from sluice.errors import ModelNotFound

        prefix, sep, model = name.partition("/")
        if not sep:
            prefix, model = self.default_provider, name
        provider = self.providers.get(prefix)
        if provider is None or not model:
            raise ModelNotFound(f"Unknown model {name!r}: use provider/model, e.g. demo/echo.")
        return provider, model
