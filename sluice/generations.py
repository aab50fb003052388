"""The lifecycle of a generation: start it, find it, end it, account for it.

``Generations`` lives on ``app.extensions["sluice"]``. ``start`` resolves the
model, takes a stream slot, creates the generation's log in the broker and
spawns its producer (``runner.run``), one task per generation whatever the
response; the slot is given back when the producer ends, so no counter can
drift. Every response is then a listener of that log plus a renderer.

How a generation runs is its ``Policy``, set by the route that starts it in
one place. A *tied* generation (``POST /api/chat``, ``/stream``, ``/v1``)
belongs to the response that started it: that response is its first
listener and holds the producer back (backpressure), and when it leaves with
no other listener attached, the generation is cancelled at once. A
*background* one (``POST /api/generations``, the WebSocket, a background
Response) runs on while no one listens, and is cancelled once no listener
has been attached for its grace (``SLUICE_DETACH_GRACE_S``; a grace of
``None`` never). The grace trades two promises against each other: long
enough to ride out a reconnect (nothing lost), short enough that an
abandoned answer stops costing tokens.

A janitor task renews the leases of this worker's generations in the broker
(so other workers can tell a dead owner from a slow model), applies the
graces, and reaps: ends the generations whose worker is gone and forgets
finished ones past their TTL (``Broker.reap``), once a tick. It runs while
this worker runs generations, and for the worker's whole life once
``run_janitor`` is called (gunicorn's ``post_worker_init``), so a dead
worker's generations end within their lease even if no one listens and
nothing else runs. With a shared broker, a second task follows cancel
requests made on other workers.

Stopping (``drain``): new generations are refused, running ones go on for the
drain window (``SLUICE_DRAIN_S``) and the rest then end with
``server_shutting_down``; the broker flushes and ends the listeners that
follow other workers' generations, and ``drained`` is set. The gunicorn hooks
keep the worker alive until then: a background generation is not a
connection, so gunicorn itself would not wait for it.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask

from . import runner
from .broker import Broker
from .broker.log import Log
from .chat import ChatRequest
from .errors import BrokerUnavailable, Overloaded, RateLimited, ServerShuttingDown, SluiceError
from .events import FROM_MODEL, TERMINAL, Event, Kind
from .hotpath import spawn_light
from .provider import Abort, Provider, Registry
from .tasks import Task, spawn
from .ticker import Ticker

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["Generation", "Generations", "Policy", "init_app", "new_generation_id", "parse_fallbacks"]

log = logging.getLogger(__name__)


def new_generation_id() -> str:
    """A random, unguessable id: 160 bits, URL-safe."""
    return "gen_" + secrets.token_urlsafe(20)


@dataclass(frozen=True, slots=True)
class Policy:
    """How a generation runs, set by the route that starts it, in one place.

    - ``tied``: the response that started it drives it, and it ends when that
      response ends (the client left, its write timed out, the answer is whole).
      ``hold_s`` is how long the response is held for the first token
      (``SLUICE_HOLD_S``), ``heartbeat_s`` the idle gap that sends a ping.
    - ``resumable``: the client learns the id while it streams and may follow or
      resume it by id, so it needs the broker: when the broker is down it gets
      ``503 broker_unavailable``. One that is not (``stream: false``, OpenAI's
      clients) may run in this worker alone while the broker is down.
    - ``grace_s``: a background generation (not tied) is cancelled once no
      listener has been attached for this long (``SLUICE_DETACH_GRACE_S``);
      ``None``: never for that reason (only a cancel, its own limits or a
      failure end it).
    """

    tied: bool
    resumable: bool = True
    grace_s: float | None = None
    hold_s: float = 5.0
    heartbeat_s: float = 15.0

    @classmethod
    def tied_to(cls, hold_s: float, heartbeat_s: float, resumable: bool = True) -> Policy:
        """A generation that lives and dies with the response that started it."""
        return cls(True, resumable, None, hold_s, heartbeat_s)

    @classmethod
    def background(cls, grace_s: float | None) -> Policy:
        """A generation that runs on while no one listens, within ``grace_s`` (None: to its end)."""
        return cls(False, True, grace_s)


@dataclass(slots=True)
class Generation:
    """A generation running in this worker, and what the access log and metrics say of it."""

    id: str
    model: str
    abort: Abort
    policy: Policy
    provider: str = ""
    owner: str | None = None
    log: Log | None = None  # its events in this worker (set once admitted)
    started: float = field(default_factory=time.monotonic)
    first_token_s: float | None = None
    tokens: int = 0
    outcome: str | None = None
    shared: bool = True  # its events go to the broker (False: started while the broker was down)
    left: bool = False  # a tied generation's own response has gone

    def listen(self) -> Iterator[list[Event] | None]:
        """The tied response's listener: every event from ``start``, holding the producer back.

        The first idle gap is the hold (``policy.hold_s``), then one per ``policy.heartbeat_s``.
        """
        assert self.log is not None
        return self.log.follow(-1, self.policy.heartbeat_s, self.policy.hold_s, hold=True)

    def summary(self) -> dict[str, Any]:
        """The fields of the access log line."""
        line: dict[str, Any] = {"generation": self.id, "model": self.model, "tokens": self.tokens}
        if self.first_token_s is not None:
            line["ttft_ms"] = round(self.first_token_s * 1000, 1)
        line["outcome"] = self.outcome or "running"
        return line


def parse_fallbacks(entries: tuple[str, ...]) -> dict[str, list[str]]:
    """``("a/x=b/y|c/z", …)`` → ``{"a/x": ["b/y", "c/z"]}`` (SLUICE_FALLBACKS)."""
    fallbacks: dict[str, list[str]] = {}
    for entry in entries:
        model, sep, targets = entry.partition("=")
        if not sep or not model.strip() or not targets.strip():
            raise ValueError(f"SLUICE_FALLBACKS: {entry!r} is not model=fallback[|fallback…]")
        fallbacks[model.strip()] = [t.strip() for t in targets.split("|") if t.strip()]
    return fallbacks


class Generations:
    """The generations this worker runs, and the broker that keeps their events."""

    def __init__(
        self,
        registry: Registry,
        broker: Broker,
        limits: runner.Limits,
        max_streams: int,
        detach_grace_s: float = 30.0,
        max_streams_per_key: int = 0,
        fallbacks: dict[str, list[str]] | None = None,
        metrics: Metrics | None = None,
        ticker: Ticker | None = None,
    ) -> None:
        self.ticker = ticker or Ticker()
        self.registry = registry
        self.broker = broker
        self.limits = limits
        self.max_streams = max_streams
        self.detach_grace_s = detach_grace_s
        self.max_streams_per_key = max_streams_per_key
        self.fallbacks = fallbacks or {}
        self.metrics = metrics
        self.draining = False
        #: Called once when the drain starts (a WebSocket session wakes to close its idle socket).
        self.on_drain: set[Callable[[], None]] = set()
        #: Set once a drain is over: every generation has ended and the listeners have been let go.
        self.drained = threading.Event()
        self._drain_until = float("inf")
        self.running: dict[str, Generation] = {}
        self._lock = threading.Lock()
        self._janitor: Task | None = None
        self._resident = False  # the janitor runs for the worker's life (``run_janitor``)
        self._cancels: Task | None = None

    def start(self, request: ChatRequest, owner: str | None, policy: Policy, meta: str | None = None) -> Generation:
        """Start ``request`` under ``policy``: admit it, then spawn its producer.

        A tied generation's caller then listens with ``generation.listen()``
        and calls ``leave`` when its response ends.

        :param owner: the API key id that started it (only it may read or cancel it).
        :param meta: text kept with the generation for as long as it is kept (a dialect's
            stored request, for example); ``Broker.meta`` reads it back.
        :raise sluice.errors.ModelNotFound: the provider is unknown.
        :raise sluice.errors.InvalidRequest: the provider cannot honour a field of ``request``.
        :raise sluice.errors.Overloaded: this worker runs ``max_streams`` already,
            or the broker has no room for another generation.
        :raise sluice.errors.RateLimited: the key runs ``SLUICE_MAX_STREAMS_PER_KEY`` already.
        :raise sluice.errors.ServerShuttingDown: the worker is draining.
        :raise sluice.errors.BrokerUnavailable: the broker does not answer and ``policy.resumable``.
        """
        generation, attempts = self._admit(request, owner, policy, meta)
        spawn_light(self._produce, generation, request, attempts)
        return generation

    def _admit(
        self, request: ChatRequest, owner: str | None, policy: Policy, meta: str | None
    ) -> tuple[Generation, list[tuple[Provider, str]]]:
        """Resolve and check the model, take a slot, record the generation in the broker."""
        attempts = [self.registry.resolve(request.model)]
        for fallback in self.fallbacks.get(request.model, []):
            attempts.append(self.registry.resolve(fallback))
        provider, model = attempts[0]
        # A field the provider cannot honour is a 400 now, before any slot or 202.
        provider.check(request, model)
        generation = Generation(new_generation_id(), request.model, Abort(), policy, provider.name, owner)
        with self._lock:
            if self.draining:
                raise ServerShuttingDown()
            if len(self.running) >= self.max_streams:
                raise Overloaded()
            if self.max_streams_per_key and owner is not None:
                if sum(g.owner == owner for g in self.running.values()) >= self.max_streams_per_key:
                    raise RateLimited("Too many streams at once for this key.")
            self.running[generation.id] = generation
        # Counted in as it enters ``running``: ``_release`` counts it out on every path,
        # this one's failure included.
        if self.metrics:
            self.metrics.active_streams.inc()
        try:
            generation.log = self.broker.create(generation.id, request.model, owner, meta)
        except BrokerUnavailable:
            if policy.resumable:
                self._release(generation.id)
                raise
            # Nobody can follow it by id: it runs in this worker alone, durable when appended.
            generation.shared = False
            generation.log = Log(self.ticker)
        except BaseException:
            self._release(generation.id)
            raise
        log = generation.log
        log.abort = generation.abort
        generation.abort.on_abort(log.wake_producer)
        if self.metrics:
            self.metrics.child(self.metrics.streams_started, generation.provider).inc()
        self._ensure_tasks()
        return generation, attempts

    def _observe(self, generation: Generation, event: Event) -> None:
        """Keep the generation's summary and the metrics up to date (one place, every provider)."""
        kind = event.kind
        if self.metrics:
            self.metrics.unflushed_events += 1
        if kind in FROM_MODEL:  # text, reasoning, a tool-call piece, a refusal
            generation.tokens += 1
            if generation.first_token_s is None:
                generation.first_token_s = time.monotonic() - generation.started
                if self.metrics:
                    m = self.metrics
                    m.child(m.time_to_first_token, generation.provider, generation.model).observe(
                        generation.first_token_s
                    )
        elif kind in TERMINAL:
            generation.outcome = event.piece.reason if kind is Kind.DONE else event.piece.code
            if self.metrics:
                m = self.metrics
                m.child(m.streams_finished, generation.provider, generation.outcome).inc()
                m.child(m.tokens, generation.provider).inc(generation.tokens)
                if kind is Kind.ERROR:
                    m.child(m.upstream_errors, generation.provider, generation.outcome).inc()
                if generation.first_token_s is not None:
                    m.child(m.stream_duration, generation.provider, generation.model).observe(
                        time.monotonic() - generation.started
                    )

    def _produce(self, generation: Generation, request: ChatRequest, attempts: list[tuple[Provider, str]]) -> None:
        """The generation's task: run the producer to the end, publishing to its log."""
        events = generation.log
        assert events is not None
        abort = generation.abort

        def publish(event: Event) -> None:
            events.publish(event)
            self._observe(generation, event)
            events.wait_for_room(abort)

        try:
            runner.run(generation.id, request, attempts, abort, publish, self.limits, self.ticker)
        except Exception as exc:
            # A bug, never a user error (the runner maps every failure to an event).
            # Listeners must still see the one event that ends every generation.
            log.error("generation %s failed: %s", generation.id, type(exc).__name__, exc_info=exc)
            if not events.ended:
                events.fail(Event(-1, Kind.ERROR, SluiceError()))
        finally:
            self._release(generation.id)

    def leave(self, generation: Generation) -> None:
        """A tied generation's own response has gone: cancel it unless someone else listens.

        Listeners by id (any worker) keep it running; the janitor ends it once
        they have gone too.
        """
        if generation.left:
            return
        generation.left = True
        if generation.id not in self.running or (generation.log is not None and generation.log.ended):
            return  # it ended already: nothing to stop, nobody to ask
        try:
            alone = not generation.shared or self.broker.idle_since(generation.id) is not None
        except SluiceError:  # the broker cannot say: nobody can be following it through it now
            alone = True
        if alone:
            self.cancel(generation.id, "disconnected")

    def _release(self, generation_id: str) -> None:
        with self._lock:
            released = self.running.pop(generation_id, None)
        if released is not None and self.metrics:
            self.metrics.active_streams.dec()

    def drain(self, within_s: float) -> None:
        """Refuse new generations, let running ones go on for ``within_s`` (the drain window), then end the rest.

        The rest end with an ``error`` event ``server_shutting_down``: their
        listeners are told to retry, and with a shared broker a client that
        resumes elsewhere loses nothing already sent. Then the broker flushes
        and lets its listeners go (``Broker.close``), and ``drained`` is set.
        A second call (a quick stop during a drain) can only bring the end
        nearer; it returns once the drain is over.
        """
        with self._lock:
            first = not self.draining
            self.draining = True
            self._drain_until = min(self._drain_until, time.monotonic() + within_s)
            told = list(self.on_drain) if first else []
        for tell in told:  # sessions that hold a connection open with nothing to send say goodbye
            tell()
        if not first:
            self.drained.wait(max(0.0, self._drain_until - time.monotonic()) + 5.0)
            return
        while self.running and time.monotonic() < self._drain_until:
            time.sleep(0.05)
        for generation in list(self.running.values()):
            generation.abort.abort("shutdown")
        deadline = time.monotonic() + 1.0
        while self.running and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            self.broker.close()
        finally:
            self.drained.set()

    def cancel(self, generation_id: str, reason: str = "cancelled") -> bool:
        """Stop a generation this worker runs; False if it runs elsewhere or has ended."""
        generation = self.running.get(generation_id)
        if generation is None:
            return False
        generation.abort.abort(reason)
        return True

    def delete(self, generation_id: str) -> None:
        """Cancel the generation if it runs, then forget it (its events, its state, its meta).

        :raise sluice.errors.GenerationNotFound: unknown or expired.
        """
        if not self.cancel(generation_id):
            state = self.broker.state(generation_id)
            if state["status"] == "running":
                self.broker.request_cancel(generation_id)
        self.broker.delete(generation_id)

    # -- background upkeep ---------------------------------------------------------

    def run_janitor(self) -> None:
        """Keep the janitor running for the worker's whole life, even while it runs no generation.

        Called once a worker serves (gunicorn's ``post_worker_init``): then every
        worker reaps the generations of dead ones (``Broker.reap``). Without it
        the janitor runs only while this worker runs generations (``flask run``,
        tests), and admission still reaps when it finds no room.
        """
        self._resident = True
        self._ensure_tasks()

    def _ensure_tasks(self) -> None:
        with self._lock:
            if self._janitor is None:
                self._janitor = spawn(self._upkeep)
            if self.broker.shared and self._cancels is None:
                self._cancels = spawn(self.broker.follow_cancels, self.cancel)

    def _upkeep(self) -> None:
        """Renew leases, cancel detached generations nobody listened to for the grace, reap."""
        lease_s = self.broker.lease_s
        tick = max(0.05, min(1.0, self.detach_grace_s / 4, lease_s / 3))
        reap_every = max(tick, min(1.0, lease_s / 3))
        next_reap = 0.0
        while True:
            with self._lock:
                running = list(self.running.values())
                if not running and not self._resident:
                    self._janitor = None
                    return
            if running:
                try:
                    self.broker.renew([g.id for g in running if g.shared])
                except Exception:  # the broker is away: listeners and /readyz say so
                    log.warning("could not renew leases")
            if time.monotonic() >= next_reap:
                next_reap = time.monotonic() + reap_every
                try:
                    self.broker.reap()
                except Exception:  # best effort, as renewing: the next tick tries again
                    log.warning("could not reap lost generations")
            now = time.time()
            for generation in running:
                # A tied generation whose response left runs only while someone listens by id.
                grace_s = 0.0 if generation.left else generation.policy.grace_s
                if grace_s is None or (generation.policy.tied and not generation.left) or not generation.shared:
                    continue
                try:
                    idle_since = self.broker.idle_since(generation.id)
                except Exception:
                    continue
                if idle_since is not None and now - idle_since >= grace_s:
                    if generation.left:
                        self.cancel(generation.id, "disconnected")
                    else:
                        log.info("cancelling %s: no listener for %.0fs", generation.id, now - idle_since)
                        self.cancel(generation.id, "detached")
            time.sleep(tick)


def init_app(
    app: Flask, registry: Registry, broker: Broker, metrics: Metrics | None = None, ticker: Ticker | None = None
) -> Generations:
    """Attach the worker's ``Generations`` to ``app``."""
    config = app.config
    generations = Generations(
        registry,
        broker,
        runner.Limits(
            config["SLUICE_FIRST_TOKEN_TIMEOUT_S"],
            config["SLUICE_IDLE_TIMEOUT_S"],
            config["SLUICE_MAX_EVENTS"],
            config["SLUICE_MAX_STREAM_S"],
            config["SLUICE_RETRIES"],
        ),
        config["SLUICE_MAX_STREAMS"],
        config["SLUICE_DETACH_GRACE_S"],
        config["SLUICE_MAX_STREAMS_PER_KEY"],
        parse_fallbacks(config["SLUICE_FALLBACKS"]),
        metrics,
        ticker,
    )
    app.extensions["sluice"] = generations
    return generations
