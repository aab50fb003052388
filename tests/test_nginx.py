"""The shipped nginx site (deploy/nginx/sluice.conf) in a real nginx, in front of a real gunicorn.

nginx runs in the foreground (``daemon off``) with its own prefix in
``tmp_path``: a minimal main ``nginx.conf`` (pid, logs and temp paths there)
that includes the shipped site file with exactly three substitutions: the
upstream address (the test gunicorn's), the listen address (a free port, bound
here and handed to nginx through its ``NGINX`` inherited-sockets variable, so
no port race) and the access log's directory. Everything else is the file byte
for byte.

Needs Debian's ``nginx`` package (``make system-deps`` installs it).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import requests
import simple_websocket

from providers.demo import answer
from tests.conftest import ROOT, wait_until
from tests.fakes import Script
from tests.sse_client import open_events, read_events, text_of

pytestmark = pytest.mark.slow

SITE = ROOT / "deploy" / "nginx" / "sluice.conf"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")

# The shipped file's placeholders the test replaces; each must occur exactly once.
UPSTREAM_LINE = "server 127.0.0.1:8000;"
LISTEN_LINE = "listen 80;"
ACCESS_LOG_DIR = "/var/log/nginx/"
MIB = 1024 * 1024
# client_max_body_size in deploy/nginx/sluice.conf, the same as SLUICE_MAX_BODY_BYTES's default.
LIMIT = 32 * MIB


def chat(model: str, content: str = "hi", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


# -- nginx in tmp_path ------------------------------------------------------------


def render_site(upstream: str, listen: str, log_dir: Path) -> str:
    """The shipped site file with the upstream, listen address and log directory replaced."""
    site = SITE.read_text()
    for placeholder in (UPSTREAM_LINE, LISTEN_LINE, ACCESS_LOG_DIR):
        assert site.count(placeholder) == 1, f"{SITE} should contain {placeholder!r} exactly once"
    return (
        site.replace(UPSTREAM_LINE, f"server {upstream};")
        .replace(LISTEN_LINE, f"listen {listen};")
        .replace(ACCESS_LOG_DIR, f"{log_dir}/")
    )


def main_conf(prefix: Path) -> str:
    """A main nginx.conf like Debian's, with every path in ``prefix``; includes the site."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read tmp_path (mode 0700)
    temp = prefix / "temp"
    return (
        f"{user}daemon off;\nmaster_process on;\nworker_processes 1;\n"
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "    default_type application/octet-stream;\n"
        f"    access_log {prefix}/access.log;\n"
        f"    client_body_temp_path {temp}/body;\n    proxy_temp_path {temp}/proxy;\n"
        f"    fastcgi_temp_path {temp}/fastcgi;\n    uwsgi_temp_path {temp}/uwsgi;\n"
        f"    scgi_temp_path {temp}/scgi;\n"
        f"    include {prefix}/sites-enabled/sluice;\n"
        "}\n"
    )


def nginx_cmd(prefix: Path, *args: str) -> list[str]:
    if NGINX is None:
        pytest.fail("nginx is not installed: `make system-deps` installs Debian's package", pytrace=False)
    return [NGINX, "-p", f"{prefix}/", "-c", f"{prefix}/nginx.conf", "-e", f"{prefix}/error.log", *args]


@dataclass
class Nginx:
    url: str
    port: int
    prefix: Path
    process: subprocess.Popen

    def access_log(self) -> str:
        path = self.prefix / "sluice.access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def error_log(self) -> str:
        return (self.prefix / "error.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # fast shutdown
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def write_prefix(prefix: Path, upstream: str, listen: str) -> None:
    (prefix / "temp").mkdir(parents=True, exist_ok=True)
    (prefix / "sites-enabled").mkdir(exist_ok=True)
    (prefix / "sites-enabled" / "sluice").write_text(render_site(upstream, listen, prefix))
    (prefix / "nginx.conf").write_text(main_conf(prefix))


def start_nginx(prefix: Path, upstream: str) -> Nginx:
    """Run nginx in the foreground in front of ``upstream`` (host:port); return once it answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(511)
    port = listener.getsockname()[1]
    write_prefix(prefix, upstream, f"127.0.0.1:{port}")
    # nginx takes over listening sockets named in $NGINX (as in a binary upgrade).
    env = {**os.environ, "NGINX": f"{listener.fileno()};"}
    with open(prefix / "nginx.out", "wb") as out:
        process = subprocess.Popen(
            nginx_cmd(prefix),
            env=env,
            pass_fds=(listener.fileno(),),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    listener.close()
    proxy = Nginx(f"http://127.0.0.1:{port}", port, prefix, process)
    # The kernel queues connections until nginx accepts: one request is the ready check.
    deadline = time.monotonic() + 15
    while True:
        try:
            requests.get(proxy.url + "/healthz", timeout=15)
            return proxy
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                proxy.stop()
                raise RuntimeError("nginx did not start:\n" + proxy.error_log()) from None
            time.sleep(0.05)  # wait-ok: retry step of a deadline-bound start


def host_port(url: str) -> str:
    return url.removeprefix("http://")


@pytest.fixture(scope="module")
def nginx(server, tmp_path_factory) -> Iterator[Nginx]:
    """nginx with the shipped site in front of the session's gunicorn."""
    proxy = start_nginx(tmp_path_factory.mktemp("nginx"), host_port(server.url))
    yield proxy
    proxy.stop()


# -- the file itself -----------------------------------------------------------------


def test_nginx_t_accepts_the_shipped_site(tmp_path):
    write_prefix(tmp_path, "127.0.0.1:8000", "127.0.0.1:8080")
    result = subprocess.run(nginx_cmd(tmp_path, "-t"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


# -- streams pass through unbuffered ---------------------------------------------------

PACE_S = 0.2
TOKENS = [f"tok{i:02d} " for i in range(10)]


def assert_paced(arrivals: list[float]) -> None:
    """Each token arrived about when the upstream sent it (200 ms apart), not bunched up."""
    assert len(arrivals) == len(TOKENS)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(arrivals)]
    assert all(0.1 < gap < 0.6 for gap in gaps), f"gaps between tokens: {gaps}"


def test_sse_events_arrive_as_sent_unbuffered_and_uncompressed(nginx, fake_ollama):
    fake_ollama.push(Script(tokens=TOKENS, delay_s=PACE_S))
    arrivals: list[float] = []
    events: list[dict] = []
    headers = {"Accept-Encoding": "gzip, deflate"}  # gzip must still not touch the stream
    with open_events(nginx.url + "/api/chat", chat("ollama/llama3"), headers=headers) as (response, stream):
        assert response.status_code == 200
        for sse in stream:
            event = json.loads(sse.data)
            events.append(event)
            if event["type"] == "delta":
                arrivals.append(time.monotonic())
    assert_paced(arrivals)
    assert text_of(events) == "".join(TOKENS) and events[-1]["type"] == "done"
    h = response.headers
    assert h["content-type"].startswith("text/event-stream")
    assert h["cache-control"] == "no-cache"
    assert h["x-accel-buffering"] == "no"
    assert "content-encoding" not in h
    assert "content-length" not in h and h["transfer-encoding"] == "chunked"


@pytest.mark.parametrize("accept", ["application/x-ndjson", "text/plain"])
def test_ndjson_and_text_streams_arrive_as_sent(nginx, fake_ollama, accept):
    """The other two streamed types must be neither buffered nor gzipped either."""
    fake_ollama.push(Script(tokens=TOKENS, delay_s=PACE_S))
    reads: list[tuple[float, int]] = []  # (arrival, bytes received so far)
    body = b""
    headers = {"Accept": accept, "Accept-Encoding": "gzip, deflate"}
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", nginx.url + "/api/chat", json=chat("ollama/llama3"), headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith(accept)
            assert "content-encoding" not in response.headers and "content-length" not in response.headers
            for chunk in response.iter_raw():
                body += chunk
                reads.append((time.monotonic(), len(body)))
    text = body.decode()
    ends = [text.index(token.strip()) + len(token.strip()) for token in TOKENS]
    assert_paced([next(t for t, size in reads if size >= end) for end in ends])


# -- WebSocket -----------------------------------------------------------------------


def test_websocket_through_nginx(nginx):
    ws = simple_websocket.Client.connect(f"ws://127.0.0.1:{nginx.port}/ws")
    try:
        ws.send(json.dumps({"type": "chat", "messages": [{"role": "user", "content": "hi"}]}))
        frames = []
        while not frames or frames[-1]["type"] not in ("done", "error"):
            raw = ws.receive(timeout=10)
            assert raw is not None, f"no frame within 10 s after {frames}"
            frames.append(json.loads(raw))
    finally:
        ws.close()
    assert frames[0]["type"] == "start" and frames[-1]["type"] == "done"
    assert {f["type"] for f in frames[1:-1]} == {"delta"}
    assert "".join(f["content"] for f in frames[1:-1]) == answer("hi")


# -- resume --------------------------------------------------------------------------


def test_resume_through_nginx_gets_exactly_the_rest(nginx):
    r = requests.post(nginx.url + "/api/generations", json=chat("demo/echo", "one two three four five"), timeout=10)
    assert r.status_code == 202
    gen = r.json()
    state_url = nginx.url + "/api/generations/" + gen["id"]
    wait_until(lambda: requests.get(state_url, timeout=5).json()["status"] == "done", 10, "the generation to end")
    everything = read_events(nginx.url + gen["events_url"])
    rest = read_events(nginx.url + gen["events_url"], headers={"Last-Event-ID": "3"})
    assert rest == everything[4:] and rest[0]["seq"] == 4
    assert text_of(everything) == answer("one two three four five")
    # Nothing after the last event: 204, so EventSource stops reconnecting.
    last = str(everything[-1]["seq"])
    r = requests.get(nginx.url + gen["events_url"], headers={"Last-Event-ID": last}, timeout=10)
    assert r.status_code == 204


# -- a client that leaves --------------------------------------------------------------


def test_client_disconnect_mid_stream_closes_the_upstream(nginx, server, fake_ollama):
    fake_ollama.push(Script(tokens=["t"] * 1000, delay_s=0.05))
    with open_events(nginx.url + "/api/chat", chat("ollama/llama3")) as (_, events):
        seen = [json.loads(next(events).data)["type"] for _ in range(3)]
        assert seen == ["start", "delta", "delta"]
        closed = time.monotonic()
    assert fake_ollama.wait_disconnect(2.0) - closed < 1.0
    server.wait_idle()


def test_client_disconnect_while_held_closes_the_upstream(nginx, server, fake_ollama):
    """Before any byte of the response: nginx notices the client leave (proxy_ignore_client_abort off)."""
    fake_ollama.push(Script(hang_after=0))
    payload = json.dumps(chat("ollama/llama3")).encode()
    sock = socket.create_connection(("127.0.0.1", nginx.port), timeout=10)
    sock.sendall(
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    fake_ollama.wait_requests(1)
    closed = time.monotonic()
    sock.close()
    assert fake_ollama.wait_disconnect(2.0) - closed < 1.0
    server.wait_idle()


# -- body size -------------------------------------------------------------------------


def sized_body(size: int) -> bytes:
    """A JSON chat body of exactly ``size`` bytes with an unknown role (Sluice answers 400 if it gets it)."""
    head, tail = b'{"messages":[{"role":"nobody","content":"', b'"}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_body_at_the_limit_reaches_sluice_and_one_byte_more_is_413_from_nginx(nginx):
    json_headers = {"Content-Type": "application/json"}
    at_limit = requests.post(nginx.url + "/api/chat", data=sized_body(LIMIT), headers=json_headers, timeout=30)
    assert at_limit.status_code == 400 and at_limit.json()["error"]["code"] == "invalid_request"
    assert "x-request-id" in at_limit.headers  # Sluice answered
    over = requests.post(nginx.url + "/api/chat", data=sized_body(LIMIT + 1), headers=json_headers, timeout=30)
    # nginx refuses it (client_max_body_size 32m) in Sluice's error shape; gunicorn never sees it.
    assert over.status_code == 413
    assert over.headers["content-type"] == "application/json"
    assert over.json()["error"]["code"] == "payload_too_large"
    assert "x-request-id" not in over.headers


def test_chunked_body_over_the_limit_is_413(nginx):
    def chunks() -> Iterator[bytes]:
        body = sized_body(LIMIT + 64 * 1024)
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    r = requests.post(nginx.url + "/api/chat", data=chunks(), headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


# -- request id ------------------------------------------------------------------------


def sluice_log_lines(server) -> list[dict]:
    lines = []
    for line in server.log().splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            lines.append(parsed)
    return lines


def logged_request(server, request_id: str) -> dict | None:
    return next((line for line in sluice_log_lines(server) if line.get("request_id") == request_id), None)


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        pytest.param(None, None, id="nginx-makes-one"),
        pytest.param("client-trace-42.a:b/c+=", "client-trace-42.a:b/c+=", id="client-id-kept"),
        pytest.param("has spaces; and junk", None, id="bad-client-id-replaced"),
    ],
)
def test_request_id_reaches_sluice_log_and_response(nginx, server, sent, expected):
    headers = {"X-Request-ID": sent} if sent else {}
    with open_events(nginx.url + "/api/chat", chat("demo/echo", "id please"), headers=headers) as (response, events):
        assert response.status_code == 200
        request_id = response.headers["X-Request-ID"]
        types = [json.loads(e.data)["type"] for e in events]
    assert types[-1] == "done"
    if expected is None:
        assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id  # nginx's $request_id
    else:
        assert request_id == expected
    # Sluice writes the line when the stream ends; nginx when the response is done.
    line = wait_until(lambda: logged_request(server, request_id), 5, f"request_id {request_id} in the gunicorn log")
    assert line["path"] == "/api/chat" and line["status"] == 200
    wait_until(lambda: f"rid={request_id} " in nginx.access_log(), 5, "the id in nginx's access log")


# -- gunicorn down -----------------------------------------------------------------------


def test_gunicorn_down_is_a_json_503_with_retry_after(tmp_path):
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there now
    proxy = start_nginx(tmp_path, f"127.0.0.1:{port}")
    try:
        r = requests.post(proxy.url + "/api/chat", json=chat("demo/echo"), timeout=10)
    finally:
        proxy.stop()
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/json" and r.headers["Retry-After"] == "1"
    assert r.json()["error"]["code"] == "overloaded"
