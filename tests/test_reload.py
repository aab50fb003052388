"""A graceful reload (``kill -HUP``, ``systemctl reload``) costs no running answer.

gunicorn starts new workers and stops the old ones; with Redis and two
workers, an old worker keeps producing its generations for the drain window
(``SLUICE_DRAIN_S``) while the new ones serve new requests, and a listener
that reconnects as a browser would (``Last-Event-ID``) follows through Redis:

- a 40-second background generation, reloaded under it, ends ``done`` with
  every word, each event once and in order (in the issue all of them ended
  ``server_shutting_down`` at gunicorn's graceful timeout);
- a tied stream longer than the window ends at the window's end with today's
  clean ``server_shutting_down``, not before;
- the old workers then exit.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis
import requests
from httpx_sse import EventSource

from providers.demo import answer
from sluice.config import SETTINGS
from tests.conftest import ROOT, wait_until

DRAIN_S = 45
WORDS = [f"w{n}" for n in range(200)]  # 200 words at 200 ms: a 40-second answer
DELAY_MS = 200


def workers(server) -> set[int]:
    pid = server.process.pid
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


class Browser(threading.Thread):
    """Follows a generation as EventSource does: on a cut or a plain end, again with ``Last-Event-ID``."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.events: list[tuple[int, dict]] = []
        self.connections = 0
        self.blip = threading.Event()  # set: drop the connection once (a network blip)

    def run(self) -> None:
        while True:
            headers = {"Last-Event-ID": str(self.events[-1][0])} if self.events else {}
            self.connections += 1
            try:
                with httpx.Client(timeout=30) as client:
                    with client.stream("GET", self.url, headers=headers) as response:
                        if response.status_code == 204:
                            return  # nothing left: EventSource stops
                        for event in EventSource(response).iter_sse():
                            if not event.data:
                                continue
                            data = json.loads(event.data)
                            self.events.append((int(event.id) if event.id else -1, data))
                            if data["type"] in ("done", "error"):
                                return
                            if self.blip.is_set():
                                self.blip.clear()
                                break
            except (httpx.HTTPError, OSError):
                pass  # cut: reconnect

    @property
    def text(self) -> str:
        return "".join(data["content"] for _, data in self.events if data["type"] == "delta")


class Tied(threading.Thread):
    """One tied SSE stream (``POST /api/chat``), read to its end."""

    def __init__(self, url: str, body: dict) -> None:
        super().__init__(daemon=True)
        self.url, self.body = url, body
        self.events: list[tuple[float, int, dict]] = []

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            with client.stream("POST", self.url, json=self.body) as response:
                for event in EventSource(response).iter_sse():
                    if event.data:
                        self.events.append((time.monotonic(), int(event.id), json.loads(event.data)))


def graceful_timeout(monkeypatch: pytest.MonkeyPatch, drain_s: str) -> int:
    """gunicorn's ``graceful_timeout`` as ``gunicorn.conf.py`` sets it for ``SLUICE_DRAIN_S=drain_s``."""
    with monkeypatch.context() as patch:
        patch.setenv("SLUICE_DRAIN_S", drain_s)
        graceful: int = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["graceful_timeout"]
    return graceful


@pytest.mark.slow
def test_a_reload_lets_a_background_generation_finish_while_its_listener_moves_on(
    start_server, redis_server, monkeypatch
):
    srv = start_server(
        workers=2,
        # The tests' servers have a graceful timeout of one second: this one has the config's.
        gunicorn_args=("--graceful-timeout", str(graceful_timeout(monkeypatch, str(DRAIN_S)))),
        SLUICE_REDIS_URL=redis_server.url,
        SLUICE_DRAIN_S=str(DRAIN_S),
        SLUICE_DEMO_DELAY_MS=str(DELAY_MS),
    )
    old = workers(srv)
    store = redis.Redis.from_url(redis_server.url)
    body = {"model": "demo/echo", "messages": [{"role": "user", "content": " ".join(WORDS)}]}
    # (Connection: close: an idle keep-alive connection would hold an old worker until
    # gunicorn's graceful timeout; nginx closes its idle ones sooner, see docs/deploy.md.)
    r = requests.post(srv.url + "/api/generations", json=body, headers={"Connection": "close"}, timeout=10)
    assert r.status_code == 202, r.text
    generation = r.json()["id"]
    browser = Browser(srv.url + r.json()["events_url"])
    browser.start()
    longer = {"model": "demo/echo", "messages": [{"role": "user", "content": " ".join(WORDS * 2)}]}
    tied = Tied(srv.url + "/api/chat", longer)  # 80 seconds: longer than the window
    tied.start()
    wait_until(lambda: len(browser.events) > 5 and len(tied.events) > 5, 30, "both streams to be under way")

    os.kill(srv.process.pid, signal.SIGHUP)
    reloaded = time.monotonic()
    wait_until(lambda: len(workers(srv) - old) == 2, 30, "two new workers")
    # New requests are served meanwhile (by the new workers: the old ones accept no more).
    short = {"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    wait_until(lambda: requests.post(srv.url + "/api/chat", json=short, timeout=10).status_code == 200, 10, "a 200")
    browser.blip.set()  # the browser's connection drops: it comes back through a new worker

    browser.join(DRAIN_S + 20)
    assert not browser.is_alive(), "the background generation never ended"
    ids = [event_id for event_id, _ in browser.events]
    assert ids == list(range(len(ids))), "a gap or a repeat"
    assert browser.events[-1][1]["type"] == "done", browser.events[-1]
    assert browser.text == answer(" ".join(WORDS))  # every word, once
    assert browser.connections >= 2
    assert store.hget(f"sluice:gen:{generation}", "status") == b"done"
    owner_pid = int(store.hget(f"sluice:gen:{generation}", "owner").split(b":")[1])
    assert owner_pid in old  # an old worker produced it to the end

    tied.join(DRAIN_S + 20)
    assert not tied.is_alive()
    at, _, last = tied.events[-1]
    assert [event_id for _, event_id, _ in tied.events] == list(range(len(tied.events)))
    assert last["type"] == "error" and last["error"]["code"] == "server_shutting_down", last
    assert at - reloaded > DRAIN_S - 2, f"the tied stream was cut {at - reloaded:.1f}s after the reload"

    wait_until(lambda: not workers(srv) & old, 15, "the old workers to exit")
    assert "Traceback" not in srv.log()


def test_gunicorns_graceful_timeout_follows_the_drain_window(monkeypatch):
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["graceful_timeout"] == SETTINGS["SLUICE_DRAIN_S"][0] + 5
    assert graceful_timeout(monkeypatch, "600") == 605
