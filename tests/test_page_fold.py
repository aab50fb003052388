"""The page's fold (static/js/fold.js) and the server's (sluice/fold.py) give the same answer.

One event list — reasoning, text, a refusal, two tool calls split across
pieces (one given whole, as Ollama does), an unknown event type, usage with
details — is folded by ``sluice.fold`` and, in headless Chromium, by the
page's own module; the answers must agree field by field.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sluice.events import Event
from sluice.fold import fold
from tests.test_page import Tab, browser, page_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

USAGE = {"prompt_tokens": 5, "completion_tokens": 9, "completion_tokens_details": {"reasoning_tokens": 2}}
EVENTS: list[dict[str, Any]] = [
    {"type": "start", "id": "gen_x", "model": "ollama/llama3"},
    {"type": "reasoning", "content": "Look "},
    {"type": "reasoning", "content": "twice."},
    {"type": "delta", "content": "Sure: ", "logprobs": [{"token": "Sure", "logprob": -0.1}]},
    {"type": "tool_call", "index": 1, "id": "call_b", "name": "get_time", "arguments": ""},
    {"type": "tool_call", "index": 0, "id": "call_a", "name": "get_weather", "arguments": '{"ci'},
    {"type": "delta", "content": "🙂\n"},
    {"type": "tool_call", "index": 0, "arguments": 'ty":"Paris"}'},
    {"type": "tool_call", "index": 1, "arguments": '{"tz":"CET"}'},
    {"type": "refusal", "content": "Not that."},
    {"type": "a_type_from_the_future", "content": "ignored"},
    {"type": "done", "finish_reason": "tool_calls", "usage": USAGE},
]
FAILED: list[dict[str, Any]] = [
    {"type": "start", "id": "gen_y", "model": "demo/echo"},
    {"type": "delta", "content": "par"},
    {"type": "error", "error": {"code": "upstream_timeout", "message": "The model provider did not answer in time."}},
]


def server_fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    answer = fold(Event.make(n, data) for n, data in enumerate(events) if data["type"] != "a_type_from_the_future")
    return {
        "content": answer.text,
        "reasoning": answer.reasoning_text,
        "refusal": answer.refusal_text,
        "toolCalls": [
            {"index": c.index, "id": c.id, "name": c.name or "", "arguments": c.arguments} for c in answer.tool_calls
        ],
        "finishReason": answer.finish.reason if answer.finish else None,
        "usage": answer.usage if answer.finish else None,
        "error": {"code": answer.error.code, "message": answer.error.message} if answer.error else None,
    }


@pytest.mark.parametrize("events", [EVENTS, FAILED], ids=["tool-calls", "error"])
def test_the_page_folds_events_as_the_server_does(browser, page_server, events):
    tab = Tab(browser, page_server.url)
    try:
        tab.open()
        page_fold = tab.page.evaluate(
            "async (events) => (await import('/static/js/fold.js')).foldEvents(JSON.parse(events))",
            json.dumps(events),
        )
    finally:
        tab.context.close()
    assert page_fold == server_fold(events)
    assert not tab.errors
