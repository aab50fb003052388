"""Text from an upstream that is not valid Unicode is repaired (U+FFFD) at the provider, for every format.

An upstream's JSON may hold a lone UTF-16 surrogate escape (``"a\\ud800b"``):
valid JSON that decodes into a ``str`` no UTF-8 writer can send. Ollama's lines
may also hold bytes that are not UTF-8. Each provider repairs every piece
(answer text, reasoning, refusal, a tool call's id, name and arguments) once,
so every format that exists answers ``200`` and ends with ``done``: SSE,
NDJSON, text, ``stream: false``, ``/v1`` streamed and not, ``GET /stream``,
``/ws`` and ``GET /api/generations/<id>/events`` (before: a 500 with a
traceback, gunicorn's HTML 500, a cut stream). Against the session's gunicorn
server and the fake upstreams.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
import requests
import simple_websocket
from httpx_sse import EventSource

from tests.fakes import Script
from tests.sse_client import read_events

pytestmark = pytest.mark.slow

PROMPT = "say it"
BAD = "\ud800"  # a lone high surrogate: what "\ud800" in the upstream's JSON decodes to
FIX = "\ufffd"


def openai_script() -> Script:
    """Every kind of piece with a lone surrogate; the fake sends them ASCII-escaped."""
    return Script(
        tokens=["x", f"a{BAD}b"],
        reasoning=[f"r{BAD}"],
        refusal=[f"n{BAD}o"],
        tool_calls=[{"id": f"call_{BAD}", "name": f"f{BAD}", "arguments": f'{{"k":"v{BAD}"}}'}],
    )


OPENAI_ANSWER = {
    "content": f"xa{FIX}b",
    "reasoning": f"r{FIX}",
    "refusal": f"n{FIX}o",
    "tool_calls": [(f"call_{FIX}", f"f{FIX}", f'{{"k":"v{FIX}"}}')],
}


def _line(message: dict[str, Any]) -> bytes:
    """An Ollama line; Python's default JSON writes a lone surrogate as its ``\\ud800`` escape."""
    line = {"model": "llama3", "created_at": "2026-01-01T00:00:00Z", "message": message, "done": False}
    return json.dumps(line).encode("ascii") + b"\n"


def ollama_script() -> Script:
    """Ollama lines written raw: lone surrogate escapes, and bytes that are not UTF-8."""
    call = {"id": f"call_{BAD}", "function": {"name": f"f{BAD}", "arguments": {"k": f"v{BAD}"}}}
    raw = b"".join(
        [
            _line({"role": "assistant", "content": "", "thinking": f"r{BAD}"}),
            _line({"role": "assistant", "content": f"a{BAD}b"}),
            b'{"model":"llama3","message":{"role":"assistant","content":"c\xff\xfed"},"done":false}\n',
            _line({"role": "assistant", "content": "", "tool_calls": [call]}),
        ]
    )
    return Script(tokens=["x"], raw_after=1, raw=raw)


OLLAMA_ANSWER = {
    "content": f"xa{FIX}bc{FIX}{FIX}d",
    "reasoning": f"r{FIX}",
    "refusal": None,
    "tool_calls": [(f"call_{FIX}", f"f{FIX}", json.dumps({"k": f"v{FIX}"}, ensure_ascii=False))],
}

PROVIDERS = {
    "openai/gpt-4o-mini": (openai_script, OPENAI_ANSWER),
    "ollama/llama3": (ollama_script, OLLAMA_ANSWER),
}


def chat_body(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], **fields}


def answer_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer folded from Sluice's JSON events; the stream must end with ``done``."""
    assert events[-1]["type"] == "done", events[-1]
    calls: dict[int, list[str]] = {}
    for event in events:
        if event["type"] == "tool_call":
            call = calls.setdefault(event["index"], ["", "", ""])
            call[0] += event.get("id", "")
            call[1] += event.get("name", "")
            call[2] += event["arguments"]

    def joined(kind: str) -> str | None:
        text = "".join(e["content"] for e in events if e["type"] == kind)
        return text or None

    return {
        "content": joined("delta") or "",
        "reasoning": joined("reasoning"),
        "refusal": joined("refusal"),
        "tool_calls": [tuple(calls[i]) for i in sorted(calls)],
    }


def message_answer(message: dict[str, Any], reasoning_key: str) -> dict[str, Any]:
    calls = message.get("tool_calls") or []
    return {
        "content": message.get("content") or "",
        "reasoning": message.get(reasoning_key),
        "refusal": message.get("refusal"),
        "tool_calls": [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls],
    }


# -- one reader per format: each returns the answer it got (text formats: content only) -----------


def via_sse(url: str, model: str) -> dict[str, Any]:
    return answer_of(read_events(url + "/api/chat", chat_body(model)))


def via_ndjson(url: str, model: str) -> dict[str, Any]:
    r = requests.post(url + "/api/chat", json=chat_body(model), headers={"Accept": "application/x-ndjson"}, timeout=30)
    assert r.status_code == 200, r.text
    return answer_of([json.loads(line) for line in r.content.splitlines()])


def via_text(url: str, model: str) -> dict[str, Any]:
    r = requests.post(url + "/api/chat", json=chat_body(model), headers={"Accept": "text/plain"}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    return {"content": r.content.decode("utf-8")}


def via_stream_false(url: str, model: str) -> dict[str, Any]:
    r = requests.post(url + "/api/chat", json=chat_body(model, stream=False), timeout=30)
    assert r.status_code == 200, r.text
    return message_answer(r.json()["message"], "reasoning")


def via_v1_stream(url: str, model: str) -> dict[str, Any]:
    with openai.OpenAI(api_key="x", base_url=url + "/v1", max_retries=0, timeout=30) as sdk:
        chunks = [c for c in sdk.chat.completions.create(**chat_body(model), stream=True) if c.choices]
    assert chunks[-1].choices[0].finish_reason is not None
    calls: dict[int, list[str]] = {}
    reasoning = ""
    for chunk in chunks:
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        for call in delta.tool_calls or ():
            entry = calls.setdefault(call.index, ["", "", ""])
            entry[0] += call.id or ""
            entry[1] += (call.function.name if call.function else None) or ""
            entry[2] += (call.function.arguments if call.function else None) or ""
    return {
        "content": "".join(c.choices[0].delta.content or "" for c in chunks),
        "reasoning": reasoning or None,
        "refusal": "".join(c.choices[0].delta.refusal or "" for c in chunks) or None,
        "tool_calls": [tuple(calls[i]) for i in sorted(calls)],
    }


def via_v1(url: str, model: str) -> dict[str, Any]:
    with openai.OpenAI(api_key="x", base_url=url + "/v1", max_retries=0, timeout=30) as sdk:
        completion = sdk.chat.completions.create(**chat_body(model))
    return message_answer(completion.choices[0].message.model_dump(), "reasoning_content")


def via_classic(url: str, model: str) -> dict[str, Any]:
    text, ended = [], False
    with httpx.stream("GET", url + "/stream", params={"prompt": PROMPT, "model": model}, timeout=30) as response:
        assert response.status_code == 200
        for event in EventSource(response).iter_sse():
            if event.event == "done":  # its data is empty
                ended = True
            elif event.data:
                assert event.event == "message", event
                text.append(event.data)
    assert ended
    return {"content": "".join(text)}


def via_ws(url: str, model: str) -> dict[str, Any]:
    ws = simple_websocket.Client.connect(url.replace("http://", "ws://") + "/ws")
    try:
        ws.send(json.dumps({"type": "chat", **chat_body(model)}))
        events = []
        while not events or events[-1]["type"] not in ("done", "error"):
            raw = ws.receive(timeout=30)
            assert raw is not None, "no frame within 30 s"
            events.append(json.loads(raw))
    finally:
        ws.close()
    return answer_of(events)


def via_generation_events(url: str, model: str) -> dict[str, Any]:
    started = requests.post(url + "/api/generations", json=chat_body(model), timeout=30)
    assert started.status_code == 202, started.text
    return answer_of(read_events(url + started.json()["events_url"]))


FORMATS: dict[str, Callable[[str, str], dict[str, Any]]] = {
    "sse": via_sse,
    "ndjson": via_ndjson,
    "text": via_text,
    "stream-false": via_stream_false,
    "v1-stream": via_v1_stream,
    "v1": via_v1,
    "get-stream": via_classic,
    "ws": via_ws,
    "generation-events": via_generation_events,
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model", PROVIDERS)
def test_invalid_unicode_from_the_upstream_is_repaired_in_every_format(server, fake_openai, fake_ollama, model, fmt):
    script, expected = PROVIDERS[model]
    (fake_openai if model.startswith("openai/") else fake_ollama).push(script())
    got = FORMATS[fmt](server.url, model)
    assert got == {key: expected[key] for key in got}
    server.wait_idle()
    assert "Traceback" not in server.log()
