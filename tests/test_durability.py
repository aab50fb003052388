"""Durable before delivered: a worker killed mid-stream loses nothing a client saw.

Sluice under gunicorn with two workers and a real redis-server; tied SSE
streams of the demo model at 5 ms a token; one worker is SIGKILLed. For every
stream it cut, the last event the client saw is in Redis unchanged, a resume
after it gives the rest and exactly one final event, ``generation_lost``
(numbered after what the client saw, never over it), and every listener that
attaches while the lease runs out gets exactly one final event too.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import EventSource

from tests.conftest import wait_until

pytestmark = pytest.mark.slow

STREAMS = 30
PROMPT = " ".join(f"w{n}" for n in range(600))  # 600+ pieces at 5 ms: several seconds each


class Seen:
    """What one client read of one stream: ``(id, data)`` of each event, and how it ended."""

    def __init__(self) -> None:
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.ended = threading.Event()

    @property
    def generation(self) -> str | None:
        return self.events[0][1]["id"] if self.events else None

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [data for _, data in self.events if data["type"] in ("done", "error")]


def read(url: str, seen: Seen, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
    """Read an SSE stream into ``seen`` until it ends or breaks."""
    try:
        with httpx.Client(timeout=30) as client:
            method = "POST" if body is not None else "GET"
            with client.stream(method, url, json=body, headers=headers or {}) as response:
                for event in EventSource(response).iter_sse():
                    if event.data:
                        seen.events.append((int(event.id) if event.id else -1, json.loads(event.data)))
    except (httpx.HTTPError, OSError):
        pass  # cut by the kill
    finally:
        seen.ended.set()


def workers(server) -> list[int]:
    pid = server.process.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_killed_worker_loses_no_event_a_client_saw(start_server, redis_server):
    server = start_server(workers=2, SLUICE_REDIS_URL=redis_server.url, SLUICE_DEMO_DELAY_MS="5", SLUICE_LEASE_S="1")
    store = redis.Redis.from_url(redis_server.url)
    body = {"model": "demo/echo", "messages": [{"role": "user", "content": PROMPT}]}
    seen = [Seen() for _ in range(STREAMS)]
    for one in seen:
        threading.Thread(target=read, args=(server.url + "/api/chat", one, body), daemon=True).start()
    wait_until(lambda: all(len(one.events) > 20 for one in seen), 30, "every stream to be under way")

    # Kill one worker; if every stream happened to be on the other, that one next.
    cut: list[Seen] = []
    for pid in workers(server):
        counts = [len(one.events) for one in seen]
        os.kill(pid, signal.SIGKILL)
        # A stream on the killed worker breaks at once; one on the other goes on (or ends whole).
        wait_until(
            lambda counts=counts: all(
                one.ended.is_set() or len(one.events) > count + 20 for one, count in zip(seen, counts, strict=True)
            ),
            30,
            "each stream to break or go on",
        )
        cut = [one for one in seen if one.ended.is_set() and not one.finals]
        if cut:
            break
    assert cut, "no stream was cut"

    # Listeners that attach while the dead worker's lease runs out.
    late = {one.generation: [Seen() for _ in range(3)] for one in cut}
    for generation, listeners in late.items():
        for listener in listeners:
            url = f"{server.url}/api/generations/{generation}/events"
            threading.Thread(target=read, args=(url, listener), daemon=True).start()

    for one in cut:
        last_id, last_data = one.events[-1]
        key = f"sluice:gen:{one.generation}:events"
        stored = store.xrange(key, f"0-{last_id + 1}", f"0-{last_id + 1}")
        assert stored, f"event {last_id} that the client saw is not in Redis"
        assert json.loads(stored[0][1][b"d"]) == last_data  # unchanged, not overwritten by the loss

        resumed = Seen()
        read(f"{server.url}/api/generations/{one.generation}/events", resumed, headers={"Last-Event-ID": str(last_id)})
        ids = [event_id for event_id, _ in resumed.events]
        assert ids == list(range(last_id + 1, last_id + 1 + len(ids))), "a gap or a repeat"
        assert len(resumed.finals) == 1 and resumed.events[-1][1]["type"] == "error"
        assert resumed.events[-1][1]["error"]["code"] == "generation_lost"

    for listeners in late.values():
        for listener in listeners:
            assert listener.ended.wait(15)
            assert len(listener.finals) == 1, listener.finals  # exactly one final event each
            assert listener.events[-1][1]["type"] in ("done", "error")
