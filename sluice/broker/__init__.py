"""Where a generation's events live between the runner and its listeners.

A generation's producer publishes numbered events to its ``Log`` (``log``);
any number of listeners ``listen`` from any position (``after``), each at its
own pace, replaying what is kept and then following live, and each sees an
event only once the broker holds it (durable before delivery). The
in-process ``MemoryBroker`` serves one worker; ``RedisBroker``
(``SLUICE_REDIS_URL``) lets every worker on every host serve any listener and
any cancel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from ..events import Event
from ..hotpath import Signal
from .log import Log

__all__ = ["Broker", "one_by_one"]


def one_by_one(batches: Iterable[list[Event] | None]) -> Iterator[Event | None]:
    """The broker's batches as single events (``None`` still marks an idle gap)."""
    for batch in batches:
        if batch is None:
            yield None
        else:
            yield from batch


class Broker(Protocol):
    """What every broker implements."""

    #: True when other workers (and hosts) see the generations: cancels must then be followed.
    shared: bool
    #: How long a worker's claim on its generations lasts without renewal.
    lease_s: float

    def follow_cancels(self, on_cancel: Callable[[str], None]) -> None:
        """Call ``on_cancel(id)`` for each cancel another worker asks for; runs until the worker ends.

        Only called when ``shared``.
        """
        ...

    def create(self, generation_id: str, model: str, key: str | None = None, meta: str | None = None) -> Log:
        """Make room for a new, running generation started with API key id ``key``; return its log.

        The producer publishes to the log; the broker makes each event durable
        (``Log.commit``) and serves listeners by id from it or from its store.

        :param meta: text kept with the generation as long as it is kept (``meta`` reads it).
        :raise sluice.errors.Overloaded: no room is left.
        :raise sluice.errors.BrokerUnavailable: the store does not answer.
        """
        ...

    def meta(self, generation_id: str) -> str | None:
        """The text given to ``create`` (None when none was).

        :raise sluice.errors.GenerationNotFound: unknown or expired.
        """
        ...

    def delete(self, generation_id: str) -> None:
        """Forget a generation (its events, state and meta); listeners still reading end.

        :raise sluice.errors.GenerationNotFound: unknown or expired.
        """
        ...

    def publish(self, generation_id: str, event: Event) -> None:
        """Append ``event`` to the log of a generation created here (``create(...).publish``)."""
        ...

    def listen(
        self, generation_id: str, after: int, idle_s: float, wake: Signal | None = None
    ) -> Iterator[list[Event] | None]:
        """Yield batches of the events numbered above ``after`` until the end, ``None`` after each idle gap.

        Each listener gets exactly one final event, and events only once the
        broker holds them. With ``wake``, an empty batch is yielded whenever
        the caller set it and nothing else came (see ``Log.follow``).

        :raise sluice.errors.GenerationNotFound: unknown or expired.
        """
        ...

    def key_of(self, generation_id: str) -> str | None:
        """The API key id that started the generation (None with keys off).

        :raise sluice.errors.GenerationNotFound: unknown or expired.
        """
        ...

    def attach(self, generation_id: str) -> None:
        """Count a listener in (the detach grace is paused while one listens)."""
        ...

    def detach(self, generation_id: str) -> None:
        """Count a listener out."""
        ...

    def idle_since(self, generation_id: str) -> float | None:
        """``time.time()`` when the last listener left (wall clock: hosts share it); None while one listens."""
        ...

    def request_cancel(self, generation_id: str) -> bool:
        """Ask whichever worker runs the generation to cancel it; True if the request went out.

        :raise sluice.errors.GenerationNotFound: unknown or expired.
        """
        ...

    def renew(self, generation_ids: list[str]) -> None:
        """Extend this worker's leases on the generations it runs."""
        ...

    def reap(self) -> None:
        """End generations whose worker is gone and forget finished ones past their TTL (the janitor's tick)."""
        ...

    def close(self, within_s: float | None = None) -> None:
        """The worker stops: flush what it produced (up to ``within_s``), then end the listeners it serves.

        Listeners of generations that run elsewhere end without an end event,
        so their clients resume on another worker.
        """
        ...

    def ping(self) -> bool:
        """True when the broker answers (``/readyz``)."""
        ...

    def state(self, generation_id: str) -> dict[str, Any]:
        """``{"id", "model", "status", "events"}``.

        :raise sluice.errors.GenerationNotFound: unknown or expired.
        """
        ...
