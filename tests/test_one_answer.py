"""One scripted answer, read in every shape, is the same message each time.

The fake OpenAI-compatible upstream answers with reasoning, text with
logprobs, two tool calls whose arguments come in pieces, finish reason
``tool_calls`` and usage with details. Sluice under gunicorn relays it as
SSE, NDJSON, ``stream: false``, ``/v1`` streamed (folded by the ``openai``
SDK's own ``chat.completions.stream``) and not, a background generation's
replay and the WebSocket: every one gives the same message.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
import requests
import simple_websocket

from tests.fakes import Script
from tests.sse_client import read_events

pytestmark = pytest.mark.slow

USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 10,
    "total_tokens": 22,
    "prompt_tokens_details": {"cached_tokens": 3},
    "completion_tokens_details": {"reasoning_tokens": 4},
}
CALLS = [
    {"id": "call_a1", "name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'},
    {"id": "call_b2", "name": "get_time", "arguments": '{"zone": "Europe/Paris"}'},
]
SCRIPT = Script(
    reasoning=["Two ", "lookups ", "needed."],
    tokens=["Let ", "me ", "check."],
    tool_calls=CALLS,
    tool_args_chunk=5,
    usage=USAGE,
)
TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("get_weather", "get_time")
]
BODY: dict[str, Any] = {
    "model": "openai/gpt-4o-mini",
    "messages": [{"role": "user", "content": "Weather and time in Paris?"}],
    "tools": TOOLS,
    "options": {"logprobs": True},
}
TOKENS = ["Let ", "me ", "check."]

# The message every shape must give: (content, reasoning, calls, logprob tokens, finish reason, usage).
EXPECTED = (
    "Let me check.",
    "Two lookups needed.",
    [(c["id"], c["name"], c["arguments"]) for c in CALLS],
    TOKENS,
    "tool_calls",
    USAGE,
)


def fold_events(events: list[dict[str, Any]]) -> tuple[Any, ...]:
    """Sluice's JSON events folded by hand (not with Sluice's own fold)."""
    content, reasoning, logprobs = [], [], []
    calls: dict[int, list[Any]] = {}
    done: dict[str, Any] = {}
    for event in events:
        kind = event["type"]
        if kind == "delta":
            content.append(event["content"])
            logprobs += [entry["token"] for entry in (event.get("logprobs") or {}).get("content") or []]
        elif kind == "reasoning":
            reasoning.append(event["content"])
        elif kind == "tool_call":
            call = calls.setdefault(event["index"], [None, None, ""])
            call[0] = event.get("id", call[0])
            call[1] = event.get("name", call[1])
            call[2] += event["arguments"]
        elif kind == "done":
            done = event
    ordered = [tuple(calls[i]) for i in sorted(calls)]
    return "".join(content), "".join(reasoning), ordered, logprobs, done["finish_reason"], done["usage"]


def from_message(message: dict[str, Any], finish_reason: str, usage: dict[str, Any]) -> tuple[Any, ...]:
    """The same tuple from a whole ``stream: false`` message."""
    calls = [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]]
    tokens = [entry["token"] for entry in message["logprobs"]["content"]]
    return message["content"], message["reasoning"], calls, tokens, finish_reason, usage


@pytest.fixture
def scripted(server, fake_openai):
    fake_openai.push(*[SCRIPT] * 8)
    yield server
    server.wait_idle()


def test_sse_and_ndjson(scripted):
    sse = read_events(scripted.url + "/api/chat", BODY)
    assert fold_events(sse) == EXPECTED
    reply = requests.post(scripted.url + "/api/chat", json=BODY, headers={"Accept": "application/x-ndjson"}, timeout=10)
    ndjson = [json.loads(line) for line in reply.text.splitlines()]
    assert fold_events(ndjson) == EXPECTED
    # The same events, not only the same fold (what differs by request aside: ids, the fingerprint).
    per_request = ("seq", "id", "system_fingerprint")
    assert [{k: v for k, v in e.items() if k not in per_request} for e in sse] == [
        {k: v for k, v in e.items() if k not in per_request} for e in ndjson
    ]


def test_stream_false(scripted):
    reply = requests.post(scripted.url + "/api/chat", json={**BODY, "stream": False}, timeout=10).json()
    assert from_message(reply["message"], reply["finish_reason"], reply["usage"]) == EXPECTED


def test_v1_streamed_folded_by_the_sdk_and_not_streamed(scripted):
    with openai.OpenAI(api_key="x", base_url=scripted.url + "/v1", max_retries=0) as sdk:
        kwargs: dict[str, Any] = {
            "model": BODY["model"],
            "messages": BODY["messages"],
            "tools": TOOLS,
            "logprobs": True,
            "stream_options": {"include_usage": True},
        }
        with sdk.chat.completions.stream(**kwargs) as stream:
            streamed = stream.get_final_completion()
        whole = sdk.chat.completions.create(**{k: v for k, v in kwargs.items() if k != "stream_options"})
    for completion in (streamed, whole):
        choice = completion.choices[0]
        message = choice.message
        calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]
        tokens = [entry.token for entry in choice.logprobs.content]
        reasoning = (message.model_extra or {}).get("reasoning_content")
        usage = completion.usage.model_dump(exclude_none=True)
        assert (message.content, reasoning, calls, tokens, choice.finish_reason, usage) == EXPECTED


def test_background_replay_and_the_websocket(scripted):
    started = requests.post(scripted.url + "/api/generations", json=BODY, timeout=10).json()
    replay = read_events(scripted.url + started["events_url"])
    assert fold_events(replay) == EXPECTED
    ws = simple_websocket.Client.connect(scripted.url.replace("http://", "ws://") + "/ws")
    try:
        ws.send(json.dumps({"type": "chat", **BODY}))
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(ws.receive(timeout=10)))
    finally:
        ws.close()
    assert fold_events(frames) == EXPECTED
