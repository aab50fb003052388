"""The Responses dialect without a server: its parser (every field honoured, mapped or refused by name)
and its renderer (OpenAI's semantic events, numbered, deterministic, one terminal event, the same
``Response`` object as the fold), and its routes in the OpenAPI document.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sluice.errors import InvalidRequest
from sluice.events import Event, Kind, Start
from sluice.fold import fold
from sluice.parse.responses import Stored, output_as_input, parse_responses, previous_response_id
from sluice.provider import Finish, Reasoning, Refusal, Text, ToolCallPart
from sluice.render.responses import Head, ResponsesEvents, generation_id_of, response_id_of, response_object, usage

DEFAULT = "demo/echo"


def parse(**body: Any):
    return parse_responses(body, DEFAULT)


def messages(**body: Any) -> list[dict[str, Any]]:
    return [m.to_openai() for m in parse(**body).chat.messages]


def refused(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse_responses(body, DEFAULT, history or [])
    return caught.value


# -- the parser ------------------------------------------------------------------------


def test_a_string_input_is_one_user_message_and_instructions_come_first():
    parsed = parse(input="Hi", instructions="Be brief")
    assert [m.to_openai() for m in parsed.chat.messages] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Hi"},
    ]
    assert parsed.chat.model == DEFAULT and not parsed.stream and not parsed.background and parsed.store
    # What is kept for previous_response_id: the input, not the instructions.
    assert parsed.input == ({"type": "message", "role": "user", "content": "Hi"},)


def test_items_become_chat_messages_with_tool_calls_joined_into_one_assistant_turn():
    got = messages(
        input=[
            {"role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Look"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},  # skipped: chat APIs take no reasoning back
            {"role": "assistant", "content": [{"type": "output_text", "text": "Calling", "annotations": []}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a":1}', "id": "fc_1"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
        ]
    )
    assert got == [
        {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Calling"}],
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "content": "one", "tool_call_id": "c1"},
        {"role": "tool", "content": [{"type": "text", "text": "two"}], "tool_call_id": "c2"},
    ]


def test_fields_map_to_the_chat_request():
    parsed = parse(
        model="ollama/llama3",
        input="x",
        tools=[{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True}],
        tool_choice={"type": "function", "name": "f"},
        parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "name": "p", "schema": {"type": "object"}, "strict": True}},
        temperature=0.5,
        top_p=0.9,
        max_output_tokens=40,
        reasoning={"effort": "low"},
        include=["message.output_text.logprobs"],
        top_logprobs=2,
        seed=7,
        stop=["\n"],
        user="u1",
        metadata={"k": "v"},
        store=False,
        top_k=20,  # unknown: passed to the upstream as given
    )
    chat = parsed.chat
    assert chat.model == "ollama/llama3"
    assert chat.tools == (
        {
            "type": "function",
            "function": {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True},
        },
    )
    assert chat.tool_choice == {"type": "function", "function": {"name": "f"}}
    assert chat.parallel_tool_calls is False
    assert chat.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "p", "schema": {"type": "object"}, "strict": True},
    }
    assert chat.options == {
        "temperature": 0.5,
        "top_p": 0.9,
        "max_completion_tokens": 40,
        "reasoning_effort": "low",
        "logprobs": True,
        "top_logprobs": 2,
        "seed": 7,
        "stop": ["\n"],
    }
    assert chat.info == {"user": "u1"}  # metadata and store stay with Sluice
    assert chat.extra == {"top_k": 20}
    assert not parsed.store
    assert parsed.echo["metadata"] == {"k": "v"} and parsed.echo["max_output_tokens"] == 40


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [({"type": "text"}, None), ({"type": "json_object"}, {"type": "json_object"})],
)
def test_text_formats(fmt, expected):
    assert parse(input="x", text={"format": fmt}).chat.response_format == expected


def test_history_comes_before_the_input():
    history = [{"type": "message", "role": "user", "content": "first"}]
    parsed = parse_responses({"input": "second"}, DEFAULT, history)
    assert [m.text for m in parsed.chat.messages] == ["first", "second"]
    assert [item["content"] for item in parsed.input] == ["first", "second"]


def test_output_items_carry_into_the_next_input():
    output = [
        {"type": "reasoning", "id": "rs", "summary": [], "content": [{"type": "reasoning_text", "text": "hm"}]},
        {
            "type": "message",
            "id": "msg",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Hi", "annotations": [], "logprobs": []}],
        },
        {"type": "function_call", "id": "fc", "call_id": "c", "name": "f", "arguments": "{}", "status": "completed"},
    ]
    assert output_as_input(output) == [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "input"),
        ({"input": []}, "input"),
        ({"input": 3}, "input"),
        ({"input": ["hi"]}, "input[0]"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"type": "web_search_call"}]}, "input[0].type"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]}, "input[0].content[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        (
            {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
            "input[0].content[0].type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}]},
            "input[0].content[0].image_url",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]}, "input[0].arguments"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": 1}]}, "input[0].output"),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image"}]}]},
            "input[0].output",
        ),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"input": "x", "tools": {}}, "tools"),
        ({"input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"input": "x", "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format"),
        ({"input": "x", "text": {"verbosity": "low"}}, "text.verbosity"),
        ({"input": "x", "temperature": 3}, "temperature"),
        ({"input": "x", "top_p": "1"}, "top_p"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "reasoning": {"effort": 3}}, "reasoning.effort"),
        ({"input": "x", "reasoning": {"summary": "detailed"}}, "reasoning.summary"),
        ({"input": "x", "include": ["file_search_call.results"]}, "include"),
        ({"input": "x", "top_logprobs": 50}, "top_logprobs"),
        ({"input": "x", "truncation": "auto"}, "truncation"),
        ({"input": "x", "metadata": {"k": 1}}, "metadata"),
        ({"input": "x", "stream": "yes"}, "stream"),
        ({"input": "x", "background": True, "store": False}, "store"),
        ({"input": "x", "instructions": 5}, "instructions"),
        ({"input": "x", "model": 5}, "model"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
        ({"input": "x", "prompt": {"id": "p"}}, "prompt"),
        ({"input": "x", "max_tool_calls": 2}, "max_tool_calls"),
        ({"input": "x", "messages": []}, "messages"),
        ({"input": "x", "max_tokens": 5}, "max_tokens"),
        ({"input": "x", "response_format": {"type": "json_object"}}, "response_format"),
        ({"input": "x", "seed": "s"}, "seed"),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,@@"}]}
                ]
            },
            "input[0]",
        ),
    ],
)
def test_bad_fields_are_refused_by_name(body, param):
    error = refused(body)
    assert error.status == 400 and error.param == param, error.message


def test_a_chat_level_error_names_the_input_item_in_its_message_too():
    error = refused(
        {
            "instructions": "sys",
            "input": [
                {"role": "user", "content": "ok"},
                {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,@"}]},
            ],
        }
    )
    assert error.param == "input[1]" and error.message.startswith("input[1].content[0]"), error.message


def test_only_reasoning_items_leave_no_message():
    assert refused({"input": [{"type": "reasoning", "summary": []}]}).param == "input"


def test_a_provider_refusal_gets_the_responses_name():
    parsed = parse(input=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], top_k=3)
    cases = {
        "response_format json_object: demo/echo only answers text.": "text.format",
        "max_completion_tokens: nope": "max_output_tokens",
        "reasoning_effort: demo/echo does not reason; try demo/think.": "reasoning.effort",
        "tools: demo/echo cannot call tools.": "tools",
        "messages[1]: ollama/x takes images as data: URLs only": "input[1]",
        "extra: demo/echo has no server-specific settings.": "top_k",
        "logit_bias: ollama/x has no logit bias.": "logit_bias",
        "The OpenAI-compatible server refused the request: bad": None,
    }
    for message, param in cases.items():
        assert parsed.blame(InvalidRequest(message)).param == param, message


def test_previous_response_id_is_checked():
    assert previous_response_id({"previous_response_id": "resp_1"}) == "resp_1"
    assert previous_response_id({}) is None
    with pytest.raises(InvalidRequest) as caught:
        previous_response_id({"previous_response_id": 5})
    assert caught.value.param == "previous_response_id"


def test_stored_round_trips_and_other_meta_is_not_a_response():
    stored = Stored(123, ({"type": "message", "role": "user", "content": "é"},), {"model": "demo/echo"}, True)
    assert Stored.from_meta(stored.to_meta()) == stored
    assert Stored.from_meta(None) is None and Stored.from_meta("{}") is None and Stored.from_meta("nope") is None


# -- the renderer -------------------------------------------------------------------------

HEAD = Head("resp_abc", 1700000000, {"model": "m", "background": False})


def run(*pieces: Any, end: Any = None) -> list[Event]:
    events = [Event(0, Kind.START, Start("gen_abc", "m"))]
    for piece in pieces:
        events.append(Event.of_piece(len(events), piece))
    if end is None:
        end = Finish("stop", {"prompt_tokens": 3, "completion_tokens": 4})
    kind = Kind.DONE if isinstance(end, Finish) else Kind.ERROR
    events.append(Event(len(events), kind, end))
    return events


def frames_of(events: list[Event], after: int = -1) -> list[dict[str, Any]]:
    renderer = ResponsesEvents(HEAD, after)
    out = []
    for event in events:
        for block in renderer.frames(event).decode().split("\n\n"):
            if not block:
                continue
            name, data = block.split("\n")
            parsed = json.loads(data.removeprefix("data: "))
            assert name == "event: " + parsed["type"]
            out.append(parsed)
    return out


TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


def test_ids_map_both_ways():
    assert response_id_of("gen_xyz") == "resp_xyz" and generation_id_of("resp_xyz") == "gen_xyz"
    assert generation_id_of("gen_xyz") is None


def test_text_stream_shape_and_final_object():
    events = run("Hel", Text("lo", {"content": [{"token": "lo", "logprob": -0.1, "bytes": [108, 111]}]}))
    frames = frames_of(events)
    assert [f["type"] for f in frames] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [f["sequence_number"] for f in frames] == list(range(len(frames)))
    assert frames[5]["logprobs"] == [{"token": "lo", "logprob": -0.1, "bytes": [108, 111]}]
    assert frames[6]["text"] == "Hello"
    final = frames[-1]["response"]
    assert final == response_object(fold(events), HEAD)
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"] == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    assert frames[0]["response"]["status"] == "in_progress" and frames[0]["response"]["usage"] is None


def test_reasoning_calls_and_refusal_each_have_their_items():
    events = run(
        Reasoning("think"),
        Reasoning("ing"),
        "Sure",
        ToolCallPart(0, '{"ci', "call_1", "get_weather"),
        ToolCallPart(0, 'ty":"P"}'),
        ToolCallPart(1, "{}", "call_2", "now"),
        end=Finish("tool_calls"),
    )
    frames = frames_of(events)
    added = [f["item"]["type"] for f in frames if f["type"] == "response.output_item.added"]
    assert added == ["reasoning", "message", "function_call", "function_call"]
    deltas = [f["delta"] for f in frames if f["type"] == "response.function_call_arguments.delta"]
    assert deltas == ['{"ci', 'ty":"P"}', "{}"]
    done = {f["item_id"]: f["arguments"] for f in frames if f["type"] == "response.function_call_arguments.done"}
    assert done == {"fc_abc_0": '{"city":"P"}', "fc_abc_1": "{}"}
    reasoning = [f["delta"] for f in frames if f["type"] == "response.reasoning_text.delta"]
    assert reasoning == ["think", "ing"]
    final = frames[-1]["response"]
    assert final == response_object(fold(events), HEAD)
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call", "function_call"]
    assert final["output"][0]["content"] == [{"type": "reasoning_text", "text": "thinking"}]
    assert final["output"][2]["call_id"] == "call_1" and final["output"][2]["name"] == "get_weather"
    assert final["usage"] is None  # the upstream reported none: none is made up

    refusal = frames_of(run(Refusal("No."), end=Finish("stop")))
    assert [f["type"] for f in refusal if "refusal" in f["type"]] == ["response.refusal.delta", "response.refusal.done"]
    assert refusal[-1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]


@pytest.mark.parametrize(
    ("end", "terminal", "status", "details"),
    [
        (Finish("stop"), "response.completed", "completed", None),
        (Finish("length"), "response.incomplete", "incomplete", {"reason": "max_output_tokens"}),
        (Finish("content_filter"), "response.incomplete", "incomplete", {"reason": "content_filter"}),
        (Finish("cancelled"), "response.incomplete", "cancelled", None),
        (InvalidRequest("x"), "response.failed", "failed", None),
    ],
)
def test_exactly_one_terminal_event(end, terminal, status, details):
    frames = frames_of(run("a", "b", end=end))
    assert [f["type"] for f in frames if f["type"] in TERMINAL] == [terminal]
    assert frames[-1]["type"] == terminal
    response = frames[-1]["response"]
    assert response["status"] == status and response["incomplete_details"] == details
    item_status = "completed" if status == "completed" else "incomplete"
    assert response["output"][0]["status"] == item_status
    if status == "failed":
        assert response["error"] == {"code": "invalid_request", "message": "x"}


def test_a_resume_renders_from_the_start_and_drops_what_was_seen():
    events = run(Reasoning("r"), "a", "b", ToolCallPart(0, "{}", "c", "f"), "c", end=Finish("length"))
    whole = frames_of(events)
    for after in range(-1, len(whole) + 1):
        assert frames_of(events, after) == whole[after + 1 :]
    # Rendering is deterministic: the same events give the same bytes.
    first, second = ResponsesEvents(HEAD), ResponsesEvents(HEAD)
    assert [first.frames(e) for e in events] == [second.frames(e) for e in events]


def test_usage_maps_reported_counts_only():
    assert usage(None) is None and usage(Finish("stop", {})) is None
    assert usage(
        Finish(
            "stop",
            {
                "prompt_tokens": 11,
                "completion_tokens": 9,
                "total_tokens": 20,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 5},
            },
        )
    ) == {
        "input_tokens": 11,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 9,
        "output_tokens_details": {"reasoning_tokens": 5},
        "total_tokens": 20,
    }
    assert usage(Finish("stop", {"completion_tokens": 2})) == {"output_tokens": 2}


def test_the_openapi_document_lists_the_routes(make_client):
    paths = make_client().get("/openapi.json").json["paths"]
    assert set(paths["/v1/responses/{response_id}"]) == {"get", "delete"}
    assert "post" in paths["/v1/responses"] and "post" in paths["/v1/responses/{response_id}/cancel"]


def test_any_json_body_is_parsed_or_refused_with_a_400():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-5, 50)
        | st.floats(-3, 3)
        | st.sampled_from(
            [
                "",
                "x",
                "auto",
                "none",
                "required",
                "function",
                "message",
                "user",
                "assistant",
                "system",
                "input_text",
                "input_image",
                "output_text",
                "refusal",
                "function_call",
                "function_call_output",
                "reasoning",
                "json_schema",
                "json_object",
                "text",
                "data:image/png;base64,iVBORw0KGgo=",
                "https://x/y.png",
            ]
        )
    )
    keys = st.sampled_from(
        [
            "type",
            "role",
            "content",
            "text",
            "image_url",
            "detail",
            "call_id",
            "name",
            "arguments",
            "output",
            "format",
            "schema",
            "effort",
            "summary",
            "parameters",
            "refusal",
            "file_id",
            "verbosity",
        ]
    )
    json_values = st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4), max_leaves=12
    )
    fields = st.sampled_from(
        [
            "model",
            "input",
            "instructions",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "text",
            "temperature",
            "top_p",
            "max_output_tokens",
            "reasoning",
            "metadata",
            "store",
            "background",
            "stream",
            "include",
            "top_logprobs",
            "truncation",
            "user",
            "stop",
            "seed",
            "stream_options",
            "conversation",
            "extra_knob",
        ]
    )

    @settings(max_examples=400, deadline=None)
    @given(st.dictionaries(fields, json_values, max_size=6))
    def check(body):
        try:
            parse_responses(body, DEFAULT)
        except InvalidRequest as exc:
            assert exc.status == 400 and exc.message
            assert exc.param is None or isinstance(exc.param, str)

    check()
