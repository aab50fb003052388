"""Generations shared through a real redis-server: several workers, two "hosts",
a worker that dies, Redis going away and coming back, expiry.

Each test starts its own ``redis-server`` (unix socket in ``tmp_path``, no TCP
port, nothing saved), so tests never share state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import requests

from tests.conftest import wait_until
from tests.fakes import Script
from tests.sse_client import open_events, read_events, text_of

pytestmark = pytest.mark.slow


def body(model: str = "ollama/llama3") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def start(url: str, payload: dict) -> dict:
    r = requests.post(url + "/api/generations", json=payload, timeout=10)
    assert r.status_code == 202, r.text
    return r.json()


def test_several_workers_and_two_hosts_serve_listeners_and_cancels_interchangeably(
    start_server, redis_server, fake_ollama
):
    tokens = [f"{i} " for i in range(60)]
    fake_ollama.push(Script(tokens=tokens, delay_s=0.02), Script(tokens=["z "] * 1000, delay_s=0.02))
    host_a = start_server(workers=2, SLUICE_REDIS_URL=redis_server.url)
    host_b = start_server(workers=2, SLUICE_REDIS_URL=redis_server.url)
    started = start(host_a.url, body())
    # Follow it through many short connections, alternating hosts (and whichever worker accepts).
    seen: list[dict] = []
    for turn in range(200):
        host = (host_a, host_b)[turn % 2]
        headers = {"Last-Event-ID": str(seen[-1]["seq"])} if seen else {}
        with open_events(host.url + started["events_url"], headers=headers) as (response, events):
            if response.status_code == 204:
                break
            for _, event in zip(range(3), events, strict=False):  # the first three, if there are as many
                seen.append({"seq": int(event.id), **json.loads(event.data)})
        if seen[-1]["type"] == "done":
            break
    assert [e["seq"] for e in seen] == list(range(len(seen)))
    assert text_of(seen) == "".join(tokens) and seen[-1]["type"] == "done"

    # A generation started on host B is cancelled through host A: the upstream is closed.
    second = start(host_b.url, body())
    fake_ollama.wait_requests(2)
    wait_until(lambda: requests.get(f"{host_a.url}/api/generations/{second['id']}", timeout=5).json()["events"] > 2)
    cancelled = time.monotonic()
    r = requests.delete(f"{host_a.url}/api/generations/{second['id']}", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert fake_ollama.wait_disconnect(3.0) - cancelled < 1.0
    assert read_events(host_b.url + second["events_url"])[-1]["finish_reason"] == "cancelled"


def test_a_dead_worker_is_reported_as_generation_lost(start_server, redis_server, fake_ollama):
    fake_ollama.push(Script(tokens=["a "] * 1000, delay_s=0.05))
    owner = start_server(SLUICE_REDIS_URL=redis_server.url, SLUICE_LEASE_S="1")
    watcher = start_server(SLUICE_REDIS_URL=redis_server.url, SLUICE_LEASE_S="1")
    started = start(owner.url, body())
    with open_events(watcher.url + started["events_url"]) as (_, events):
        assert json.loads(next(events).data)["type"] == "start"
        os.killpg(owner.process.pid, signal.SIGKILL)  # the whole host goes, mid-generation
        killed = time.monotonic()
        last = None
        for event in events:
            last = json.loads(event.data)
    assert last is not None and last["type"] == "error" and last["error"]["code"] == "generation_lost"
    assert time.monotonic() - killed < 5.0
    state = requests.get(f"{watcher.url}/api/generations/{started['id']}", timeout=5).json()
    assert state["status"] == "error"


def test_redis_going_away_mid_stream_gives_an_error_and_recovers(start_server, redis_server, fake_ollama):
    fake_ollama.push(Script(tokens=["a "] * 1000, delay_s=0.05))
    srv = start_server(SLUICE_REDIS_URL=redis_server.url)
    started = start(srv.url, body())
    with open_events(srv.url + started["events_url"]) as (_, events):
        assert json.loads(next(events).data)["type"] == "start"
        redis_server.stop()
        ending = [json.loads(e.data) for e in events]
    assert ending[-1]["type"] == "error" and ending[-1]["error"]["code"] == "generation_lost"
    # The worker is not hung: it answers, says it is not ready, and lets the upstream go.
    assert requests.get(srv.url + "/healthz", timeout=5).status_code == 200
    assert requests.get(srv.url + "/readyz", timeout=10).status_code == 503
    fake_ollama.wait_disconnect(10.0)
    r = requests.post(srv.url + "/api/generations", json=body("demo/echo"), timeout=15)
    assert r.status_code in (500, 503)
    assert "Traceback" not in r.text
    # Redis returns: ready again, and new generations work end to end.
    redis_server.start()
    wait_until(lambda: requests.get(srv.url + "/readyz", timeout=10).status_code == 200, 15, "ready again")
    again = start(srv.url, body("demo/echo"))
    assert read_events(srv.url + again["events_url"])[-1]["type"] == "done"


def test_finished_generations_expire(start_server, redis_server):
    srv = start_server(SLUICE_REDIS_URL=redis_server.url, SLUICE_GENERATION_TTL_S="1")
    started = start(srv.url, body("demo/echo"))
    assert read_events(srv.url + started["events_url"])[-1]["type"] == "done"
    wait_until(
        lambda: requests.get(f"{srv.url}/api/generations/{started['id']}", timeout=5).status_code == 404,
        10,
        "the generation to expire",
    )


def test_memory_bounds_hold_with_redis(start_server, redis_server, fake_ollama):
    srv = start_server(SLUICE_REDIS_URL=redis_server.url, SLUICE_MAX_GENERATIONS="2")
    fake_ollama.push(Script(hang_after=0), Script(hang_after=0))
    hung = [start(srv.url, body()) for _ in range(2)]
    r = requests.post(srv.url + "/api/generations", json=body("demo/echo"), timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded" and r.headers["Retry-After"]
    for generation in hung:
        state = requests.delete(f"{srv.url}/api/generations/{generation['id']}", timeout=5).json()
        assert state["status"] == "cancelled"
    fresh = start(srv.url, body("demo/echo"))
    assert read_events(srv.url + fresh["events_url"])[-1]["type"] == "done"
    assert requests.get(f"{srv.url}/api/generations/{hung[0]['id']}", timeout=5).status_code == 404


def test_several_workers_without_redis_are_refused_at_start(tmp_path):
    from tests.conftest import GUNICORN, ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    result = subprocess.run(
        [GUNICORN, "-c", "gunicorn.conf.py", "--workers", "2", "--bind", "127.0.0.1:0", "wsgi:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "SLUICE_REDIS_URL" in result.stdout + result.stderr
