"""The lifecycle of a generation: start it, find it, cancel it, account for it.

``Generations`` lives on ``app.extensions["sluice"]``. ``start`` resolves the
model, takes a stream slot, records the generation in the broker and spawns
the runner; the slot is given back and the abort handle forgotten on every
exit path of the runner (``finally``), so no counter can drift.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from flask import Flask

from providers import Abort, Registry

from . import events, runner
from .broker import Broker
from .chat import ChatRequest
from .errors import Overloaded, SluiceError
from .events import Event
from .tasks import Task, spawn

__all__ = ["Generation", "Generations", "new_generation_id"]

log = logging.getLogger(__name__)


def new_generation_id() -> str:
    """A random, unguessable id: 160 bits, URL-safe."""
    return "gen_" + secrets.token_urlsafe(20)


@dataclass(slots=True)
class Generation:
    """A generation running in this worker."""

    id: str
    model: str
    abort: Abort
    task: Task | None = None


class Generations:
    """The generations this worker runs, and the broker that keeps their events."""

    def __init__(
        self,
        registry: Registry,
        broker: Broker,
        timeouts: runner.Timeouts,
        max_streams: int,
    ) -> None:
        self.registry = registry
        self.broker = broker
        self.timeouts = timeouts
        self.max_streams = max_streams
        self.running: dict[str, Generation] = {}
        self._lock = threading.Lock()

    def start(self, request: ChatRequest) -> Generation:
        """Start ``request`` in the background.

        :raise sluice.errors.ModelNotFound: the provider is unknown.
        :raise sluice.errors.Overloaded: this worker runs ``max_streams`` already.
        """
        provider, model = self.registry.resolve(request.model)
        generation = Generation(new_generation_id(), request.model, Abort())
        with self._lock:
            if len(self.running) >= self.max_streams:
                raise Overloaded()
            self.running[generation.id] = generation
        try:
            self.broker.create(generation.id, request.model)
        except BaseException:
            self._release(generation.id)
            raise
        generation.task = spawn(self._run, generation, request, provider, model)
        return generation

    def _run(self, generation: Generation, request: ChatRequest, provider: Any, model: str) -> None:
        def publish(event: Event) -> None:
            self.broker.publish(generation.id, event)

        try:
            runner.run(
                generation.id, request, provider, model, generation.abort, publish, self.timeouts
            )
        except Exception:  # the runner maps failures itself; this is a bug, not a user error
            log.exception("runner failed for %s", generation.id)
            # Listeners must still see the one event that ends every generation.
            seq = self.broker.state(generation.id)["events"]
            publish(Event.make(seq, events.error(SluiceError())))
        finally:
            self._release(generation.id)

    def _release(self, generation_id: str) -> None:
        with self._lock:
            self.running.pop(generation_id, None)

    def cancel(self, generation_id: str, reason: str = "cancelled") -> bool:
        """Stop a generation this worker runs; False if it runs elsewhere or ended."""
        generation = self.running.get(generation_id)
        if generation is None:
            return False
        generation.abort.abort(reason)
        return True


def init_app(app: Flask, registry: Registry, broker: Broker) -> Generations:
    """Attach the worker's ``Generations`` to ``app``."""
    config = app.config
    generations = Generations(
        registry,
        broker,
        runner.Timeouts(config["SLUICE_FIRST_TOKEN_TIMEOUT_S"], config["SLUICE_IDLE_TIMEOUT_S"]),
        config["SLUICE_MAX_STREAMS"],
    )
    app.extensions["sluice"] = generations
    return generations
