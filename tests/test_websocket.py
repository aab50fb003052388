"""``/ws`` against a hostile or clumsy client, over real sockets to a real gunicorn + gevent server.

- a client that reads slowly (a 4 KB receive buffer, a 3 s pause) gets every
  frame whole: before, a partial ``send`` cut a frame and the client closed
  with 1007 (a frame header inside a payload);
- JSON nested 100,000 deep gets an ``error`` frame and the socket lives;
- a browser ``Origin`` must be the server's own or in ``SLUICE_CORS_ORIGINS``
  (else ``403``); a client with no ``Origin`` connects;
- the request id of the handshake reaches the upstream.

The handshake's framing (key, HTTP version) is in ``test_bodies.py``.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import simple_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, RejectConnection, Request, TextMessage

from providers.demo import answer
from tests.fakes import Script

pytestmark = pytest.mark.slow


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def netloc(url: str) -> str:
    return urlsplit(url).netloc


class RawClient:
    """A WebSocket client on a socket of its own (wsproto): it decides when it reads."""

    def __init__(self, url: str, rcvbuf: int | None = None, headers: list[tuple[str, str]] | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect(address(url))
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host=netloc(url), target="/ws", extra_headers=headers or [])))
        self.accepted: bool | None = None
        self.status: int | None = None
        self._text = ""
        self.closed: CloseConnection | None = None

    def events(self) -> Iterator[Any]:
        """wsproto events as they arrive (a whole text message as ``str``); pings answered."""
        while True:
            data = self.sock.recv(65536)
            if not data:
                return
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    self.accepted = True
                    yield event
                elif isinstance(event, RejectConnection):
                    self.accepted, self.status = False, event.status_code
                    return
                elif isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                elif isinstance(event, TextMessage):
                    self._text += event.data
                    if event.message_finished:
                        text, self._text = self._text, ""
                        yield text
                elif isinstance(event, CloseConnection):
                    self.closed = event
                    return

    def send_json(self, message: dict[str, Any]) -> None:
        self.sock.sendall(self.ws.send(TextMessage(json.dumps(message))))

    def close(self) -> None:
        self.sock.close()


def frames_until_the_end(events: Iterator[Any]) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    for item in events:
        if isinstance(item, str):
            frames.append(json.loads(item))
            if frames[-1]["type"] in ("done", "error"):
                break
    return frames


def test_a_slow_reader_gets_every_frame_whole_three_times_in_a_row(start_server):
    # 60 pieces of 100 KB: far more than the socket buffers of both ends hold while the client pauses.
    srv = start_server(SLUICE_DEMO_DELAY_MS="0", SLUICE_MAX_BODY_BYTES="20000000")
    content = ("x" * 100_000 + " ") * 60
    for _ in range(3):
        client = RawClient(srv.url, rcvbuf=4096)
        try:
            events = client.events()
            assert isinstance(next(events), AcceptConnection)
            client.send_json({"type": "chat", "messages": [{"role": "user", "content": content}]})
            time.sleep(3)  # wait-ok: the scenario itself, a client that stops reading for 3 s
            frames = frames_until_the_end(events)
            assert client.closed is None, (client.closed.code, client.closed.reason) if client.closed else None
            assert frames[-1]["type"] == "done", frames[-1]
            assert "".join(f["content"] for f in frames if f["type"] == "delta") == answer(content)
        finally:
            client.close()
    srv.wait_idle()
    assert "Traceback" not in srv.log()


def test_json_nested_100000_deep_gets_an_error_frame_and_the_socket_lives(server):
    ws = simple_websocket.Client.connect(server.url.replace("http://", "ws://") + "/ws")
    try:
        for bad in ("[" * 100_000, '{"a":' * 100_000, '{"type":"chat","messages":' + "[" * 100_000):
            ws.send(bad)
            frame = json.loads(ws.receive(timeout=10))
            assert frame["type"] == "error" and frame["error"]["code"] == "invalid_request", frame
        ws.send(json.dumps({"type": "chat", "messages": [{"role": "user", "content": "still here"}]}))
        frames = [json.loads(ws.receive(timeout=10))]
        while frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(ws.receive(timeout=10)))
        assert frames[-1]["type"] == "done"
        assert "".join(f["content"] for f in frames if f["type"] == "delta") == answer("still here")
    finally:
        ws.close()
    server.wait_idle()
    assert "Traceback" not in server.log() and "RecursionError" not in server.log()


def handshake_status(url: str, origin: str | None, host: str | None = None) -> int:
    """The status the server answers a WebSocket handshake with (101 when it upgrades)."""
    headers = [
        f"Host: {host or netloc(url)}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        headers.append(f"Origin: {origin}")
    with socket.create_connection(address(url), timeout=10) as sock:
        sock.sendall(("GET /ws HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode())
        status_line = b""
        while b"\r\n" not in status_line:
            chunk = sock.recv(1024)
            assert chunk, status_line
            status_line += chunk
    return int(status_line.split()[1])


def test_a_browser_origin_must_be_the_servers_own_or_allowed(start_server):
    srv = start_server(SLUICE_CORS_ORIGINS="https://app.example")
    host, port = address(srv.url)
    assert handshake_status(srv.url, "https://evil.example") == 403
    assert handshake_status(srv.url, "null") == 403  # a sandboxed page or a file
    assert handshake_status(srv.url, f"http://{host}:{port + 1}") == 403  # another port is another origin
    assert handshake_status(srv.url, "https://app.example") == 101
    assert handshake_status(srv.url, None) == 101  # not a browser
    assert handshake_status(srv.url, f"http://{host}:{port}") == 101  # the page Sluice serves
    # Behind nginx: the public host, the scheme's default port implied.
    assert handshake_status(srv.url, "https://sluice.example", host="sluice.example") == 101
    assert handshake_status(srv.url, "https://sluice.example", host="other.example") == 403
    # An allowed origin streams; a refused one got a JSON error, not an upgrade.
    client = RawClient(srv.url, headers=[("Origin", "https://app.example")])
    try:
        events = client.events()
        assert isinstance(next(events), AcceptConnection)
        client.send_json({"type": "chat", "messages": [{"role": "user", "content": "hi"}]})
        assert frames_until_the_end(events)[-1]["type"] == "done"
    finally:
        client.close()
    assert '"status":403' in srv.log()


def test_the_handshakes_request_id_reaches_the_upstream(server, fake_ollama):
    fake_ollama.push(Script(tokens=["ok"]))
    url = server.url.replace("http://", "ws://") + "/ws"
    ws = simple_websocket.Client.connect(url, headers={"X-Request-ID": "ws-req-7"})
    try:
        ws.send(json.dumps({"type": "chat", "model": "ollama/llama3", "messages": [{"role": "user", "content": "hi"}]}))
        frame = json.loads(ws.receive(timeout=10))
        while frame["type"] not in ("done", "error"):
            frame = json.loads(ws.receive(timeout=10))
        assert frame["type"] == "done"
    finally:
        ws.close()
    assert fake_ollama.wait_requests(1)[0].headers["x-request-id"] == "ws-req-7"
    server.wait_idle()


def test_a_stopping_worker_says_goodbye_to_an_idle_socket_and_finishes_a_streaming_one(start_server):
    srv = start_server(SLUICE_DEMO_DELAY_MS="20")
    idle, busy = RawClient(srv.url), RawClient(srv.url)
    try:
        idle_events, busy_events = idle.events(), busy.events()
        assert isinstance(next(idle_events), AcceptConnection)
        assert isinstance(next(busy_events), AcceptConnection)
        words = " ".join(f"w{n}" for n in range(60))
        busy.send_json({"type": "chat", "messages": [{"role": "user", "content": words}]})
        assert json.loads(next(e for e in busy_events if isinstance(e, str)))["type"] == "start"
        stopping = time.monotonic()
        srv.process.send_signal(signal.SIGTERM)
        # The idle socket is closed at once with 1001 (going away): its client reconnects elsewhere.
        assert list(idle_events) == [] and idle.closed is not None and idle.closed.code == 1001
        assert time.monotonic() - stopping < 5
        # The streaming one goes on until its end (the test server's drain window is its 1 s graceful
        # timeout: the answer, or server_shutting_down when the window closes first), then the same goodbye.
        frames = frames_until_the_end(busy_events)
        end = frames[-1]
        assert end.get("finish_reason") == "stop" or end.get("error", {}).get("code") == "server_shutting_down", end
        assert list(busy_events) == [] and busy.closed is not None and busy.closed.code == 1001
    finally:
        idle.close()
        busy.close()
