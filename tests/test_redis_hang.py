"""A hung Redis (SIGSTOP: it holds its sockets and answers nothing) ends every
listener within ``SLUICE_REDIS_TIMEOUT_S`` of the moment it stopped, plus the
ticker's lateness (0.2 s), however long ago each listener last heard from it.

The generations followed here are quiet (one token, then a model that says
nothing), their first tokens a quarter of a second apart, so their listeners
are at every point of any once-a-second cycle when Redis stops: a listener
that polled Redis on its own and then waited for its call's timeout ended up
to a poll period later (+2.96 s against a 2 s timeout in the issue).
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
from tests.fakes import Script
from tests.sse_client import open_events

pytestmark = pytest.mark.slow

TIMEOUT_S = 1.0  # SLUICE_REDIS_TIMEOUT_S
TICKER_S = 0.2  # the ticker's interval: how late a deadline may fire
ENDS_WITHIN_S = TIMEOUT_S + TICKER_S + 0.4  # and some room for a loaded test machine
LISTENERS = 4
BODY = {"model": "ollama/llama3", "messages": [{"role": "user", "content": "hi"}]}


class Follower(threading.Thread):
    """Reads one SSE stream to its end, noting when each event came."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.events: list[tuple[float, dict]] = []

    def run(self) -> None:
        with open_events(self.url, timeout=60) as (_, events):
            for event in events:
                self.events.append((time.monotonic(), json.loads(event.data)))


def test_listeners_end_within_the_redis_timeout_of_a_hang(start_server, redis_server, fake_ollama):
    settings = {"SLUICE_REDIS_URL": redis_server.url, "SLUICE_REDIS_TIMEOUT_S": str(TIMEOUT_S)}
    owner = start_server(**settings)
    watcher = start_server(**settings)
    fake_ollama.push(*[Script(tokens=["a "], first_token_delay_s=0.25 * n, hang_after=1) for n in range(LISTENERS)])
    followers = []
    for _ in range(LISTENERS):
        r = requests.post(owner.url + "/api/generations", json=BODY, timeout=10)
        assert r.status_code == 202, r.text
        followers.append(Follower(watcher.url + r.json()["events_url"]))  # listeners on another worker
        followers[-1].start()
    wait_until(lambda: all(len(f.events) == 2 for f in followers), 10, "each listener to have its token")

    os.kill(redis_server.process.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    for follower in followers:
        follower.join(15)
        assert not follower.is_alive(), "the listener never ended"
        at, last = follower.events[-1]
        assert last["type"] == "error" and last["error"]["code"] == "generation_lost", last
        assert at - stopped < ENDS_WITHIN_S, f"generation_lost {at - stopped:.2f}s after Redis stopped"
    os.kill(redis_server.process.pid, signal.SIGCONT)
    assert "Traceback" not in watcher.log() + owner.log()
