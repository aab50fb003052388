"""The lifecycle of a generation: start it, find it, cancel it, account for it.

``Generations`` lives on ``app.extensions["sluice"]``. ``start`` resolves the
model, takes a stream slot, records the generation in the broker and spawns
the runner; the slot is given back on every exit path of the runner
(``finally``), so no counter can drift.

Two kinds of generation share that path. A *tied* one (``POST /api/chat``,
``/stream``, ``/v1``) is cancelled when its connection goes away. A *detached*
one (``POST /api/generations``, the WebSocket) runs on while no one listens,
and is cancelled once no listener has been attached for
``SLUICE_DETACH_GRACE_S``. The grace trades the two promises against each
other: long enough to ride out a reconnect (nothing lost), short enough that
an abandoned answer stops costing tokens.

A janitor task, running only while this worker runs generations, renews their
leases in the broker (so other workers can tell a dead owner from a slow
model) and applies the detach grace, once a tick. With a shared broker, a
second task follows cancel requests made on other workers.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
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

__all__ = ["Generation", "Generations", "new_generation_id", "init_app"]

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
    detached: bool = False
    task: Task | None = None


class Generations:
    """The generations this worker runs, and the broker that keeps their events."""

    def __init__(
        self,
        registry: Registry,
        broker: Broker,
        limits: runner.Limits,
        max_streams: int,
        detach_grace_s: float = 30.0,
    ) -> None:
        self.registry = registry
        self.broker = broker
        self.limits = limits
        self.max_streams = max_streams
        self.detach_grace_s = detach_grace_s
        self.running: dict[str, Generation] = {}
        self._lock = threading.Lock()
        self._janitor: Task | None = None
        self._cancels: Task | None = None

    def start(self, request: ChatRequest, detached: bool = False) -> Generation:
        """Start ``request`` in the background.

        :param detached: run on without listeners, within the detach grace.
        :raise sluice.errors.ModelNotFound: the provider is unknown.
        :raise sluice.errors.Overloaded: this worker runs ``max_streams`` already,
            or the broker has no room for another generation.
        """
        provider, model = self.registry.resolve(request.model)
        generation = Generation(new_generation_id(), request.model, Abort(), detached)
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
        self._ensure_tasks()
        return generation

    def _run(self, generation: Generation, request: ChatRequest, provider: Any, model: str) -> None:
        def publish(event: Event) -> None:
            self.broker.publish(generation.id, event)

        try:
            runner.run(generation.id, request, provider, model, generation.abort, publish, self.limits)
        except Exception as exc:  # a broker that went away, or a bug; never a user error
            log.error("generation %s failed: %s", generation.id, type(exc).__name__, exc_info=exc)
            try:  # listeners must still see the one event that ends every generation
                seq = self.broker.state(generation.id)["events"]
                publish(Event.make(seq, events.error(SluiceError())))
            except Exception:
                log.warning("could not record the end of %s", generation.id)
        finally:
            self._release(generation.id)

    def _release(self, generation_id: str) -> None:
        with self._lock:
            self.running.pop(generation_id, None)

    def cancel(self, generation_id: str, reason: str = "cancelled") -> bool:
        """Stop a generation this worker runs; False if it runs elsewhere or has ended."""
        generation = self.running.get(generation_id)
        if generation is None:
            return False
        generation.abort.abort(reason)
        return True

    # -- background upkeep ---------------------------------------------------------

    def _ensure_tasks(self) -> None:
        with self._lock:
            if self._janitor is None:
                self._janitor = spawn(self._upkeep)
            follow = getattr(self.broker, "follow_cancels", None)
            if follow is not None and self._cancels is None:
                self._cancels = spawn(follow, self.cancel)

    def _upkeep(self) -> None:
        """Renew leases and cancel detached generations nobody listened to for the grace."""
        lease_s = getattr(self.broker, "lease_s", 3.0)
        tick = max(0.05, min(1.0, self.detach_grace_s / 4, lease_s / 3))
        while True:
            with self._lock:
                running = list(self.running.values())
                if not running:
                    self._janitor = None
                    return
            try:
                self.broker.renew([g.id for g in running])
            except Exception:  # the broker is away: listeners and /readyz say so
                log.warning("could not renew leases")
            now = time.time()
            for generation in running:
                if not generation.detached:
                    continue
                try:
                    idle_since = self.broker.idle_since(generation.id)
                except Exception:
                    continue
                if idle_since is not None and now - idle_since >= self.detach_grace_s:
                    log.info("cancelling %s: no listener for %.0fs", generation.id, now - idle_since)
                    self.cancel(generation.id, "detached")
            time.sleep(tick)


def init_app(app: Flask, registry: Registry, broker: Broker) -> Generations:
    """Attach the worker's ``Generations`` to ``app``."""
    config = app.config
    generations = Generations(
        registry,
        broker,
        runner.Limits(
            config["SLUICE_FIRST_TOKEN_TIMEOUT_S"],
            config["SLUICE_IDLE_TIMEOUT_S"],
            config["SLUICE_MAX_EVENTS"],
        ),
        config["SLUICE_MAX_STREAMS"],
        config["SLUICE_DETACH_GRACE_S"],
    )
    app.extensions["sluice"] = generations
    return generations
