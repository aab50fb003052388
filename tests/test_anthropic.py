"""The official ``anthropic`` SDK as the client of Sluice's ``POST /v1/messages``, on a real gunicorn + gevent server.

Sluice relays to the demo models and to the fake upstreams; the SDK must
parse every event, block, stop reason, usage and error into its own types and
exceptions, and ``messages.stream()`` must build the same message that
``messages.create`` returns.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
import requests

from providers.demo import answer, pieces, reasoning
from tests.fakes import Script
from tests.sse_client import hang_up_after

pytestmark = pytest.mark.slow

PROMPT = "Stream me, 世界 🙂\nsecond line"
TOKENS = ["Grü", "ße", " aus", " 東京", " 🙂", "\n", "done"]
WEATHER_CALL = {"id": "call_abc", "name": "get_weather", "arguments": '{"city": "Paris"}'}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 8).decode()


def user(content: Any = PROMPT) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


@pytest.fixture
def sdk(server) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="unused", base_url=server.url, max_retries=0, timeout=15) as client:
        yield client
    server.wait_idle()


def streamed(sdk: anthropic.Anthropic, **kwargs: Any) -> tuple[list[Any], Any]:
    """The raw events of ``messages.stream`` and its final message."""
    with sdk.messages.stream(**kwargs) as stream:
        events = list(stream)
        return events, stream.get_final_message()


def same_message(created: Any, final: Any) -> None:
    """``get_final_message()`` equals the non-streamed message (but for its id)."""
    one, other = created.to_dict(), final.to_dict()
    assert one.pop("id").startswith("msg_") and other.pop("id").startswith("msg_")
    assert one == other


# -- demo models -------------------------------------------------------------------


def test_create_and_stream_give_the_same_message(sdk):
    created = sdk.messages.create(model="demo/echo", max_tokens=200, messages=user())
    assert created.type == "message" and created.role == "assistant" and created.model == "demo/echo"
    assert [block.type for block in created.content] == ["text"]
    assert created.content[0].text == answer(PROMPT)
    assert (created.stop_reason, created.stop_sequence) == ("end_turn", None)
    assert (created.usage.input_tokens, created.usage.output_tokens) == (len(PROMPT.split()), len(pieces(PROMPT)))

    with sdk.messages.stream(model="demo/echo", max_tokens=200, messages=user()) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == answer(PROMPT)
    same_message(created, final)


def test_system_prompt_blocks_and_prefill(sdk):
    created = sdk.messages.create(
        model="demo/echo",
        max_tokens=200,
        system=[{"type": "text", "text": "be brief"}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "two "}, {"type": "text", "text": "parts"}]},
            {"role": "assistant", "content": "two pa"},
        ],
    )
    # The demo continues a prefilled answer: the rest of it, after what the assistant turn began.
    assert created.content[0].text == answer("two parts")[len("two pa") :]
    assert created.usage.input_tokens == len("be brief two parts two pa".split())


def test_thinking_from_demo_think(sdk):
    kwargs = {
        "model": "demo/think",
        "max_tokens": 500,
        "messages": user("hi"),
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    created = sdk.messages.create(**kwargs)
    assert [block.type for block in created.content] == ["thinking", "text"]
    assert created.content[0].thinking == reasoning("hi") and created.content[0].signature == ""
    assert created.content[1].text == answer("hi")
    events, final = streamed(sdk, **kwargs)
    starts = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert starts == ["thinking", "text"]
    assert "".join(e.thinking for e in events if e.type == "thinking") == reasoning("hi")
    same_message(created, final)


def test_thinking_on_a_model_that_does_not_reason_is_refused(sdk):
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(
            model="demo/echo", max_tokens=50, messages=user(), thinking={"type": "enabled", "budget_tokens": 2000}
        )
    assert caught.value.type == "invalid_request_error"
    assert "reasoning" in caught.value.message


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("kwargs", "reason", "sequence", "text"),
    [
        pytest.param({}, "end_turn", None, answer(PROMPT), id="end_turn"),
        pytest.param({"max_tokens": 3}, "max_tokens", None, "".join(pieces(PROMPT)[:3]), id="max_tokens"),
        pytest.param(
            {"stop_sequences": ["zzz", "世界"]},
            "stop_sequence",
            "世界",
            PROMPT[: PROMPT.index("世界")],
            id="stop_sequence",
        ),
    ],
)
def test_stop_reasons_of_the_demo(sdk, kwargs, reason, sequence, text, stream):
    request = {"model": "demo/echo", "max_tokens": 200, "messages": user(), **kwargs}
    if stream:
        _, message = streamed(sdk, **request)
    else:
        message = sdk.messages.create(**request)
    assert (message.stop_reason, message.stop_sequence) == (reason, sequence)
    assert "".join(block.text for block in message.content) == text


# -- through the providers ------------------------------------------------------------


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_providers_relay_text_and_usage(sdk, fake_ollama, fake_openai, model):
    fake = fake_ollama if model.startswith("ollama/") else fake_openai
    fake.push(Script(tokens=TOKENS, prompt_tokens=5), Script(tokens=TOKENS, prompt_tokens=5))
    created = sdk.messages.create(model=model, max_tokens=100, messages=user("hi"))
    assert created.content[0].text == "".join(TOKENS)
    assert (created.usage.input_tokens, created.usage.output_tokens) == (5, len(TOKENS))
    events, final = streamed(sdk, model=model, max_tokens=100, messages=user("hi"))
    assert [e.type for e in events if e.type.startswith(("message", "content_block"))][:3] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]
    same_message(created, final)
    sent = fake.requests[-1].body
    assert sent["model"] == model.partition("/")[2]
    assert sent["messages"] == user("hi")


def test_every_field_reaches_an_openai_compatible_upstream(sdk, fake_openai):
    sdk.messages.create(
        model="openai/gpt-4o",
        max_tokens=64,
        system="be brief",
        messages=user(
            [
                {"type": "text", "text": "what is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            ]
        ),
        stop_sequences=["END"],
        metadata={"user_id": "u-42"},
        tools=[WEATHER_TOOL],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        thinking={"type": "enabled", "budget_tokens": 4000},
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 5},
    )
    sent = fake_openai.last_body()
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        },
    ]
    assert (sent["max_tokens"], sent["stop"], sent["user"]) == (64, ["END"], "u-42")
    assert (sent["temperature"], sent["top_p"], sent["top_k"]) == (0.5, 0.9, 5)
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER_TOOL["input_schema"],
            },
        }
    ]
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("required", False)
    assert sent["reasoning_effort"] == "medium"


def test_ollama_upstream_gets_its_own_shape(sdk, fake_ollama):
    sdk.messages.create(
        model="ollama/llama3",
        max_tokens=64,
        messages=user([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]),
        thinking={"type": "enabled", "budget_tokens": 4000},
        extra_body={"temperature": 0.5, "top_k": 5},
    )
    sent = fake_ollama.last_body()
    assert sent["options"] == {"temperature": 0.5, "num_predict": 64, "top_k": 5}
    assert sent["think"] is True
    assert sent["messages"] == [{"role": "user", "content": "", "images": [PNG]}]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_tool_use_then_tool_result(sdk, fake_ollama, fake_openai, model, stream):
    fake = fake_ollama if model.startswith("ollama/") else fake_openai
    fake.push(Script(tokens=["Let me look."], tool_calls=[WEATHER_CALL]), Script(tokens=["Sunny", "."]))
    first_turn = {"model": model, "max_tokens": 100, "tools": [WEATHER_TOOL], "messages": user("Weather in Paris?")}
    if stream:
        events, first = streamed(sdk, **first_turn)
        deltas = [
            e.delta.partial_json
            for e in events
            if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
        ]
        assert json.loads("".join(deltas)) == {"city": "Paris"}
    else:
        first = sdk.messages.create(**first_turn)
    assert first.stop_reason == "tool_use"
    assert [block.type for block in first.content] == ["text", "tool_use"]
    call = first.content[1]
    assert (call.id, call.name, call.input) == ("call_abc", "get_weather", {"city": "Paris"})

    second = sdk.messages.create(
        model=model,
        max_tokens=100,
        tools=[WEATHER_TOOL],
        messages=[
            *user("Weather in Paris?"),
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 °C"}]},
        ],
    )
    assert second.content[0].text == "Sunny." and second.stop_reason == "end_turn"
    sent = fake.requests[-1].body["messages"]
    if model.startswith("ollama/"):
        assert sent[1:] == [
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
            },
            {"role": "tool", "content": "sunny, 21 °C", "tool_name": "get_weather"},
        ]
    else:
        assert sent[1:] == [
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "content": "sunny, 21 °C", "tool_call_id": "call_abc"},
        ]


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_thinking_from_a_reasoning_upstream(sdk, fake_ollama, fake_openai, model):
    fake = fake_ollama if model.startswith("ollama/") else fake_openai
    script = Script(reasoning=["Hmm", ", sunny."], tokens=["It is", " sunny."])
    fake.push(script, script)
    kwargs = {"model": model, "max_tokens": 100, "messages": user("Weather?")}
    created = sdk.messages.create(**kwargs)
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in created.content] == [
        ("thinking", "Hmm, sunny."),
        ("text", "It is sunny."),
    ]
    events, final = streamed(sdk, **kwargs)
    assert [e.delta.type for e in events if e.type == "content_block_delta"] == [
        "thinking_delta",
        "thinking_delta",
        "text_delta",
        "text_delta",
    ]
    same_message(created, final)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_and_refusal_stop_reasons(sdk, fake_openai, stream):
    fake_openai.push(Script(tokens=[], tool_calls=[WEATHER_CALL]), Script(tokens=["No."], done_reason="content_filter"))
    outcomes = []
    for _ in range(2):
        request = {"model": "openai/gpt-4o", "max_tokens": 50, "messages": user(), "tools": [WEATHER_TOOL]}
        message = streamed(sdk, **request)[1] if stream else sdk.messages.create(**request)
        outcomes.append((message.stop_reason, [block.type for block in message.content]))
    assert outcomes == [("tool_use", ["tool_use"]), ("refusal", ["text"])]


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequence_named_by_a_vllm_style_upstream(sdk, fake_openai, stream):
    fake_openai.push(Script(tokens=["a", "b"], stop_sequence="END"))
    request = {"model": "openai/gpt-4o", "max_tokens": 50, "messages": user(), "stop_sequences": ["END"]}
    message = streamed(sdk, **request)[1] if stream else sdk.messages.create(**request)
    assert (message.stop_reason, message.stop_sequence, message.content[0].text) == ("stop_sequence", "END", "ab")
    assert fake_openai.last_body()["stop"] == ["END"]


def test_upstream_max_tokens(sdk, fake_openai):
    fake_openai.push(Script(tokens=["a", "b", "c"]))
    message = sdk.messages.create(model="openai/gpt-4o", max_tokens=2, messages=user())
    assert (message.stop_reason, message.content[0].text) == ("max_tokens", "ab")
    assert fake_openai.last_body()["max_tokens"] == 2


# -- errors ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_upstream_429_is_a_rate_limit_error_with_retry_after(start_server, fake_ollama, fake_openai, model, stream):
    server = start_server(SLUICE_RETRIES="0")  # Sluice retries a 429 before the first token by default
    fake = fake_ollama if model.startswith("ollama/") else fake_openai
    fake.push(Script(status=429, retry_after="7", error_message="slow down"))
    with anthropic.Anthropic(api_key="unused", base_url=server.url, max_retries=0) as sdk:
        with pytest.raises(anthropic.RateLimitError) as caught:
            if stream:
                streamed(sdk, model=model, max_tokens=10, messages=user())
            else:
                sdk.messages.create(model=model, max_tokens=10, messages=user())
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.type == "rate_limit_error"
    assert caught.value.body["type"] == "error"


@pytest.mark.parametrize("model", ["nowhere/x", "demo/unknown", "ollama/nope", "openai/nope"])
def test_unknown_model_is_not_found(sdk, fake_ollama, fake_openai, model):
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk.messages.create(model=model, max_tokens=10, messages=user())
    assert caught.value.type == "not_found_error"


def test_upstream_error_mid_stream_is_an_error_event(sdk, fake_openai):
    fake_openai.push(Script(tokens=["a", "b", "c"], error_after=1, error_message="sk-live-SECRET"))
    texts = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with sdk.messages.stream(model="openai/gpt-4o", max_tokens=10, messages=user()) as stream:
            for text in stream.text_stream:
                texts.append(text)
    assert texts == ["a"]
    assert caught.value.body["error"]["type"] == "api_error"
    assert "SECRET" not in json.dumps(caught.value.body)


def test_keys_in_x_api_key_or_bearer(start_server):
    server = start_server(SLUICE_API_KEYS="k-one,k-two")
    kwargs = {"model": "demo/echo", "max_tokens": 50, "messages": user("hi")}
    with anthropic.Anthropic(api_key="k-one", base_url=server.url, max_retries=0) as client:
        assert client.messages.create(**kwargs).content[0].text == answer("hi")
    with anthropic.Anthropic(auth_token="k-two", base_url=server.url, max_retries=0) as client:
        assert client.messages.create(**kwargs).content[0].text == answer("hi")
    with anthropic.Anthropic(api_key="wrong", base_url=server.url, max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            client.messages.create(**kwargs)
    assert caught.value.status_code == 401 and caught.value.type == "authentication_error"
    # x-api-key is the Anthropic dialect's header: Sluice's own API still wants Bearer.
    sluice = requests.post(
        server.url + "/api/chat", json={"messages": user("hi")}, headers={"x-api-key": "k-one"}, timeout=10
    )
    assert sluice.status_code == 401


BAD_BODIES = [
    pytest.param(b"not json", id="not-json"),
    pytest.param([1, 2], id="array"),
    pytest.param({"model": "demo/echo", "messages": user()}, id="no-max_tokens"),
    pytest.param({"model": "demo/echo", "max_tokens": 0, "messages": user()}, id="max_tokens-0"),
    pytest.param({"max_tokens": 5, "messages": user()}, id="no-model"),
    pytest.param({"model": "demo/echo", "max_tokens": 5, "messages": []}, id="no-messages"),
    pytest.param({"model": "demo/echo", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, id="role"),
    pytest.param({"model": "demo/echo", "max_tokens": 5, "messages": [{"role": "user", "content": 5}]}, id="content"),
    pytest.param(
        {"model": "demo/echo", "max_tokens": 5, "messages": user([{"type": "document", "source": {}}])}, id="document"
    ),
    pytest.param(
        {
            "model": "demo/echo",
            "max_tokens": 5,
            "messages": user([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "!"}}]),
        },
        id="image-base64",
    ),
    pytest.param({"model": "demo/echo", "max_tokens": 5, "messages": user(), "temperature": 3}, id="temperature"),
    pytest.param({"model": "demo/echo", "max_tokens": 5, "messages": user(), "top_k": 0}, id="top_k"),
    pytest.param({"model": "demo/echo", "max_tokens": 5, "messages": user(), "stream": "yes"}, id="stream"),
    pytest.param(
        {"model": "demo/echo", "max_tokens": 5, "messages": user(), "thinking": {"type": "on"}}, id="thinking"
    ),
    pytest.param({"model": "demo/echo", "max_tokens": 5, "messages": user(), "container": "c"}, id="unknown-field"),
    pytest.param(
        {
            "model": "demo/echo",
            "max_tokens": 5,
            "messages": user(),
            "tools": [{"type": "web_search_20250305", "name": "w"}],
        },
        id="server-tool",
    ),
    pytest.param(
        {"model": "demo/echo", "max_tokens": 5, "messages": user(), "tool_choice": {"type": "function"}},
        id="tool_choice",
    ),
    pytest.param({"model": "demo/echo", "max_tokens": 5, "messages": user(), "tools": [WEATHER_TOOL]}, id="demo-tools"),
    pytest.param(
        {
            "model": "demo/echo",
            "max_tokens": 5,
            "messages": user([{"type": "tool_result", "tool_use_id": "x", "content": [{"type": "image"}]}]),
        },
        id="tool-result-image",
    ),
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_input_is_a_4xx_in_anthropic_shape(server, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = requests.post(
        server.url + "/v1/messages", data=data, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert 400 <= response.status_code < 500, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert isinstance(error["error"]["message"], str) and "Traceback" not in response.text


def test_unknown_path_under_v1_messages_speaks_anthropic(server):
    response = requests.get(server.url + "/v1/messages", timeout=10)
    assert response.status_code == 405
    assert response.json()["type"] == "error"


# -- the wire ------------------------------------------------------------------------


def test_named_events_on_the_wire(server):
    body = {"model": "demo/echo", "max_tokens": 3, "messages": user("one two three four"), "stream": True}
    with requests.post(server.url + "/v1/messages", json=body, stream=True, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_content(chunk_size=None)).decode()
    blocks = [block for block in raw.split("\n\n") if block]
    names = []
    for block in blocks:
        event, data = block.split("\n")
        name = event.removeprefix("event: ")
        assert json.loads(data.removeprefix("data: "))["type"] == name
        names.append(name)
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    delta = json.loads(blocks[-2].split("\n")[1].removeprefix("data: "))
    assert delta["delta"]["stop_reason"] == "max_tokens"
    assert delta["usage"] == {"input_tokens": 4, "output_tokens": 3}


def test_ping_while_waiting_for_the_first_token(start_server, fake_openai):
    server = start_server(SLUICE_HOLD_S="0.1", SLUICE_HEARTBEAT_S="0.2")
    fake_openai.push(Script(tokens=["late"], first_token_delay_s=1.0))
    body = {"model": "openai/gpt-4o", "max_tokens": 5, "messages": user(), "stream": True}
    with requests.post(server.url + "/v1/messages", json=body, stream=True, timeout=10) as response:
        raw = b"".join(response.iter_content(chunk_size=None))
    assert raw.startswith(b"event: message_start\n")
    assert b'event: ping\ndata: {"type":"ping"}\n\n' in raw
    assert raw.index(b"event: ping") < raw.index(b"content_block_start")


def test_disconnect_mid_stream_closes_the_upstream(server, fake_openai):
    fake_openai.push(Script(tokens=["t"] * 1000, delay_s=0.05))
    body = {"model": "openai/gpt-4o", "max_tokens": 2000, "messages": user(), "stream": True}
    closed = hang_up_after(server.url, "/v1/messages", body, b"content_block_delta", 4)
    assert fake_openai.wait_disconnect(2.0) - closed < 1.0
    server.wait_idle()
