"""Bad input: every refusal is the contract's status with a JSON error, never a trace.

Most cases run in-process against ``POST /api/chat`` and ``POST
/v1/chat/completions`` (OpenAI's error shape); a subset of the nastiest bodies
runs against a real gunicorn + gevent worker, which must stay up, log no
traceback and leave another client's stream untouched.
"""

from __future__ import annotations

import io
import json
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from providers.demo import answer
from tests.fakes import Script

USER = [{"role": "user", "content": "hi"}]
JSON = "application/json"


def chat(**fields: Any) -> dict[str, Any]:
    """A valid chat body with ``fields`` replaced (``...`` removes a field)."""
    body: dict[str, Any] = {"model": "demo/echo", "messages": USER, "stream": False}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def assert_no_trace(text: str | bytes) -> None:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    assert "Traceback" not in text
    assert 'File "' not in text


def assert_sluice_error(response: Any, status: int, code: str | None) -> dict[str, Any]:
    """``response`` is ``status`` with ``{"error": {"code", "message"}}`` (and ``code`` if given)."""
    assert_no_trace(response.get_data())
    assert response.status_code == status, response.get_data()
    assert response.mimetype == JSON
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


def assert_openai_error(response: Any, status: int, code: str | None) -> dict[str, Any]:
    """``response`` is ``status`` with OpenAI's ``{"error": {"message", "type", "param", "code"}}``."""
    assert_no_trace(response.get_data())
    assert response.status_code == status, response.get_data()
    assert response.mimetype == JSON
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["type"], str) and body["error"]["type"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


# -- the table: (body bytes, content type, status, code) ------------------------

DEEP_LIST = b"[" * 100_000
DEEP_OBJECT = b'{"a":' * 5000
DEEP_BALANCED = b"[" * 100_000 + b"]" * 100_000
DEEP_IN_FIELD = b'{"model":"demo/echo","messages":[{"role":"user","content":"hi"}],"meta":' + DEEP_BALANCED + b"}"

RAW_CASES = [
    pytest.param(b'{"messages": [', JSON, 400, "invalid_request", id="malformed-json"),
    pytest.param(b"{'messages': []}", JSON, 400, "invalid_request", id="single-quoted-json"),
    pytest.param(b'{"messages": []} trailing', JSON, 400, "invalid_request", id="trailing-garbage"),
    pytest.param(raw(chat()), "text/plain", 415, "unsupported_media_type", id="text-plain"),
    pytest.param(b"messages=hi", "application/x-www-form-urlencoded", 415, "unsupported_media_type", id="form"),
    pytest.param(DEEP_LIST, JSON, 400, "invalid_request", id="deep-list-unclosed"),
    pytest.param(DEEP_OBJECT, JSON, 400, "invalid_request", id="deep-object-unclosed"),
    pytest.param(DEEP_BALANCED, JSON, 400, "invalid_request", id="deep-list-balanced"),
    pytest.param(DEEP_IN_FIELD, JSON, 400, "invalid_request", id="deep-in-ignored-field"),
    pytest.param(
        b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', JSON, 400, "invalid_request", id="invalid-utf8"
    ),
    pytest.param(b"\xc3", JSON, 400, "invalid_request", id="truncated-utf8"),
    pytest.param(b"", JSON, 400, "invalid_request", id="empty"),
    pytest.param(b"   \n", JSON, 400, "invalid_request", id="whitespace"),
    pytest.param(b"null", JSON, 400, "invalid_request", id="json-null"),
    pytest.param(b"[]", JSON, 400, "invalid_request", id="json-list"),
    pytest.param(b'"hi"', JSON, 400, "invalid_request", id="json-string"),
    pytest.param(b"42", JSON, 400, "invalid_request", id="json-number"),
    pytest.param(
        b'{"messages":[{"role":"user","content":"hi"}],"options":{"temperature":NaN}}',
        JSON,
        400,
        "invalid_request",
        id="temperature-NaN",
    ),
    pytest.param(
        b'{"messages":[{"role":"user","content":"hi"}],"options":{"temperature":Infinity}}',
        JSON,
        400,
        "invalid_request",
        id="temperature-Infinity",
    ),
    pytest.param(
        b'{"messages":[{"role":"user","content":"hi"}],"options":{"temperature":1e999}}',
        JSON,
        400,
        "invalid_request",
        id="temperature-overflow",
    ),
]

CHAT_CASES = [
    pytest.param(chat(messages=...), 400, "invalid_request", id="messages-missing"),
    pytest.param(chat(messages=[]), 400, "invalid_request", id="messages-empty"),
    pytest.param(chat(messages="hi"), 400, "invalid_request", id="messages-string"),
    pytest.param(chat(messages={"role": "user", "content": "hi"}), 400, "invalid_request", id="messages-object"),
    pytest.param(chat(messages=None), 400, "invalid_request", id="messages-null"),
    pytest.param(chat(messages=["hi"]), 400, "invalid_request", id="message-string"),
    pytest.param(chat(messages=[None]), 400, "invalid_request", id="message-null"),
    pytest.param(chat(messages=[["user", "hi"]]), 400, "invalid_request", id="message-list"),
    pytest.param(chat(messages=[{"content": "hi"}]), 400, "invalid_request", id="role-missing"),
    pytest.param(chat(messages=[{"role": "wizard", "content": "hi"}]), 400, "invalid_request", id="role-unknown"),
    pytest.param(chat(messages=[{"role": "USER", "content": "hi"}]), 400, "invalid_request", id="role-uppercase"),
    pytest.param(chat(messages=[{"role": 1, "content": "hi"}]), 400, "invalid_request", id="role-number"),
    pytest.param(chat(messages=[{"role": "user"}]), 400, "invalid_request", id="content-missing"),
    pytest.param(chat(messages=[{"role": "user", "content": 5}]), 400, "invalid_request", id="content-number"),
    pytest.param(chat(messages=[{"role": "user", "content": None}]), 400, "invalid_request", id="content-null"),
    pytest.param(chat(messages=[{"role": "user", "content": ["hi"]}]), 400, "invalid_request", id="content-list"),
    pytest.param(
        chat(messages=[{"role": "user", "content": {"text": "hi"}}]), 400, "invalid_request", id="content-object"
    ),
    pytest.param(chat(options="hot"), 400, "invalid_request", id="options-string"),
    pytest.param(chat(options=[1]), 400, "invalid_request", id="options-list"),
    pytest.param(chat(options={"temperature": "0.5"}), 400, "invalid_request", id="temperature-string"),
    pytest.param(chat(options={"temperature": -0.1}), 400, "invalid_request", id="temperature-negative"),
    pytest.param(chat(options={"temperature": 2.5}), 400, "invalid_request", id="temperature-above-2"),
    pytest.param(chat(options={"temperature": True}), 400, "invalid_request", id="temperature-bool"),
    pytest.param(chat(options={"max_tokens": 0}), 400, "invalid_request", id="max_tokens-0"),
    pytest.param(chat(options={"max_tokens": -1}), 400, "invalid_request", id="max_tokens-negative"),
    pytest.param(chat(options={"max_tokens": 1.5}), 400, "invalid_request", id="max_tokens-float"),
    pytest.param(chat(options={"max_tokens": "10"}), 400, "invalid_request", id="max_tokens-string"),
    pytest.param(chat(options={"max_tokens": True}), 400, "invalid_request", id="max_tokens-true"),
    pytest.param(chat(stream="yes"), 400, "invalid_request", id="stream-string"),
    pytest.param(chat(stream=1), 400, "invalid_request", id="stream-number"),
    pytest.param(chat(model=42), 400, "invalid_request", id="model-number"),
    pytest.param(chat(model=["demo/echo"]), 400, "invalid_request", id="model-list"),
    pytest.param(chat(model="nowhere/x"), 404, "model_not_found", id="provider-unknown"),
    pytest.param(chat(model="demo/unknown"), 404, "model_not_found", id="demo-unknown"),
    pytest.param(chat(model="demo/"), 404, "model_not_found", id="model-name-empty"),
    pytest.param(chat(model="nowhere/x", stream=True), 404, "model_not_found", id="provider-unknown-streamed"),
    pytest.param(chat(model="demo/unknown", stream=True), 404, "model_not_found", id="demo-unknown-streamed"),
]


@pytest.mark.parametrize(("data", "content_type", "status", "code"), RAW_CASES)
def test_chat_refuses_bad_bodies(client, data, content_type, status, code):
    response = client.post("/api/chat", data=data, content_type=content_type)
    assert_sluice_error(response, status, code)


@pytest.mark.parametrize(("body", "status", "code"), CHAT_CASES)
def test_chat_refuses_bad_fields(client, body, status, code):
    response = client.post("/api/chat", data=raw(body), content_type=JSON)
    assert_sluice_error(response, status, code)


def test_the_message_names_the_wrong_field(client):
    error = assert_sluice_error(
        client.post("/api/chat", json=chat(options={"max_tokens": "10"})), 400, "invalid_request"
    )
    assert "max_tokens" in error["message"]
    error = assert_sluice_error(
        client.post("/api/chat", json=chat(messages=[USER[0], {"role": "user", "content": 5}])),
        400,
        "invalid_request",
    )
    assert "messages[1]" in error["message"]


def test_a_valid_body_passes_the_same_checks(client):
    # The table's refusals come from the checks, not from a broken happy path.
    response = client.post("/api/chat", json=chat(options={"temperature": 0, "max_tokens": 1000}))
    assert response.status_code == 200
    assert response.get_json()["message"]["content"] == answer("hi")


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/vnd.api+json"]
)
def test_json_media_types_are_accepted(client, content_type):
    response = client.post("/api/chat", data=raw(chat()), content_type=content_type)
    assert response.status_code == 200, response.get_data()


# -- lone surrogates: valid JSON escapes, but not Unicode text ----------------------

SURROGATE_CASES = [
    pytest.param(
        "/api/chat", b'{"messages":[{"role":"user","content":"a\\ud800b"}],"stream":false}', id="chat-content"
    ),
    pytest.param("/api/chat", b'{"messages":[{"role":"user","content":"a\\udfffb"}]}', id="chat-content-streamed"),
    pytest.param("/api/chat", b'{"model":"demo/\\ud800","messages":[{"role":"user","content":"a"}]}', id="chat-model"),
    pytest.param("/v1/chat/completions", b'{"messages":[{"role":"user","content":"a\\ud800b"}]}', id="v1-content"),
    pytest.param(
        "/v1/chat/completions",
        b'{"messages":[{"role":"user","content":"a\\ud800b"}],"stream":true}',
        id="v1-content-streamed",
    ),
]


def _post_whole(client: Any, path: str, data: bytes) -> tuple[Any, bytes]:
    """POST and read the whole body; an exception escaping the app fails the test."""
    try:
        response = client.post(path, data=data, content_type=JSON)
    except Exception as exc:  # TESTING propagates what the error handlers could not handle
        pytest.fail(f"the request raised out of the app: {exc!r}")
    try:
        return response, response.get_data()
    except Exception as exc:  # the in-process client surfaces a body that broke off as an exception
        pytest.fail(f"the {response.status_code} response broke off mid-body: {exc!r}")


# A lone surrogate escape ("\ud800") parses as JSON into a str that cannot be
# encoded as UTF-8: it must be refused as bad input, never half-answered.
@pytest.mark.parametrize(("path", "data"), SURROGATE_CASES)
def test_lone_surrogates_are_refused_or_answered_whole(client, path, data):
    response, body = _post_whole(client, path, data)
    assert_no_trace(body)
    assert response.status_code in (200, 400, 404), body
    if response.status_code == 200:
        if response.mimetype == "text/event-stream":  # answered whole: the stream has its end
            last = body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
            assert last == b"data: [DONE]" or b'"type":"done"' in last, body
        return
    check = assert_openai_error if path.startswith("/v1") else assert_sluice_error
    check(response, response.status_code, "invalid_request" if response.status_code == 400 else "model_not_found")


# -- body size ------------------------------------------------------------------


def _chunked(data: bytes, path: str = "/api/chat") -> Request:
    """A request whose body has no Content-Length (as a server passes a chunked upload)."""
    environ = EnvironBuilder(path=path, method="POST", input_stream=io.BytesIO(data), content_type=JSON).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input_terminated"] = True
    return Request(environ)


def _sized(limit: int) -> bytes:
    """A valid chat body of exactly ``limit`` bytes."""
    body = raw(chat(messages=[{"role": "user", "content": ""}]))
    return raw(chat(messages=[{"role": "user", "content": "x" * (limit - len(body))}]))


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_body_over_the_limit_is_413(app, client, path):
    app.config["SLUICE_MAX_BODY_BYTES"] = 100
    check = assert_openai_error if path.startswith("/v1") else assert_sluice_error
    check(client.post(path, data=_sized(101), content_type=JSON), 413, "payload_too_large")
    check(client.post(path, data=b"x" * 100_000, content_type=JSON), 413, "payload_too_large")
    assert client.post(path, data=_sized(100), content_type=JSON).status_code == 200


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_chunked_body_over_the_limit_is_413(app, client, path):
    app.config["SLUICE_MAX_BODY_BYTES"] = 100
    check = assert_openai_error if path.startswith("/v1") else assert_sluice_error
    check(client.open(_chunked(_sized(101), path)), 413, "payload_too_large")
    check(client.open(_chunked(b"[" * 1_000_000, path)), 413, "payload_too_large")
    response = client.open(_chunked(_sized(100), path))
    assert response.status_code == 200, response.get_data()


# -- /v1: the same refusals in OpenAI's shape -------------------------------------


def v1(**fields: Any) -> dict[str, Any]:
    """A valid chat-completions body with ``fields`` replaced (``...`` removes a field)."""
    body: dict[str, Any] = {"model": "demo/echo", "messages": USER}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


V1_CASES = [
    pytest.param(b'{"messages": [', JSON, 400, "invalid_request", id="malformed-json"),
    pytest.param(raw(v1()), "text/plain", 415, "unsupported_media_type", id="text-plain"),
    pytest.param(DEEP_LIST, JSON, 400, "invalid_request", id="deep-list-unclosed"),
    pytest.param(DEEP_OBJECT, JSON, 400, "invalid_request", id="deep-object-unclosed"),
    pytest.param(DEEP_BALANCED, JSON, 400, "invalid_request", id="deep-list-balanced"),
    pytest.param(b'{"messages": "\xff"}', JSON, 400, "invalid_request", id="invalid-utf8"),
    pytest.param(b"", JSON, 400, "invalid_request", id="empty"),
    pytest.param(b"null", JSON, 400, "invalid_request", id="json-null"),
    pytest.param(b"[]", JSON, 400, "invalid_request", id="json-list"),
    pytest.param(b'"hi"', JSON, 400, "invalid_request", id="json-string"),
    pytest.param(
        b'{"model":"demo/echo","messages":[{"role":"user","content":"hi"}],"temperature":NaN}',
        JSON,
        400,
        "invalid_request",
        id="temperature-NaN",
    ),
    pytest.param(raw(v1(messages=...)), JSON, 400, "invalid_request", id="messages-missing"),
    pytest.param(raw(v1(messages=[])), JSON, 400, "invalid_request", id="messages-empty"),
    pytest.param(raw(v1(messages="hi")), JSON, 400, "invalid_request", id="messages-string"),
    pytest.param(raw(v1(messages=["hi"])), JSON, 400, "invalid_request", id="message-string"),
    pytest.param(
        raw(v1(messages=[{"role": "wizard", "content": "hi"}])), JSON, 400, "invalid_request", id="role-unknown"
    ),
    pytest.param(raw(v1(messages=[{"role": "user", "content": 5}])), JSON, 400, "invalid_request", id="content-number"),
    pytest.param(
        raw(v1(messages=[{"role": "user", "content": None}])), JSON, 400, "invalid_request", id="content-null"
    ),
    pytest.param(
        raw(v1(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])),
        JSON,
        400,
        "invalid_request",
        id="content-image-part",
    ),
    pytest.param(
        raw(v1(messages=[{"role": "user", "content": [5]}])), JSON, 400, "invalid_request", id="content-part-number"
    ),
    pytest.param(raw(v1(temperature="hot")), JSON, 400, "invalid_request", id="temperature-string"),
    pytest.param(raw(v1(temperature=3)), JSON, 400, "invalid_request", id="temperature-above-2"),
    pytest.param(raw(v1(max_tokens=0)), JSON, 400, "invalid_request", id="max_tokens-0"),
    pytest.param(raw(v1(max_tokens=1.5)), JSON, 400, "invalid_request", id="max_tokens-float"),
    pytest.param(raw(v1(max_tokens="10")), JSON, 400, "invalid_request", id="max_tokens-string"),
    pytest.param(raw(v1(max_completion_tokens=True)), JSON, 400, "invalid_request", id="max_completion_tokens-true"),
    pytest.param(raw(v1(stream="yes")), JSON, 400, "invalid_request", id="stream-string"),
    pytest.param(
        raw(v1(stream=True, stream_options="usage")), JSON, 400, "invalid_request", id="stream_options-string"
    ),
    pytest.param(raw(v1(model=42)), JSON, 400, "invalid_request", id="model-number"),
    pytest.param(raw(v1(model="nowhere/x")), JSON, 404, "model_not_found", id="provider-unknown"),
    pytest.param(raw(v1(model="demo/unknown")), JSON, 404, "model_not_found", id="demo-unknown"),
    pytest.param(raw(v1(model="demo/unknown", stream=True)), JSON, 404, "model_not_found", id="demo-unknown-streamed"),
]


@pytest.mark.parametrize(("data", "content_type", "status", "code"), V1_CASES)
def test_v1_refuses_bad_bodies_in_openai_shape(client, data, content_type, status, code):
    response = client.post("/v1/chat/completions", data=data, content_type=content_type)
    error = assert_openai_error(response, status, code)
    # The SDK picks its exception class by status; the type follows OpenAI's naming.
    assert error["type"] == "invalid_request_error"


# -- routing ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_get_on_a_post_only_route_is_405_json(client, path):
    response = client.get(path)
    check = assert_openai_error if path.startswith("/v1") else assert_sluice_error
    check(response, 405, None)
    assert "POST" in response.headers["Allow"]


def test_wrong_method_on_get_route_is_405_json(client):
    response = client.post("/api/models", json={})
    assert_sluice_error(response, 405, None)
    assert "GET" in response.headers["Allow"]


@pytest.mark.parametrize("path", ["/nope", "/api/nope", "/api/chat/extra", "/%ff"])
def test_unknown_path_is_404_json(client, path):
    assert_sluice_error(client.get(path), 404, None)
    assert_sluice_error(client.post(path, json=chat()), 404, None)


def test_unknown_v1_path_is_404_in_openai_shape(client):
    assert_openai_error(client.get("/v1/nope"), 404, None)
    assert_openai_error(client.post("/v1/completions", json={"prompt": "hi"}), 404, None)


# -- the real server: nasty bodies leave the worker (and other streams) alone -------

SERVER_CASES = [
    (b'{"messages": [', JSON, 400, "invalid_request"),
    (raw(chat()), "text/plain", 415, "unsupported_media_type"),
    (DEEP_LIST, JSON, 400, "invalid_request"),
    (DEEP_OBJECT, JSON, 400, "invalid_request"),
    (DEEP_BALANCED, JSON, 400, "invalid_request"),
    (DEEP_IN_FIELD, JSON, 400, "invalid_request"),
    (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', JSON, 400, "invalid_request"),
    (b"", JSON, 400, "invalid_request"),
    (b"null", JSON, 400, "invalid_request"),
    (b'{"messages":[{"role":"user","content":"hi"}],"options":{"temperature":NaN}}', JSON, 400, "invalid_request"),
    (raw(chat(messages=[{"role": "user", "content": None}])), JSON, 400, "invalid_request"),
    (raw(chat(options={"max_tokens": True})), JSON, 400, "invalid_request"),
    (raw(chat(model="demo/unknown", stream=True)), JSON, 404, "model_not_found"),
    (raw(chat(model="nowhere/x")), JSON, 404, "model_not_found"),
]


def _booted_workers(log: str) -> int:
    return len(re.findall(r"Booting worker with pid", log))


def _post_raw(url: str, data: bytes, content_type: str) -> requests.Response:
    return requests.post(url + "/api/chat", data=data, headers={"Content-Type": content_type}, timeout=10)


@pytest.mark.slow
def test_nasty_bodies_on_the_real_server(server, fake_ollama):
    log_before = server.log()
    # Another client's stream runs while the nasty bodies arrive.
    tokens = ["one ", "two ", "three ", "four ", "five"]
    fake_ollama.push(Script(tokens=tokens, delay_s=0.2))
    with requests.post(
        server.url + "/api/chat",
        json={"model": "ollama/llama3", "messages": USER},
        headers={"Accept": "application/x-ndjson"},
        stream=True,
        timeout=10,
    ) as other:
        assert other.status_code == 200
        lines = other.iter_lines()
        first = json.loads(next(lines))
        assert first["type"] == "start"

        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda case: _post_raw(server.url, case[0], case[1]), SERVER_CASES))
        for (data, _, status, code), response in zip(SERVER_CASES, responses, strict=True):
            assert_no_trace(response.content)
            assert response.status_code == status, (data[:40], response.content)
            assert response.headers["Content-Type"].startswith(JSON)
            assert response.json()["error"]["code"] == code

        # A chunked body (no Content-Length) over the default 32 MiB limit.
        def body():
            for _ in range(513):
                yield b"x" * 65536

        big = requests.post(server.url + "/api/chat", data=body(), headers={"Content-Type": JSON}, timeout=10)
        assert_no_trace(big.content)
        assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"

        rest = [json.loads(line) for line in lines if line]
    events = [first, *rest]
    assert "".join(e["content"] for e in events if e["type"] == "delta") == "".join(tokens)
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "stop"

    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    # The worker answered every request itself: nothing crashed and rebooted.
    ok = requests.post(
        server.url + "/api/chat", json=chat(messages=[{"role": "user", "content": "still here"}]), timeout=10
    )
    assert ok.status_code == 200 and ok.json()["message"]["content"] == answer("still here")
    server.wait_idle()
    new_log = server.log()[len(log_before) :]
    assert "Traceback" not in new_log
    assert "[ERROR]" not in new_log
    assert _booted_workers(new_log) == 0


@pytest.mark.slow
def test_lone_surrogates_on_the_real_server(server):
    log_before = server.log()
    problems = []
    for param in SURROGATE_CASES:
        path, data = param.values
        try:
            response = requests.post(server.url + path, data=data, headers={"Content-Type": JSON}, timeout=10)
        except requests.exceptions.ChunkedEncodingError as exc:
            problems.append(f"{param.id}: 200, then the stream broke off: {exc!r}")
            continue
        assert_no_trace(response.content)
        if response.status_code not in (200, 400, 404):
            problems.append(f"{param.id}: {response.status_code} {response.content!r}")
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    server.wait_idle()
    if "Traceback" in server.log()[len(log_before) :]:
        problems.append("a Traceback in the gunicorn log")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_garbage_http_does_not_kill_the_worker(server):
    host, port = server.url.removeprefix("http://").split(":")
    for payload in (
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/json\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello on the plain port
    ):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert_no_trace(reply)
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
