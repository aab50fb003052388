"""Prove the fake upstreams faithful using the official ``ollama`` and ``openai`` clients.

Raw sockets check the bytes on the wire (framing, headers, escaping) and the
disconnect record; nothing is mocked.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import ollama
import openai
import pytest
import requests

from tests.fakes import FakeOllama, FakeOpenAI, Script
from tests.fakes.fixtures import fake_ollama, fake_openai  # noqa: F401
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.timeout(15)

MESSAGES = [{"role": "user", "content": "Say hello"}]


# -- helpers -------------------------------------------------------------------


def raw_post(fake: FakeUpstream, path: str, body: dict[str, Any], *, close: bool = True) -> socket.socket:
    """Send a JSON POST over a plain socket and return the socket to read the response from."""
    parts = urlsplit(fake.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer sk-test\r\nContent-Length: {len(data)}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    """Read until ``marker`` was received (or EOF)."""
    buf = b""
    while marker not in buf:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    return buf


def read_to_eof(sock: socket.socket) -> bytes:
    """Read everything until the server closes the connection."""
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    sock.close()
    return b"".join(chunks)


def split_response(raw: bytes) -> tuple[str, dict[str, str], list[bytes]]:
    """Split a raw chunked HTTP response into status line, headers and chunk payloads."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    status, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in header_lines)}
    chunks = []
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]
    return status, headers, chunks


_open_clients: list[ollama.Client | openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Close the SDK clients a test created (their pooled sockets would leak otherwise)."""
    yield
    while _open_clients:
        _open_clients.pop().close()


def ollama_client(fake: FakeOllama) -> ollama.Client:
    client = ollama.Client(host=fake.url, timeout=5)
    _open_clients.append(client)
    return client


def openai_client(fake: FakeOpenAI, api_key: str = "sk-test") -> openai.OpenAI:
    client = openai.OpenAI(api_key=api_key, base_url=fake.url, max_retries=0, timeout=5)
    _open_clients.append(client)
    return client


# -- Ollama ----------------------------------------------------------------------


def test_ollama_stream_yields_tokens_and_final_part(fake_ollama: FakeOllama) -> None:
    parts = list(ollama_client(fake_ollama).chat(model="llama3", messages=MESSAGES, stream=True))
    assert [p.message.content for p in parts[:-1]] == ["Hello", ",", " world", "!"]
    assert all(p.done is False and p.message.role == "assistant" for p in parts[:-1])
    final = parts[-1]
    assert final.done is True
    assert final.done_reason == "stop"
    assert final.message.content == ""
    assert final.prompt_eval_count == 7
    assert final.eval_count == 4
    assert final.total_duration and final.eval_duration and final.load_duration
    assert final.model == "llama3"


def test_ollama_non_stream(fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Script(tokens=["A", "B"], prompt_tokens=3))
    resp = ollama_client(fake_ollama).chat(model="llama3:latest", messages=MESSAGES, stream=False)
    assert resp.message.content == "AB"
    assert (resp.done, resp.done_reason, resp.prompt_eval_count, resp.eval_count) == (True, "stop", 3, 2)


def test_ollama_wire_format(fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Script(tokens=["<b>", "&", "é"]))
    raw = read_to_eof(raw_post(fake_ollama, "/api/chat", {"model": "llama3", "messages": MESSAGES}))
    status, headers, chunks = split_response(raw)
    assert status == "HTTP/1.1 200 OK"
    assert list(headers) == ["content-type", "date", "connection", "transfer-encoding"]  # Go's order
    assert headers["content-type"] == "application/x-ndjson"
    assert headers["transfer-encoding"] == "chunked"
    # One JSON line per chunk, compact, with Go's HTML-safe escapes and raw UTF-8.
    assert all(c.endswith(b"\n") and c.count(b"\n") == 1 for c in chunks)
    assert b'"message":{"role":"assistant","content":"\\u003cb\\u003e"},"done":false}\n' in chunks[0]
    assert b'"content":"\\u0026"' in chunks[1]
    assert '"content":"é"'.encode() in chunks[2]
    assert b" " not in chunks[0]
    first = json.loads(chunks[0])
    assert list(first) == ["model", "created_at", "message", "done"]
    assert first["created_at"].endswith("Z") and "T" in first["created_at"]
    final = json.loads(chunks[-1])
    assert list(final) == [
        "model",
        "created_at",
        "message",
        "done_reason",
        "done",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ]
    assert final["eval_count"] == 3


def test_ollama_list_version_and_root(fake_ollama: FakeOllama) -> None:
    listed = ollama_client(fake_ollama).list()
    assert [m.model for m in listed.models] == ["llama3:latest", "mistral:latest"]
    assert listed.models[0].details is not None and listed.models[0].details.format == "gguf"
    tags = requests.get(f"{fake_ollama.url}/api/tags", timeout=5).json()
    assert tags["models"][0]["name"] == "llama3:latest"
    root = requests.get(fake_ollama.url, timeout=5)
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert "version" in requests.get(f"{fake_ollama.url}/api/version", timeout=5).json()


def test_ollama_unknown_model_is_404(fake_ollama: FakeOllama) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        list(ollama_client(fake_ollama).chat(model="nope", messages=MESSAGES, stream=True))
    assert info.value.status_code == 404
    assert info.value.error == 'model "nope" not found, try pulling it first'
    raw = requests.post(f"{fake_ollama.url}/api/chat", json={"model": "nope"}, timeout=5)
    assert raw.headers["content-type"] == "application/json; charset=utf-8"
    assert raw.content == b'{"error":"model \\"nope\\" not found, try pulling it first"}'


def test_ollama_scripted_status(fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Script(status=500, error_message="out of memory"))
    with pytest.raises(ollama.ResponseError) as info:
        list(ollama_client(fake_ollama).chat(model="llama3", messages=MESSAGES, stream=True))
    assert (info.value.status_code, info.value.error) == (500, "out of memory")


def test_ollama_mid_stream_error(fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Script(error_after=2, error_message="model crashed"))
    got = []
    with pytest.raises(ollama.ResponseError) as info:
        for part in ollama_client(fake_ollama).chat(model="llama3", messages=MESSAGES, stream=True):
            got.append(part.message.content)
    assert got == ["Hello", ","]
    assert info.value.error == "model crashed"
    assert fake_ollama.wait_completed(1) == 1  # the body still ended cleanly


@pytest.mark.parametrize("stream", [True, False])
def test_ollama_split_utf8_arrives_intact(fake_ollama: FakeOllama, stream: bool) -> None:
    tokens = ["héllo", "日本語", "🙂", "plain"]
    fake_ollama.push(Script(tokens=tokens, split_utf8=True))
    client = ollama_client(fake_ollama)
    if stream:
        parts = list(client.chat(model="llama3", messages=MESSAGES, stream=True))
        assert [p.message.content for p in parts[:-1]] == tokens
    else:
        assert client.chat(model="llama3", messages=MESSAGES, stream=False).message.content == "".join(tokens)


def test_split_utf8_cuts_inside_a_character_on_the_wire(fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Script(tokens=["日本語", "ok"], split_utf8=True))
    raw = read_to_eof(raw_post(fake_ollama, "/api/chat", {"model": "llama3"}))
    _, _, chunks = split_response(raw)
    # Every line comes as two chunks; the first token's halves are not valid UTF-8 on their own.
    assert len(chunks) == 6
    with pytest.raises(UnicodeDecodeError):
        chunks[0].decode("utf-8")
    assert json.loads(chunks[0] + chunks[1])["message"]["content"] == "日本語"
    assert json.loads(chunks[2] + chunks[3])["message"]["content"] == "ok"


def test_ollama_num_predict_gives_length(fake_ollama: FakeOllama) -> None:
    parts = list(
        ollama_client(fake_ollama).chat(
            model="llama3", messages=MESSAGES, stream=True, options={"num_predict": 2}
        )
    )
    assert [p.message.content for p in parts[:-1]] == ["Hello", ","]
    assert (parts[-1].done_reason, parts[-1].eval_count) == ("length", 2)
    (request,) = fake_ollama.wait_requests(1)
    assert request.path == "/api/chat"
    assert request.body["options"]["num_predict"] == 2
    assert request.body["messages"] == MESSAGES
    assert request.headers["content-type"] == "application/json"


def test_ollama_drop_truncates_body(fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Script(drop_after=2))
    got = []
    with pytest.raises(httpx.RemoteProtocolError):
        for part in ollama_client(fake_ollama).chat(model="llama3", messages=MESSAGES, stream=True):
            got.append(part.message.content)
    assert got == ["Hello", ","]
    assert fake_ollama.disconnects == [] and fake_ollama.completed == 0


# -- OpenAI ----------------------------------------------------------------------


def test_openai_stream_with_usage(fake_openai: FakeOpenAI) -> None:
    stream = openai_client(fake_openai).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert [c.choices[0].delta.content for c in chunks[1:5]] == ["Hello", ",", " world", "!"]
    assert chunks[5].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:5])
    usage_chunk = chunks[6]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (7, 4)
    assert usage_chunk.usage.total_tokens == 11
    assert len(chunks) == 7
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o-mini" for c in chunks)
    assert chunks[0].system_fingerprint and chunks[0].system_fingerprint.startswith("fp_")


def test_openai_wire_format(fake_openai: FakeOpenAI) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    raw = read_to_eof(raw_post(fake_openai, "/v1/chat/completions", body))
    status, headers, chunks = split_response(raw)
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["x-request-id"].startswith("req_")
    assert all(c.startswith(b"data: ") and c.endswith(b"\n\n") and c.count(b"\n\n") == 1 for c in chunks)
    assert chunks[-1] == b"data: [DONE]\n\n"
    events = [json.loads(c[len(b"data: ") :]) for c in chunks[:-1]]
    assert list(events[0]) == ["id", "object", "created", "model", "system_fingerprint", "choices", "usage"]
    assert events[0]["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert events[1]["choices"][0]["delta"] == {"content": "Hello"} and events[1]["usage"] is None
    assert events[-2]["choices"][0]["delta"] == {} and events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 4
    assert b", " not in chunks[1]  # compact JSON


def test_openai_stream_without_usage_has_no_usage_key(fake_openai: FakeOpenAI) -> None:
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    _, _, chunks = split_response(read_to_eof(raw_post(fake_openai, "/v1/chat/completions", body)))
    assert all(b'"usage"' not in c for c in chunks)
    assert len(chunks) == 7  # role, 4 tokens, finish, [DONE]


def test_openai_non_stream(fake_openai: FakeOpenAI) -> None:
    completion = openai_client(fake_openai).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert (choice.message.role, choice.message.content, choice.message.refusal) == (
        "assistant",
        "Hello, world!",
        None,
    )
    assert choice.finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 4


@pytest.mark.parametrize("limit_key", ["max_tokens", "max_completion_tokens"])
def test_openai_token_limit_gives_length(fake_openai: FakeOpenAI, limit_key: str) -> None:
    client = openai_client(fake_openai)
    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, **{limit_key: 1})
    )
    assert [c.choices[0].delta.content for c in chunks[1:-1]] == ["Hello"]
    assert chunks[-1].choices[0].finish_reason == "length"
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **{limit_key: 3})
    assert completion.choices[0].message.content == "Hello, world"
    assert completion.choices[0].finish_reason == "length"
    assert fake_openai.wait_requests(2)[1].body[limit_key] == 3


def test_openai_models_list(fake_openai: FakeOpenAI) -> None:
    models = openai_client(fake_openai).models.list()
    assert [m.id for m in models] == ["gpt-4o-mini", "gpt-4o"]
    assert all(m.object == "model" and m.owned_by == "system" for m in models)


@pytest.mark.parametrize(
    ("status", "exc_type", "code"),
    [
        (404, openai.NotFoundError, "model_not_found"),
        (401, openai.AuthenticationError, "invalid_api_key"),
        (429, openai.RateLimitError, "rate_limit_exceeded"),
        (500, openai.InternalServerError, None),
    ],
)
def test_openai_scripted_status(fake_openai: FakeOpenAI, status: int, exc_type: type, code: str | None) -> None:
    fake_openai.push(Script(status=status, error_message="scripted failure"))
    with pytest.raises(exc_type) as info:
        openai_client(fake_openai).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert info.value.status_code == status
    assert info.value.code == code
    assert info.value.body["message"] == "scripted failure"
    assert info.value.response.headers["content-type"] == "application/json; charset=utf-8"


def test_openai_unknown_model(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        openai_client(fake_openai).chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert info.value.code == "model_not_found"
    assert info.value.body["message"] == "The model `gpt-9` does not exist or you do not have access to it."


def test_openai_api_key_checked_when_configured() -> None:
    with FakeOpenAI(api_key="sk-test") as fake:
        with pytest.raises(openai.AuthenticationError) as info:
            openai_client(fake, api_key="sk-wrong").chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert info.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai_client(fake, api_key="sk-wrong").models.list()
        ok = openai_client(fake).chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert ok.choices[0].message.content == "Hello, world!"
        assert fake.wait_requests(2)[1].headers["authorization"] == "Bearer sk-test"


def test_openai_mid_stream_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(Script(error_after=2, error_message="overloaded"))
    got = []
    with pytest.raises(openai.APIError) as info:
        for chunk in openai_client(fake_openai).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        ):
            got.append(chunk.choices[0].delta.content)
    assert type(info.value) is openai.APIError  # not a status error: the status was 200
    assert info.value.message == "overloaded"
    assert got == ["", "Hello", ","]


def test_openai_split_utf8_arrives_intact(fake_openai: FakeOpenAI) -> None:
    tokens = ["héllo", "日本語", "🙂"]
    fake_openai.push(Script(tokens=tokens, split_utf8=True))
    chunks = list(
        openai_client(fake_openai).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )
    assert [c.choices[0].delta.content for c in chunks[1:-1]] == tokens


def test_openai_drop_truncates_body(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(Script(drop_after=1))
    got = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in openai_client(fake_openai).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        ):
            got.append(chunk.choices[0].delta.content)
    assert got == ["", "Hello"]


# -- scripting, timing and the disconnect record (both fakes) --------------------------

CHAT = {
    "ollama": ("/api/chat", {"model": "llama3", "messages": MESSAGES}, b'"content":"Hello"'),
    "openai": (
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
        b'"content":"Hello"',
    ),
}


@pytest.fixture(params=["ollama", "openai"])
def fake(request: pytest.FixtureRequest) -> Any:
    """Each of the two fakes, with the path, body and first-token marker of a streaming chat."""
    cls = FakeOllama if request.param == "ollama" else FakeOpenAI
    with cls() as server:
        yield server, *CHAT[request.param]


@pytest.mark.parametrize(
    "script",
    [
        Script(hang_after=1),
        Script(delay_s=30),
        Script(hang_after=1, split_utf8=True, tokens=["Hello", "🙂"]),
    ],
    ids=["hang", "long-delay", "hang-split"],
)
def test_disconnect_is_recorded_promptly(fake: Any, script: Script) -> None:
    server, path, body, marker = fake
    server.push(script)
    sock = raw_post(server, path, body)
    assert marker in read_until(sock, marker)
    closed_at = time.monotonic()
    sock.close()
    noticed = server.wait_disconnect(2.0)
    assert 0 <= noticed - closed_at < 0.5
    assert server.disconnects == [noticed]
    assert server.completed == 0


def test_disconnect_with_requests_before_first_token(fake: Any) -> None:
    server, path, body, _ = fake
    server.push(Script(hang_after=0))
    with requests.Session() as session:
        resp = session.post(server.url.removesuffix("/v1") + path, json=body, stream=True, timeout=5)
        assert resp.status_code == 200  # headers were sent, then nothing
        closed_at = time.monotonic()
        resp.close()
    assert server.wait_disconnect(2.0) - closed_at < 0.5


def test_disconnect_during_headers_delay(fake: Any) -> None:
    server, path, body, _ = fake
    server.push(Script(headers_delay_s=30))
    sock = raw_post(server, path, body)
    server.wait_requests(1)
    closed_at = time.monotonic()
    sock.close()
    assert server.wait_disconnect(2.0) - closed_at < 0.5


def test_requests_client_sees_truncated_body_on_drop(fake: Any) -> None:
    server, path, body, marker = fake
    server.push(Script(drop_after=1))
    lines = []
    with requests.post(server.url.removesuffix("/v1") + path, json=body, stream=True, timeout=5) as resp:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for line in resp.iter_lines():
                lines.append(line)
    assert any(marker in line for line in lines)
    assert not any(b"[DONE]" in line or b'"done":true' in line for line in lines)


def test_full_stream_counts_as_completed_not_disconnected(fake: Any) -> None:
    server, path, body, _ = fake
    raw = read_to_eof(raw_post(server, path, body))
    assert raw.endswith(b"0\r\n\r\n")
    assert server.wait_completed(1) == 1
    assert server.active == 0
    assert server.disconnects == []
    with pytest.raises(TimeoutError):
        server.wait_disconnect(0.05)


def test_timing_of_delays(fake: Any) -> None:
    server, path, body, marker = fake
    server.push(Script(tokens=["Hello", "a", "b"], headers_delay_s=0.1, first_token_delay_s=0.15, delay_s=0.1))
    start = time.monotonic()
    sock = raw_post(server, path, body)
    read_until(sock, b"\r\n\r\n")
    headers_at = time.monotonic()
    read_until(sock, marker)
    first_at = time.monotonic()
    read_to_eof(sock)
    end = time.monotonic()
    assert headers_at - start >= 0.1
    assert first_at - headers_at >= 0.14
    assert end - first_at >= 0.19
    assert end - start < 2


def test_scripts_are_fifo_then_default(fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Script(tokens=["a"]), Script(tokens=["b"]))
    fake_ollama.default = Script(tokens=["z"])
    client = ollama_client(fake_ollama)
    contents = [client.chat(model="llama3", messages=MESSAGES, stream=False).message.content for _ in range(3)]
    assert contents == ["a", "b", "z"]
    assert len(fake_ollama.wait_requests(3)) == 3


def test_wait_requests_times_out(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(TimeoutError):
        fake_openai.wait_requests(1, timeout=0.05)


def test_close_ends_hanging_handler_promptly() -> None:
    server = FakeOllama(default=Script(hang_after=0))
    sock = raw_post(server, "/api/chat", {"model": "llama3"})
    assert b"200 OK" in read_until(sock, b"\r\n\r\n")
    assert server.active == 1
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 1.0
    assert server.active == 0
    assert server.disconnects == []
    assert b"0\r\n\r\n" not in read_to_eof(sock)  # EOF without the final chunk
    server.close()  # idempotent


def test_close_ends_idle_keep_alive_connections() -> None:
    server = FakeOpenAI()
    client = openai_client(server)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # leaves a pooled connection
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 1.0
