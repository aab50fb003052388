"""The official ``openai`` SDK as the client of Sluice's ``/v1``, on a real gunicorn + gevent server.

Sluice relays to the demo model and to the fake upstreams; the SDK must parse
every chunk, usage and error into its own types and exceptions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
import requests
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from providers.demo import answer, pieces
from tests.fakes import Script

pytestmark = pytest.mark.slow

PROMPT = "Stream me, 世界 🙂\nsecond line"


def user(content: str = PROMPT) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


@pytest.fixture
def sdk(server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="anything", base_url=server.url + "/v1", max_retries=0, timeout=15) as client:
        yield client
    server.wait_idle()


def content_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish_reasons(chunks: list[ChatCompletionChunk]) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


# -- demo/echo -------------------------------------------------------------------


def test_streaming_with_usage(sdk):
    chunks = list(
        sdk.chat.completions.create(
            model="demo/echo", messages=user(), stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert content_of(chunks) == answer(PROMPT)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert finish_reasons(chunks) == ["stop"]
    assert len({c.id for c in chunks}) == 1 and chunks[0].model == "demo/echo"
    final = chunks[-1]
    assert final.choices == []
    assert final.usage is not None
    assert final.usage.prompt_tokens == len(PROMPT.split())
    assert final.usage.completion_tokens == len(pieces(PROMPT))
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens
    # Only the final chunk carries usage.
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_without_include_usage_has_no_usage_chunk(sdk):
    chunks = list(sdk.chat.completions.create(model="demo/echo", messages=user(), stream=True))
    assert content_of(chunks) == answer(PROMPT)
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_non_streaming_returns_a_chat_completion(sdk):
    completion = sdk.chat.completions.create(
        model="demo/echo",
        messages=[{"role": "system", "content": "be brief"}, *user()],
        temperature=0.2,
    )
    assert isinstance(completion, ChatCompletion)
    assert completion.object == "chat.completion"
    assert completion.model == "demo/echo"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == answer(PROMPT)
    assert choice.finish_reason == "stop"
    assert completion.usage.prompt_tokens == len("be brief".split()) + len(PROMPT.split())
    assert completion.usage.completion_tokens == len(pieces(PROMPT))
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_developer_role_and_text_parts_are_understood(sdk):
    completion = sdk.chat.completions.create(
        model="demo/echo",
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "two "}, {"type": "text", "text": "parts"}]},
        ],
    )
    assert completion.choices[0].message.content == answer("two parts")


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_gives_finish_reason_length(sdk, stream, limit):
    kwargs = {"model": "demo/echo", "messages": user(), limit: 3}
    expected = "".join(pieces(PROMPT)[:3])
    if stream:
        chunks = list(sdk.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
        assert content_of(chunks) == expected
        assert finish_reasons(chunks) == ["length"]
        assert chunks[-1].usage.completion_tokens == 3
    else:
        completion = sdk.chat.completions.create(**kwargs)
        assert completion.choices[0].message.content == expected
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage.completion_tokens == 3


# -- through the providers -----------------------------------------------------------

TOKENS = ["Grü", "ße", " aus", " 東京", " 🙂", "\n", "done"]


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_providers_relay_the_scripted_tokens(sdk, fake_ollama, fake_openai, model, stream):
    fake = fake_ollama if model.startswith("ollama/") else fake_openai
    fake.push(Script(tokens=TOKENS, prompt_tokens=5))
    if stream:
        chunks = list(
            sdk.chat.completions.create(
                model=model, messages=user("hi"), stream=True, stream_options={"include_usage": True}
            )
        )
        assert chunks[0].choices[0].delta.role == "assistant"
        assert content_of(chunks) == "".join(TOKENS)
        assert finish_reasons(chunks) == ["stop"]
        usage = chunks[-1].usage
    else:
        completion = sdk.chat.completions.create(model=model, messages=user("hi"))
        assert completion.choices[0].message.content == "".join(TOKENS)
        assert completion.choices[0].finish_reason == "stop"
        usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, len(TOKENS), 5 + len(TOKENS))
    sent = fake.requests[-1].body
    assert sent["model"] == model.partition("/")[2]
    assert sent["messages"] == user("hi")


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_provider_length_limit(sdk, fake_ollama, fake_openai, model):
    fake = fake_ollama if model.startswith("ollama/") else fake_openai
    fake.push(Script(tokens=["a", "b", "c", "d"]))
    chunks = list(sdk.chat.completions.create(model=model, messages=user("hi"), max_tokens=2, stream=True))
    assert content_of(chunks) == "ab"
    assert finish_reasons(chunks) == ["length"]


def test_models_list(sdk, fake_ollama, fake_openai):
    ids = [m.id for m in sdk.models.list()]
    assert "demo/echo" in ids
    assert "ollama/llama3:latest" in ids
    assert "openai/gpt-4o-mini" in ids
    assert len(ids) == len(set(ids))
    assert all(m.object == "model" for m in sdk.models.list())


# -- typed exceptions -------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("model", ["nowhere/x", "demo/unknown", "ollama/nope", "openai/nope"])
def test_unknown_model_is_not_found_error(sdk, fake_ollama, fake_openai, model, stream):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model=model, messages=user(), stream=stream)
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"messages": []}, id="messages-empty"),
        pytest.param({"messages": [{"role": "wizard", "content": "hi"}]}, id="role-unknown"),
        pytest.param({"messages": user(), "temperature": 7}, id="temperature-out-of-range"),
        pytest.param({"messages": user(), "max_tokens": 0}, id="max_tokens-0"),
    ],
)
@pytest.mark.parametrize("stream", [True, False])
def test_bad_body_is_bad_request_error(sdk, kwargs, stream):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="demo/echo", stream=stream, **kwargs)
    assert caught.value.status_code == 400
    assert caught.value.code == "invalid_request"
    assert caught.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        pytest.param({"messages": []}, "messages", id="messages"),
        pytest.param({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", id="role"),
        pytest.param(
            {"messages": [*user(), {"role": "tool", "content": "x"}]}, "messages[1].tool_call_id", id="tool_call_id"
        ),
        pytest.param({"messages": user(), "temperature": 7}, "temperature", id="temperature"),
        pytest.param({"messages": user(), "stop": 5}, "stop", id="stop"),
        pytest.param({"messages": user(), "tools": {"type": "function"}}, "tools", id="tools"),
        pytest.param({"messages": user(), "tool_choice": "sometimes"}, "tool_choice", id="tool_choice"),
        pytest.param({"messages": user(), "response_format": {"type": "xml"}}, "response_format.type", id="format"),
        # A provider's refusal names the field it cannot honour.
        pytest.param({"messages": user(), "n": 2}, "n", id="demo-n"),
        pytest.param({"model": "ollama/llama3", "messages": user(), "logit_bias": {"1": 1}}, "logit_bias", id="ollama"),
    ],
)
def test_a_bad_request_names_its_field_in_param(sdk, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(**{"model": "demo/echo", **kwargs})
    assert caught.value.code == "invalid_request"
    assert caught.value.param == param
    assert caught.value.body["param"] == param


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_upstream_error_before_streaming_is_502(sdk, fake_ollama, fake_openai, model, stream):
    fake = fake_ollama if model.startswith("ollama/") else fake_openai
    fake.push(Script(status=500, error_message="sk-live-SECRET"))
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model=model, messages=user(), stream=stream)
    assert isinstance(caught.value, openai.InternalServerError)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    # An upstream's error text may quote a key or a URL: Sluice sends its own words.
    assert "SECRET" not in caught.value.response.text


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_upstream_error_mid_stream_raises_api_error_while_iterating(sdk, fake_ollama, fake_openai, model):
    fake = fake_ollama if model.startswith("ollama/") else fake_openai
    fake.push(Script(tokens=["a", "b", "c"], error_after=1, error_message="sk-live-SECRET"))
    stream = sdk.chat.completions.create(model=model, messages=user(), stream=True)
    received: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk)
    assert not isinstance(caught.value, openai.APIStatusError)  # the status was already 200
    assert content_of(received) == "a"
    assert caught.value.code == "upstream_error"
    assert "SECRET" not in caught.value.message


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_upstream_error_mid_answer_without_streaming_is_502(sdk, fake_ollama, fake_openai, model):
    fake = fake_ollama if model.startswith("ollama/") else fake_openai
    fake.push(Script(tokens=["a", "b", "c"], error_after=1))
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model=model, messages=user())
    assert caught.value.status_code == 502


# -- the bytes on the wire -----------------------------------------------------------


@pytest.mark.parametrize("include_usage", [True, False])
def test_raw_stream_bytes(server, include_usage):
    body = {"model": "demo/echo", "messages": user(), "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with requests.post(server.url + "/v1/chat/completions", json=body, stream=True, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        raw = b"".join(r.iter_content(chunk_size=None))
    assert raw.endswith(b"data: [DONE]\n\n")
    assert raw.count(b"data: [DONE]") == 1
    blocks = [b for b in raw.split(b"\n\n") if b and not b.startswith(b":")]
    assert blocks[-1] == b"data: [DONE]"
    chunks = []
    for block in blocks[:-1]:
        assert block.startswith(b"data: ") and b"\n" not in block, block
        chunks.append(json.loads(block[len(b"data: ") :]))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == answer(PROMPT)
    if include_usage:
        assert all("usage" in c for c in chunks)
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    else:
        assert all("usage" not in c for c in chunks)
