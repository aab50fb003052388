"""Generations whose worker died, and the keys Redis keeps: nothing is held forever.

- A generation whose owner is gone is ended (``generation_lost``, numbered
  after the last event in Redis) by whoever notices first, listener or not:
  with no listener anywhere, the janitor of a surviving worker ends it within
  its lease and a margin, and the room it held is free again (issue: three
  orphans with ``SLUICE_MAX_GENERATIONS=3`` refused every request for a day).
- Admission alone frees that room too, before any janitor has looked.
- Every Redis key Sluice writes expires or is trimmed: the keys without a TTL
  do not grow over 100 generations of every kind.

Each test starts its own ``redis-server``.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import redis
import requests

from sluice import events
from sluice.broker.redis_broker import RedisBroker
from sluice.errors import BrokerUnavailable, Overloaded
from sluice.events import Event
from sluice.provider import Finish
from tests.conftest import wait_until
from tests.sse_client import open_events, read_events

pytestmark = pytest.mark.slow

LEASE_S = 1.0
# The lease runs out at most LEASE_S after the last renewal; a janitor looks every third of it.
# The rest is room for a loaded test machine.
ORPHANS_END_WITHIN_S = LEASE_S + 2.0
SHORT = {"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]}
LONG = {"model": "demo/echo", "messages": [{"role": "user", "content": "w " * 2000}]}


def start(url: str, payload: dict) -> dict:
    r = requests.post(url + "/api/generations", json=payload, timeout=10)
    assert r.status_code == 202, r.text
    return r.json()


def test_orphans_end_within_their_lease_with_no_listener_and_free_admission(start_server, redis_server):
    settings = {
        "SLUICE_REDIS_URL": redis_server.url,
        "SLUICE_MAX_GENERATIONS": "3",
        "SLUICE_LEASE_S": str(LEASE_S),
        "SLUICE_DEMO_DELAY_MS": "50",
    }
    owner = start_server(**settings)
    survivor = start_server(**settings)
    store = redis.Redis.from_url(redis_server.url)
    orphans = [start(owner.url, LONG)["id"] for _ in range(3)]
    wait_until(lambda: all(store.xlen(f"sluice:gen:{g}:events") > 3 for g in orphans), 10, "all three under way")
    # Full: every request is refused, stream: false included (the setup).
    r = requests.post(survivor.url + "/api/chat", json={**SHORT, "stream": False}, timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"

    os.killpg(owner.process.pid, signal.SIGKILL)  # the whole host goes; nobody listens, nobody asks
    killed = time.monotonic()
    wait_until(
        lambda: all(store.hget(f"sluice:gen:{g}", "status") == b"error" for g in orphans),
        ORPHANS_END_WITHIN_S + 5,
        "the orphans to end",
    )
    took = time.monotonic() - killed
    assert took < ORPHANS_END_WITHIN_S, f"the orphans ended {took:.2f}s after the kill"
    assert not store.zscore("sluice:running", orphans[0])

    # Each ends with one generation_lost, numbered after the last event Redis holds.
    for generation in orphans:
        seen = read_events(f"{survivor.url}/api/generations/{generation}/events")
        assert [e["seq"] for e in seen] == list(range(len(seen)))
        assert [e["type"] for e in seen].count("error") == 1 and seen[-1]["error"]["code"] == "generation_lost"
        assert requests.get(f"{survivor.url}/api/generations/{generation}", timeout=5).json()["events"] == len(seen)

    # Admission frees: the 503s stop and new requests are served.
    r = requests.post(survivor.url + "/api/chat", json={**SHORT, "stream": False}, timeout=10)
    assert r.status_code == 200 and r.json()["finish_reason"] == "stop", r.text
    fresh = start(survivor.url, SHORT)
    assert read_events(survivor.url + fresh["events_url"])[-1]["type"] == "done"
    assert "Traceback" not in survivor.log()
    assert survivor.log().count("lost: its worker stopped renewing the lease") == 3


def test_admission_ends_lost_generations_to_make_room(redis_server):
    dead = RedisBroker(redis_server.url, max_generations=3, lease_s=1.0)  # never renews: as good as dead
    for generation in ("gen_a", "gen_b"):
        dead.create(generation, "demo/echo")
        dead.publish(generation, Event.make(0, events.start(generation, "demo/echo")))
    alive = RedisBroker(redis_server.url, max_generations=3, lease_s=5)
    alive.create("gen_c", "demo/echo")
    store = redis.Redis.from_url(redis_server.url)
    with pytest.raises(Overloaded):  # their leases are still good: no room
        alive.create("gen_x", "demo/echo")
    wait_until(lambda: not store.exists("sluice:gen:gen_a:lease", "sluice:gen:gen_b:lease"), 5, "the leases to end")
    alive.create("gen_d", "demo/echo")  # no janitor ran: admission itself ended the lost ones
    lost = [g for g in ("gen_a", "gen_b") if store.exists(f"sluice:gen:{g}")]
    assert len(lost) == 1  # the other was evicted to make room, the oldest finished first
    assert alive.state(lost[0]) == {"id": lost[0], "model": "demo/echo", "status": "error", "events": 2}
    last = store.xrevrange(f"sluice:gen:{lost[0]}:events", count=1)[0]
    assert last[0] == b"0-2"  # numbered after the start event, never over it
    assert json.loads(last[1][b"d"])["error"]["code"] == "generation_lost"

    # The dead owner hears of it at its next write; the live one ends its generations.
    def refused(broker: RedisBroker, generation: str) -> bool:
        try:
            broker.publish(generation, Event.make(1, events.delta("late ")))
        except BrokerUnavailable:
            return True
        return False

    for generation in ("gen_a", "gen_b"):
        wait_until(lambda g=generation: refused(dead, g), 5, "the dead owner to hear of it")
    for generation in ("gen_c", "gen_d"):
        alive.publish(generation, Event.make(0, events.start(generation, "demo/echo")))
        alive.publish(generation, Event.make(1, events.done(Finish("stop"))))
    wait_until(lambda: all(alive.state(g)["status"] == "done" for g in ("gen_c", "gen_d")), 5, "the ends")


def test_listener_counts_never_make_a_key_that_does_not_expire(redis_server):
    broker = RedisBroker(redis_server.url)
    broker.attach("gen_gone")  # it expired (or was deleted) while a listener came and went
    broker.detach("gen_gone")
    assert redis.Redis.from_url(redis_server.url).keys("*") == []


def untimed_sizes(store: redis.Redis) -> dict[bytes, int]:
    """Every key without a TTL and the number of its members (its length for a string)."""
    size = {
        b"zset": store.zcard,
        b"hash": store.hlen,
        b"stream": store.xlen,
        b"list": store.llen,
        b"set": store.scard,
        b"string": store.strlen,
    }
    return {key: size[store.type(key)](key) for key in store.scan_iter() if store.ttl(key) == -1}


def test_keys_without_a_ttl_do_not_grow_over_100_generations(start_server, redis_server):
    srv = start_server(
        workers=2,
        SLUICE_REDIS_URL=redis_server.url,
        SLUICE_GENERATION_TTL_S="1",
        SLUICE_LEASE_S=str(LEASE_S),
        SLUICE_DEMO_DELAY_MS="1",
    )
    store = redis.Redis.from_url(redis_server.url)
    warm = start(srv.url, SHORT)
    assert read_events(srv.url + warm["events_url"])[-1]["type"] == "done"
    wait_until(lambda: not store.exists(f"sluice:gen:{warm['id']}"), 10, "the first generation to expire")
    before = untimed_sizes(store)

    medium = {"model": "demo/echo", "messages": [{"role": "user", "content": "w " * 300}]}
    ran = 0
    for _ in range(20):  # five kinds, twenty each
        with open_events(srv.url + "/api/chat", SHORT) as (response, stream):  # tied SSE
            assert response.status_code == 200 and json.loads(list(stream)[-1].data)["type"] == "done"
        r = requests.post(srv.url + "/v1/chat/completions", json=SHORT, timeout=10)  # /v1, stream: false
        assert r.status_code == 200, r.text
        started = start(srv.url, SHORT)  # background, followed to its end
        assert read_events(srv.url + started["events_url"])[-1]["type"] == "done"
        cancelled = start(srv.url, medium)  # background, cancelled while it runs
        assert requests.delete(f"{srv.url}/api/generations/{cancelled['id']}", timeout=10).status_code == 200
        left = start(srv.url, medium)  # a listener that leaves early; the generation runs on
        with open_events(srv.url + left["events_url"]) as (_, stream):
            next(stream)
        ran += 5
        # Every key of a generation expires: only the two indexes may go without a TTL.
        assert set(untimed_sizes(store)) <= {b"sluice:running", b"sluice:ended"}
    assert ran == 100

    def settled() -> bool:
        now = untimed_sizes(store)
        return set(now) <= set(before) and all(now[key] <= before[key] for key in now)

    wait_until(settled, 15, f"the keys without a TTL to shrink back to {before} (now {untimed_sizes(store)})")
    srv.wait_idle()
