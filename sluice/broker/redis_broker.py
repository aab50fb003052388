"""The Redis broker: generations shared by every worker on every host.

::

    sluice:gen:<id>, …:events, …:lease   a generation's state, events and owner (``redis_lua``)
    sluice:running / sluice:ended        indexes: running ones by lease end, finished ones by end
    sluice:cancel            pub/sub channel: "cancel this id", heard by the owner
    sluice:new               pub/sub channel: ids of followed generations that got events

Stream entry ids are the event numbers (+1, since 0-0 is not allowed), so a
resume is one read after ``0-(after+1)`` and the number of events is the
stream's length. New generations and events go out through one writer per
worker, one Lua call per flush for all its streams (events write-behind: a
stream never waits for Redis, except for its start and its end), and
listeners follow through one reader per worker (``redis_io``).

A generation whose owner died (its lease ran out) is ended as
``generation_lost`` by whoever notices first, listener or not: every worker's
janitor calls ``reap`` once a tick, a worker's reader checks the quiet
generations its listeners follow, and admission checks when there is no room
(``redis_lua``). Finished generations expire after ``SLUICE_GENERATION_TTL_S``;
past ``SLUICE_MAX_GENERATIONS`` the oldest finished go first. Every key
expires or is trimmed: nothing grows with the number of generations ever run.
If Redis itself goes away, a listener ends with an ``error`` event
(``generation_lost``, no id: its ``Last-Event-ID`` stays valid for a resume
once Redis is back), the generations this worker runs end the same way, and
``/readyz`` says 503.

An outage is not a bug: every call has ``SLUICE_REDIS_TIMEOUT_S`` (a hung
Redis answers nothing, so without a timeout a call would wait for the whole
outage), a refused or timed-out call raises ``BrokerUnavailable`` (``503
broker_unavailable`` before a response starts, ``generation_lost`` in a
stream), and the worker logs one WARNING when Redis stops answering and one
INFO line when it answers again, not a trace per call. While it is known to be
down, calls fail at once, except one probe a second (and every ``ping``), so
a hung Redis does not hold a greenlet and a connection per request.

Load is not an outage either: request-time calls share a bounded pool of
``SLUICE_REDIS_MAX_CONNECTIONS`` connections and wait up to
``SLUICE_REDIS_TIMEOUT_S`` for one; a call that gets none is ``503
overloaded`` with ``Retry-After`` (an ``overloaded`` error event in a
stream), never a 500. Starting and running a stream takes no pooled
connection: the writer, the reader and the two subscribers have one each.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from functools import wraps
from queue import Empty, LifoQueue
from typing import Any, TypeVar

import redis

from ..errors import BrokerUnavailable, GenerationLost, GenerationNotFound, Overloaded, SluiceError
from ..events import TERMINAL, Event, Kind
from ..hotpath import Signal
from ..ticker import Ticker
from .log import Log, Redirected
from .redis_io import Reader, Watchdog, Writer
from .redis_lua import ATTACH, DETACH, FOLLOW, REAP, RENEW, SWEEP

__all__ = ["PoolExhausted", "RedisBroker"]

log = logging.getLogger(__name__)

_PREFIX = "sluice:"
# Running generations never outlive this without an end (a crashed owner that
# nobody listened to): a backstop, the lease does the real work.
_RUNNING_TTL_S = 24 * 3600
_POLL_S = 1.0  # how often a worker looks at the quiet generations its listeners follow
_BATCH = 512
_REAP_LIMIT = 100  # lost generations ended per janitor tick, at most (the rest on the next ones)
_PROBE_S = 1.0  # while Redis is down, at most one call a second tries it
# What an outage looks like from redis-py (refused, reset, timed out, loading).
_OUTAGE = (redis.ConnectionError, redis.TimeoutError)

_F = TypeVar("_F", bound=Callable[..., Any])


class PoolExhausted(redis.RedisError):
    """No pooled connection came free within the wait: load, not an outage (``503 overloaded``)."""


class _Slots(LifoQueue):  # type: ignore[type-arg]
    """The bounded pool's free list; running dry is ``PoolExhausted``, not redis-py's ConnectionError."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        try:
            return super().get(block, timeout)
        except Empty:
            raise PoolExhausted("no redis connection came free in time") from None


class _Outage:
    """Whether Redis answers, as this worker last saw it; says so once per change."""

    __slots__ = ("_on_down", "_probed", "count", "heard", "since")

    def __init__(self, on_down: Callable[[], None]) -> None:
        self.since: float | None = None  # monotonic time of the first failure
        self.count = 0  # outages seen: a connection held across one is stale
        self.heard = time.monotonic()  # when Redis last answered anything (the watchdog's measure)
        self._probed = 0.0
        self._on_down = on_down

    def check(self) -> None:
        """Fail at once while Redis is known to be down, but let one call a second try it."""
        if self.since is not None:
            now = time.monotonic()
            if now - self._probed < _PROBE_S:
                raise BrokerUnavailable()
            self._probed = now

    def failed(self, exc: BaseException) -> BrokerUnavailable:
        if self.since is None:
            self.since = self._probed = time.monotonic()
            self.count += 1
            log.warning(
                "redis unreachable (%s): streams that need it end with generation_lost, "
                "new ones get 503 broker_unavailable until it answers",
                type(exc).__name__,
            )
            self._on_down()
        return BrokerUnavailable()

    def answered(self) -> None:
        self.heard = time.monotonic()
        if self.since is not None:
            log.info("redis answers again after %.1fs", time.monotonic() - self.since)
            self.since = None


def _guarded(method: _F) -> _F:
    """Map redis-py's outage errors to ``BrokerUnavailable``, a dry pool to ``Overloaded``; keep ``_Outage`` current."""

    @wraps(method)
    def call(self: RedisBroker, *args: Any, **kwargs: Any) -> Any:
        outage = self.outage
        if outage.since is not None:
            outage.check()
        try:
            result = method(self, *args, **kwargs)
        except PoolExhausted as exc:
            raise Overloaded() from exc
        except _OUTAGE as exc:
            raise outage.failed(exc) from exc
        outage.answered()
        return result

    return call  # type: ignore[return-value]


class RedisBroker:
    """Generations in Redis; see the module docstring."""

    shared = True  # every worker on every host sees them

    def __init__(
        self,
        url: str,
        ttl_s: float = 600.0,
        max_generations: int = 10_000,
        lease_s: float = 5.0,
        socket_timeout_s: float = 2.0,
        max_connections: int = 64,
        flush_ms: float = 5.0,
        max_pending: int = 100_000,
        ticker: Ticker | None = None,
    ) -> None:
        self.ticker = ticker or Ticker()
        #: The logs of the generations this worker runs, until their end is in Redis.
        self._local: dict[str, Log] = {}
        self.ttl_s = int(max(1, ttl_s))
        self.max_generations = max_generations
        self.lease_s = lease_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.socket_timeout_s = socket_timeout_s
        self.outage = _Outage(self._on_outage)
        # Every call, connecting included, gives up after the timeout: a hung Redis
        # (stopped, a network partition) answers nothing, and a dead one may not
        # even refuse. redis-py does not retry these (from_url's default), so the
        # timeout bounds each call. Waiting for a free connection is bounded by it too.
        timeouts = {"socket_timeout": socket_timeout_s, "socket_connect_timeout": socket_timeout_s}
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max(1, max_connections),
            timeout=socket_timeout_s,
            queue_class=_Slots,
            health_check_interval=30,
            **timeouts,
        )
        self.redis = redis.Redis(connection_pool=pool)
        # One connection each for the writer, the reader's reads, the watchdog's pings and the
        # two subscribers (cancels, new events): streams and listeners never hold one while they wait.
        self._writer_client = redis.Redis.from_url(url, **timeouts)
        self._reader_client = redis.Redis.from_url(url, **timeouts)
        self._watch_client = redis.Redis.from_url(url, **timeouts)
        self._pubsub_client = redis.Redis.from_url(url, health_check_interval=30, **timeouts)
        self._renew_script = self.redis.register_script(RENEW)
        self._follow = self.redis.register_script(FOLLOW)
        self._reap_script = self.redis.register_script(REAP)
        self._attach_script = self.redis.register_script(ATTACH)
        self._detach_script = self.redis.register_script(DETACH)
        self._sweep_script = self._reader_client.register_script(SWEEP)
        self._lost_json = Event(0, Kind.ERROR, GenerationLost()).json
        self.writer = Writer(
            self._writer_client,
            self.outage,
            self.ttl_s,
            _RUNNING_TTL_S,
            self.owner,
            lease_s,
            max_generations,
            self._lost_json,
            flush_ms / 1000.0,
            max_pending,
            wait_s=2 * socket_timeout_s + 1.0,
            on_flushed=self._flushed,
            on_refused=self._refused,
            on_failed=self._failed,
        )
        self.reader = Reader(
            self._pubsub_client, self._reader_client, self.outage, self._stream, self._sweep, _BATCH, _POLL_S
        )
        self.watchdog = Watchdog(
            self._watch_client,
            self.outage,
            self.ticker,
            socket_timeout_s,
            lambda: bool(self._local) or bool(self.reader.follows),
        )

    def _on_outage(self) -> None:
        """Redis stopped answering: end what depends on it, once per outage.

        Listeners end with ``generation_lost`` (no id), and so do the
        generations this worker runs (their events can no longer be stored).
        The pooled connections are forgotten: after a restart each would fail once more.
        """
        self.reader.break_all()
        for generation_id in list(self._local):
            self._failed(generation_id)
        for client in (self.redis, self._writer_client, self._reader_client, self._watch_client):
            try:
                client.connection_pool.disconnect(inuse_connections=False)
            except Exception:  # nothing to save here; the next call reconnects
                pass

    def _sweep(self, pairs: list[tuple[str, str]]) -> list[Any]:
        """The reader's look at quiet followed generations (``redis_lua.SWEEP``)."""
        args: list[Any] = [self._lost_json, self.ttl_s, _BATCH]
        for generation_id, first in pairs:
            args += (generation_id, first)
        reply: list[Any] = self._sweep_script(keys=[], args=args)
        return reply

    # -- keys ------------------------------------------------------------------

    @staticmethod
    def _hash(generation_id: str) -> str:
        return f"{_PREFIX}gen:{generation_id}"

    @staticmethod
    def _stream(generation_id: str) -> str:
        return f"{_PREFIX}gen:{generation_id}:events"

    # -- the producer side ---------------------------------------------------------

    def create(self, generation_id: str, model: str, key: str | None = None, meta: str | None = None) -> Log:
        """Record a running generation owned by this worker, making room if needed; return its log.

        Through the writer: the starts that come together share one round trip.
        The log hands each event to the writer; listeners get it once flushed.

        :raise Overloaded: every generation kept is still running.
        :raise BrokerUnavailable: Redis does not answer.
        """
        self.writer.create(generation_id, model, key, meta)
        log = Log(self.ticker, on_append=lambda event: self.writer.publish(generation_id, event))
        self._local[generation_id] = log
        self.watchdog.start()
        return log

    def publish(self, generation_id: str, event: Event) -> None:
        """Append ``event`` to the log of a generation this worker runs.

        :raise BrokerUnavailable: it does not run here any more (Redis lost it, or another
            worker ended it as lost).
        """
        log = self._local.get(generation_id)
        if log is None or log.failure is not None or log.redirected:
            raise BrokerUnavailable()
        log.publish(event)

    def _flushed(self, generation_id: str, count: int) -> None:
        log = self._local.get(generation_id)
        if log is not None:
            log.commit(count)
            if log.ended:
                del self._local[generation_id]  # new listeners read Redis; followers keep the log

    def _refused(self, generation_id: str) -> None:
        log = self._local.pop(generation_id, None)
        if log is not None:
            log.redirect()

    def _failed(self, generation_id: str) -> None:
        log = self._local.pop(generation_id, None)
        if log is not None:
            log.fail(_lost_event("The event store is unreachable; resume with Last-Event-ID shortly."))

    @_guarded
    def meta(self, generation_id: str) -> str | None:
        """The text given to ``create`` (None when none was)."""
        return self._state(generation_id).get(b"meta", b"").decode() or None

    @_guarded
    def delete(self, generation_id: str) -> None:
        """Forget it in Redis; listeners on every worker find it gone and end."""
        self._state(generation_id)
        pipe = self.redis.pipeline()
        pipe.delete(self._hash(generation_id), self._stream(generation_id), f"{self._hash(generation_id)}:lease")
        pipe.zrem(f"{_PREFIX}running", generation_id)
        pipe.zrem(f"{_PREFIX}ended", generation_id)
        pipe.execute()

    def renew(self, generation_ids: list[str]) -> None:
        """Extend this worker's leases (called about three times per lease period), in one call.

        Best effort: while Redis is away there is nothing to renew in, and the
        outage has been reported once already.
        """
        if not generation_ids:
            return
        try:
            self._renew(generation_ids)
        except (BrokerUnavailable, Overloaded):
            pass

    @_guarded
    def _renew(self, generation_ids: list[str]) -> None:
        self._renew_script(keys=[], args=[self.owner, int(self.lease_s * 1000), *generation_ids])

    def reap(self) -> None:
        """End the generations whose worker is gone, forget finished ones past their TTL (one call).

        Every worker calls this once a tick (its janitor), so a dead worker's
        generations end within their lease even if nobody listens, and the
        indexes shrink even while nothing new starts. Best effort, like ``renew``.
        """
        try:
            lost, _ = self._reap()
        except (BrokerUnavailable, Overloaded):
            return
        for generation_id in lost:
            log.warning("generation %s lost: its worker stopped renewing the lease", generation_id.decode())

    @_guarded
    def _reap(self) -> tuple[list[bytes], int]:
        lost, forgotten = self._reap_script(keys=[], args=[self._lost_json, self.ttl_s, _REAP_LIMIT])
        return lost, int(forgotten)

    def close(self, within_s: float | None = None) -> None:
        """The worker stops: its last events reach Redis, then every listener here ends.

        Waits up to ``within_s`` (by default two Redis timeouts) for the ends of
        this worker's generations to be flushed; listeners that follow other
        workers' generations then end where they are, without an end event, so
        their clients resume on another worker (``Last-Event-ID``).
        """
        deadline = time.monotonic() + (2 * self.socket_timeout_s + 1.0 if within_s is None else within_s)
        while self._local and time.monotonic() < deadline:
            time.sleep(0.01)
        self.reader.close()

    # -- the listener side ------------------------------------------------------------

    def _state(self, generation_id: str) -> dict[bytes, bytes]:
        fields: dict[bytes, bytes] = self.redis.hgetall(self._hash(generation_id))  # type: ignore[assignment]
        if not fields:
            raise GenerationNotFound()
        return fields

    @_guarded
    def state(self, generation_id: str) -> dict[str, Any]:
        """The generation's id, model, status and number of events so far (in Redis)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self._hash(generation_id))
        pipe.xlen(self._stream(generation_id))
        fields, count = pipe.execute()
        if not fields:
            raise GenerationNotFound()
        return {
            "id": generation_id,
            "model": fields[b"model"].decode(),
            "status": fields[b"status"].decode(),
            "events": int(count),
        }

    @_guarded
    def key_of(self, generation_id: str) -> str | None:
        """The id of the API key that started it (None with keys off)."""
        return self._state(generation_id).get(b"key", b"").decode() or None

    def listen(
        self, generation_id: str, after: int, idle_s: float, wake: Signal | None = None
    ) -> Iterator[list[Event] | None]:
        """Replay after ``after`` in batches, then follow live; see the module docstring.

        A generation this worker runs is read from its log (what Redis holds of
        it, without a round trip); any other from Redis.
        """
        local = self._local.get(generation_id)
        if local is not None:
            return self._listen_local(generation_id, local, after, idle_s, wake)
        self._check_exists(generation_id)
        return self._listen(generation_id, max(after, -1), idle_s, wake)

    @_guarded
    def _check_exists(self, generation_id: str) -> None:
        self._state(generation_id)

    def _listen_local(
        self, generation_id: str, local: Log, after: int, idle_s: float, wake: Signal | None
    ) -> Iterator[list[Event] | None]:
        try:
            yield from local.follow(after, idle_s, wake=wake)
        except Redirected as moved:
            # Another worker ended it: its account of the end is in Redis.
            yield from self._listen(generation_id, moved.position, idle_s, wake)

    def _listen(
        self, generation_id: str, after: int, idle_s: float, wake: Signal | None = None
    ) -> Iterator[list[Event] | None]:
        # Registered with the reader before reading: an event is either read here or handed over.
        sub = self.reader.follow(generation_id, wake)
        self.watchdog.start()
        position = after
        counted = False
        try:
            try:
                while True:  # what is there already, a page at a time
                    self.outage.check()
                    reply = self._follow(
                        keys=[], args=[generation_id, "0" if counted else "1", f"0-{position + 2}", _BATCH]
                    )
                    counted = True
                    if reply is None:
                        return  # expired or deleted meanwhile
                    ended, entries = reply
                    batch = _parse(entries)
                    if batch:
                        position = batch[-1].seq
                        yield batch
                        if batch[-1].kind in TERMINAL:
                            return
                    if len(entries) < _BATCH:
                        if ended:
                            return  # it ended, and this listener is past its end
                        break
            except (BrokerUnavailable, PoolExhausted, *_OUTAGE) as exc:
                yield [_failure_event(self.outage, exc)]
                return
            self.reader.caught_up(generation_id, f"0-{position + 1}")
            # From here on this listener waits for the reader only, never on a call of its own:
            # when Redis hangs, the watchdog ends it within the timeout (``redis_io``).
            quiet_since = time.monotonic()
            while True:
                if sub.pending:
                    with self.reader.lock:
                        pending, sub.pending = sub.pending, []
                    # The reader's reads and its sweeps may both hand over an event.
                    batch = _next_events(pending, position)
                    if batch:
                        position = batch[-1].seq
                        quiet_since = time.monotonic()
                        yield batch
                        if batch[-1].kind in TERMINAL:
                            return
                    continue
                if sub.broken:
                    yield [_lost_event("The event store is unreachable; resume with Last-Event-ID shortly.")]
                    return
                if sub.stopped:
                    return  # it ended (this listener is past its end), it is gone, or the worker stops
                if sub.pending or sub.broken:
                    continue
                left = quiet_since + idle_s - time.monotonic()
                if left > 0 and sub.wake.wait(left):
                    if wake is not None and not (sub.pending or sub.broken or sub.stopped):
                        yield []  # the caller's own signal: its turn
                    continue
                quiet_since = time.monotonic()
                yield None
        finally:
            self.reader.unfollow(generation_id, sub)
            if counted and self.outage.since is None:
                try:
                    self._follow(keys=[], args=[generation_id, "-1", "", 0])
                except (redis.RedisError, SluiceError):
                    pass  # a stale count only costs a notification per flush

    # -- listeners, cancel, health ------------------------------------------------------

    @_guarded
    def attach(self, generation_id: str) -> None:
        """Count a listener in (nothing if the generation has gone meanwhile)."""
        self._attach_script(keys=[], args=[generation_id])

    def detach(self, generation_id: str) -> None:
        """Count a listener out; the last one out starts the idle clock."""
        try:
            self._detach(generation_id)
        except (BrokerUnavailable, Overloaded):
            pass  # reported once; the count is lost with the outage, the lease still rules

    @_guarded
    def _detach(self, generation_id: str) -> None:
        self._detach_script(keys=[], args=[generation_id, repr(time.time())])

    @_guarded
    def idle_since(self, generation_id: str) -> float | None:
        """When the last listener left (``time.time()``), or None while one listens."""
        raw = self._state(generation_id).get(b"idle_since", b"")
        return float(raw) if raw else None

    @_guarded
    def request_cancel(self, generation_id: str) -> bool:
        """Tell the worker that owns the generation to cancel it."""
        self._state(generation_id)
        return self.redis.publish(f"{_PREFIX}cancel", generation_id) > 0

    def follow_cancels(self, on_cancel: Callable[[str], None]) -> None:
        """Call ``on_cancel(id)`` for every cancel request, forever (run it as a task)."""
        backoff = 0.1
        while True:
            try:
                pubsub = self._pubsub_client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(f"{_PREFIX}cancel")
                backoff = 0.1
                for message in pubsub.listen():
                    if message.get("type") == "message":
                        on_cancel(message["data"].decode())
            except _OUTAGE as exc:
                self.outage.failed(exc)  # cancel requests wait for it; said once per outage
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def ping(self) -> bool:
        """True when Redis answers (always asked, even during a known outage: ``/readyz`` is the probe)."""
        try:
            answered = bool(self.redis.ping())
        except PoolExhausted:
            return True  # busy, not gone: readiness is about the dependency
        except _OUTAGE as exc:
            self.outage.failed(exc)
            return False
        except redis.RedisError:
            return False
        self.outage.answered()
        return answered


def _next_events(events: list[Event], position: int) -> list[Event]:
    """The events that follow event ``position``, in order, each once, up to the first final one."""
    out: list[Event] = []
    for event in sorted(events, key=_seq):
        if event.seq <= position:
            continue  # seen already (handed over twice)
        out.append(event)
        position = event.seq
        if event.kind in TERMINAL:
            break  # exactly one final event per listener
    return out


def _seq(event: Event) -> int:
    return event.seq


def _parse(entries: list[Any]) -> list[Event]:
    """Stream entries as a Lua script returns them: ``[id, [b"d", json]]``."""
    return [Event.from_json(int(entry_id[2:]) - 1, fields[1].decode()) for entry_id, fields in entries]


def _failure_event(outage: _Outage, exc: BaseException) -> Event:
    """The end of a listener that could not read on: the pool ran dry, or Redis went away."""
    if isinstance(exc, PoolExhausted):
        return Event(-1, Kind.ERROR, Overloaded())
    if isinstance(exc, _OUTAGE):
        outage.failed(exc)
    return _lost_event("The event store is unreachable; resume with Last-Event-ID shortly.")


def _lost_event(message: str) -> Event:
    # seq -1: sent without an SSE id, so the client's Last-Event-ID stays the last real event.
    return Event(-1, Kind.ERROR, GenerationLost(message))
