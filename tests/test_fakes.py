"""Prove the fake upstreams faithful using the official ``ollama`` and ``openai`` clients.

Raw sockets check the bytes on the wire (framing, headers, escaping) and the
disconnect record; nothing is mocked.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import ollama
import openai
import pydantic
import pytest
import requests

from tests.fakes import FakeOllama, FakeOpenAI, Script
from tests.fakes.fixtures import fake_ollama, fake_openai  # noqa: F401
from tests.fakes.upstream import EMBED_DIMENSIONS, FakeUpstream, embedding_of

pytestmark = pytest.mark.timeout(15)

MESSAGES = [{"role": "user", "content": "Say hello"}]
WEATHER_CALL = {"id": "call_abc", "name": "get_weather", "arguments": '{"city":"Paris"}'}


class GetWeather(pydantic.BaseModel):
    city: str


class Answer(pydantic.BaseModel):
    city: str
    temperature: float


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
        ollama_client(fake_ollama).chat(model="llama3", messages=MESSAGES, stream=True, options={"num_predict": 2})
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


def test_ollama_thinking_streams_before_content(fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Script(reasoning=["Hmm", ", ok."], tokens=["Hi", "!"]))
    parts = list(ollama_client(fake_ollama).chat(model="llama3", messages=MESSAGES, stream=True, think=True))
    assert [(p.message.thinking, p.message.content) for p in parts[:-1]] == [
        ("Hmm", ""),
        (", ok.", ""),
        (None, "Hi"),
        (None, "!"),
    ]
    assert parts[-1].done is True and parts[-1].eval_count == 4  # thinking counts as generated
    assert fake_ollama.last_body()["think"] is True

    fake_ollama.push(Script(reasoning=["Hmm", ", ok."], tokens=["Hi", "!"]))
    resp = ollama_client(fake_ollama).chat(model="llama3", messages=MESSAGES, stream=False)
    assert (resp.message.thinking, resp.message.content) == ("Hmm, ok.", "Hi!")


def test_ollama_thinking_wire_format(fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Script(reasoning=["<a>"], tokens=["b"]))
    _, _, chunks = split_response(read_to_eof(raw_post(fake_ollama, "/api/chat", {"model": "llama3"})))
    assert b'"message":{"role":"assistant","content":"","thinking":"\\u003ca\\u003e"},"done":false}\n' in chunks[0]
    assert json.loads(chunks[1])["message"] == {"role": "assistant", "content": "b"}


def test_ollama_tool_calls(fake_ollama: FakeOllama) -> None:
    second = {"name": "get_time", "arguments": {"tz": "CET"}}
    fake_ollama.push(Script(tokens=[], tool_calls=[WEATHER_CALL, second]))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    parts = list(ollama_client(fake_ollama).chat(model="llama3", messages=MESSAGES, tools=tools, stream=True))
    assert len(parts) == 2
    calls = parts[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]
    assert parts[0].done is False and parts[0].message.content == ""
    assert (parts[1].done, parts[1].done_reason, parts[1].message.tool_calls) == (True, "stop", None)
    assert fake_ollama.last_body()["tools"] == tools

    fake_ollama.push(Script(tokens=["ok"], tool_calls=[WEATHER_CALL]))
    resp = ollama_client(fake_ollama).chat(model="llama3", messages=MESSAGES, stream=False)
    assert resp.message.content == "ok" and resp.done_reason == "stop"
    assert resp.message.tool_calls is not None and resp.message.tool_calls[0].function.arguments == {"city": "Paris"}


def test_ollama_tool_calls_wire_format(fake_ollama: FakeOllama) -> None:
    # With an id: Ollama 0.12.10+ (id, function.index always). Without: earlier (no id, index 0 omitted).
    calls = [
        WEATHER_CALL,
        {"name": "f", "arguments": '{"b":1,"a":2}'},
        {"id": "call_x", "name": "g", "arguments": '{"b":1,"a":2}'},
    ]
    fake_ollama.push(Script(tokens=[], tool_calls=calls))
    _, _, chunks = split_response(read_to_eof(raw_post(fake_ollama, "/api/chat", {"model": "llama3"})))
    assert len(chunks) == 2
    line = json.loads(chunks[0])
    assert list(line) == ["model", "created_at", "message", "done"]
    assert list(line["message"]) == ["role", "content", "tool_calls"]
    assert line["message"]["tool_calls"] == [
        {"id": "call_abc", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
        {"function": {"index": 1, "name": "f", "arguments": {"a": 2, "b": 1}}},
        {"id": "call_x", "function": {"index": 2, "name": "g", "arguments": {"b": 1, "a": 2}}},
    ]
    assert list(line["message"]["tool_calls"][1]["function"]["arguments"]) == ["a", "b"]  # a Go map: sorted
    assert list(line["message"]["tool_calls"][2]["function"]["arguments"]) == ["b", "a"]  # ordered since 0.12.10
    fake_ollama.push(Script(tokens=[], tool_calls=[{"name": "f", "arguments": {}}]))
    _, _, chunks = split_response(read_to_eof(raw_post(fake_ollama, "/api/chat", {"model": "llama3"})))
    assert json.loads(chunks[0])["message"]["tool_calls"] == [{"function": {"name": "f", "arguments": {}}}]


def test_ollama_usage_override_and_absent(fake_ollama: FakeOllama) -> None:
    client = ollama_client(fake_ollama)
    fake_ollama.push(Script(usage={"prompt_tokens": 30, "completion_tokens": 12}))
    final = list(client.chat(model="llama3", messages=MESSAGES, stream=True))[-1]
    assert (final.prompt_eval_count, final.eval_count) == (30, 12)
    fake_ollama.push(Script(report_usage=False))
    final = list(client.chat(model="llama3", messages=MESSAGES, stream=True))[-1]
    assert final.done is True and final.prompt_eval_count is None and final.eval_count is None
    assert final.total_duration
    fake_ollama.push(Script(report_usage=False))
    assert client.chat(model="llama3", messages=MESSAGES, stream=False).eval_count is None


def test_ollama_context_length_and_retry_after(fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Script(status=400, error_code="context_length_exceeded"))
    with pytest.raises(ollama.ResponseError) as info:
        list(ollama_client(fake_ollama).chat(model="llama3", messages=MESSAGES, stream=True))
    assert (info.value.status_code, info.value.error) == (400, "the input length exceeds the context length")
    fake_ollama.push(Script(status=429, retry_after="3", error_message="server busy"))
    raw = requests.post(f"{fake_ollama.url}/api/chat", json={"model": "llama3"}, timeout=5)
    assert (raw.status_code, raw.headers["retry-after"], raw.json()) == (429, "3", {"error": "server busy"})


def test_ollama_request_record_keeps_every_field(fake_ollama: FakeOllama) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    messages = [
        {"role": "user", "content": "what is this?", "images": ["aGk="]},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "f"},
    ]
    ollama_client(fake_ollama).chat(
        model="llama3",
        messages=messages,
        stream=False,
        format=schema,
        options={"num_ctx": 8192, "temperature": 0.2},
        keep_alive="5m",
        think=True,
    )
    body = fake_ollama.last_body()
    assert body["format"] == schema and body["keep_alive"] == "5m" and body["think"] is True
    assert body["options"] == {"num_ctx": 8192, "temperature": 0.2}
    assert body["messages"][0]["images"] == ["aGk="]
    assert body["messages"][1]["tool_calls"][0]["function"] == {"name": "f", "arguments": {"a": 1}}
    assert body["messages"][2]["tool_name"] == "f"
    raw = requests.post(f"{fake_ollama.url}/api/chat", json={"model": "llama3", "stream": False, "x": [1]}, timeout=5)
    assert raw.status_code == 200 and fake_ollama.last_body()["x"] == [1]


def test_ollama_embed(fake_ollama: FakeOllama) -> None:
    client = ollama_client(fake_ollama)
    result = client.embed(model="nomic-embed-text", input=["héllo world", "two"])
    assert [list(v) for v in result.embeddings] == [embedding_of("héllo world"), embedding_of("two")]
    assert len(result.embeddings[0]) == EMBED_DIMENSIONS
    assert result.prompt_eval_count == 3 and result.total_duration
    assert client.embed(model="llama3", input="one", dimensions=3).embeddings == [embedding_of("one", 3)]
    assert fake_ollama.embed_requests[-1].body == {"model": "llama3", "input": "one", "dimensions": 3}
    with pytest.raises(ollama.ResponseError) as info:
        client.embed(model="nope", input="x")
    assert (info.value.status_code, info.value.error) == (404, 'model "nope" not found, try pulling it first')
    fake_ollama.push(Script(status=429, retry_after="2", error_message="busy"))
    raw = requests.post(f"{fake_ollama.url}/api/embed", json={"model": "llama3", "input": "x"}, timeout=5)
    assert (raw.status_code, raw.headers["retry-after"], raw.json()) == (429, "2", {"error": "busy"})


# -- OpenAI ----------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["float", "base64", None])
def test_openai_embeddings(fake_openai: FakeOpenAI, encoding: str | None) -> None:
    client = openai_client(fake_openai)
    kwargs: dict[str, Any] = {} if encoding is None else {"encoding_format": encoding}
    result = client.embeddings.create(model="text-embedding-3-small", input=["a b", "ü"], **kwargs)
    vectors = [item.embedding for item in result.data]
    if encoding == "base64":  # the caller asked for base64: the SDK hands it over as it came
        assert [list(struct.unpack("<8f", base64.b64decode(v))) for v in vectors] == [  # type: ignore[arg-type]
            embedding_of("a b"),
            embedding_of("ü"),
        ]
    else:  # floats, or base64 (the SDK's default request) decoded by the SDK
        assert vectors == [embedding_of("a b"), embedding_of("ü")]
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (3, 3)
    assert fake_openai.embed_requests[-1].body["encoding_format"] == (encoding or "base64")
    tokens = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2], [3]], dimensions=4)
    assert [item.embedding for item in tokens.data] == [embedding_of("1 2", 4), embedding_of("3", 4)]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="gpt-4o", input="x")
    fake_openai.push(Script(status=429, retry_after="3"))
    with pytest.raises(openai.RateLimitError) as info:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert info.value.response.headers["retry-after"] == "3"


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
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, **{limit_key: 1}))
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


# -- OpenAI: reasoning, tool calls, refusals, logprobs, usage, errors -----------------------


def sse_events(fake: FakeUpstream, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST a chat body over a raw socket; return the SSE events' JSON (without [DONE])."""
    _, _, chunks = split_response(read_to_eof(raw_post(fake, "/v1/chat/completions", body)))
    assert chunks[-1] == b"data: [DONE]\n\n"
    return [json.loads(c[len(b"data: ") :]) for c in chunks[:-1]]


def test_openai_vllm_style_stop_reason(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(Script(tokens=["a"], stop_sequence="END"))
    events = sse_events(fake_openai, {"model": "gpt-4o", "messages": MESSAGES, "stream": True})
    assert events[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
        "stop_reason": "END",
    }
    assert all("stop_reason" not in e["choices"][0] for e in events[:-1])
    fake_openai.push(Script(tokens=["a"], stop_sequence="END"))
    chunks = list(openai_client(fake_openai).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert (chunks[-1].choices[0].model_extra or {})["stop_reason"] == "END"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_openai_reasoning_streams_before_content(fake_openai: FakeOpenAI, field: str) -> None:
    fake_openai.push(Script(reasoning=["Let me", " think."], tokens=["Hi"], reasoning_field=field))
    chunks = list(
        openai_client(fake_openai).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )
    deltas = [c.choices[0].delta for c in chunks]
    assert deltas[0].role == "assistant" and deltas[0].content == ""
    assert [getattr(d, field, None) for d in deltas[1:3]] == ["Let me", " think."]
    assert all(d.content is None for d in deltas[1:3])
    assert deltas[3].content == "Hi"
    assert chunks[-1].choices[0].finish_reason == "stop"
    other = "reasoning" if field == "reasoning_content" else "reasoning_content"
    assert all(getattr(d, other, None) is None for d in deltas)

    fake_openai.push(Script(reasoning=["Let me", " think."], tokens=["Hi"], reasoning_field=field))
    message = openai_client(fake_openai).chat.completions.create(model="gpt-4o", messages=MESSAGES).choices[0].message
    assert (message.content, getattr(message, field)) == ("Hi", "Let me think.")


def test_openai_reasoning_wire_format(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(Script(reasoning=["a", "b"], tokens=["Hi"]))
    events = sse_events(fake_openai, {"model": "gpt-4o", "messages": MESSAGES, "stream": True})
    assert [e["choices"][0]["delta"] for e in events] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"reasoning_content": "a"},
        {"reasoning_content": "b"},
        {"content": "Hi"},
        {},
    ]


def test_openai_tool_call_stream_wire_format(fake_openai: FakeOpenAI) -> None:
    second = {"id": "call_def", "name": "get_time", "arguments": "{}"}
    fake_openai.push(Script(tokens=[], tool_calls=[WEATHER_CALL, second]))
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True, "tools": [{"type": "function"}]}
    events = sse_events(fake_openai, body)
    deltas = [e["choices"][0]["delta"] for e in events]
    # A tool-only answer opens with the role and the first call in one chunk, content null (as the API does).
    assert deltas[0] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"index": 0, "id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
        ],
        "refusal": None,
    }
    pieces = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:5]]
    assert pieces == ['{"ci', 'ty":', '"Par', 'is"}']
    assert all(
        d["tool_calls"][0] == {"index": 0, "function": {"arguments": p}}
        for d, p in zip(deltas[1:5], pieces, strict=True)
    )
    assert deltas[5] == {
        "tool_calls": [
            {"index": 1, "id": "call_def", "type": "function", "function": {"name": "get_time", "arguments": ""}}
        ]
    }
    assert deltas[6] == {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}
    assert deltas[7] == {} and events[7]["choices"][0]["finish_reason"] == "tool_calls"
    assert len(events) == 8
    assert fake_openai.last_body()["tools"] == [{"type": "function"}]


def test_openai_tool_calls_after_content(fake_openai: FakeOpenAI) -> None:
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}  # no id: the fake makes one up
    fake_openai.push(Script(tokens=["Checking."], tool_calls=[call]))
    chunks = list(openai_client(fake_openai).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert chunks[0].choices[0].delta.content == ""
    assert chunks[1].choices[0].delta.content == "Checking."
    head = chunks[2].choices[0].delta.tool_calls
    assert head is not None and head[0].id is not None and head[0].id.startswith("call_") and len(head[0].id) == 29
    calls = [c.choices[0].delta.tool_calls for c in chunks[2:-1]]
    args = "".join(c[0].function.arguments or "" for c in calls if c and c[0].function)
    assert json.loads(args) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_stream_helper_assembles_tool_calls(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(Script(tokens=[], tool_calls=[WEATHER_CALL], tool_args_chunk=3))
    with openai_client(fake_openai).chat.completions.stream(
        model="gpt-4o", messages=MESSAGES, tools=[openai.pydantic_function_tool(GetWeather, name="get_weather")]
    ) as stream:
        events = [e.type for e in stream]
        completion = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in events and "tool_calls.function.arguments.done" in events
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == ("call_abc", "get_weather", '{"city":"Paris"}')
    assert call.function.parsed_arguments == GetWeather(city="Paris")
    assert fake_openai.last_body()["tools"][0]["function"]["strict"] is True


def test_openai_tool_calls_non_stream(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(Script(tokens=[], tool_calls=[WEATHER_CALL]))
    completion = openai_client(fake_openai).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, tools=[openai.pydantic_function_tool(GetWeather, name="get_weather")]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.refusal is None
    (call,) = choice.message.tool_calls or []
    assert (call.id, call.type, call.function.name) == ("call_abc", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    plain = {"model": "gpt-4o", "messages": MESSAGES}
    raw = requests.post(f"{fake_openai.url}/chat/completions", json=plain, timeout=5)
    assert list(raw.json()["choices"][0]["message"]) == ["role", "content", "refusal"]


def test_openai_tool_calls_cut_by_token_limit(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(Script(tokens=["a", "b"], tool_calls=[WEATHER_CALL]))
    choice = (
        openai_client(fake_openai).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1).choices[0]
    )
    assert (choice.finish_reason, choice.message.content, choice.message.tool_calls) == ("length", "a", None)


def test_openai_refusal(fake_openai: FakeOpenAI) -> None:
    refusal = ["I'm", " sorry", "."]
    fake_openai.push(Script(tokens=[], refusal=refusal))
    events = sse_events(fake_openai, {"model": "gpt-4o", "messages": MESSAGES, "stream": True})
    assert [e["choices"][0]["delta"] for e in events] == [
        {"role": "assistant", "content": None, "refusal": ""},
        {"refusal": "I'm"},
        {"refusal": " sorry"},
        {"refusal": "."},
        {},
    ]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"

    client = openai_client(fake_openai)
    fake_openai.push(Script(tokens=[], refusal=refusal))
    with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES, response_format=Answer) as stream:
        types = [e.type for e in stream]
        completion = stream.get_final_completion()
    assert "refusal.delta" in types and "refusal.done" in types and "content.delta" not in types
    message = completion.choices[0].message
    assert (message.content, message.refusal, message.parsed) == (None, "I'm sorry.", None)

    fake_openai.push(Script(tokens=[], refusal=refusal))
    message = client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices[0].message
    assert (message.content, message.refusal) == (None, "I'm sorry.")


def test_openai_content_filter_passes_through(fake_openai: FakeOpenAI) -> None:
    client = openai_client(fake_openai)
    fake_openai.push(Script(tokens=["Hm"], done_reason="content_filter"))
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    fake_openai.push(Script(tokens=["Hm"], done_reason="content_filter"))
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices[0].finish_reason == (
        "content_filter"
    )
    fake_openai.push(Script(tokens=['{"ci'], done_reason="content_filter"))
    with pytest.raises(openai.ContentFilterFinishReasonError):
        with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES, response_format=Answer) as stream:
            stream.until_done()
    fake_openai.push(Script(tokens=['{"ci', 'ty"']))
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Answer, max_tokens=1)


def test_openai_parse_structured_output(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(Script(tokens=['{"city":', '"Paris",', '"temperature":', "21.5}"]))
    completion = openai_client(fake_openai).chat.completions.parse(
        model="gpt-4o", messages=MESSAGES, response_format=Answer
    )
    assert completion.choices[0].message.parsed == Answer(city="Paris", temperature=21.5)
    body = fake_openai.last_body()
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "Answer"


def test_openai_logprobs(fake_openai: FakeOpenAI) -> None:
    client = openai_client(fake_openai)
    fake_openai.push(Script(tokens=["Foo", "é"]))
    chunks = list(
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, logprobs=True, top_logprobs=2)
    )
    first = chunks[0].choices[0].logprobs
    assert first is not None and first.content == [] and first.refusal is None
    entries = [c.choices[0].logprobs.content[0] for c in chunks[1:3]]  # type: ignore[union-attr,index]
    assert [(e.token, e.logprob, e.bytes) for e in entries] == [
        ("Foo", -0.1, [70, 111, 111]),
        ("é", -0.1, [195, 169]),
    ]
    assert [t.token for t in entries[0].top_logprobs] == ["Foo", "Foo~1"]
    assert entries[0].top_logprobs[1].logprob < entries[0].top_logprobs[0].logprob
    assert chunks[-1].choices[0].logprobs is None

    fake_openai.push(Script(tokens=["Foo", "."]))
    choice = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, logprobs=True).choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert [(e.token, e.top_logprobs) for e in choice.logprobs.content] == [("Foo", []), (".", [])]
    # Without logprobs asked, the chunks say null.
    plain = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert all(c.choices[0].logprobs is None for c in plain)


def test_openai_usage_override_and_absent(fake_openai: FakeOpenAI) -> None:
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": 9,
        "total_tokens": 21,
        "prompt_tokens_details": {"cached_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": 5},
    }
    client = openai_client(fake_openai)
    fake_openai.push(Script(usage=usage))
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    reported = chunks[-1].usage
    assert reported is not None and reported.model_dump(exclude_unset=True) == usage
    fake_openai.push(Script(usage=usage))
    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 5

    fake_openai.push(Script(report_usage=False))
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    events = sse_events(fake_openai, body)
    assert all("usage" not in e for e in events) and events[-1]["choices"][0]["finish_reason"] == "stop"
    fake_openai.push(Script(report_usage=False))
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).usage is None


def test_openai_context_length_exceeded(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(Script(status=400, error_code="context_length_exceeded"))
    with pytest.raises(openai.BadRequestError) as info:
        openai_client(fake_openai).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert info.value.status_code == 400
    assert info.value.code == "context_length_exceeded"
    assert (info.value.type, info.value.param) == ("invalid_request_error", "messages")
    assert info.value.body["message"] == (
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens. "
        "Please reduce the length of the messages."
    )


def test_openai_sends_a_lone_surrogate_escaped(fake_openai: FakeOpenAI) -> None:
    # What an ASCII-only JSON encoder upstream sends: valid JSON, a str no UTF-8 writer can write.
    fake_openai.push(Script(tokens=["a\ud800b"]))
    with httpx.stream(
        "POST", fake_openai.url + "/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    ) as response:
        assert b'"content":"a\\ud800b"' in response.read()
    fake_openai.push(Script(tokens=["a\ud800b"]))
    chunks = list(openai_client(fake_openai).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a\ud800b"


def test_openai_rate_limit_with_retry_after(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(Script(status=429, retry_after="7", error_message="Rate limit reached"))
    with pytest.raises(openai.RateLimitError) as info:
        openai_client(fake_openai).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.response.headers["retry-after"] == "7"
    assert (info.value.code, info.value.type) == ("rate_limit_exceeded", "requests")


def test_request_record_keeps_every_field(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(LookupError):
        fake_openai.last_body()
    extra = {
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "reasoning_effort": "low",
        "top_k": 5,
        "images": ["aGk="],
        "options": {"num_ctx": 8192},
    }
    messages = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c", "content": "sunny"},
    ]
    completion = openai_client(fake_openai).chat.completions.create(
        model="gpt-4o",
        messages=messages,
        extra_body=extra,  # type: ignore[arg-type]
    )
    assert completion.choices[0].message.content == "Hello, world!"
    body = fake_openai.last_body()
    assert body["messages"] == messages
    assert {k: body[k] for k in extra} == extra


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


def test_reasoning_comes_before_a_hang_at_zero(fake: Any) -> None:
    server, path, body, _ = fake
    server.push(Script(reasoning=["mull"], hang_after=0))
    sock = raw_post(server, path, body)
    assert b'"mull"}' in read_until(sock, b'"mull"}')  # the reasoning went out, then nothing
    closed_at = time.monotonic()
    sock.close()
    assert server.wait_disconnect(2.0) - closed_at < 0.5


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
