"""Nasty model output, end to end: every byte survives every provider and every format.

A table of tokens that break naive framing (line breaks of every kind, text
that looks like SSE fields, U+2028/U+2029, NUL, quotes, a UTF-8 character cut
across two upstream writes, a 10 kB token) is sent through the fake Ollama,
the fake OpenAI and the demo model, under a real gunicorn + gevent server, and
read back with parsers that are not Sluice's own: httpx-sse for SSE, a split
on ``b"\\n"`` for NDJSON, ``json`` for the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent

from providers.demo import answer
from tests.fakes import Script
from tests.sse_client import text_of

pytestmark = pytest.mark.slow

# Raw UTF-8 of the two separators that str.splitlines-based readers break lines at.
RAW_SEPARATORS = ("\u2028".encode(), "\u2029".encode())
TEN_KB = "é🙂日x" * 1024  # 10 bytes a repeat, no white space (one demo piece)
assert len(TEN_KB.encode()) == 10240


@dataclass(frozen=True)
class Case:
    """One nasty token; upstreams send ``[token, "|", token]``, the demo gets it as the prompt."""

    token: str
    split_utf8: bool = False

    @property
    def tokens(self) -> list[str]:
        return [self.token, "|", self.token]


CASES = [
    pytest.param(Case("a\nb"), id="lf"),
    pytest.param(Case("\r\n"), id="crlf"),
    pytest.param(Case("lone\rcr"), id="lone-cr"),
    pytest.param(Case("data: forged"), id="data-forged"),
    pytest.param(Case("\n\nid: 7\ndata: x\n\n"), id="forged-event"),
    pytest.param(Case("🙂"), id="emoji"),
    pytest.param(Case("日本語"), id="cjk"),
    pytest.param(Case("\u2028x\u2029"), id="u2028-u2029"),
    pytest.param(Case("\x00"), id="nul"),
    pytest.param(Case('"quoted" \\ backslash'), id="quote-backslash"),
    pytest.param(Case("é", split_utf8=True), id="utf8-split-across-writes"),
    pytest.param(Case(TEN_KB), id="10kB"),
]
PROVIDERS = ["ollama", "openai", "demo"]
MODELS = {"ollama": "ollama/llama3", "openai": "openai/gpt-4o-mini", "demo": "demo/echo"}


@pytest.fixture(autouse=True)
def _no_leaked_streams(server):
    """Every stream of a test has ended on the server once the test is over."""
    yield
    server.wait_idle()


@pytest.fixture
def arrange(fake_ollama, fake_openai):
    """Prepare ``case`` for ``provider``: push the upstream script; return (chat body, expected text)."""

    def prepare(provider: str, case: Case, **extra: Any) -> tuple[dict[str, Any], str]:
        if provider == "demo":
            prompt, expected = case.token, answer(case.token)
        else:
            fake = fake_ollama if provider == "ollama" else fake_openai
            fake.push(Script(tokens=case.tokens, split_utf8=case.split_utf8))
            prompt, expected = "hi", "".join(case.tokens)
        body = {"model": MODELS[provider], "messages": [{"role": "user", "content": prompt}], **extra}
        return body, expected

    return prepare


@dataclass
class Exchange:
    """A response read to the end, with the body's bytes as they came off the socket."""

    status: int
    headers: httpx.Headers
    chunks: list[bytes]

    @property
    def raw(self) -> bytes:
        return b"".join(self.chunks)

    def sse(self) -> Iterator[ServerSentEvent]:
        """The body read by httpx-sse, chunk by chunk as it arrived (blocks without data dropped)."""
        replay = httpx.Response(
            self.status, headers={"content-type": self.headers["content-type"]}, content=iter(self.chunks)
        )
        return (e for e in EventSource(replay).iter_sse() if e.data or e.event != "message")


def fetch(method: str, url: str, **kwargs: Any) -> Exchange:
    with httpx.Client(timeout=30) as client:
        with client.stream(method, url, **kwargs) as response:
            chunks = [chunk for chunk in response.iter_raw() if chunk]
            return Exchange(response.status_code, response.headers, chunks)


def assert_no_raw_separators(raw: bytes) -> None:
    for separator in RAW_SEPARATORS:
        assert separator not in raw


def assert_contract_events(events: list[dict[str, Any]], expected: str) -> None:
    """start, deltas whose text is ``expected`` byte for byte, then exactly one ``done``."""
    assert text_of(events).encode("utf-8") == expected.encode("utf-8")
    assert events[0]["type"] == "start"
    assert {e["type"] for e in events[1:-1]} <= {"delta"}
    assert [e["type"] for e in events].count("done") == 1
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "stop"


# -- POST /api/chat, SSE ---------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_sse_carries_every_byte(server, arrange, provider, case):
    body, expected = arrange(provider, case)
    ex = fetch("POST", server.url + "/api/chat", json=body)
    assert ex.status == 200, ex.raw
    assert ex.headers["content-type"].startswith("text/event-stream")
    assert ex.raw.startswith(b"retry: 3000\n\n")
    events = [{"seq": int(e.id), **json.loads(e.data)} for e in ex.sse()]
    assert_contract_events(events, expected)
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["model"] == MODELS[provider]
    # JSON data has no raw line break of any kind: CR only ever appears escaped.
    assert b"\r" not in ex.raw
    assert_no_raw_separators(ex.raw)


# -- POST /api/chat, NDJSON ------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_ndjson_carries_every_byte(server, arrange, provider, case):
    body, expected = arrange(provider, case)
    ex = fetch("POST", server.url + "/api/chat", json=body, headers={"Accept": "application/x-ndjson"})
    assert ex.status == 200, ex.raw
    assert ex.headers["content-type"].startswith("application/x-ndjson")
    *lines, rest = ex.raw.split(b"\n")
    assert rest == b""  # every event is a whole, LF-terminated line
    events = [json.loads(line) for line in lines]
    assert_contract_events(events, expected)
    assert events[0]["model"] == MODELS[provider] and events[0]["id"].startswith("gen_")
    assert b"\r" not in ex.raw
    assert_no_raw_separators(ex.raw)
    # A str.splitlines reader (httpx's iter_lines) sees the very same lines.
    assert ex.raw.decode("utf-8").splitlines() == [line.decode("utf-8") for line in lines]


# -- POST /api/chat, plain text ----------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_plain_text_is_the_answer_byte_for_byte(server, arrange, provider, case):
    body, expected = arrange(provider, case)
    ex = fetch("POST", server.url + "/api/chat", json=body, headers={"Accept": "text/plain"})
    assert ex.status == 200, ex.raw
    assert ex.headers["content-type"].startswith("text/plain")
    assert ex.raw == expected.encode("utf-8")


# -- POST /api/chat, "stream": false -------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_non_streaming_is_one_json_object(server, arrange, provider, case):
    body, expected = arrange(provider, case, stream=False)
    ex = fetch("POST", server.url + "/api/chat", json=body)
    assert ex.status == 200, ex.raw
    assert ex.headers["content-type"].startswith("application/json")
    reply = json.loads(ex.raw)
    assert {"id", "model", "message", "finish_reason", "usage"} <= set(reply)
    assert reply["id"].startswith("gen_") and reply["model"] == MODELS[provider]
    assert reply["message"] == {"role": "assistant", "content": expected}
    assert reply["message"]["content"].encode("utf-8") == expected.encode("utf-8")
    assert reply["finish_reason"] == "stop"
    assert isinstance(reply["usage"], dict) and reply["usage"]["completion_tokens"] > 0
    # SPEC: JSON on the wire escapes U+2028 and U+2029 (the JSON responses too).
    assert_no_raw_separators(ex.raw)


# -- GET /stream, the classic EventSource form ------------------------------------------------


def classic_read(server, **params: str) -> tuple[Exchange, list[ServerSentEvent]]:
    ex = fetch("GET", server.url + "/stream", params=params)
    assert ex.status == 200, ex.raw
    assert ex.headers["content-type"].startswith("text/event-stream")
    return ex, list(ex.sse())


def assert_classic(ex: Exchange, events: list[ServerSentEvent], expected: str) -> None:
    """Unnamed events whose data joins to ``expected``, then one ``event: done`` with an empty data line."""
    assert ex.raw.startswith(b"retry: 3000\n\n")
    messages = [e for e in events if e.event == "message"]
    assert "".join(e.data for e in messages) == expected
    assert [e.event for e in events] == ["message"] * len(messages) + ["done"]
    assert events[-1].data == ""
    # Browsers dispatch no event without a data line: the done event has one, empty.
    assert ex.raw.endswith(b"\nevent: done\ndata: \n\n")
    ids = [int(e.id) for e in events]
    assert ids == sorted(set(ids))  # strictly increasing


CLASSIC_PROMPT = 'line one\nline two\n\ndata: forged\n\nid: 7\n🙂 日本語 "q" \\ \u2028x\u2029 end'


def test_classic_stream_renders_the_demo_answer_unchanged(server):
    ex, events = classic_read(server, prompt=CLASSIC_PROMPT)
    # The demo answer has LF newlines only, so onmessage sees every byte of it.
    assert "\r" not in answer(CLASSIC_PROMPT)
    assert_classic(ex, events, answer(CLASSIC_PROMPT))


def test_classic_stream_turns_cr_into_lf_by_design(server):
    prompt = "a\r\nb\rc"
    ex, events = classic_read(server, prompt=prompt)
    assert_classic(ex, events, answer(prompt).replace("\r\n", "\n").replace("\r", "\n"))


@pytest.mark.parametrize("case", CASES)
def test_classic_stream_from_ollama_frames_every_token(server, fake_ollama, case):
    fake_ollama.push(Script(tokens=case.tokens, split_utf8=case.split_utf8))
    ex, events = classic_read(server, prompt="hi", model="ollama/llama3")
    expected = re.sub(r"\r\n|\r", "\n", "".join(case.tokens))
    assert_classic(ex, events, expected)


def test_classic_stream_reconnect_gets_204(server):
    ex = fetch("GET", server.url + "/stream", params={"prompt": "hi"}, headers={"Last-Event-ID": "3"})
    assert ex.status == 204 and ex.raw == b""


@pytest.mark.parametrize("params", [{}, {"prompt": ""}], ids=["missing", "empty"])
def test_classic_stream_without_prompt_is_400(server, params):
    ex = fetch("GET", server.url + "/stream", params=params)
    assert ex.status == 400
    assert ex.headers["content-type"].startswith("application/json")
    assert json.loads(ex.raw)["error"]["code"] == "invalid_request"


def test_classic_stream_honours_max_tokens(server):
    import httpx

    from providers.demo import pieces

    raw = httpx.get(server.url + "/stream", params={"prompt": "a b c d e", "max_tokens": "3"}, timeout=10).text
    assert sum(line.startswith("id: ") for line in raw.splitlines()) == 4  # three pieces, then done
    assert "data: " + "".join(pieces("a b c d e")[:1]) in raw
    assert (
        httpx.get(server.url + "/stream", params={"prompt": "x", "max_tokens": "many"}, timeout=10).status_code == 400
    )
