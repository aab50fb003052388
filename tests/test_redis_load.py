"""The Redis broker under load: a thousand streams on one worker, a listener on
another worker following live meanwhile, and a pool that runs dry.

- 1,000 concurrent streams on one gevent worker with ``SLUICE_REDIS_URL`` all
  complete, none with a 5xx (streams hold no Redis connection: their events
  go through the worker's one writer);
- a generation followed from a second worker during that load arrives whole
  and in order (through that worker's one reader);
- when every pooled connection is busy for longer than
  ``SLUICE_REDIS_TIMEOUT_S``, a request that needs one is ``503 overloaded``
  with ``Retry-After``: load, not an outage (no outage warning), and never a 500.

Speed is measured in ``make bench``, not here.
"""

from __future__ import annotations

import json
import logging
import resource
import selectors
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from app import create_app
from sluice.config import load_config
from tests.conftest import BASE_SETTINGS, LogRecords, upstream_settings, wait_until
from tests.sse_client import open_events

pytestmark = pytest.mark.slow

STREAMS = 1000
TOKENS = 20


@pytest.fixture
def many_files():
    """Room for a thousand sockets in this process and the servers it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * STREAMS + 256))
    if wanted < 2 * STREAMS + 64:
        pytest.skip(f"the open-file limit ({hard}) is too low for {STREAMS} streams")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def run_streams(url: str, count: int, path: str, deadline_s: float) -> list[bytes]:
    """Open ``count`` HTTP/1.0 requests at once and read each response to its end (the server closes it)."""
    parts = urlsplit(url)
    request = f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode()
    selector = selectors.DefaultSelector()
    bodies: dict[socket.socket, bytearray] = {}
    for _ in range(count):
        sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        sock.sendall(request)
        sock.setblocking(False)
        bodies[sock] = bytearray()
        selector.register(sock, selectors.EVENT_READ)
    open_ = len(bodies)
    deadline = time.monotonic() + deadline_s
    try:
        while open_:
            left = deadline - time.monotonic()
            assert left > 0, f"{open_} of {count} streams did not end in {deadline_s}s"
            for key, _ in selector.select(min(left, 1.0)):
                sock = key.fileobj
                chunk = sock.recv(65536)
                if chunk:
                    bodies[sock] += chunk
                else:
                    selector.unregister(sock)
                    open_ -= 1
    finally:
        for sock in bodies:
            sock.close()
        selector.close()
    return [bytes(body) for body in bodies.values()]


def test_a_thousand_streams_on_one_worker_complete_while_another_worker_follows_one_live(
    start_server, redis_server, many_files
):
    owner = start_server(SLUICE_REDIS_URL=redis_server.url, SLUICE_DEMO_DELAY_MS="50", SLUICE_RATE_LIMIT="")
    other = start_server(SLUICE_REDIS_URL=redis_server.url, SLUICE_RATE_LIMIT="")
    # A long generation on the loaded worker, followed live from the other one.
    long = {"model": "demo/echo", "messages": [{"role": "user", "content": " ".join(["w"] * 200)}]}
    r = requests.post(owner.url + "/api/generations", json=long, timeout=10)
    assert r.status_code == 202, r.text
    seen: list[tuple[int, dict]] = []
    following = threading.Event()

    def follow() -> None:
        with open_events(other.url + r.json()["events_url"], timeout=60) as (response, events):
            assert response.status_code == 200
            for event in events:
                seen.append((int(event.id), json.loads(event.data)))
                following.set()
        following.set()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert following.wait(10)

    words = "+".join(["w"] * TOKENS)
    bodies = run_streams(owner.url, STREAMS, f"/stream?prompt={words}&model=demo/echo", deadline_s=120)

    statuses = [body.split(b"\r\n", 1)[0] for body in bodies]
    assert all(b" 200 " in status for status in statuses), {s for s in statuses if b" 200 " not in s}
    ended = [body.count(b"\nevent: done\n") for body in bodies]
    assert ended == [1] * STREAMS
    assert all(body.count(b"\ndata: ") >= TOKENS for body in bodies)

    follower.join(60)
    assert not follower.is_alive()
    assert [seq for seq, _ in seen] == list(range(len(seen)))
    assert seen[0][1]["type"] == "start" and seen[-1][1]["type"] == "done"
    assert sum(e["type"] == "delta" for _, e in seen) >= 200
    assert "Traceback" not in owner.log() and "Traceback" not in other.log()
    owner.wait_idle(10)


def test_a_dry_pool_is_503_overloaded_with_retry_after_not_an_outage(redis_server, fake_ollama, fake_openai):
    settings = {
        **BASE_SETTINGS,
        **upstream_settings(fake_ollama, fake_openai),
        "SLUICE_REDIS_URL": redis_server.url,
        "SLUICE_REDIS_MAX_CONNECTIONS": "1",
        "SLUICE_REDIS_TIMEOUT_S": "0.2",
    }
    application = create_app(load_config(settings))
    handler = LogRecords()
    logging.getLogger("sluice").addHandler(handler)
    try:
        client = application.test_client()
        chat = {"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]}
        r = client.post("/api/generations", json=chat)
        assert r.status_code == 202, r.get_data(as_text=True)
        generation = r.json["id"]
        pool = application.extensions["sluice"].broker.redis.connection_pool
        held = pool.get_connection()  # the only connection, busy elsewhere for the rest of the wait
        try:
            # Starts go through the worker's writer (its own connection); reads of a generation take one.
            for method, path, body in (
                ("get", f"/api/generations/{generation}", None),
                ("get", f"/api/generations/{generation}/events", None),
                ("delete", f"/api/generations/{generation}", None),
            ):
                r = getattr(client, method)(path, json=body)
                assert r.status_code == 503, (path, r.status_code, r.get_data(as_text=True))
                assert r.json["error"]["code"] == "overloaded" and int(r.headers["Retry-After"]) > 0
        finally:
            pool.release(held)
        # Free again: everything answers, and nothing was taken for an outage.
        assert client.get(f"/api/generations/{generation}").status_code == 200
        r = client.post("/api/generations", json=chat)
        assert r.status_code == 202
        body = client.get(r.json["events_url"]).get_data(as_text=True)
        assert '"type":"done"' in body
        assert client.get("/readyz").status_code == 200
    finally:
        logging.getLogger("sluice").removeHandler(handler)
    assert not [rec for rec in handler.records if "redis unreachable" in rec.getMessage()]
    assert not [rec for rec in handler.records if rec.levelno >= logging.ERROR or rec.exc_info]
    wait_until(lambda: not application.extensions["sluice"].running, 5, "generations to end")
