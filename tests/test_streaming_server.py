"""The streaming contract under a real gunicorn + gevent worker, against fake upstreams.

Hold rules, timeouts, error events, heartbeats, disconnects in every phase and
concurrency: behaviour that depends on the server, so it runs on one.
"""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from providers.demo import answer
from tests.conftest import wait_until
from tests.fakes import Script
from tests.sse_client import open_events, read_events, text_of

pytestmark = pytest.mark.slow

USER = [{"role": "user", "content": "hi"}]


def chat(model: str, content: str = "hi") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def assert_one_end(events: list[dict]) -> None:
    ends = [e for e in events if e["type"] in ("done", "error")]
    assert len(ends) == 1 and events[-1] is ends[0]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "start"


# -- the happy paths -----------------------------------------------------------


@pytest.mark.parametrize("model", ["demo/echo", "ollama/llama3", "openai/gpt-4o-mini"])
def test_each_provider_streams_start_deltas_done(server, fake_ollama, fake_openai, model):
    events = read_events(server.url + "/api/chat", chat(model, "hello"))
    assert_one_end(events)
    expected = answer("hello") if model == "demo/echo" else "Hello, world!"
    assert text_of(events) == expected
    assert events[0]["model"] == model and events[0]["id"].startswith("gen_")
    done = events[-1]
    assert done["type"] == "done" and done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] > 0 and "prompt_tokens" in done["usage"]


def test_ollama_usage_and_length_come_from_the_done_line(server, fake_ollama):
    fake_ollama.push(Script(tokens=["a", "b", "c", "d"], prompt_tokens=11))
    body = {**chat("ollama/llama3"), "options": {"max_tokens": 2}}
    events = read_events(server.url + "/api/chat", body)
    assert fake_ollama.requests[-1].body["options"]["num_predict"] == 2
    assert text_of(events) == "ab"
    assert events[-1]["finish_reason"] == "length"
    assert events[-1]["usage"] == {"prompt_tokens": 11, "completion_tokens": 2}


def test_sse_headers_and_retry_first(server):
    with requests.post(server.url + "/api/chat", json=chat("demo/echo"), stream=True, timeout=10) as r:
        assert r.headers["Cache-Control"] == "no-cache"
        assert r.headers["X-Accel-Buffering"] == "no"
        assert "keep-alive" not in r.headers
        first = next(r.iter_content(chunk_size=None))
        assert first.startswith(b"retry: 3000\n\n")


# -- the hold: fast failures are HTTP statuses ---------------------------------


def test_unknown_ollama_model_is_404_before_the_stream(server, fake_ollama):
    r = requests.post(server.url + "/api/chat", json=chat("ollama/nope"), timeout=10)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_unknown_provider_is_404(server):
    r = requests.post(server.url + "/api/chat", json=chat("nowhere/x"), timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


# SPEC "Upstream refusals keep their meaning": any 5xx is a 502 (an unreachable provider is the 503).
@pytest.mark.parametrize(("status", "code", "http"), [(500, "upstream_error", 502), (503, "upstream_error", 502)])
def test_upstream_error_before_streaming_is_an_http_status(server, fake_ollama, status, code, http):
    # Enough failures for every retry (the default SLUICE_RETRIES is 2).
    fake_ollama.push(*[Script(status=status, error_message="secret-ish detail")] * 3)
    r = requests.post(server.url + "/api/chat", json=chat("ollama/llama3"), timeout=10)
    assert r.status_code == http and r.json()["error"]["code"] == code


def test_unreachable_upstream_is_503_with_retry_after(start_server):
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there now
    srv = start_server(OLLAMA_BASE_URL=f"http://127.0.0.1:{port}")
    r = requests.post(srv.url + "/api/chat", json=chat("ollama/llama3"), timeout=10)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "upstream_unavailable"
    assert int(r.headers["Retry-After"]) > 0


def test_first_token_timeout_while_held_is_504(start_server, fake_ollama):
    srv = start_server(SLUICE_FIRST_TOKEN_TIMEOUT_S="0.3", SLUICE_HOLD_S="5")
    fake_ollama.push(Script(hang_after=0))
    r = requests.post(srv.url + "/api/chat", json=chat("ollama/llama3"), timeout=10)
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    # The hung upstream was let go, not left hanging.
    fake_ollama.wait_disconnect(2.0)
    srv.wait_idle()


def test_slow_first_token_after_the_hold_gets_200_start_and_pings(start_server, fake_ollama):
    srv = start_server(SLUICE_HOLD_S="0.2", SLUICE_HEARTBEAT_S="0.2")
    fake_ollama.push(Script(first_token_delay_s=1.0, tokens=["late"]))
    started = time.monotonic()
    with requests.post(srv.url + "/api/chat", json=chat("ollama/llama3"), stream=True, timeout=10) as r:
        assert r.status_code == 200
        assert time.monotonic() - started < 0.9  # answered before the first token
        raw = b"".join(r.iter_content(chunk_size=None))
    text = raw.decode()
    assert text.index(": ping\n\n") < text.index('"type":"delta"')
    assert '"content":"late"' in text and '"type":"done"' in text


def test_first_token_timeout_after_the_hold_is_an_error_event(start_server, fake_ollama):
    srv = start_server(SLUICE_HOLD_S="0.1", SLUICE_FIRST_TOKEN_TIMEOUT_S="0.5")
    fake_ollama.push(Script(hang_after=0))
    events = read_events(srv.url + "/api/chat", chat("ollama/llama3"))
    assert [e["type"] for e in events] == ["start", "error"]
    assert events[-1]["error"]["code"] == "upstream_timeout"
    fake_ollama.wait_disconnect(2.0)


# -- after the first byte: error events ---------------------------------------


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_error_mid_stream_is_an_error_event(server, fake_ollama, fake_openai, model):
    fake = fake_ollama if model.startswith("ollama") else fake_openai
    fake.push(Script(tokens=["a", "b", "c"], error_after=2, error_message="sk-live-SECRET"))
    events = read_events(server.url + "/api/chat", chat(model))
    assert_one_end(events)
    assert text_of(events) == "ab"
    assert events[-1]["error"]["code"] == "upstream_error"
    assert "SECRET" not in json.dumps(events)


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_dropped_upstream_is_an_error_event(server, fake_ollama, fake_openai, model):
    fake = fake_ollama if model.startswith("ollama") else fake_openai
    fake.push(Script(tokens=["a", "b", "c"], drop_after=1))
    events = read_events(server.url + "/api/chat", chat(model))
    assert_one_end(events)
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "upstream_error"


def test_idle_timeout_mid_stream_is_an_error_event_and_closes_upstream(start_server, fake_ollama):
    srv = start_server(SLUICE_IDLE_TIMEOUT_S="0.3", SLUICE_HOLD_S="0.1")
    fake_ollama.push(Script(tokens=["a", "b", "c"], hang_after=2))
    events = read_events(srv.url + "/api/chat", chat("ollama/llama3"))
    assert [e["type"] for e in events] == ["start", "delta", "delta", "error"]
    assert events[-1]["error"]["code"] == "upstream_timeout"
    fake_ollama.wait_disconnect(2.0)
    srv.wait_idle()


# -- disconnects: the upstream is closed within a second, in every phase -------


def _raw_request(url: str, body: dict) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(Script(headers_delay_s=30), id="upstream-headers-not-sent-yet"),
        pytest.param(Script(hang_after=0), id="held-waiting-for-first-token"),
    ],
)
def test_disconnect_while_held_closes_upstream(server, fake_ollama, script):
    fake_ollama.push(script)
    sock = _raw_request(server.url, chat("ollama/llama3"))
    fake_ollama.wait_requests(1)
    closed = time.monotonic()
    sock.close()
    assert fake_ollama.wait_disconnect(2.0) - closed < 1.0
    server.wait_idle()


def test_disconnect_during_silent_wait_after_hold_closes_upstream(start_server, fake_ollama):
    srv = start_server(SLUICE_HOLD_S="0.1")
    fake_ollama.push(Script(hang_after=0))
    with open_events(srv.url + "/api/chat", chat("ollama/llama3")) as (response, events):
        assert response.status_code == 200
        assert json.loads(next(events).data)["type"] == "start"
        closed = time.monotonic()
    assert fake_ollama.wait_disconnect(2.0) - closed < 1.0
    srv.wait_idle()


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_disconnect_mid_stream_closes_upstream(server, fake_ollama, fake_openai, model):
    fake = fake_ollama if model.startswith("ollama") else fake_openai
    fake.push(Script(tokens=["t"] * 1000, delay_s=0.05))
    with open_events(server.url + "/api/chat", chat(model)) as (_, events):
        seen = [json.loads(next(events).data)["type"] for _ in range(3)]
        assert seen == ["start", "delta", "delta"]
        closed = time.monotonic()
    assert fake.wait_disconnect(2.0) - closed < 1.0
    server.wait_idle()


def test_demo_stream_stops_when_client_leaves(start_server):
    srv = start_server(SLUICE_DEMO_DELAY_MS="50")
    with open_events(srv.url + "/api/chat", chat("demo/echo", "word " * 500)) as (_, events):
        next(events)
        next(events)
    srv.wait_idle(2.0)


# -- load: many streams on one worker, bad input beside them -------------------


def test_200_concurrent_streams_all_complete(server):
    prompts = [f"stream {i} ünïcode 🙂\nline" for i in range(200)]

    def one(prompt: str) -> str:
        return text_of(read_events(server.url + "/api/chat", chat("demo/echo", prompt), timeout=60))

    with ThreadPoolExecutor(max_workers=200) as pool:
        texts = list(pool.map(one, prompts))
    assert texts == [answer(p) for p in prompts]
    server.wait_idle()


def test_a_stream_that_never_blocks_lets_another_start(start_server):
    # With no pause between pieces the demo never blocks; without the pump's fair
    # turns it would write its whole answer before the second request is read.
    srv = start_server(SLUICE_DEMO_DELAY_MS="0")
    long_prompt = "w " * 20_000
    ended: list[float] = []

    def read_long() -> None:
        with requests.post(srv.url + "/api/chat", json=chat("demo/echo", long_prompt), stream=True, timeout=60) as r:
            assert r.status_code == 200
            for _ in r.iter_content(chunk_size=None):
                pass
        ended.append(time.monotonic())

    with ThreadPoolExecutor(max_workers=1) as pool:
        done = pool.submit(read_long)
        wait_until(lambda: srv.streams() >= 1, 10.0, "the long stream to start")
        with requests.get(srv.url + "/stream", params={"prompt": "hi"}, stream=True, timeout=60) as r:
            next(r.iter_content(chunk_size=None))
            second_started = time.monotonic()
        done.result(timeout=60)
    assert second_started < ended[0]


def test_bad_input_does_not_disturb_a_concurrent_stream(server, fake_ollama):
    fake_ollama.push(Script(tokens=[f"{i} " for i in range(30)], delay_s=0.02))
    bad_bodies = [b"{", b"\xff\xfe", b"[" * 100000, b'{"messages": "x"}', b"null"]
    with open_events(server.url + "/api/chat", chat("ollama/llama3")) as (_, events):
        first = [json.loads(next(events).data) for _ in range(2)]
        for raw in bad_bodies:
            r = requests.post(
                server.url + "/api/chat", data=raw, headers={"Content-Type": "application/json"}, timeout=10
            )
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
        rest = [json.loads(e.data) for e in events]
    events = first + rest
    assert "".join(e.get("content", "") for e in events) == "".join(f"{i} " for i in range(30))
    assert events[-1]["type"] == "done"


def test_over_max_streams_is_503_overloaded_and_the_slot_comes_back(start_server, fake_ollama):
    srv = start_server(SLUICE_MAX_STREAMS="1", SLUICE_HOLD_S="0.1")
    fake_ollama.push(Script(hang_after=0))
    with open_events(srv.url + "/api/chat", chat("ollama/llama3")) as (_, events):
        assert json.loads(next(events).data)["type"] == "start"
        r = requests.post(srv.url + "/api/chat", json=chat("demo/echo"), timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
        assert r.headers["Retry-After"]
    fake_ollama.wait_disconnect(2.0)
    srv.wait_idle()
    assert text_of(read_events(srv.url + "/api/chat", chat("demo/echo", "again"))) == answer("again")
