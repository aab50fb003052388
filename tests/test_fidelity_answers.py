"""Everything the model sends reaches the client: reasoning, tool calls, refusals, finish reasons, usage.

Sluice runs under a real gunicorn + gevent server in front of the fake
upstreams; the clients are the official ``openai`` SDK (an agent loop,
structured output), httpx-sse and plain requests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import openai
import pydantic
import pytest
import requests

from providers.demo import answer, reasoning
from providers.openai import OpenAIProvider
from sluice.chat import ChatRequest, Message
from sluice.provider import Abort, Finish
from tests.fakes import Script
from tests.sse_client import read_events, text_of

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = {"id": "call_w1", "name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}
USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 9,
    "total_tokens": 20,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 5},
}


@pytest.fixture
def sdk(server) -> Iterator[openai.OpenAI]:
    # The SDK's own retries stay on (2): a 400 must not be retried, a 429 may.
    with openai.OpenAI(api_key="anything", base_url=server.url + "/v1", timeout=15) as client:
        yield client
    server.wait_idle()


def user(text: str = "What is the weather in Paris?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# -- an agent loop through Sluice ------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai/gpt-4o-mini", "ollama/llama3"])
@pytest.mark.parametrize("stream", [True, False])
def test_agent_loop_with_the_sdk(sdk, fake_openai, fake_ollama, provider, stream):
    fake = fake_openai if provider.startswith("openai") else fake_ollama
    fake.push(Script(tokens=[], tool_calls=[CALL]), Script(tokens=["It is ", "21 °C."]))
    messages: list[dict[str, Any]] = user()
    if stream:
        with sdk.chat.completions.stream(model=provider, messages=messages, tools=[WEATHER]) as events:
            first = events.get_final_completion()
    else:
        first = sdk.chat.completions.create(model=provider, messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris", "unit": "C"}
    assert call.id and (call.id == "call_w1" or provider.startswith("ollama"))
    assert choice.message.content in (None, "")
    # The next turn: the assistant's call (content null) and the tool's result.
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
    ]
    if stream:
        chunks = list(sdk.chat.completions.create(model=provider, messages=messages, tools=[WEATHER], stream=True))
        final_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        final = sdk.chat.completions.create(model=provider, messages=messages, tools=[WEATHER])
        final_text, reasons = final.choices[0].message.content, [final.choices[0].finish_reason]
    assert final_text == "It is 21 °C." and reasons == ["stop"]
    sent = fake.last_body()["messages"]
    if provider.startswith("openai"):
        assert sent[1]["tool_calls"][0]["function"] == {
            "name": "get_weather",
            "arguments": '{"city": "Paris", "unit": "C"}',
        }
        assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}
    else:
        assert sent[1]["tool_calls"] == [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}
        ]
        assert sent[2] == {"role": "tool", "content": '{"temp": 21}', "tool_name": "get_weather"}


class Person(pydantic.BaseModel):
    name: str
    age: int


def test_structured_output_with_parse(sdk, fake_openai):
    fake_openai.push(Script(tokens=['{"name": ', '"Mara", ', '"age": 25}']))
    completion = sdk.chat.completions.parse(
        model="openai/gpt-4o-mini", messages=user("Mara is 25."), response_format=Person
    )
    assert completion.choices[0].message.parsed == Person(name="Mara", age=25)
    sent = fake_openai.last_body()["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Person"
    assert sent["json_schema"]["schema"]["properties"].keys() == {"name", "age"}


# -- reasoning, refusals, content filters, usage ------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_streams_through_v1_and_sse(server, sdk, fake_openai, field):
    fake_openai.push(Script(reasoning=["Let me ", "think."], reasoning_field=field, tokens=["42"]))
    chunks = list(sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=user(), stream=True))
    thought = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices
    )
    assert thought == "Let me think."
    fake_openai.push(Script(reasoning=["Let me ", "think."], reasoning_field=field, tokens=["42"]))
    events = read_events(server.url + "/api/chat", {"model": "openai/gpt-4o-mini", "messages": user()})
    assert [e["type"] for e in events] == ["start", "reasoning", "reasoning", "delta", "done"]
    assert [e["content"] for e in events if e["type"] == "reasoning"] == ["Let me ", "think."]


def test_stream_false_carries_reasoning_tool_calls_and_refusals(server, fake_openai, fake_ollama):
    fake_ollama.push(Script(reasoning=["hmm"], tokens=["Hi"], tool_calls=[CALL]))
    reply = requests.post(
        server.url + "/api/chat", json={"model": "ollama/llama3", "messages": user(), "stream": False}, timeout=10
    ).json()
    assert reply["message"]["content"] == "Hi" and reply["message"]["reasoning"] == "hmm"
    (call,) = reply["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}
    assert reply["finish_reason"] == "tool_calls"
    fake_openai.push(Script(tokens=[], refusal=["I can't ", "help."]))
    reply = requests.post(
        server.url + "/api/chat", json={"model": "openai/gpt-4o-mini", "messages": user(), "stream": False}, timeout=10
    ).json()
    assert reply["message"] == {"role": "assistant", "content": None, "refusal": "I can't help."}


def test_refusal_and_content_filter_reach_the_sdk(sdk, fake_openai):
    fake_openai.push(Script(tokens=[], refusal=["No."]))
    chunks = list(sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=user(), stream=True))
    assert "".join(c.choices[0].delta.refusal or "" for c in chunks if c.choices) == "No."
    fake_openai.push(Script(tokens=["partial"], done_reason="content_filter"))
    completion = sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=user())
    assert completion.choices[0].finish_reason == "content_filter"


def test_usage_details_pass_and_missing_usage_is_not_made_up(sdk, fake_openai):
    fake_openai.push(Script(tokens=["a"], usage=USAGE))
    chunks = list(
        sdk.chat.completions.create(
            model="openai/gpt-4o-mini", messages=user(), stream=True, stream_options={"include_usage": True}
        )
    )
    usage = chunks[-1].usage
    assert usage.prompt_tokens_details.cached_tokens == 4 and usage.completion_tokens_details.reasoning_tokens == 5
    assert usage.total_tokens == 20
    fake_openai.push(Script(tokens=["a"], report_usage=False))
    chunks = list(
        sdk.chat.completions.create(
            model="openai/gpt-4o-mini", messages=user(), stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.usage is None for c in chunks)
    fake_openai.push(Script(tokens=["a"], report_usage=False))
    assert sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=user()).usage is None


def test_logprobs_reach_the_client(sdk, fake_openai):
    fake_openai.push(Script(tokens=["Hi", "!"]))
    chunks = list(
        sdk.chat.completions.create(
            model="openai/gpt-4o-mini", messages=user(), stream=True, logprobs=True, top_logprobs=2
        )
    )
    tokens = [
        lp.token for c in chunks if c.choices and c.choices[0].logprobs for lp in c.choices[0].logprobs.content or ()
    ]
    assert tokens == ["Hi", "!"]
    assert fake_openai.last_body()["top_logprobs"] == 2


def test_the_openai_provider_keeps_the_system_fingerprint(fake_openai):
    # Provider level: the renderers that show it are another change's.
    provider = OpenAIProvider("sk-test", fake_openai.url)
    request = ChatRequest("openai/gpt-4o-mini", (Message("user", "hi"),))
    stream = provider.stream(request, "gpt-4o-mini", Abort())
    pieces = []
    with pytest.raises(StopIteration) as stop:
        while True:
            pieces.append(next(stream))
    assert "".join(pieces) == "Hello, world!"
    finish = stop.value.value
    assert isinstance(finish, Finish) and re.fullmatch(r"fp_[0-9a-f]{10}", finish.system_fingerprint or "")


def test_text_only_clients_get_answer_text_only(server, fake_ollama):
    fake_ollama.push(Script(reasoning=["secret thoughts"], tokens=["Hello", " there"], tool_calls=[CALL]))
    text = requests.post(
        server.url + "/api/chat",
        json={"model": "ollama/llama3", "messages": user()},
        headers={"Accept": "text/plain"},
        timeout=10,
    ).text
    assert text == "Hello there"
    classic = requests.get(server.url + "/stream", params={"prompt": "hi", "model": "demo/think"}, timeout=10).text
    assert "The user wrote" not in classic and "data: hi" in classic
    ndjson = requests.post(
        server.url + "/api/chat",
        json={"model": "demo/think", "messages": user("hi")},
        headers={"Accept": "application/x-ndjson"},
        timeout=10,
    ).text.splitlines()
    kinds = [json.loads(line)["type"] for line in ndjson]
    assert kinds[0] == "start" and kinds[-1] == "done" and "reasoning" in kinds


def test_demo_think_streams_reasoning_then_the_echo_answer(server):
    events = read_events(server.url + "/api/chat", {"model": "demo/think", "messages": user("one two")})
    thought = "".join(e["content"] for e in events if e["type"] == "reasoning")
    assert thought == reasoning("one two") and text_of(events) == answer("one two")
    assert events[-1]["usage"]["completion_tokens"] == len(events) - 2


def test_reasoning_counts_as_progress_past_the_first_token_deadline(start_server, fake_ollama):
    srv = start_server(SLUICE_FIRST_TOKEN_TIMEOUT_S="0.5", SLUICE_IDLE_TIMEOUT_S="0.5", SLUICE_HOLD_S="0.2")
    # Thinks for ~1.5 s, three times the first-token deadline, before any answer text.
    fake_ollama.push(Script(reasoning=["a"] * 8, delay_s=0.2, tokens=["done"]))
    events = read_events(srv.url + "/api/chat", {"model": "ollama/llama3", "messages": user()})
    assert events[-1]["type"] == "done" and text_of(events) == "done"


# -- upstream refusals keep their meaning ------------------------------------------------------------


def test_upstream_400_is_a_400_and_the_sdk_does_not_retry(sdk, fake_openai):
    fake_openai.push(Script(status=400, error_code="context_length_exceeded"))
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=user())
    assert caught.value.code == "context_length_exceeded"
    assert "maximum context length" in caught.value.message
    assert len(fake_openai.requests) == 1  # neither Sluice nor the SDK retried


@pytest.mark.parametrize("provider", ["openai/gpt-4o-mini", "ollama/llama3"])
def test_upstream_statuses_are_mapped(server, fake_openai, fake_ollama, provider):
    fake = fake_openai if provider.startswith("openai") else fake_ollama
    url = server.url + "/api/chat"
    body = {"model": provider, "messages": user()}
    fake.push(Script(status=400, error_message="messages: bad tool schema"))
    response = requests.post(url, json=body, timeout=10)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"
    assert "bad tool schema" in response.json()["error"]["message"]
    fake.push(*[Script(status=429, retry_after="1", error_message="slow down")] * 3)
    response = requests.post(url, json=body, timeout=20)
    assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limited"
    assert response.headers["Retry-After"] == "1"
    fake.push(
        Script(status=401, error_message="Incorrect API key provided: sk-abcdefghijklmnop. See https://x.example/keys")
    )
    response = requests.post(url, json=body, timeout=10)
    assert response.status_code == 502 and "credentials" in response.json()["error"]["message"]
    assert "sk-abcdef" not in response.text and "x.example" not in response.text


def test_v1_errors_use_openai_types(sdk, fake_openai):
    fake_openai.push(*[Script(status=429, retry_after="1")] * 3)
    with pytest.raises(openai.RateLimitError):
        sdk.with_options(max_retries=0).chat.completions.create(model="openai/gpt-4o-mini", messages=user())


@pytest.mark.parametrize("provider", ["openai/gpt-4o-mini", "ollama/llama3"])
def test_context_overflow_is_context_length_exceeded(server, fake_openai, fake_ollama, provider):
    fake = fake_openai if provider.startswith("openai") else fake_ollama
    fake.push(Script(status=400, error_code="context_length_exceeded"))
    response = requests.post(server.url + "/api/chat", json={"model": provider, "messages": user()}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_usage_not_reported_is_an_empty_object(server, fake_ollama):
    fake_ollama.push(Script(tokens=["a"], report_usage=False))
    events = read_events(server.url + "/api/chat", {"model": "ollama/llama3", "messages": user()})
    assert events[-1]["usage"] == {}
    fake_ollama.push(Script(tokens=["a"], prompt_tokens=3))
    events = read_events(server.url + "/api/chat", {"model": "ollama/llama3", "messages": user()})
    assert events[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 1}


def test_ollama_logprobs_reach_sse_and_the_sdk(server, sdk, fake_ollama):
    fake_ollama.push(Script(tokens=["Hi", "!"]))
    events = read_events(
        server.url + "/api/chat",
        {"model": "ollama/llama3", "messages": user(), "options": {"logprobs": True, "top_logprobs": 2}},
    )
    deltas = [e for e in events if e["type"] == "delta"]
    assert [d["logprobs"][0]["token"] for d in deltas] == ["Hi", "!"]
    assert len(deltas[0]["logprobs"][0]["top_logprobs"]) == 2
    fake_ollama.push(Script(tokens=["Hi", "!"]))
    chunks = list(sdk.chat.completions.create(model="ollama/llama3", messages=user(), stream=True, logprobs=True))
    tokens = [
        lp.token for c in chunks if c.choices and c.choices[0].logprobs for lp in c.choices[0].logprobs.content or ()
    ]
    assert tokens == ["Hi", "!"]
