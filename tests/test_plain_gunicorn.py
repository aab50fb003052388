"""Started the way most people start a gunicorn app: ``gunicorn wsgi:app`` in the
checkout, no flags. gunicorn reads ``./gunicorn.conf.py`` by itself, so this is
the gevent worker with Sluice's settings, and a burst of 300 streams opened
within 0.3 s all complete (the sync worker would serve them one at a time;
gevent with gunicorn's default 2 s keep-alive drops those still waiting)."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import time

import pytest

from tests.conftest import GUNICORN, ROOT, wait_until

pytestmark = pytest.mark.slow

STREAMS = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            return sock.recv(12) == b"HTTP/1.1 200"
    except OSError:
        return False


@pytest.fixture
def plain_gunicorn(tmp_path):
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLUICE_", "OLLAMA_", "OPENAI_", "GUNICORN_", "WEB_CONCURRENCY", "PROMETHEUS_"))
    }
    # The address through Sluice's own setting: the command line stays bare.
    env["SLUICE_BIND"] = f"127.0.0.1:{port}"
    env["SLUICE_LOCAL_MODEL"] = "off"  # the burst is for demo/echo, the default model then
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [GUNICORN, "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: process.poll() is not None or _answers(port), 30, "gunicorn to serve")
        assert process.poll() is None, log_path.read_text()
        yield port, log_path
    finally:
        process.terminate()
        process.wait(15)


def test_plain_gunicorn_uses_the_shipped_config_and_serves_a_burst_of_300_streams(plain_gunicorn):
    port, log_path = plain_gunicorn
    assert "Using worker: gevent" in log_path.read_text()
    request = b"GET /stream?prompt=burst%20of%20streams HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, bytearray] = {}
    opened = time.monotonic()
    for _ in range(STREAMS):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(request)
        sock.setblocking(False)
        received[sock] = bytearray()
        selector.register(sock, selectors.EVENT_READ)
    open_for = time.monotonic() - opened
    assert open_for < 0.3, f"opening the burst took {open_for:.2f}s"
    deadline = time.monotonic() + 60
    open_socks = len(received)
    while open_socks and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            sock = key.fileobj
            try:
                data = sock.recv(65536)
            except ConnectionError:
                data = b""
            if data:
                received[sock] += data
            else:
                selector.unregister(sock)
                sock.close()
                open_socks -= 1
    selector.close()
    complete = sum(b"HTTP/1.1 200" in data[:12] and b"event: done" in data for data in received.values())
    assert complete == STREAMS, f"{complete} of {STREAMS} streams complete (opened in {open_for:.2f}s)"
