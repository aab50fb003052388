"""One writer and one reader per worker, shared by all its streams (the Redis broker's I/O).

::

    stream greenlets ──create,──▶ Writer: pending batch ──one EVALSHA per flush──▶ Redis
                       publish       (every SLUICE_REDIS_FLUSH_MS,                 │ PUBLISH sluice:new
         (wait only for their        at once for a start or an end)                ▼ "id id id" (followed ones)
          start and their end)
    listener greenlets ◀──fan out── Reader: one SUBSCRIBE, one XREAD over the dirty streams

*Group commit.* ``Writer.create`` puts a new generation in the pending batch,
asks for a flush at once and waits for it: starts that come together share one
round trip, and "no room" is still known before the response begins.

*Write behind, durable before delivery.* ``Writer.publish`` appends the
event to the worker's pending batch and returns: a producer never waits for
Redis. One task sends everything every stream produced since its last flush
as one Lua call (XADD per event, and for a final event the status, the
expiry and the ``ended`` set, atomically with the check that the generation
still runs), then tells the broker how far each generation is durable
(``on_flushed``): only then do its listeners get those events, so an event a
client has seen is in Redis. A final event's flush goes at once rather than
after the linger. At most ``max_pending`` events wait; past it producers
wait for the flush (backpressure, not memory). Events Redis refused (another
worker ended the generation as lost) are reported with ``on_refused``;
events that could not be written (an outage) with ``on_failed``. If the
worker dies, what was pending is lost with it, but no client saw it: the
lease expires and listeners elsewhere end with ``generation_lost`` numbered
after the last event that reached Redis, the last one any client saw.

*One reader.* A listener reads what is already there itself (one round trip
per ``512`` events), then follows live through the reader: the flush script
names, on one pub/sub channel, the generations that got events and have a
follower somewhere; the reader of each worker takes those its listeners
follow and reads them in one ``XREAD``, parses each event once and hands it
to every listener of that generation. Once a second it also looks at the
followed generations that were quiet (``SWEEP``, one call for all of them):
what a lost notification did not bring, whether one ended or was deleted, and
whether its owner's lease is gone (then it ends it as lost). A listener
itself never waits on Redis once it has caught up: it waits for the reader.

*A hung Redis.* A stopped Redis (or a partition) answers nothing and refuses
nothing, so only a request that gets no answer reveals it, and a call's own
timeout runs from when that call began. While this worker runs generations
or has listeners, the ``Watchdog`` pings Redis a few times per
``SLUICE_REDIS_TIMEOUT_S`` and a ticker deadline declares the outage when a
ping is waiting and Redis has answered nothing for ``SLUICE_REDIS_TIMEOUT_S``:
every listener and generation of the worker then ends within the timeout
(plus the ticker's lateness) of the moment Redis stopped, not a poll period
and a call's timeout later.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from .. import tasks
from ..errors import BrokerUnavailable, Overloaded
from ..events import TERMINAL, Event, Kind
from ..hotpath import Signal
from ..ticker import Deadline, Ticker
from .redis_lua import FLUSH

__all__ = ["NOTIFY_CHANNEL", "Reader", "Subscription", "Watchdog", "Writer"]

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "sluice:new"
_OUTAGE = (redis.ConnectionError, redis.TimeoutError)

_SHA = hashlib.sha1(FLUSH.encode()).hexdigest().encode()


def _status_of(event: Event) -> str:
    if event.kind is Kind.ERROR:
        return "error"
    return "cancelled" if event.piece.reason == "cancelled" else "done"


class _Batch:
    __slots__ = ("count", "creates", "done", "events", "failed", "full")

    def __init__(self) -> None:
        self.events: dict[str, list[Event]] = {}
        self.count = 0
        self.creates: list[bytes] = []  # id, model, key, meta for each new generation
        self.full: set[str] = set()  # new generations refused: no room
        self.done = threading.Event()
        self.failed = False


class Writer:
    """The worker's write-behind queue to Redis; see the module docstring."""

    def __init__(
        self,
        client: redis.Redis,
        outage: Any,
        ttl_s: int,
        running_ttl_s: int,
        owner: str,
        lease_s: float,
        max_generations: int,
        lost_json: str,
        linger_s: float = 0.005,
        max_pending: int = 100_000,
        wait_s: float = 5.0,
        on_flushed: Callable[[str, int], None] = lambda generation_id, count: None,
        on_refused: Callable[[str], None] = lambda generation_id: None,
        on_failed: Callable[[str], None] = lambda generation_id: None,
    ) -> None:
        self._client = client
        self._conn: Any = None  # the writer's own connection, held for good
        self._epoch = 0  # the outage count when it was last known good
        self._outage = outage
        self._ttl = b"%d" % ttl_s
        self._running_ttl = b"%d" % running_ttl_s
        self._owner = owner.encode()
        self._lease_ms = b"%d" % int(lease_s * 1000)
        self._max_generations = b"%d" % max_generations
        self._lost = lost_json.encode()  # the generation_lost event, for generations admission finds lost
        self.linger_s = linger_s
        self.max_pending = max(1, max_pending)
        self._wait_s = wait_s  # longest a start waits for its flush (a hung Redis: the timeout, twice)
        self._batch = _Batch()
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._lock = threading.Lock()  # publishers in threads (flask run); uncontended under gevent
        self._on_flushed = on_flushed
        self._on_refused = on_refused
        self._on_failed = on_failed
        self._task: tasks.Task | None = None

    def create(self, generation_id: str, model: str, key: str | None, meta: str | None = None) -> None:
        """Record a new running generation owned by this worker, with the next flush (sent at once).

        Stream starts that come together share one round trip (group commit).

        :raise Overloaded: Redis keeps ``max_generations`` running ones already.
        :raise BrokerUnavailable: Redis does not answer.
        """
        if self._outage.since is not None:
            self._outage.check()  # one probe a second gets through, as a flush of its own
        with self._lock:
            batch = self._batch
            batch.creates += (generation_id.encode(), model.encode(), (key or "").encode(), (meta or "").encode())
            batch.count += 1
            first = batch.count == 1
        self._kick(first, urgent=True)
        if not batch.done.wait(self._wait_s) or batch.failed:
            raise BrokerUnavailable()
        if generation_id in batch.full:
            raise Overloaded()

    def _kick(self, first: bool, urgent: bool) -> None:
        if first:
            if self._task is None:
                self._task = tasks.spawn(self._run)
            self._wake.set()
        if urgent:
            self._urgent.set()

    def publish(self, generation_id: str, event: Event) -> None:
        """Queue ``event``; ``on_flushed`` (or ``on_refused``, ``on_failed``) tells how it went."""
        if self._outage.since is not None:
            self._on_failed(generation_id)  # known down: this generation cannot go on
            return
        with self._lock:
            batch = self._batch
            queued = batch.events.get(generation_id)
            if queued is None:
                batch.events[generation_id] = [event]
            else:
                queued.append(event)
            batch.count += 1
            first = batch.count == 1
        self._kick(first, event.kind in TERMINAL)
        if batch.count >= self.max_pending:
            batch.done.wait(self._wait_s)  # backpressure: Redis is slower than the streams

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if not self._urgent.is_set():
                self._urgent.wait(self.linger_s)
            self._urgent.clear()
            with self._lock:
                batch, self._batch = self._batch, _Batch()
            refused: set[str] = set()
            try:
                if batch.count:
                    refused = self._send(batch)
            except Exception as exc:
                batch.failed = True
                if isinstance(exc, _OUTAGE):
                    self._outage.failed(exc)
                elif not isinstance(exc, BrokerUnavailable):
                    log.warning("could not write %d events to redis: %s", batch.count, type(exc).__name__)
                for generation_id in batch.events:
                    self._on_failed(generation_id)
            else:
                for generation_id, queued in batch.events.items():
                    if generation_id in refused:
                        self._on_refused(generation_id)
                    else:
                        self._on_flushed(generation_id, queued[-1].seq + 1)
            finally:
                batch.done.set()

    def _send(self, batch: _Batch) -> set[str]:
        """One EVALSHA for the whole batch, packed here: one buffer, one ``sendall``; the refused ids."""
        if not batch.creates:  # a create checked already: it is this second's probe
            self._outage.check()  # known down: fail at once (one probe a second)
        args: list[bytes] = [
            b"EVALSHA",
            _SHA,
            b"0",
            repr(time.time()).encode(),
            self._ttl,
            self._running_ttl,
            self._max_generations,
            self._lease_ms,
            self._owner,
            self._lost,
            b"%d" % (len(batch.creates) // 4),
            *batch.creates,
        ]
        append = args.append
        for generation_id, queued in batch.events.items():
            last = queued[-1]
            append(generation_id.encode())
            append(b"%d" % (queued[0].seq + 1))
            append(b"%d" % len(queued))
            append(_status_of(last).encode() if last.kind in TERMINAL else b"")
            append("\n".join([event.json for event in queued]).encode())
        payload = b"".join([b"*%d\r\n" % len(args), *[b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args]])
        try:
            reply = self._call(payload)
        except redis.exceptions.NoScriptError:  # a restarted (or flushed) Redis forgot the script
            self._client.script_load(FLUSH)
            reply = self._call(payload)
        self._outage.answered()
        full, refused, lost = reply
        for generation_id in lost:  # admission found no room and ended these to make some
            log.warning("generation %s lost: its worker stopped renewing the lease", generation_id.decode())
        if full:
            batch.full.update(r.decode() for r in full)
        return {r.decode() for r in refused}

    def _call(self, payload: bytes) -> Any:
        conn = self._conn
        if conn is None:
            conn = self._conn = self._client.connection_pool.get_connection()
        if self._epoch != self._outage.count:  # held across an outage: start afresh
            self._epoch = self._outage.count
            conn.disconnect()
        try:
            try:
                conn.send_packed_command([payload], check_health=False)
            except redis.ConnectionError:
                # A connection from before a Redis restart fails on its first write; nothing
                # ran (Redis runs whole commands only), so one fresh connection may try again.
                conn.disconnect()
                conn.send_packed_command([payload], check_health=False)
            reply = conn.read_response()
        except (*_OUTAGE, OSError):
            conn.disconnect()  # the next flush connects again
            raise
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply


class Subscription:
    """One listener's mailbox at the reader."""

    __slots__ = ("broken", "pending", "stopped", "wake")

    def __init__(self, wake: Signal | None = None) -> None:
        self.pending: list[Event] = []
        self.wake = wake or Signal()
        self.broken = False  # Redis is unreachable: end with generation_lost
        self.stopped = False  # nothing more will come than ``pending`` (it ended, went, or the worker stops)


class _Follow:
    __slots__ = ("cursor", "fed", "subs")

    def __init__(self) -> None:
        self.cursor: str | None = None  # last entry id read for these listeners; None until one caught up
        self.subs: set[Subscription] = set()
        self.fed = 0.0  # when it last got events or was swept (monotonic)


#: ``check(pairs)``: the ``SWEEP`` reply for ``[(generation id, first entry id), …]``.
Sweep = Callable[[list[tuple[str, str]]], list[Any]]


class Reader:
    """The worker's one subscriber and reader for all its listeners; see the module docstring."""

    def __init__(
        self,
        pubsub_client: redis.Redis,
        read_client: redis.Redis,
        outage: Any,
        stream_key: Callable[[str], str],
        sweep: Sweep,
        batch: int = 512,
        poll_s: float = 1.0,
    ) -> None:
        self._pubsub_client = pubsub_client
        self._read = read_client
        self._outage = outage
        self._stream_key = stream_key
        self._sweep_call = sweep
        self._batch = batch
        self._poll_s = poll_s
        self.follows: dict[str, _Follow] = {}
        self.closed = False  # the worker stops: no listener follows anything any more
        self._dirty: set[str] = set()
        self._kick = threading.Event()
        self._task: tasks.Task | None = None
        self.lock = threading.Lock()  # around the subscriptions' mailboxes (threads; free under gevent)

    def follow(self, generation_id: str, wake: Signal | None = None) -> Subscription:
        """Start handing ``generation_id``'s new events to a new subscription (woken through ``wake``)."""
        sub = Subscription(wake)
        with self.lock:
            follow = self.follows.get(generation_id)
            if follow is None:
                follow = self.follows[generation_id] = _Follow()
            follow.subs.add(sub)
            if self._task is None:
                self._task = tasks.spawn(self._run)
        if self.closed:
            sub.stopped = True
        self._kick.set()
        return sub

    def caught_up(self, generation_id: str, last_id: str) -> None:
        """A listener read everything up to ``last_id`` itself: the reader goes on from there."""
        follow = self.follows.get(generation_id)
        if follow is not None and follow.cursor is None:
            follow.cursor = last_id
            follow.fed = time.monotonic()

    def unfollow(self, generation_id: str, sub: Subscription) -> None:
        with self.lock:
            follow = self.follows.get(generation_id)
            if follow is None:
                return
            follow.subs.discard(sub)
            if not follow.subs:
                del self.follows[generation_id]
                self._dirty.discard(generation_id)

    def break_all(self) -> None:
        """Redis is unreachable: every listener ends with ``generation_lost``."""
        self._end_all(broken=True)

    def close(self) -> None:
        """The worker stops: every listener ends where it is, without an end (its client resumes elsewhere)."""
        self.closed = True
        self._end_all(broken=False)

    def _end_all(self, broken: bool) -> None:
        with self.lock:
            subs = [sub for follow in self.follows.values() for sub in follow.subs]
        for sub in subs:
            if broken:
                sub.broken = True
            else:
                sub.stopped = True
            sub.wake.set()

    def _run(self) -> None:
        backoff = 0.1
        pubsub: Any = None
        next_sweep = 0.0
        while True:
            if not self.follows:
                if pubsub is not None:  # nobody to read for: give the connection back
                    _close(pubsub)
                    pubsub = None
                self._kick.clear()
                if not self.follows:
                    self._kick.wait()
                continue
            try:
                if pubsub is None:
                    pubsub = self._pubsub_client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                    pubsub.subscribe(NOTIFY_CHANNEL)
                    # Whatever was published before this subscription is read now.
                    self._dirty.update(self.follows)
                    backoff = 0.1
                wait = 0.0 if self._dirty else max(0.0, min(self._poll_s, next_sweep - time.monotonic()))
                message = pubsub.get_message(timeout=wait)
                while message is not None:
                    if message.get("type") == "message":
                        follows = self.follows
                        for raw in message["data"].split(b" "):
                            generation_id = raw.decode()
                            if generation_id in follows:
                                self._dirty.add(generation_id)
                    message = pubsub.get_message(timeout=0)
                if self._dirty:
                    self._fetch()
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + self._poll_s
                    self._sweep(now)
            except _OUTAGE as exc:
                self._outage.failed(exc)  # ends every listener (the broker's on_down)
                if pubsub is not None:
                    _close(pubsub)
                    pubsub = None
                self.break_all()
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:
                # Not an outage (a reply it did not expect): the sweep finds what was
                # missed within a second, and the reader starts afresh.
                log.warning("redis reader: %s; reconnecting", type(exc).__name__, exc_info=exc)
                if pubsub is not None:
                    _close(pubsub)
                    pubsub = None
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _fetch(self) -> None:
        """One XREAD over the dirty streams; each event parsed once, handed to every listener of it."""
        streams: dict[Any, Any] = {}
        ids: dict[str, str] = {}
        for generation_id in self._dirty:
            follow = self.follows.get(generation_id)
            if follow is not None and follow.cursor is not None:
                key = self._stream_key(generation_id)
                streams[key] = follow.cursor
                ids[key] = generation_id
        self._dirty.clear()
        if not streams:
            return
        reply: Any = self._read.xread(streams, count=self._batch)
        self._outage.answered()
        if isinstance(reply, dict):  # RESP3 answers a map
            reply = reply.items()
        for key, entries in reply or ():
            generation_id = ids[key.decode() if isinstance(key, bytes) else key]
            follow = self.follows.get(generation_id)
            if follow is None or not entries:
                continue
            batch = [Event.from_json(int(entry_id[2:]) - 1, fields[b"d"].decode()) for entry_id, fields in entries]
            self._hand_out(follow, batch, entries[-1][0].decode())
            if len(entries) >= self._batch:
                self._dirty.add(generation_id)  # more is waiting: read on before blocking

    def _hand_out(self, follow: _Follow, batch: list[Event], cursor: str, stop: bool = False) -> None:
        follow.cursor = cursor
        follow.fed = time.monotonic()
        with self.lock:
            subs = list(follow.subs)
            for sub in subs:
                sub.pending.extend(batch)
                if stop:
                    sub.stopped = True
        for sub in subs:
            sub.wake.set()

    def _sweep(self, now: float) -> None:
        """One ``SWEEP`` call per 256 followed generations that got nothing for a poll period."""
        due = [
            (generation_id, follow)
            for generation_id, follow in list(self.follows.items())
            if follow.cursor is not None and now - follow.fed >= self._poll_s
        ]
        for start in range(0, len(due), 256):
            chunk = due[start : start + 256]
            reply = self._sweep_call([(generation_id, _after(follow.cursor)) for generation_id, follow in chunk])
            self._outage.answered()
            for (generation_id, follow), found in zip(chunk, reply, strict=True):
                follow.fed = time.monotonic()
                if found is None:  # deleted, or expired: nothing more will come
                    self._hand_out(follow, [], follow.cursor or "", stop=True)
                    continue
                ended, entries, lost = found
                if lost:
                    log.warning("generation %s lost: its worker stopped renewing the lease", generation_id)
                batch = [Event.from_json(int(entry_id[2:]) - 1, fields[1].decode()) for entry_id, fields in entries]
                more = len(entries) >= self._batch
                cursor = entries[-1][0].decode() if entries else follow.cursor or ""
                self._hand_out(follow, batch, cursor, stop=bool(ended) and not more)
                if more:
                    self._dirty.add(generation_id)


class Watchdog:
    """Declares Redis hung when it has answered nothing for the timeout while a ping waits.

    Runs while ``needed()`` (the worker has listeners or runs generations): a
    ping every quarter of the timeout (half a second at most) on a connection
    of its own, and a ticker deadline at Redis's last answer to this worker
    (``outage.heard``: the pings, the writer's flushes, the reader's reads and
    every pooled call) plus the timeout.
    """

    def __init__(
        self, client: redis.Redis, outage: Any, ticker: Ticker, timeout_s: float, needed: Callable[[], bool]
    ) -> None:
        self._client = client
        self._outage = outage
        self._ticker = ticker
        self.timeout_s = timeout_s
        self.every_s = max(0.01, min(0.5, timeout_s / 4))
        self._needed = needed
        self._asking = False
        self._since = 0.0  # when this watch began: Redis's silence before it does not count
        self._deadline = Deadline(0.0, self._expired)
        self._task: tasks.Task | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Watch, if not watching already (it stops by itself once not needed)."""
        with self._lock:
            if self._task is None:
                self._task = tasks.spawn(self._run)

    def _run(self) -> None:
        while True:
            self._since = time.monotonic()
            while self._needed():
                self._deadline.at = self._due()
                self._deadline.on_expire = self._expired  # (``Ticker.discard`` unset it)
                self._asking = True
                self._ticker.add(self._deadline)
                try:
                    self._client.ping()
                except _OUTAGE as exc:
                    self._outage.failed(exc)
                except Exception:  # not an outage (a reply it did not expect): try again
                    pass
                else:
                    self._outage.answered()
                finally:
                    self._asking = False
                    self._ticker.discard(self._deadline)
                time.sleep(self.every_s)
            with self._lock:
                if not self._needed():  # a start() between the check and here saw this task
                    self._task = None
                    return

    def _expired(self) -> None:
        if not self._asking:
            return
        due = self._due()
        if time.monotonic() >= due:
            self._outage.failed(redis.TimeoutError("redis answered nothing within the timeout"))
        else:  # it answered something else meanwhile: wait on from that answer
            self._deadline.at = due
            self._ticker.add(self._deadline)

    def _due(self) -> float:
        heard: float = self._outage.heard
        return max(heard, self._since) + self.timeout_s


def _after(cursor: str | None) -> str:
    """The first entry id after ``cursor`` (``0-N``)."""
    return f"0-{int(cursor[2:]) + 1}" if cursor else "0-0"


def _close(pubsub: Any) -> None:
    try:
        pubsub.close()
    except Exception:
        pass
