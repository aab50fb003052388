"""Tied is a policy of the run: the response that started it ends it, unless someone else listens.

Sluice under gunicorn (one gevent worker) in front of the fake Ollama: a
tied stream's client leaving closes the upstream within a second; with a
second listener attached by id it goes on to its end for that listener, and
stops once that one leaves too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.fakes import Script
from tests.sse_client import open_events

pytestmark = pytest.mark.slow

BODY = {"model": "ollama/llama3", "messages": [{"role": "user", "content": "go"}]}


class Follower:
    """A listener by id in a thread; ``leave`` closes it."""

    def __init__(self, url: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._leave = threading.Event()
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(url,), daemon=True).start()

    def _run(self, url: str) -> None:
        try:
            with open_events(url) as (_, events):
                for event in events:
                    self.events.append(json.loads(event.data))
                    if self._leave.is_set():
                        return
        finally:
            self.done.set()

    def leave(self) -> None:
        self._leave.set()
        assert self.done.wait(10)


@contextmanager
def tied_and_followed(server) -> Iterator[tuple[Iterator[Any], Follower]]:
    """A tied stream (its events) and a listener of it by id that is receiving."""
    with open_events(server.url + "/api/chat", BODY) as (response, events):
        assert response.status_code == 200
        generation = json.loads(next(events).data)["id"]
        follower = Follower(f"{server.url}/api/generations/{generation}/events")
        wait_until(lambda: len(follower.events) >= 2, 5, "the follower to attach")
        yield events, follower


def test_a_second_listener_keeps_a_tied_stream_running(server, fake_ollama):
    slow = Script(tokens=[f"t{n} " for n in range(40)], delay_s=0.05)
    fake_ollama.push(slow)
    with tied_and_followed(server) as (_, follower):
        pass
    # The first client has gone; the follower reads the whole answer.
    assert follower.done.wait(15)
    assert follower.events[-1]["type"] == "done" and follower.events[-1]["finish_reason"] == "stop"
    assert "".join(e["content"] for e in follower.events if e["type"] == "delta") == "".join(slow.tokens)
    assert fake_ollama.wait_completed(1, 5) == 1  # the upstream was never cut
    server.wait_idle()


def test_it_stops_once_the_last_listener_leaves(server, fake_ollama):
    fake_ollama.push(Script(tokens=[f"t{n} " for n in range(400)], delay_s=0.05))
    with tied_and_followed(server) as (_, follower):
        pass
    # The tied client has gone; the follower keeps it running: more tokens come.
    seen = len(follower.events)
    wait_until(lambda: len(follower.events) >= seen + 10, 5, "the answer to go on for the follower")
    assert not follower.done.is_set()
    follower.leave()
    left = time.monotonic()
    # The janitor notices within a tick (1 s) that nobody listens any more.
    assert fake_ollama.wait_disconnect(3.0) - left < 2.0
    server.wait_idle()


def test_the_tied_client_leaving_last_stops_it_at_once(server, fake_ollama):
    fake_ollama.push(Script(tokens=[f"t{n} " for n in range(400)], delay_s=0.05))
    with tied_and_followed(server) as (events, follower):
        follower.leave()
        for _ in range(5):
            next(events)  # the follower left; the tied client still reads
    left = time.monotonic()
    assert fake_ollama.wait_disconnect(3.0) - left < 1.0
    server.wait_idle()
