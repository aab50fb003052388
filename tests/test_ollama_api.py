"""The official ``ollama`` client as the client of Sluice's ``/ollama``, on a real gunicorn + gevent server.

``ollama.Client(host=<sluice>/ollama)`` must work unchanged against every
provider: chat and generate, streamed and not, tools, thinking, formats,
options, list, show, embed and its errors.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import ollama
import pytest
import requests

from providers.demo import answer, pieces, reasoning
from tests.fakes import Script
from tests.fakes.upstream import embedding_of
from tests.sse_client import hang_up_after

pytestmark = pytest.mark.slow

PROMPT = "Stream me, 世界 🙂\nsecond line"
TOKENS = ["Grü", "ße", " aus", " 東京", " 🙂", "\n", "done"]
WEATHER_CALL = {"id": "call_abc", "name": "get_weather", "arguments": '{"city": "Paris"}'}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 8).decode()


def user(content: str = PROMPT, **more: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content, **more}]


@pytest.fixture
def client(server) -> Iterator[ollama.Client]:
    sdk = ollama.Client(host=server.url + "/ollama", timeout=15)
    yield sdk
    sdk.close()
    server.wait_idle()


def fake_for(model: str, fake_ollama: Any, fake_openai: Any) -> Any:
    return fake_ollama if model.startswith("ollama/") else fake_openai


# -- chat ---------------------------------------------------------------------------


def test_demo_chat_streamed_and_not_give_the_same_text(client):
    parts = list(client.chat(model="demo/echo", messages=user(), stream=True))
    assert [p.message.content for p in parts[:-1]] == pieces(PROMPT)
    assert all(p.done is False and p.message.role == "assistant" and p.model == "demo/echo" for p in parts[:-1])
    final = parts[-1]
    assert (final.done, final.done_reason, final.message.content) == (True, "stop", "")
    assert (final.prompt_eval_count, final.eval_count) == (len(PROMPT.split()), len(pieces(PROMPT)))
    assert final.total_duration and final.created_at
    whole = client.chat(model="demo/echo", messages=user(), stream=False)
    assert whole.message.content == answer(PROMPT) == "".join(p.message.content for p in parts)
    assert (whole.done, whole.done_reason, whole.eval_count) == (True, "stop", final.eval_count)


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_providers_chat_streamed_and_not(client, fake_ollama, fake_openai, model):
    fake = fake_for(model, fake_ollama, fake_openai)
    fake.push(Script(tokens=TOKENS, prompt_tokens=5), Script(tokens=TOKENS, prompt_tokens=5))
    parts = list(client.chat(model=model, messages=user("hi"), stream=True))
    assert "".join(p.message.content for p in parts) == "".join(TOKENS)
    assert (parts[-1].prompt_eval_count, parts[-1].eval_count) == (5, len(TOKENS))
    whole = client.chat(model=model, messages=user("hi"), stream=False)
    assert whole.message.content == "".join(TOKENS)
    assert fake.requests[-1].body["messages"] == user("hi")


def test_counts_not_reported_are_absent(client, fake_openai):
    fake_openai.push(Script(report_usage=False))
    final = list(client.chat(model="openai/gpt-4o", messages=user(), stream=True))[-1]
    assert final.done is True and final.prompt_eval_count is None and final.eval_count is None


def test_num_predict_is_the_token_limit(client, fake_ollama, fake_openai):
    parts = list(client.chat(model="demo/echo", messages=user(), options={"num_predict": 2}, stream=True))
    assert [p.message.content for p in parts[:-1]] == pieces(PROMPT)[:2]
    assert parts[-1].done_reason == "length"
    fake_openai.push(Script(tokens=["a", "b", "c"]))
    whole = client.chat(model="openai/gpt-4o", messages=user(), options={"num_predict": 2, "top_k": 3}, stream=False)
    assert (whole.message.content, whole.done_reason) == ("ab", "length")
    sent = fake_openai.last_body()
    assert (sent["max_tokens"], sent["top_k"]) == (2, 3)


def test_options_reach_ollama_unchanged(client, fake_ollama):
    options = {"num_ctx": 8192, "num_predict": -1, "temperature": 3.5, "mirostat": 2, "stop": ["x"]}
    client.chat(model="ollama/llama3", messages=user(), options=options, keep_alive="5m", think=False, stream=False)
    sent = fake_ollama.last_body()
    assert sent["options"] == options
    assert (sent["keep_alive"], sent["think"]) == ("5m", False)


def test_ollama_only_options_are_refused_by_name_elsewhere(client):
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="openai/gpt-4o", messages=user(), options={"num_ctx": 8192}, stream=False)
    assert caught.value.status_code == 400
    assert "options.num_ctx" in caught.value.error and "openai/gpt-4o" in caught.value.error


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_format_as_a_json_schema(client, fake_ollama, fake_openai, model):
    fake = fake_for(model, fake_ollama, fake_openai)
    fake.push(Script(tokens=['{"city":', '"Paris"}']))
    whole = client.chat(model=model, messages=user("City?"), format=SCHEMA, stream=False)
    assert json.loads(whole.message.content) == {"city": "Paris"}
    sent = fake.requests[-1].body
    if model.startswith("ollama/"):
        assert sent["format"] == SCHEMA
    else:
        assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA}}
    client.chat(model=model, messages=user("City?"), format="json", stream=False)
    sent = fake.requests[-1].body
    assert (
        sent.get("format") == "json"
        if model.startswith("ollama/")
        else sent["response_format"] == {"type": "json_object"}
    )


def test_think_with_demo_think(client):
    parts = list(client.chat(model="demo/think", messages=user("hi"), think=True, stream=True))
    thinking = "".join(p.message.thinking or "" for p in parts)
    assert thinking == reasoning("hi")
    assert "".join(p.message.content for p in parts) == answer("hi")
    whole = client.chat(model="demo/think", messages=user("hi"), think=True, stream=False)
    assert (whole.message.thinking, whole.message.content) == (reasoning("hi"), answer("hi"))


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_think_from_a_reasoning_upstream(client, fake_ollama, fake_openai, model):
    fake = fake_for(model, fake_ollama, fake_openai)
    fake.push(Script(reasoning=["Hmm", ", ok."], tokens=["Hi", "!"]))
    parts = list(client.chat(model=model, messages=user(), think=True, stream=True))
    assert [(p.message.thinking, p.message.content) for p in parts[:-1]] == [
        ("Hmm", ""),
        (", ok.", ""),
        (None, "Hi"),
        (None, "!"),
    ]
    sent = fake.requests[-1].body
    assert sent["think"] is True if model.startswith("ollama/") else sent["reasoning_effort"] == "medium"


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_tools_and_a_tool_result(client, fake_ollama, fake_openai, model):
    fake = fake_for(model, fake_ollama, fake_openai)
    fake.push(Script(tokens=[], tool_calls=[WEATHER_CALL]), Script(tokens=["Sunny."]))
    parts = list(client.chat(model=model, messages=user("Weather?"), tools=[WEATHER_TOOL], stream=True))
    calls = [call for p in parts for call in (p.message.tool_calls or [])]
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert parts[-1].done_reason == "stop"
    assert fake.requests[-1].body["tools"] == [WEATHER_TOOL]
    history = [
        *user("Weather?"),
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    whole = client.chat(model=model, messages=history, tools=[WEATHER_TOOL], stream=False)
    assert whole.message.content == "Sunny."
    sent = fake.requests[-1].body["messages"]
    if model.startswith("ollama/"):
        assert sent[1:] == [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
            },
            {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        ]
    else:
        call_id = sent[1]["tool_calls"][0]["id"]
        assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
        assert sent[2] == {"role": "tool", "content": "sunny", "tool_call_id": call_id}


def test_tool_calls_without_streaming(client, fake_openai):
    fake_openai.push(Script(tokens=["ok"], tool_calls=[WEATHER_CALL]))
    whole = client.chat(model="openai/gpt-4o", messages=user(), tools=[WEATHER_TOOL], stream=False)
    assert whole.message.content == "ok" and whole.done_reason == "stop"
    assert whole.message.tool_calls is not None
    assert whole.message.tool_calls[0].function.arguments == {"city": "Paris"}


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_images(client, fake_ollama, fake_openai, model):
    fake = fake_for(model, fake_ollama, fake_openai)
    client.chat(model=model, messages=user("what is this?", images=[PNG]), stream=False)
    sent = fake.requests[-1].body["messages"][0]
    if model.startswith("ollama/"):
        assert sent == {"role": "user", "content": "what is this?", "images": [PNG]}
    else:
        assert sent["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}


# -- generate -------------------------------------------------------------------------


def test_generate_streamed_and_not(client):
    parts = list(client.generate(model="demo/echo", prompt=PROMPT, stream=True))
    assert "".join(p.response for p in parts) == answer(PROMPT)
    assert parts[-1].done is True and parts[-1].done_reason == "stop"
    whole = client.generate(model="demo/think", prompt="hi", think=True)
    assert (whole.thinking, whole.response) == (reasoning("hi"), answer("hi"))


def test_generate_system_prompt_and_images_reach_the_upstream(client, fake_ollama, fake_openai):
    fake_ollama.push(Script(tokens=["A", "B"]))
    whole = client.generate(model="ollama/llama3", prompt="hi", system="be brief", images=[PNG], options={"seed": 3})
    assert whole.response == "AB"
    sent = fake_ollama.last_body()
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi", "images": [PNG]},
    ]
    assert sent["options"] == {"seed": 3}
    client.generate(model="openai/gpt-4o", prompt="hi", format=SCHEMA)
    assert fake_openai.last_body()["response_format"]["json_schema"]["schema"] == SCHEMA


def test_generate_raw_fields_are_refused(client):
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model="demo/echo", prompt="hi", raw=True)
    assert caught.value.status_code == 400 and "raw" in caught.value.error


def test_empty_requests_load_the_model(server):
    chat = requests.post(server.url + "/ollama/api/chat", json={"model": "demo/echo", "messages": []}, timeout=10)
    assert (chat.status_code, chat.json()["done_reason"], chat.json()["done"]) == (200, "load", True)
    gen = requests.post(server.url + "/ollama/api/generate", json={"model": "demo/echo"}, timeout=10)
    assert (gen.json()["response"], gen.json()["done_reason"]) == ("", "load")


def test_curl_style_bodies_are_read_as_json(server):
    # curl -d sends application/x-www-form-urlencoded; Ollama reads the body as JSON anyway.
    body = json.dumps({"model": "demo/echo", "prompt": "hi", "stream": False})
    response = requests.post(
        server.url + "/ollama/api/generate",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert response.json()["response"] == answer("hi")


def test_ndjson_on_the_wire(server):
    with requests.post(
        server.url + "/ollama/api/chat", json={"model": "demo/echo", "messages": user("a b")}, stream=True, timeout=10
    ) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        raw = b"".join(response.iter_content(chunk_size=None))
    lines = raw.split(b"\n")
    assert lines[-1] == b"" and all(lines[:-1])
    objects = [json.loads(line) for line in lines[:-1]]
    assert [o["done"] for o in objects] == [False] * (len(objects) - 1) + [True]
    assert list(objects[0]) == ["model", "created_at", "message", "done"]


# -- list, show, version, embed --------------------------------------------------------


def test_list_names_every_provider_model(client, fake_ollama, fake_openai):
    names = [m.model for m in client.list().models]
    assert {"demo/echo", "demo/think", "ollama/llama3:latest", "openai/gpt-4o-mini"} <= set(names)
    assert len(names) == len(set(names))
    details = next(m.details for m in client.list().models if m.model == "ollama/llama3:latest")
    assert details is not None and details.family == "ollama"


def test_show(client, fake_ollama):
    shown = client.show("demo/think")
    assert shown.capabilities == ["completion", "thinking"]
    assert shown.details is not None and shown.details.family == "demo"
    assert client.show("ollama/llama3").details.family == "ollama"  # type: ignore[union-attr]
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("ollama/nope")
    assert caught.value.status_code == 404


def test_version_and_root(server):
    assert requests.get(server.url + "/ollama/api/version", timeout=10).json()["version"]
    root = requests.get(server.url + "/ollama/", timeout=10)
    assert (root.status_code, root.text) == (200, "Ollama is running")


@pytest.mark.parametrize("model", ["ollama/nomic-embed-text", "openai/text-embedding-3-small"])
def test_embed(client, fake_ollama, fake_openai, model):
    result = client.embed(model=model, input=["héllo world", "two"])
    assert [list(v) for v in result.embeddings] == [embedding_of("héllo world"), embedding_of("two")]
    assert result.prompt_eval_count == 3 and result.model == model
    assert client.embed(model=model, input="one", dimensions=3).embeddings == [embedding_of("one", 3)]
    upstream = fake_for(model, fake_ollama, fake_openai).embed_requests[-1].body
    assert (upstream["model"], upstream["input"], upstream["dimensions"]) == (model.partition("/")[2], "one", 3)


def test_embed_errors(client, fake_ollama):
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model="demo/echo", input="x")
    assert caught.value.status_code == 400 and "no embeddings" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model="openai/text-embedding-3-small", input="x", truncate=True)
    assert caught.value.status_code == 400 and "truncate" in caught.value.error
    client.embed(model="ollama/nomic-embed-text", input="x", truncate=True, keep_alive="1m")
    assert fake_ollama.embed_requests[-1].body["truncate"] is True
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model="ollama/nope", input="x")
    assert caught.value.status_code == 404


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("model", ["nowhere/x", "demo/unknown", "ollama/nope", "openai/nope"])
def test_unknown_model(client, fake_ollama, fake_openai, model, stream):
    with pytest.raises(ollama.ResponseError) as caught:
        result = client.chat(model=model, messages=user(), stream=stream)
        if stream:
            list(result)
    assert caught.value.status_code == 404
    assert isinstance(caught.value.error, str) and caught.value.error


def test_error_mid_stream_is_an_error_line(client, fake_ollama):
    fake_ollama.push(Script(tokens=["a", "b", "c"], error_after=1, error_message="sk-live-SECRET"))
    got = []
    with pytest.raises(ollama.ResponseError) as caught:
        for part in client.chat(model="ollama/llama3", messages=user(), stream=True):
            got.append(part.message.content)
    assert got == ["a"]
    assert "SECRET" not in caught.value.error


BAD_BODIES = [
    pytest.param("/api/chat", b"not json", id="chat-not-json"),
    pytest.param("/api/chat", [1], id="chat-array"),
    pytest.param("/api/chat", {"messages": user()}, id="chat-no-model"),
    pytest.param("/api/chat", {"model": "demo/echo", "messages": "hi"}, id="chat-messages"),
    pytest.param("/api/chat", {"model": "demo/echo", "messages": [{"role": "wizard", "content": "x"}]}, id="role"),
    pytest.param("/api/chat", {"model": "demo/echo", "messages": user(images=["!!"])}, id="image"),
    pytest.param("/api/chat", {"model": "demo/echo", "messages": user(), "stream": "yes"}, id="stream"),
    pytest.param("/api/chat", {"model": "demo/echo", "messages": user(), "options": []}, id="options"),
    pytest.param("/api/chat", {"model": "demo/echo", "messages": user(), "options": {"temperature": "hot"}}, id="temp"),
    pytest.param("/api/chat", {"model": "demo/echo", "messages": user(), "format": 5}, id="format"),
    pytest.param("/api/chat", {"model": "demo/echo", "messages": user(), "think": "hard"}, id="think"),
    pytest.param("/api/chat", {"model": "demo/echo", "messages": user(), "tools": [WEATHER_TOOL]}, id="demo-tools"),
    pytest.param("/api/chat", {"model": "demo/echo", "messages": user(), "keep": 1}, id="unknown-field"),
    pytest.param("/api/generate", {"model": "demo/echo", "prompt": 5}, id="prompt"),
    pytest.param("/api/generate", {"model": "demo/echo", "prompt": "x", "suffix": "y"}, id="suffix"),
    pytest.param("/api/embed", {"model": "openai/text-embedding-3-small"}, id="embed-no-input"),
    pytest.param("/api/embed", {"model": "ollama/llama3", "input": [1, 2]}, id="embed-tokens"),
    pytest.param("/api/show", {}, id="show-no-model"),
]


@pytest.mark.parametrize(("path", "body"), BAD_BODIES)
def test_bad_input_is_a_4xx_in_ollama_shape(server, path, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = requests.post(server.url + "/ollama" + path, data=data, timeout=10)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()
    assert list(error) == ["error"] and isinstance(error["error"], str), error


def test_unknown_path_speaks_ollama(server):
    response = requests.get(server.url + "/ollama/api/ps", timeout=10)
    assert response.status_code == 404 and isinstance(response.json()["error"], str)


def test_disconnect_mid_stream_closes_the_upstream(server, fake_ollama):
    fake_ollama.push(Script(tokens=["t"] * 1000, delay_s=0.05))
    body = {"model": "ollama/llama3", "messages": user()}
    closed = hang_up_after(server.url, "/ollama/api/chat", body, b'"done":false', 3)
    assert fake_ollama.wait_disconnect(2.0) - closed < 1.0
    server.wait_idle()
