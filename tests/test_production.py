"""Production behaviour: keys, CORS, limits, retries and fallbacks, faults, metrics,
request logs, graceful shutdown, leaks, and fuzzed input."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import openai
import pytest
import requests
import simple_websocket

from providers.demo import answer
from tests.conftest import wait_until
from tests.fakes import Script
from tests.sse_client import open_events, read_events, text_of

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- API keys -------------------------------------------------------------------


def test_api_keys_guard_api_routes_only(make_client, tmp_path: Path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# ops team\nk-file\n\n")
    client = make_client(SLUICE_API_KEYS="k1, k2", SLUICE_API_KEYS_FILE=str(keys_file))
    for headers in ({}, bearer("wrong"), {"Authorization": "Basic azE6"}, {"Authorization": "Bearer "}):
        r = client.post("/api/chat", json=CHAT, headers=headers)
        assert r.status_code == 401 and r.json == {
            "error": {"code": "unauthorized", "message": "A valid API key is required."}
        }
    for key in ("k1", "k2", "k-file"):
        assert client.post("/api/chat", json={**CHAT, "stream": False}, headers=bearer(key)).status_code == 200
    for path in ("/healthz", "/readyz", "/", "/openapi.json"):
        assert client.get(path).status_code == 200
    for path in ("/api/models", "/v1/models", "/api/generations/gen_x"):
        assert client.get(path).status_code == 401


def test_generations_belong_to_the_key_that_started_them(make_client):
    client = make_client(SLUICE_API_KEYS="k1,k2")
    started = client.post("/api/generations", json=CHAT, headers=bearer("k1")).json
    for method in ("get", "delete"):
        r = getattr(client, method)(f"/api/generations/{started['id']}", headers=bearer("k2"))
        assert r.status_code == 404 and r.json["error"]["code"] == "generation_not_found"
    assert client.get(started["events_url"], headers=bearer("k2")).status_code == 404
    assert client.get(started["events_url"], headers=bearer("k1")).status_code == 200


@pytest.mark.slow
def test_openai_sdk_sees_authentication_error_and_keys_never_reach_the_log(start_server):
    srv = start_server(SLUICE_API_KEYS="sk-sluice-secret-1")
    bad = openai.OpenAI(api_key="sk-wrong-key-2", base_url=srv.url + "/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="demo/echo", messages=CHAT["messages"])
    good = openai.OpenAI(api_key="sk-sluice-secret-1", base_url=srv.url + "/v1", max_retries=0)
    reply = good.chat.completions.create(model="demo/echo", messages=CHAT["messages"])
    assert reply.choices[0].message.content == answer("hi")
    wait_until(lambda: srv.log().count('"path":"/v1/chat/completions"') >= 2, 5, "access log lines")
    assert "sk-sluice-secret-1" not in srv.log() and "sk-wrong-key-2" not in srv.log()


def test_metrics_have_their_own_key(make_client):
    client = make_client(SLUICE_API_KEYS="k1", SLUICE_METRICS_KEY="scrape")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer("k1")).status_code == 401
    r = client.get("/metrics", headers=bearer("scrape"))
    assert r.status_code == 200 and b"sluice_active_streams" in r.data


# -- CORS -------------------------------------------------------------------------


def test_cors_allow_list(make_client):
    client = make_client(SLUICE_CORS_ORIGINS="https://app.example, https://other.example")
    preflight = client.options(
        "/api/chat",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization, last-event-id",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Last-Event-ID" in preflight.headers["Access-Control-Allow-Headers"]
    r = client.post("/api/chat", json=CHAT, headers={"Origin": "https://other.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://other.example" and "Origin" in r.headers["Vary"]
    r.get_data()
    r = client.post("/api/chat", json=CHAT, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    r.get_data()
    assert (
        "Access-Control-Allow-Origin"
        not in make_client().get("/healthz", headers={"Origin": "https://app.example"}).headers
    )


# -- rate and concurrency limits ------------------------------------------------------


def test_rate_limit_per_key_with_retry_after_and_never_on_health(make_client):
    client = make_client(SLUICE_RATE_LIMIT="3/minute", SLUICE_API_KEYS="a,b")
    for _ in range(3):
        assert client.get("/api/models", headers=bearer("a")).status_code == 200
    r = client.get("/api/models", headers=bearer("a"))
    assert r.status_code == 429 and r.json["error"]["code"] == "rate_limited"
    assert 0 < int(r.headers["Retry-After"]) <= 61
    assert client.get("/api/models", headers=bearer("b")).status_code == 200  # its own count
    for _ in range(10):
        assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200
    assert b"sluice_rate_limited_total 1.0" in client.get("/metrics").data


def test_rate_limit_by_address_honours_forwarded_for_only_from_trusted_proxies(make_client):
    untrusted = make_client(SLUICE_RATE_LIMIT="2/minute")
    for n in range(3):
        r = untrusted.get("/api/models", headers={"X-Forwarded-For": f"10.0.0.{n}"})
    assert r.status_code == 429  # spoofed addresses do not buy more requests
    trusted = make_client(SLUICE_RATE_LIMIT="2/minute", SLUICE_TRUSTED_PROXIES="127.0.0.0/8")
    for n in range(4):
        assert trusted.get("/api/models", headers={"X-Forwarded-For": f"203.0.113.{n}, 127.0.0.1"}).status_code == 200
    trusted.get("/api/models", headers={"X-Forwarded-For": "203.0.113.9"})
    r = trusted.get("/api/models", headers={"X-Forwarded-For": "203.0.113.9"})
    assert trusted.get("/api/models", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 429


def test_streams_per_key_are_capped(make_client, fake_ollama):
    client = make_client(SLUICE_API_KEYS="a", SLUICE_MAX_STREAMS_PER_KEY="1")
    fake_ollama.push(Script(hang_after=0))
    started = client.post("/api/generations", json={**CHAT, "model": "ollama/llama3"}, headers=bearer("a")).json
    r = client.post("/api/generations", json=CHAT, headers=bearer("a"))
    assert r.status_code == 429 and r.json["error"]["code"] == "rate_limited" and r.headers["Retry-After"]
    client.delete(f"/api/generations/{started['id']}", headers=bearer("a"))


@pytest.mark.slow
def test_rate_limit_is_shared_by_workers_through_redis(start_server, tmp_path):
    from tests.redis_server import RedisServer

    redis_server = RedisServer(tmp_path)
    redis_server.start()
    try:
        srv = start_server(workers=2, SLUICE_REDIS_URL=redis_server.url, SLUICE_RATE_LIMIT="5/minute")
        statuses = []
        for _ in range(10):  # a new connection each time: either worker may answer
            statuses.append(
                requests.get(srv.url + "/api/models", headers={"Connection": "close"}, timeout=10).status_code
            )
        assert statuses.count(200) == 5 and statuses.count(429) == 5
    finally:
        redis_server.stop()


@pytest.mark.slow
def test_the_rate_limit_is_one_budget_across_routes_and_websocket_messages(start_server):
    srv = start_server(SLUICE_RATE_LIMIT="10/minute")
    ws = simple_websocket.Client.connect(srv.url.replace("http://", "ws://") + "/ws")  # 1: the handshake

    def ws_chat() -> dict:
        ws.send(json.dumps({"type": "chat", **CHAT}))
        frame = json.loads(ws.receive(timeout=10))
        while frame["type"] not in ("done", "error"):
            frame = json.loads(ws.receive(timeout=10))
        return frame

    try:
        assert ws_chat()["type"] == "done" and ws_chat()["type"] == "done"  # 2, 3
        url = srv.url
        answered = [
            requests.post(url + "/api/chat", json={**CHAT, "stream": False}, timeout=10),  # 4
            requests.post(url + "/api/chat", json={**CHAT, "stream": False}, timeout=10),  # 5
            requests.post(url + "/v1/chat/completions", json=CHAT, timeout=10),  # 6
            requests.post(url + "/v1/chat/completions", json=CHAT, timeout=10),  # 7
            requests.post(url + "/api/generations", json=CHAT, timeout=10),  # 8
            requests.post(url + "/api/generations", json=CHAT, timeout=10),  # 9
            requests.get(url + "/stream", params={"prompt": "hi"}, timeout=10),  # 10
        ]
        assert [r.status_code for r in answered] == [200, 200, 200, 200, 202, 202, 200]
        refused = ws_chat()  # 11: an error frame, and the socket lives
        assert refused["type"] == "error" and refused["error"]["code"] == "rate_limited", refused
        assert 0 < refused["error"]["retry_after"] <= 60
        ws.send(json.dumps({"type": "cancel"}))  # never limited: answered on its merits
        assert json.loads(ws.receive(timeout=10))["error"]["message"] == "Nothing to cancel."
        for method, path in (("post", "/api/chat"), ("post", "/v1/chat/completions"), ("get", "/stream?prompt=hi")):
            r = getattr(requests, method)(url + path, json=CHAT, timeout=10)
            assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0, (path, r.status_code)
        assert requests.get(url + "/healthz", timeout=10).status_code == 200
    finally:
        ws.close()
    srv.wait_idle()


# -- retries, fallbacks, faults ----------------------------------------------------------


@pytest.mark.slow
def test_an_unreachable_upstream_is_tried_once_per_attempt_of_a_client_that_retries(start_server):
    # An upstream that cannot be reached, counted: each connection is accepted and reset at once.
    attempts: list[int] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def reset_each() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            attempts.append(1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()

    threading.Thread(target=reset_each, daemon=True).start()
    try:
        srv = start_server(OPENAI_BASE_URL=f"http://127.0.0.1:{listener.getsockname()[1]}/v1")
        sdk = openai.OpenAI(api_key="x", base_url=srv.url + "/v1")  # the SDK's default: 2 retries
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as caught:
            sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=CHAT["messages"])
        took = time.monotonic() - started
        assert caught.value.status_code == 503 and caught.value.code == "upstream_unavailable"
        assert caught.value.response.headers["Retry-After"] == "1"
        # The SDK's 3 attempts, one upstream attempt each (before: 9, Sluice retrying under each).
        assert len(attempts) == 3
        # The SDK waits Retry-After (1 s) twice: about 2 s in all (before: 11 s), with a margin.
        assert took < 2 * 1 + 3, took
    finally:
        listener.close()


@pytest.mark.slow
def test_429_then_success_is_retried_before_the_first_token(server, fake_ollama):
    fake_ollama.push(Script(status=429), Script(status=503), Script(tokens=["fine"]))
    events = read_events(server.url + "/api/chat", {**CHAT, "model": "ollama/llama3"})
    assert text_of(events) == "fine" and events[-1]["type"] == "done"
    assert len(fake_ollama.wait_requests(3)) == 3


@pytest.mark.slow
def test_fallback_model_serves_when_the_first_fails(start_server, fake_ollama, fake_openai):
    srv = start_server(SLUICE_FALLBACKS="ollama/llama3=openai/gpt-4o-mini", SLUICE_RETRIES="0")
    fake_ollama.push(Script(status=500))
    fake_openai.push(Script(tokens=["from ", "openai"]))
    events = read_events(srv.url + "/api/chat", {**CHAT, "model": "ollama/llama3"})
    assert text_of(events) == "from openai"


@pytest.mark.slow
@pytest.mark.parametrize(
    "script",
    [
        pytest.param(Script(tokens=["a", "b"], raw_after=1, raw=b"this is not json\n"), id="garbage-line"),
        pytest.param(Script(tokens=["a", "b"], raw_after=1, raw=b"x" * 50_000_000), id="50MB-line"),
        pytest.param(Script(tokens=["a", "b"], drop_after=1), id="drop"),
        pytest.param(Script(tokens=["a", "b"], error_after=1), id="error-line"),
    ],
)
def test_upstream_faults_end_with_an_error_event_and_spare_a_concurrent_stream(server, fake_ollama, script):
    fake_ollama.push(script)
    healthy: list[dict] = []
    thread = threading.Thread(
        target=lambda: healthy.extend(
            read_events(server.url + "/api/chat", {"messages": [{"role": "user", "content": "healthy " * 40}]})
        )
    )
    thread.start()
    events = read_events(server.url + "/api/chat", {**CHAT, "model": "ollama/llama3"}, timeout=60)
    thread.join(30)
    assert [e["type"] for e in events] == ["start", "delta", "error"]
    assert events[-1]["error"]["code"] == "upstream_error"
    assert text_of(healthy) == answer("healthy " * 40) and healthy[-1]["type"] == "done"
    server.wait_idle()


# -- observability ----------------------------------------------------------------------


@pytest.mark.slow
def test_request_id_and_one_json_log_line_per_request(server):
    with requests.post(
        server.url + "/api/chat", json=CHAT, headers={"X-Request-ID": "req-from-nginx-42"}, stream=True, timeout=10
    ) as r:
        assert r.headers["X-Request-ID"] == "req-from-nginx-42"
        assert r.content is not None  # the whole body read before the log line is looked for
    generated = requests.get(server.url + "/healthz", timeout=5).headers["X-Request-ID"]
    assert len(generated) == 32
    line = wait_until(
        lambda: next((line for line in server.log().splitlines() if "req-from-nginx-42" in line), None), 5, "log line"
    )
    record = json.loads(line)
    assert record["status"] == 200 and record["model"] == "demo/echo" and record["outcome"] == "stop"
    assert record["tokens"] == 14  # demo/echo's answer to "hi" is 14 pieces
    assert (
        record["ttft_ms"] >= 0
        and record["duration_ms"] >= record["ttft_ms"]
        and record["generation"].startswith("gen_")
    )
    for bogus in ("x" * 500, "two words", "<script>"):
        assert (
            requests.get(server.url + "/healthz", headers={"X-Request-ID": bogus}, timeout=5).headers["X-Request-ID"]
            != bogus
        )


def test_metrics_count_streams_tokens_and_errors(make_client):
    client = make_client()
    client.post("/api/chat", json={**CHAT, "stream": False})
    client.post("/api/chat", json={"model": "nowhere/x", **CHAT})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'sluice_streams_started_total{provider="demo"} 1.0' in text
    assert 'sluice_streams_finished_total{outcome="stop",provider="demo"} 1.0' in text
    assert 'sluice_tokens_relayed_total{provider="demo"} 14.0' in text
    assert 'sluice_time_to_first_token_seconds_count{model="demo/echo",provider="demo"} 1.0' in text
    assert 'sluice_http_errors_total{code="model_not_found"} 1.0' in text
    assert "sluice_active_streams 0.0" in text


@pytest.mark.slow
def test_metrics_show_event_loop_lag_and_events_under_gunicorn(server):
    before = _sample(server, "sluice_events_published_total")
    r = requests.post(server.url + "/api/chat", json={**CHAT, "stream": False}, timeout=10)
    assert r.status_code == 200
    # start, 14 deltas, done; the loop watcher flushes the count every half second.
    wait_until(lambda: _sample(server, "sluice_events_published_total") >= before + 16, 5.0, "the event count")
    wait_until(lambda: _sample(server, "sluice_event_loop_lag_seconds_count") >= 1, 5.0, "a lag sample")


def _sample(server, name: str) -> float:
    for line in requests.get(server.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.slow
def test_metrics_are_summed_over_workers(start_server, tmp_path):
    from tests.redis_server import RedisServer

    redis_server = RedisServer(tmp_path)
    redis_server.start()
    try:
        srv = start_server(workers=2, SLUICE_REDIS_URL=redis_server.url)
        for _ in range(6):
            requests.post(
                srv.url + "/api/chat", json={**CHAT, "stream": False}, headers={"Connection": "close"}, timeout=10
            )
        text = requests.get(srv.url + "/metrics", timeout=5).text
        assert 'sluice_streams_started_total{provider="demo"} 6.0' in text
    finally:
        redis_server.stop()


def test_openapi_document_lists_the_routes(make_client):
    document = make_client().get("/openapi.json").json
    assert document["openapi"].startswith("3.")
    for path in ("/api/chat", "/api/generations", "/api/generations/{generation_id}/events", "/v1/chat/completions"):
        assert path in document["paths"]


# -- graceful shutdown and leaks ------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_during_50_live_streams_ends_each_with_done_or_shutting_down(start_server):
    srv = start_server(SLUICE_DEMO_DELAY_MS="100")
    endings: list[str] = []
    started = threading.Barrier(51, timeout=30)

    def stream(n: int) -> None:
        with open_events(srv.url + "/api/chat", {"messages": [{"role": "user", "content": "w " * 60}]}) as (_, events):
            started.wait()
            last = None
            for event in events:
                last = json.loads(event.data)
            endings.append(last["type"] if last["type"] == "done" else last["error"]["code"])

    threads = [threading.Thread(target=stream, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    started.wait()
    srv.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(20)
    assert not any(thread.is_alive() for thread in threads)
    assert len(endings) == 50 and set(endings) <= {"done", "server_shutting_down"}
    assert "server_shutting_down" in endings
    assert srv.process.wait(10) == 0
    # New streams are refused while draining: covered by Generations.start (ServerShuttingDown).


def _worker_pid(server) -> int:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    return int(children[0])


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
def test_random_disconnects_and_a_client_that_never_reads_leak_nothing(start_server):
    srv = start_server(SLUICE_DEMO_DELAY_MS="1", SLUICE_SEND_TIMEOUT_S="1", SLUICE_MAX_BODY_BYTES="20000000")
    worker = _worker_pid(srv)
    requests.get(srv.url + "/healthz", timeout=5)
    fds_before = _open_fds(worker)
    host, port = srv.url.removeprefix("http://").split(":")
    payload = json.dumps({"messages": [{"role": "user", "content": "tok " * 200}]}).encode()
    request = (
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )

    def one(seed: int) -> None:
        rng = random.Random(seed)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(request)
            to_read = rng.randint(0, 20_000)  # 0: leave before the first byte
            while to_read > 0:
                chunk = sock.recv(min(4096, to_read))
                if not chunk:
                    break
                to_read -= len(chunk)

    never_reads = socket.socket()
    never_reads.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    never_reads.connect((host, int(port)))
    # A 10 MB answer: more than the kernel's socket buffers hold, so the writes stall.
    big = json.dumps({"messages": [{"role": "user", "content": ("x" * 100_000 + " ") * 100}]}).encode()
    never_reads.sendall(
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(big)}\r\n\r\n".encode()
        + big
    )
    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(one, range(1000)))
    srv.wait_idle(20)  # the never-reading client was dropped after SLUICE_SEND_TIMEOUT_S too
    never_reads.close()
    wait_until(lambda: _open_fds(worker) <= fds_before + 2, 10, f"worker fds back to {fds_before}")
    assert requests.get(srv.url + "/healthz", timeout=5).status_code == 200


@pytest.mark.slow
def test_a_client_dropped_at_the_send_timeout_is_one_warning_line(start_server):
    srv = start_server(SLUICE_DEMO_DELAY_MS="0", SLUICE_SEND_TIMEOUT_S="1", SLUICE_MAX_BODY_BYTES="20000000")
    host, port = srv.url.removeprefix("http://").split(":")
    # A 6 MB answer: more than the kernel's socket buffers hold, so the writes stall.
    big = json.dumps({"messages": [{"role": "user", "content": ("x" * 100_000 + " ") * 60}]}).encode()
    request = (
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(big)}\r\n\r\n".encode()
        + big
    )
    never_read = []
    for _ in range(3):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.sendall(request)
        never_read.append(sock)
    try:
        srv.wait_idle(20)  # each dropped after SLUICE_SEND_TIMEOUT_S without progress
        wait_until(lambda: srv.log().count("Dropped a client that stopped reading") == 3, 10, "three warnings")
        log = srv.log()
        assert log.count("[WARNING] Dropped a client") == 3
        assert "Traceback" not in log and "[ERROR]" not in log, log
    finally:
        for sock in never_read:
            sock.close()


# -- fuzzed input -------------------------------------------------------------------------


def test_fuzzed_bodies_never_give_5xx_a_trace_or_a_secret(make_client):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client = make_client(SLUICE_API_KEYS="sk-fuzz-secret", SLUICE_DEMO_DELAY_MS="0")
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=12,
    )
    bodies = st.one_of(
        json_values.map(json.dumps),
        st.fixed_dictionaries(
            {
                "messages": st.lists(
                    st.fixed_dictionaries(
                        {"role": st.sampled_from(["user", "system", "assistant", "tool", ""]), "content": json_values}
                    ),
                    max_size=3,
                )
            },
            optional={
                "model": st.sampled_from(["demo/echo", "x/y", "", "demo/"]) | st.text(max_size=10),
                "options": json_values,
                "stream": json_values,
            },
        ).map(json.dumps),
        st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
    )
    paths = st.sampled_from(["/api/chat", "/api/generations", "/v1/chat/completions"])

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=paths, body=bodies, auth=st.booleans())
    def check(path: str, body: str, auth: bool) -> None:
        headers = {"Content-Type": "application/json", **(bearer("sk-fuzz-secret") if auth else {})}
        r = client.post(path, data=body.encode("utf-8", "surrogatepass"), headers=headers)
        data = r.get_data()
        assert r.status_code < 500, (path, body, r.status_code, data[:300])
        assert b"Traceback" not in data and b"sk-fuzz-secret" not in data
        if r.status_code >= 400:
            error = json.loads(data)["error"]
            assert isinstance(error["message"], str) and isinstance(error["code"], str)

    check()


def test_fuzzed_query_strings_ids_and_headers_never_give_5xx_a_trace_or_a_secret(make_client):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client = make_client(SLUICE_API_KEYS="sk-fuzz-secret", SLUICE_DEMO_DELAY_MS="0")
    started = client.post(
        "/api/generations", json={**CHAT, "options": {"max_tokens": 3}}, headers=bearer("sk-fuzz-secret")
    )
    real_id = started.json["id"]
    text = st.text(max_size=24)
    ids = st.one_of(st.just(real_id), text.filter(lambda s: s not in ("", ".", "..")).map(lambda s: quote(s, safe="")))
    requests_ = st.one_of(
        st.tuples(
            st.just("GET"),
            st.just("/stream"),
            st.fixed_dictionaries({}, optional={"prompt": text, "model": text, "max_tokens": text}),
        ),
        st.tuples(st.just("GET"), ids.map(lambda i: f"/api/generations/{i}"), st.just({})),
        st.tuples(
            st.just("GET"),
            ids.map(lambda i: f"/api/generations/{i}/events"),
            st.fixed_dictionaries({}, optional={"after": text}),
        ),
        st.tuples(st.just("DELETE"), ids.map(lambda i: f"/api/generations/{i}"), st.just({})),
        st.tuples(
            st.sampled_from(["GET", "PUT", "PATCH"]),
            st.sampled_from(["/api/chat", "/v1/models", "/api/models"]),
            st.just({}),
        ),
    )
    headers = st.fixed_dictionaries(
        {},
        optional={
            "Last-Event-ID": text,
            "Accept": text,
            "Origin": text,
            "X-Request-ID": text,
            "Authorization": st.one_of(text, st.just("Bearer sk-fuzz-secret"), text.map(lambda t: "Bearer " + t)),
        },
    )

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(request=requests_, extra=headers)
    def check(request: tuple[str, str, dict], extra: dict) -> None:
        method, path, query = request
        # Header values travel as latin-1 on the wire; others cannot be sent at all.
        sendable = {k: v for k, v in extra.items() if all(0x20 <= ord(c) < 0x100 for c in v)}
        r = client.open(path, method=method, query_string=query, headers=sendable)
        data = r.get_data()
        assert r.status_code < 500, (method, path, query, r.status_code, data[:300])
        assert b"Traceback" not in data and b"sk-fuzz-secret" not in data
        if r.status_code >= 400 and r.mimetype == "application/json":
            error = json.loads(data)["error"]
            assert isinstance(error["message"], str) and isinstance(error["code"], str)

    check()
