"""A Redis outage is a dependency outage, not a bug: two gunicorn workers, a real
``redis-server`` that is killed, or stopped (SIGSTOP: it holds its sockets and
answers nothing), and then comes back.

- in-flight streams (one tied to its connection, one background generation
  followed by id) end with ``generation_lost`` within the broker's timeout;
- new requests that need the broker get ``503 broker_unavailable`` with
  ``Retry-After``; ``stream: false`` and ``/v1`` are answered by the worker alone;
- ``/readyz`` says 503; the log holds no trace and no ERROR, and says it once
  per worker per outage;
- the rate limit (kept in the same Redis) counts in memory meanwhile;
- everything works again once Redis is back, without a restart.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import requests

from tests.conftest import wait_until
from tests.sse_client import open_events

pytestmark = pytest.mark.slow

TIMEOUT_S = 1.0  # SLUICE_REDIS_TIMEOUT_S for these servers
# A listener's read blocks up to a second by design before the timeout starts; then some slack.
ENDS_WITHIN_S = TIMEOUT_S + 1.0 + 1.5
LONG = {"model": "demo/echo", "messages": [{"role": "user", "content": "w " * 2000}]}
SHORT = {"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]}


class Follower(threading.Thread):
    """Reads one SSE stream to its end, noting when each event came."""

    def __init__(self, url: str, body: dict | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.body = url, body
        self.events: list[tuple[float, dict]] = []
        self.started = threading.Event()
        self.status: int | None = None

    def run(self) -> None:
        with open_events(self.url, self.body, timeout=60) as (response, events):
            self.status = response.status_code
            for event in events:
                self.events.append((time.monotonic(), json.loads(event.data)))
                self.started.set()
        self.started.set()

    def last(self) -> tuple[float, dict]:
        self.join(30)
        assert not self.is_alive(), "the stream never ended"
        return self.events[-1]


def in_flight(url: str) -> list[Follower]:
    """A tied stream and a background generation followed by id, both well under way."""
    r = requests.post(url + "/api/generations", json=LONG, timeout=10)
    assert r.status_code == 202, r.text
    followers = [Follower(url + "/api/chat", LONG), Follower(url + r.json()["events_url"])]
    for follower in followers:
        follower.start()
    for follower in followers:
        assert follower.started.wait(10) and follower.status == 200
    return followers


def assert_outage_answers(url: str) -> None:
    for path, body in (("/api/generations", SHORT), ("/api/chat", SHORT)):
        r = requests.post(url + path, json=body, timeout=10)
        assert r.status_code == 503, (path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "broker_unavailable" and int(r.headers["Retry-After"]) > 0
    # Nobody could follow these by id: the worker answers them alone.
    r = requests.post(url + "/api/chat", json={**SHORT, "stream": False}, timeout=10)
    assert r.status_code == 200 and r.json()["finish_reason"] == "stop", r.text
    r = requests.post(url + "/v1/chat/completions", json=SHORT, timeout=10)
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "stop", r.text
    with open_events(url + "/v1/chat/completions", {**SHORT, "stream": True}) as (response, events):
        assert response.status_code == 200
        assert [e.data for e in events][-1] == "[DONE]"
    r = requests.get(url + "/readyz", timeout=10)
    assert r.status_code == 503 and r.headers["Retry-After"]


def chat_streams(url: str) -> bool:
    with open_events(url + "/api/chat", SHORT) as (response, events):
        return response.status_code == 200 and json.loads(list(events)[-1].data)["type"] == "done"


def assert_recovers(url: str) -> None:
    wait_until(lambda: requests.get(url + "/readyz", timeout=10).status_code == 200, 15, "ready again")
    # Each worker finds out on its own (its next call, a second apart at most): then
    # every request works again, on whichever worker accepts it.
    wait_until(lambda: all(chat_streams(url) for _ in range(6)), 10, "both workers to stream again")


def assert_quiet_log(log: str, workers: int = 2) -> None:
    assert "Traceback" not in log and "ERROR" not in log, log
    assert 1 <= log.count("redis unreachable") <= workers, log


@pytest.mark.parametrize("outage", ["killed", "hung"])
def test_redis_outage_ends_streams_with_generation_lost_and_refuses_with_503(start_server, redis_server, outage):
    srv = start_server(
        workers=2,
        SLUICE_REDIS_URL=redis_server.url,
        SLUICE_REDIS_TIMEOUT_S=str(TIMEOUT_S),
        SLUICE_DEMO_DELAY_MS="20",
        SLUICE_RATE_LIMIT="10000/minute",
    )
    followers = in_flight(srv.url)
    pid = redis_server.process.pid
    if outage == "killed":
        redis_server.stop()
    else:
        os.kill(pid, signal.SIGSTOP)
    went = time.monotonic()
    for follower in followers:
        at, event = follower.last()
        assert event["type"] == "error" and event["error"]["code"] == "generation_lost", event
        assert at - went < ENDS_WITHIN_S, f"generation_lost after {at - went:.1f}s"
    assert_outage_answers(srv.url)
    if outage == "killed":
        redis_server.start()
    else:
        os.kill(pid, signal.SIGCONT)
    assert_recovers(srv.url)
    # The ends were counted, and every stream was counted out again.
    metrics = lambda: requests.get(srv.url + "/metrics", timeout=10).text  # noqa: E731
    assert 'outcome="generation_lost"' in metrics()
    wait_until(lambda: "sluice_active_streams 0.0" in metrics(), 10, "sluice_active_streams to be 0")
    assert_quiet_log(srv.log())
