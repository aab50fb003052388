"""The Redis broker: generations shared by every worker on every host.

::

    sluice:gen:<id>          hash   model, status, events, listeners, idle_since, owner (worker), key
    sluice:gen:<id>:events   stream one entry per event, entry id 0-(seq+1), field d = JSON
    sluice:gen:<id>:lease    string the owner's id, expires unless renewed (SLUICE_LEASE_S)
    sluice:gens / sluice:ended  sorted sets: all generations by start, finished ones by end
    sluice:cancel            pub/sub channel: "cancel this id", heard by the owner

Stream entry ids are the event numbers (+1, since 0-0 is not allowed), so a
resume is one ``XREAD`` after ``0-(after+1)``. A listener blocks in ``XREAD``
for at most a second at a time; when nothing came it checks the owner's lease,
and if the owner died it appends the ``generation_lost`` event itself, once
(a Lua script makes "still running → lost" atomic), so every listener on every
worker ends the same way. Finished generations expire after
``SLUICE_GENERATION_TTL_S``; past ``SLUICE_MAX_GENERATIONS`` the oldest finished
go first. If Redis itself goes away, a listener ends with an ``error`` event
(``generation_lost``, no id: its ``Last-Event-ID`` stays valid for a resume
once Redis is back), publishing fails the generation, and ``/readyz`` says 503.

An outage is not a bug: every call has ``SLUICE_REDIS_TIMEOUT_S`` (a hung
Redis answers nothing, so without a timeout a call would wait for the whole
outage), a refused or timed-out call raises ``BrokerUnavailable`` (``503
broker_unavailable`` before a response starts, ``generation_lost`` in a
stream), and the worker logs one WARNING when Redis stops answering and one
INFO line when it answers again, not a trace per call. While it is known to be
down, calls fail at once, except one probe a second (and every ``ping``), so
a hung Redis does not hold a greenlet and a connection per request.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from functools import wraps
from typing import Any, TypeVar

import redis

from .. import events
from ..errors import BrokerUnavailable, GenerationLost, GenerationNotFound, Overloaded
from ..events import Event

__all__ = ["RedisBroker"]

log = logging.getLogger(__name__)

_PREFIX = "sluice:"
# Running generations never outlive this without an end (a crashed owner that
# nobody listened to): a backstop, the lease does the real work.
_RUNNING_TTL_S = 24 * 3600
_POLL_S = 1.0  # longest XREAD block between two lease checks
_BATCH = 512
_PROBE_S = 1.0  # while Redis is down, at most one call a second tries it
# What an outage looks like from redis-py (refused, reset, timed out, loading).
_OUTAGE = (redis.ConnectionError, redis.TimeoutError)

_F = TypeVar("_F", bound=Callable[..., Any])

# KEYS: hash, stream, ended-zset; ARGV: seq+1, json, status, ttl, now, id
_END = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('XADD', KEYS[2], '0-' .. ARGV[1], 'd', ARGV[2])
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'events', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
return 1
"""


class _Outage:
    """Whether Redis answers, as this worker last saw it; says so once per change."""

    __slots__ = ("_on_down", "_probed", "since")

    def __init__(self, on_down: Callable[[], None]) -> None:
        self.since: float | None = None  # monotonic time of the first failure
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
            log.warning(
                "redis unreachable (%s): streams that need it end with generation_lost, "
                "new ones get 503 broker_unavailable until it answers", type(exc).__name__,
            )
            self._on_down()
        return BrokerUnavailable()

    def answered(self) -> None:
        if self.since is not None:
            log.info("redis answers again after %.1fs", time.monotonic() - self.since)
            self.since = None


def _guarded(method: _F) -> _F:
    """Raise ``BrokerUnavailable`` instead of redis-py's outage errors, and keep ``_Outage`` current."""

    @wraps(method)
    def call(self: RedisBroker, *args: Any, **kwargs: Any) -> Any:
        # Every published event passes here: while Redis answers, two attribute reads.
        outage = self.outage
        if outage.since is not None:
            outage.check()
        try:
            result = method(self, *args, **kwargs)
        except _OUTAGE as exc:
            raise outage.failed(exc) from exc
        if outage.since is not None:
            outage.answered()
        return result

    return call  # type: ignore[return-value]


def _status_of(event: Event) -> str:
    if event.type == "error":
        return "error"
    return "cancelled" if event.data.get("finish_reason") == "cancelled" else "done"


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
    ) -> None:
        self.ttl_s = int(max(1, ttl_s))
        self.max_generations = max_generations
        self.lease_s = lease_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.socket_timeout_s = socket_timeout_s
        self.outage = _Outage(self._drop_idle_connections)
        # Every call, connecting included, gives up after the timeout: a hung Redis
        # (stopped, a network partition) answers nothing, and a dead one may not
        # even refuse. redis-py does not retry these (from_url's default), so the
        # timeout bounds each call.
        self.redis = redis.Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s, health_check_interval=30,
        )
        # XREAD blocks for up to _POLL_S by design: its connections wait that much longer.
        self._blocking = redis.Redis.from_url(
            url, socket_timeout=socket_timeout_s + _POLL_S, socket_connect_timeout=socket_timeout_s,
            health_check_interval=30,
        )
        self._end = self.redis.register_script(_END)

    def _drop_idle_connections(self) -> None:
        """Forget the pooled connections: after a restart each would fail once more."""
        for client in (self.redis, self._blocking):
            try:
                client.connection_pool.disconnect(inuse_connections=False)
            except Exception:  # nothing to save here; the next call reconnects
                pass

    # -- keys ------------------------------------------------------------------

    @staticmethod
    def _hash(generation_id: str) -> str:
        return f"{_PREFIX}gen:{generation_id}"

    @staticmethod
    def _stream(generation_id: str) -> str:
        return f"{_PREFIX}gen:{generation_id}:events"

    @staticmethod
    def _lease(generation_id: str) -> str:
        return f"{_PREFIX}gen:{generation_id}:lease"

    def _forget(self, pipe: Any, generation_id: str) -> None:
        pipe.delete(self._hash(generation_id), self._stream(generation_id), self._lease(generation_id))
        pipe.zrem(f"{_PREFIX}gens", generation_id)
        pipe.zrem(f"{_PREFIX}ended", generation_id)

    # -- the producer side ---------------------------------------------------------

    @_guarded
    def create(self, generation_id: str, model: str, key: str | None = None) -> None:
        """Record a running generation owned by this worker, making room if needed.

        :raise Overloaded: every generation kept is still running.
        :raise BrokerUnavailable: Redis does not answer.
        """
        now = time.time()
        expired = self.redis.zrangebyscore(f"{_PREFIX}ended", "-inf", now - self.ttl_s)
        while self.redis.zcard(f"{_PREFIX}gens") - len(expired) >= self.max_generations:
            oldest = self.redis.zpopmin(f"{_PREFIX}ended")
            if not oldest:
                raise Overloaded()
            expired.append(oldest[0][0])
        pipe = self.redis.pipeline()
        for gone in expired:
            self._forget(pipe, gone.decode() if isinstance(gone, bytes) else gone)
        pipe.hset(
            self._hash(generation_id),
            mapping={"model": model, "status": "running", "events": 0, "listeners": 0,
                     "idle_since": repr(now), "owner": self.owner, "key": key or ""},
        )
        pipe.expire(self._hash(generation_id), _RUNNING_TTL_S)
        pipe.set(self._lease(generation_id), self.owner, px=int(self.lease_s * 1000))
        pipe.zadd(f"{_PREFIX}gens", {generation_id: now})
        pipe.execute()

    @_guarded
    def publish(self, generation_id: str, event: Event) -> None:
        """Append ``event``; the final one also sets the status and the expiry."""
        if event.type in events.TERMINAL:
            self._end(
                keys=[self._hash(generation_id), self._stream(generation_id), f"{_PREFIX}ended"],
                args=[event.seq + 1, event.json, _status_of(event), self.ttl_s, time.time(), generation_id],
            )
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self._stream(generation_id), {"d": event.json}, id=f"0-{event.seq + 1}")
        pipe.hset(self._hash(generation_id), "events", event.seq + 1)
        if event.seq == 0:
            pipe.expire(self._stream(generation_id), _RUNNING_TTL_S)
        pipe.execute()

    def renew(self, generation_ids: list[str]) -> None:
        """Extend this worker's leases (called about three times per lease period).

        Best effort: while Redis is away there is nothing to renew in, and the
        outage has been reported once already.
        """
        if not generation_ids:
            return
        try:
            self._renew(generation_ids)
        except BrokerUnavailable:
            pass

    @_guarded
    def _renew(self, generation_ids: list[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for generation_id in generation_ids:
            pipe.set(self._lease(generation_id), self.owner, px=int(self.lease_s * 1000))
        pipe.execute()

    # -- the listener side ------------------------------------------------------------

    def _state(self, generation_id: str) -> dict[bytes, bytes]:
        fields = self.redis.hgetall(self._hash(generation_id))
        if not fields:
            raise GenerationNotFound()
        return fields

    @_guarded
    def state(self, generation_id: str) -> dict[str, Any]:
        """The generation's id, model, status and number of events so far."""
        fields = self._state(generation_id)
        return {
            "id": generation_id,
            "model": fields[b"model"].decode(),
            "status": fields[b"status"].decode(),
            "events": int(fields[b"events"]),
        }

    @_guarded
    def key_of(self, generation_id: str) -> str | None:
        """The id of the API key that started it (None with keys off)."""
        return self._state(generation_id).get(b"key", b"").decode() or None

    @_guarded
    def listen(self, generation_id: str, after: int, idle_s: float) -> Iterator[list[Event] | None]:
        """Replay after ``after`` in batches, then follow live; see the module docstring."""
        self._state(generation_id)
        return self._listen(generation_id, max(after, -1), idle_s)

    def _listen(self, generation_id: str, after: int, idle_s: float) -> Iterator[list[Event] | None]:
        stream = self._stream(generation_id)
        last_id = f"0-{after + 1}"
        quiet_since = time.monotonic()
        while True:
            try:
                self.outage.check()
                reply = self._blocking.xread(
                    {stream: last_id}, count=_BATCH, block=int(min(idle_s, _POLL_S) * 1000) or 1
                )
            except (BrokerUnavailable, *_OUTAGE) as exc:
                if not isinstance(exc, BrokerUnavailable):
                    self.outage.failed(exc)
                yield [_lost_event("The event store is unreachable; resume with Last-Event-ID shortly.")]
                return
            if reply:
                batch = []
                for entry_id, fields in reply[0][1]:
                    last_id = entry_id.decode()
                    batch.append(Event.from_json(int(last_id.split("-")[1]) - 1, fields[b"d"].decode()))
                yield batch
                if batch[-1].type in events.TERMINAL:
                    return
                quiet_since = time.monotonic()
                continue
            try:
                self._check_owner(generation_id)
            except GenerationNotFound:
                return  # expired while we listened
            except _OUTAGE as exc:
                self.outage.failed(exc)
                continue  # the next XREAD reports it, at once
            if time.monotonic() - quiet_since >= idle_s:
                quiet_since = time.monotonic()
                yield None

    def _check_owner(self, generation_id: str) -> None:
        """If the generation runs but its owner's lease is gone, end it as lost."""
        fields = self._state(generation_id)
        if fields[b"status"] != b"running" or self.redis.exists(self._lease(generation_id)):
            return
        seq = int(fields[b"events"])
        lost = Event.make(seq, events.error(GenerationLost()))
        if self._end(
            keys=[self._hash(generation_id), self._stream(generation_id), f"{_PREFIX}ended"],
            args=[seq + 1, lost.json, "error", self.ttl_s, time.time(), generation_id],
        ):
            log.warning("generation %s lost: its worker stopped renewing the lease", generation_id)

    # -- listeners, cancel, health ------------------------------------------------------

    @_guarded
    def attach(self, generation_id: str) -> None:
        """Count a listener in."""
        pipe = self.redis.pipeline()
        pipe.hincrby(self._hash(generation_id), "listeners", 1)
        pipe.hset(self._hash(generation_id), "idle_since", "")
        pipe.execute()

    def detach(self, generation_id: str) -> None:
        """Count a listener out; the last one out starts the idle clock."""
        try:
            self._detach(generation_id)
        except BrokerUnavailable:
            pass  # reported once; the count is lost with the outage, the lease still rules

    @_guarded
    def _detach(self, generation_id: str) -> None:
        left = self.redis.hincrby(self._hash(generation_id), "listeners", -1)
        if left <= 0:
            self.redis.hset(self._hash(generation_id), mapping={"listeners": 0, "idle_since": repr(time.time())})

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
                pubsub = self._blocking.pubsub(ignore_subscribe_messages=True)
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
        except _OUTAGE as exc:
            self.outage.failed(exc)
            return False
        except redis.RedisError:
            return False
        self.outage.answered()
        return answered


def _lost_event(message: str) -> Event:
    # seq -1: sent without an SSE id, so the client's Last-Event-ID stays the last real event.
    return Event.make(-1, events.error(GenerationLost(message)))
