"""A client that stops reading a tied stream costs a bounded amount, and its generation ends.

Sluice under gunicorn + gevent, a fake upstream that streams as fast as it can,
and clients with a tiny receive buffer that read the first event, then nothing.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import requests

from tests.conftest import Server, wait_until
from tests.fakes import Script

pytestmark = pytest.mark.slow

# 100,000 pieces of 4 KB: 400 MB if Sluice read the upstream into memory.
FIREHOSE = Script(tokens=["x" * 4096] * 100_000)


def worker_rss_mb(server: Server) -> float:
    """Resident memory of the server's (only) worker."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    status = Path(f"/proc/{children[0]}/status").read_text()
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kb / 1024


def stalled_client(server: Server, path: str, body: dict, accept: str) -> tuple[socket.socket, str]:
    """Post ``body``, read until the generation id shows, then never read again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = server.url.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    payload = json.dumps(body).encode()
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: {accept}\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    seen = b""
    sock.settimeout(10)
    while b'"gen_' not in seen and b'"chatcmpl-' not in seen:
        chunk = sock.recv(1024)
        assert chunk, seen
        seen += chunk
    text = seen.decode("utf-8", "replace")
    marker = '"gen_' if '"gen_' in text else '"chatcmpl-'
    start = text.index(marker) + 1
    ident = text[start : text.index('"', start)]
    return sock, "gen_" + ident.removeprefix("chatcmpl-") if ident.startswith("chatcmpl-") else ident


@pytest.mark.parametrize(
    ("path", "extra", "accept"),
    [
        pytest.param("/api/chat", {}, "text/event-stream", id="sse"),
        pytest.param("/api/chat", {}, "application/x-ndjson", id="ndjson"),
        pytest.param("/v1/chat/completions", {"stream": True}, "text/event-stream", id="v1"),
    ],
)
def test_a_stalled_reader_pauses_the_upstream_and_its_generation_ends(start_server, fake_ollama, path, extra, accept):
    server = start_server(SLUICE_SEND_TIMEOUT_S="2", SLUICE_MAX_GENERATIONS="2", SLUICE_HOLD_S="0.2")
    body = {"model": "ollama/llama3", "messages": [{"role": "user", "content": "go"}], **extra}
    before = worker_rss_mb(server)
    for round_ in range(2):  # more stalled clients than the broker has room for, one after another
        fake_ollama.push(FIREHOSE, FIREHOSE)
        clients = [stalled_client(server, path, body, accept) for _ in range(2)]
        for _, generation_id in clients:
            # Ended at the send timeout (with a margin), not left running.
            wait_until(
                lambda gid=generation_id: (
                    requests.get(f"{server.url}/api/generations/{gid}", timeout=5).json()["status"] != "running"
                ),
                10,
                "the stalled generation to end",
            )
        fake_ollama.wait_disconnect(5)  # the upstream connection was closed
        fake_ollama.wait_disconnect(5)
        assert fake_ollama.completed == 0  # the upstream could never send it all: its writes blocked
        for sock, _ in clients:
            sock.close()
        server.wait_idle()
        # The slots are free: the next request is served, not refused as overloaded.
        reply = requests.post(
            server.url + "/api/chat",
            json={"messages": [{"role": "user", "content": "hi"}], "stream": False},
            timeout=10,
        )
        assert reply.status_code == 200, (round_, reply.text)
    assert worker_rss_mb(server) - before < 50
