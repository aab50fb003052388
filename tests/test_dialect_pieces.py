"""The dialects' parsers and renderers on their own: bodies in, ``ChatRequest`` out; events in, wire bytes out.

No server: the translation tables of docs/api.md ("Anthropic Messages",
"Ollama's API", "Embeddings") checked field by field, and the renderers fed
typed events. The SDK tests (``test_anthropic.py``, ``test_ollama_api.py``,
``test_embeddings.py``) prove the same on the wire.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sluice.embeddings import encode_base64, parse_embeddings
from sluice.errors import InvalidRequest, RateLimited, UpstreamError, dialect_of, error_body
from sluice.events import Event, Kind, Start
from sluice.fold import fold
from sluice.parse.anthropic import parse_anthropic
from sluice.parse.ollama import parse_chat_body, parse_embed, parse_generate
from sluice.provider import Finish, Reasoning, ToolCallPart
from sluice.render.anthropic import MessageEvents, message
from sluice.render.ollama import OllamaLines, answer


def kind(name: str):
    return lambda model: name


USER = [{"role": "user", "content": "hi"}]


# -- errors ------------------------------------------------------------------------


def test_each_path_speaks_its_dialect():
    assert dialect_of("/v1/messages") == "anthropic"
    assert dialect_of("/v1/messages/count_tokens") == "anthropic"
    assert dialect_of("/ollama/api/chat") == "ollama"
    assert dialect_of("/v1/embeddings") == "openai"
    assert dialect_of("/api/chat") == "sluice"
    limited = RateLimited("slow down")
    assert error_body(limited, "anthropic") == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    assert error_body(UpstreamError("x"), "anthropic")["error"]["type"] == "api_error"
    assert error_body(limited, "ollama") == {"error": "slow down"}


# -- Anthropic ------------------------------------------------------------------------


def test_anthropic_body_becomes_a_chat_request():
    chat = parse_anthropic(
        {
            "model": "openai/m",
            "max_tokens": 9,
            "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hm", "signature": ""},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "and"},
                        {"type": "tool_result", "tool_use_id": "t1", "content": "ok", "is_error": True},
                    ],
                },
            ],
            "top_k": 4,
            "metadata": {"user_id": "u"},
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        },
        kind("openai"),
    )
    assert [m.to_openai() for m in chat.messages] == [
        {"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}],
        },
        {"role": "tool", "content": "Error: ok", "tool_call_id": "t1"},
        {"role": "user", "content": "and"},
    ]
    assert dict(chat.options) == {"max_tokens": 9}
    assert (dict(chat.extra), dict(chat.info), chat.stream) == ({"top_k": 4}, {"user": "u"}, False)
    assert chat.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}, "strict": True},
    }


@pytest.mark.parametrize(
    ("budget", "effort"), [(1024, "low"), (2048, "low"), (2049, "medium"), (8192, "medium"), (20000, "high")]
)
def test_thinking_budget_to_effort(budget, effort):
    body = {"model": "m", "max_tokens": 5, "messages": USER, "thinking": {"type": "enabled", "budget_tokens": budget}}
    assert parse_anthropic(body, kind("openai")).options["reasoning_effort"] == effort
    ollama = parse_anthropic({**body, "top_k": 2}, kind("ollama"))
    assert "reasoning_effort" not in ollama.options
    assert dict(ollama.extra) == {"options": {"top_k": 2}, "think": True}
    assert dict(parse_anthropic({**body, "top_k": 2}, kind("demo")).extra) == {}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"temperature": 1.5}, "temperature"),
        ({"stop_sequences": "x"}, "stop_sequences"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice"),
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0]"),
        ({"mcp_servers": []}, "mcp_servers"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
        ({"messages": [{"role": "user", "content": [{"type": "document"}]}]}, "messages[0].content[0]"),
    ],
)
def test_anthropic_refusals_name_the_field(fields, named):
    body = {"model": "m", "max_tokens": 5, "messages": USER, **fields}
    with pytest.raises(InvalidRequest) as caught:
        parse_anthropic(body, kind("openai"))
    assert named in caught.value.message


def _events(*pieces: Any, finish: Finish | None = None) -> list[Event]:
    events = [Event(0, Kind.START, Start("gen_abc", "m"))]
    events += [Event.of_piece(i + 1, piece) for i, piece in enumerate(pieces)]
    events.append(Event(len(events), Kind.DONE, finish or Finish("stop", {"prompt_tokens": 3, "completion_tokens": 4})))
    return events


def _sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_anthropic_blocks_open_and_close_in_order():
    events = _events(
        Reasoning("th"),
        "te",
        "xt",
        ToolCallPart(0, "", "c1", "f"),
        ToolCallPart(0, '{"a":'),
        ToolCallPart(1, "{}", "c2", "g"),
        ToolCallPart(0, "1}"),
        finish=Finish(
            "tool_calls", {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4}}
        ),
    )
    renderer = MessageEvents("m")
    frames = _sse(b"".join(renderer.frames(e) for e in events))
    shape = [
        (name, data.get("index"), (data.get("delta") or data.get("content_block") or {}).get("type"))
        for name, data in frames
    ]
    assert shape == [
        ("message_start", None, None),
        ("content_block_start", 0, "thinking"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"),
        ("content_block_delta", 1, "text_delta"),
        ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("content_block_start", 3, "tool_use"),
        ("content_block_delta", 3, "input_json_delta"),
        ("content_block_delta", 2, "input_json_delta"),  # an interleaved piece goes to its call's block
        ("content_block_stop", 3, None),
        ("message_delta", None, None),
        ("message_stop", None, None),
    ]
    assert frames[0][1]["message"]["id"] == "msg_abc"
    assert frames[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert frames[-2][1]["usage"] == {"input_tokens": 6, "output_tokens": 5, "cache_read_input_tokens": 4}
    whole = message(fold(events), "gen_abc", "m")
    assert [block["type"] for block in whole["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert [block.get("input") for block in whole["content"][2:]] == [{"a": 1}, {}]
    assert renderer.ping() == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_anthropic_message_refuses_arguments_that_are_not_an_object():
    with pytest.raises(UpstreamError):
        message(fold(_events(ToolCallPart(0, "[1]", "c", "f"))), "gen_x", "m")


def test_anthropic_usage_not_reported_is_zero():
    whole = message(fold(_events("a", finish=Finish("length"))), "gen_x", "m")
    assert (whole["stop_reason"], whole["usage"]) == ("max_tokens", {"input_tokens": 0, "output_tokens": 0})


# -- Ollama ---------------------------------------------------------------------------


def test_ollama_chat_to_an_openai_compatible_server():
    chat = parse_chat_body(
        {
            "model": "openai/m",
            "messages": [
                {"role": "user", "content": "q", "images": ["/9j/4AAQ"]},
                {
                    "role": "assistant",
                    "content": "",
                    "thinking": "hm",
                    "tool_calls": [
                        {"function": {"name": "f", "arguments": {"a": 1}}},
                        {"function": {"name": "g", "arguments": {}}},
                    ],
                },
                {"role": "tool", "content": "G", "tool_name": "g"},
                {"role": "tool", "content": "F"},
            ],
            "options": {"num_predict": 7, "temperature": 0.1, "top_k": 3, "min_p": 0.05},
            "format": "json",
            "think": "high",
            "keep_alive": "5m",
            "stream": False,
        },
        kind("openai"),
    )
    messages = [m.to_openai() for m in chat.messages]
    assert messages[0]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["call_1_0", "call_1_1"]
    assert [(m["tool_call_id"], m["content"]) for m in messages[2:]] == [("call_1_1", "G"), ("call_1_0", "F")]
    assert dict(chat.options) == {"max_tokens": 7, "temperature": 0.1, "reasoning_effort": "high"}
    assert dict(chat.extra) == {"top_k": 3, "min_p": 0.05}
    assert (chat.response_format, chat.stream) == ({"type": "json_object"}, False)


def test_ollama_chat_to_ollama_is_unchanged():
    body = {
        "model": "ollama/m",
        "messages": USER,
        "options": {"num_ctx": 4096, "num_predict": -1},
        "format": {"type": "object"},
        "think": False,
        "keep_alive": 0,
        "truncate": False,
    }
    chat = parse_chat_body(body, kind("ollama"))
    assert dict(chat.extra) == {
        "options": {"num_ctx": 4096, "num_predict": -1},
        "format": {"type": "object"},
        "think": False,
        "keep_alive": 0,
        "truncate": False,
    }
    assert (dict(chat.options), chat.response_format, chat.stream) == ({}, None, True)


def test_ollama_generate_is_a_chat():
    chat = parse_generate({"model": "demo/echo", "prompt": "p", "system": "s", "think": False}, kind("demo"))
    assert [m.to_openai() for m in chat.messages] == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "p"},
    ]
    assert dict(chat.options) == {}  # think: false asks nothing of the demo


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"options": {"num_ctx": 1}}, "options.num_ctx"),
        ({"options": {"num_predict": 0}}, "options.num_predict"),
        ({"keepalive": 1}, "keepalive"),
        ({"think": "max"}, "think"),
        ({"format": "xml"}, "format"),
    ],
)
def test_ollama_refusals_name_the_field(body, named):
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_body({"model": "openai/m", "messages": USER, **body}, kind("openai"))
    assert named in caught.value.message


def test_ollama_lines_gather_tool_calls_before_the_last_line():
    events = _events(
        Reasoning("th"),
        "te",
        ToolCallPart(0, '{"a"', "c1", "f"),
        ToolCallPart(0, ": 1}"),
        finish=Finish("tool_calls", {"prompt_tokens": 3}),
    )
    renderer = OllamaLines("m", started=0.0)
    lines = [json.loads(line) for line in b"".join(renderer.frames(e) for e in events).splitlines()]
    assert [line["message"] for line in lines[:-1]] == [
        {"role": "assistant", "content": "", "thinking": "th"},
        {"role": "assistant", "content": "te"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "function": {"index": 0, "name": "f", "arguments": {"a": 1}}}],
        },
    ]
    last = lines[-1]
    assert (last["done"], last["done_reason"], last["prompt_eval_count"]) == (True, "stop", 3)
    assert "eval_count" not in last
    whole = answer(fold(events), "m", False, 0.0)
    assert whole["message"]["tool_calls"] == lines[2]["message"]["tool_calls"]
    assert (whole["message"]["content"], whole["message"]["thinking"]) == ("te", "th")
    generate = OllamaLines("m", generate=True, started=0.0)
    assert json.loads(generate.frames(events[2]))["response"] == "te"


def test_ollama_embed_extras():
    assert dict(parse_embed({"model": "ollama/e", "input": "x", "truncate": True}, kind("ollama")).extra) == {
        "truncate": True
    }
    assert parse_embed({"model": "openai/e", "input": ["x"], "keep_alive": "1m"}, kind("openai")).texts == ["x"]
    with pytest.raises(InvalidRequest):
        parse_embed({"model": "openai/e", "input": "x", "options": {"num_ctx": 1}}, kind("openai"))


# -- embeddings ------------------------------------------------------------------------


def test_embeddings_body_and_base64():
    request, encoding = parse_embeddings(
        {"model": "openai/e", "input": [[1, 2]], "encoding_format": "base64", "user": "u", "x": 1}, "demo/echo"
    )
    assert (request.input, request.texts, dict(request.info), dict(request.extra), encoding) == (
        ((1, 2),),
        None,
        {"user": "u"},
        {"x": 1},
        "base64",
    )
    assert encode_base64([1.0, -0.5]) == "AACAPwAAAL8="
