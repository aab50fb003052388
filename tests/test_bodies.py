"""Request bodies and handshakes a client framed wrong, over raw sockets to a real gunicorn.

- a body that never completes (a short Content-Length, a chunked body without
  its last chunk, one byte at a time) is cut at ``SLUICE_BODY_TIMEOUT_S`` with
  ``408 request_timeout`` and the connection closed;
- a bad chunk size or a chunked body cut short is ``400``, and so is a body
  that ends (a half-close) before its ``Content-Length``; a chunk size past
  the body limit is refused as it arrives (``400`` past 64 bits, else ``413``),
  not at the deadline;
- a ``/ws`` handshake without a usable ``Sec-WebSocket-Version`` is
  ``400``/``426``, one with a malformed ``Sec-WebSocket-Key`` or over
  HTTP/1.0 ``400``;
- ``Expect: 100-continue`` over ``SLUICE_MAX_BODY_BYTES`` gets ``413`` at once,
  never ``100 Continue``;
- none of it logs a trace or an ERROR, and the server serves on.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

pytestmark = pytest.mark.slow

BODY_TIMEOUT_S = 1.0
MAX_BODY = 1000
CHAT = b'{"messages":[{"role":"user","content":"hi"}]}'


@pytest.fixture(scope="module")
def srv(tmp_path_factory, ollama_upstream, openai_upstream):
    from tests.conftest import BASE_SETTINGS, launch_server, upstream_settings

    settings = {
        **BASE_SETTINGS,
        **upstream_settings(ollama_upstream, openai_upstream),
        "SLUICE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "SLUICE_MAX_BODY_BYTES": str(MAX_BODY),
    }
    server = launch_server(tmp_path_factory.mktemp("bodies"), settings)
    yield server
    server.stop()


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return sock


def head(path: str, *headers: str, method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: sluice.test", *headers, "", ""]
    return "\r\n".join(lines).encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names), body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    header_block, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed(sock: socket.socket) -> bool:
    """True once the server has closed the connection (EOF within the socket's timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def error_code(body: bytes) -> str:
    return json.loads(body)["error"]["code"]


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(
            head("/api/chat", "Content-Type: application/json", "Content-Length: 500") + CHAT[:20],
            id="short-content-length",
        ),
        pytest.param(
            head("/api/chat", "Content-Type: application/json", "Transfer-Encoding: chunked")
            + b"14\r\n"
            + CHAT[:20]
            + b"\r\n",
            id="chunked-without-last-chunk",
        ),
    ],
)
def test_an_incomplete_body_is_cut_at_the_deadline(srv, start):
    with connect(srv.url) as sock:
        sent = time.monotonic()
        sock.sendall(start)
        status, _, body = read_response(sock)
        took = time.monotonic() - sent
        assert status == 408 and error_code(body) == "request_timeout"
        assert BODY_TIMEOUT_S - 0.1 <= took < BODY_TIMEOUT_S + 2.0, took
        assert closed(sock)


def test_a_body_sent_a_byte_at_a_time_is_cut_at_the_deadline(srv):
    with connect(srv.url) as sock:
        answered = threading.Event()
        result: list = []

        def read() -> None:
            result.append(read_response(sock))
            answered.set()

        reader = threading.Thread(target=read, daemon=True)
        sent = time.monotonic()
        sock.sendall(head("/api/chat", "Content-Type: application/json", f"Content-Length: {len(CHAT)}"))
        reader.start()
        for byte in CHAT:
            # Paced by the answer itself: a byte every 0.2 s until the server answers.
            if answered.wait(0.2):
                break
            sock.sendall(bytes([byte]))
        assert answered.wait(BODY_TIMEOUT_S + 5)
        status, _, body = result[0]
        assert status == 408 and error_code(body) == "request_timeout"
        assert time.monotonic() - sent < BODY_TIMEOUT_S + 2.0


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param(b"zz\r\n" + CHAT + b"\r\n0\r\n\r\n", id="bad-chunk-size"),
        pytest.param(b"3\r\n" + CHAT + b"\r\n0\r\n\r\n", id="chunk-longer-than-its-size"),
    ],
)
def test_malformed_chunked_framing_is_a_400(srv, chunks):
    with connect(srv.url) as sock:
        sock.sendall(head("/api/chat", "Content-Type: application/json", "Transfer-Encoding: chunked") + chunks)
        status, _, body = read_response(sock)
        assert status == 400 and error_code(body) == "invalid_request"
        assert closed(sock)  # where the next request would start is unknown


def test_a_chunked_body_cut_short_by_the_client_is_a_400(srv):
    with connect(srv.url) as sock:
        sock.sendall(
            head("/api/chat", "Content-Type: application/json", "Transfer-Encoding: chunked") + b"40\r\n" + CHAT[:10]
        )
        sock.shutdown(socket.SHUT_WR)
        status, _, body = read_response(sock)
        assert status == 400 and error_code(body) == "invalid_request"


def test_a_body_shorter_than_its_content_length_then_a_half_close_is_a_400(srv):
    with connect(srv.url) as sock:
        sock.sendall(head("/api/chat", "Content-Type: application/json", f"Content-Length: {len(CHAT) + 10}") + CHAT)
        sock.shutdown(socket.SHUT_WR)
        status, _, body = read_response(sock)
        assert status == 400 and error_code(body) == "invalid_request"


@pytest.mark.parametrize(
    ("size", "status", "code"),
    [
        pytest.param(b"ffffffffffffffffffff", 400, "invalid_request", id="past-64-bits"),
        pytest.param(b"%x" % (MAX_BODY + 1), 413, "payload_too_large", id="over-the-body-limit"),
    ],
)
def test_a_chunk_size_no_body_may_have_is_refused_at_once(srv, size, status, code):
    with connect(srv.url) as sock:
        sent = time.monotonic()
        sock.sendall(
            head("/api/chat", "Content-Type: application/json", "Transfer-Encoding: chunked") + size + b"\r\n" + CHAT
        )
        got, _, body = read_response(sock)
        assert got == status and error_code(body) == code
        # Not at the body deadline: the size line alone decides.
        assert time.monotonic() - sent < BODY_TIMEOUT_S
        assert closed(sock)


@pytest.mark.parametrize(
    ("request_line", "key"),
    [
        pytest.param("GET /ws HTTP/1.1", "!!", id="key-not-base64"),
        pytest.param("GET /ws HTTP/1.1", "c2hvcnQ=", id="key-not-16-bytes"),
        pytest.param("GET /ws HTTP/1.1", None, id="no-key"),
        pytest.param("GET /ws HTTP/1.0", "dGhlIHNhbXBsZSBub25jZQ==", id="http-1.0"),
    ],
)
def test_a_malformed_websocket_handshake_is_a_400(srv, request_line, key):
    headers = ["Host: sluice.test", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"]
    if key is not None:
        headers.append(f"Sec-WebSocket-Key: {key}")
    with connect(srv.url) as sock:
        sock.sendall("\r\n".join([request_line, *headers, "", ""]).encode())
        status, _, body = read_response(sock)
        assert status == 400 and error_code(body) == "invalid_request"


@pytest.mark.parametrize(("version", "status"), [(None, 400), ("8", 426), ("14", 426)])
def test_a_websocket_handshake_without_a_usable_version_is_refused(srv, version, status):
    headers = ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
    if version is not None:
        headers.append(f"Sec-WebSocket-Version: {version}")
    with connect(srv.url) as sock:
        sock.sendall(head("/ws", *headers, method="GET"))
        got, response_headers, body = read_response(sock)
        assert got == status
        assert response_headers["sec-websocket-version"] == "13"
        assert error_code(body) == ("upgrade_required" if status == 426 else "invalid_request")


def test_expect_100_continue_over_the_limit_gets_413_at_once(srv):
    with connect(srv.url) as sock:
        sock.sendall(
            head(
                "/api/chat", "Content-Type: application/json", f"Content-Length: {MAX_BODY + 1}", "Expect: 100-continue"
            )
        )
        first = sock.recv(12)
        assert first == b"HTTP/1.1 413", first
    # Within the limit, gunicorn still invites the body, and the chat runs.
    with connect(srv.url) as sock:
        sock.sendall(
            head(
                "/api/chat",
                "Content-Type: application/json",
                f"Content-Length: {len(CHAT)}",
                "Expect: 100-continue",
                "Accept: application/x-ndjson",
                "Connection: close",
            )
        )
        assert sock.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(CHAT)
        status, _, _ = read_response(sock)
        assert status == 200


def test_none_of_it_logs_a_trace_and_the_server_serves_on(srv):
    # Runs last in this module (pytest keeps file order): the log holds everything above.
    r = requests.post(srv.url + "/api/chat", data=CHAT, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200 and '"type":"done"' in r.text
    srv.wait_idle()
    log = srv.log()
    assert "Traceback" not in log and "ERROR" not in log, log
