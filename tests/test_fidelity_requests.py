"""Every request field reaches the upstream, translated, or is refused with a 400 naming it.

The fields are docs/api.md's, "The request, field by field".

Sluice runs in-process; the providers talk to the fake Ollama and OpenAI over
real sockets, and each assertion reads the body the fake recorded.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nfake-image-bytes").decode()
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
SAMPLING = {
    "temperature": 0.3,
    "top_p": 0.9,
    "stop": ["END", "STOP"],
    "seed": 42,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
}
AGENT_TURNS = [
    {"role": "system", "content": "You are terse."},
    {"role": "developer", "content": "Use tools."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture? "},
            {"type": "image_url", "image_url": {"url": PNG}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
]


def post_v1(client, **body: Any):
    return client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], **body})


def post_chat(client, **body: Any):
    return client.post("/api/chat", json={"messages": [{"role": "user", "content": "hi"}], "stream": False, **body})


def error_of(response) -> dict[str, Any]:
    data = response.get_json()
    return data["error"]


# -- OpenAI-compatible upstream: OpenAI's shape, every field as given ------------------------------


@pytest.mark.parametrize("route", ["v1", "chat"])
def test_openai_upstream_gets_every_field_as_sent(client, fake_openai, route):
    fields = {
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}},
    }
    sampling = {
        **SAMPLING,
        "max_completion_tokens": 50,
        "logit_bias": {"50256": -100},
        "logprobs": True,
        "top_logprobs": 2,
        "n": 1,
        "reasoning_effort": "low",
    }
    messages = AGENT_TURNS
    if route == "v1":
        response = client.post(
            "/v1/chat/completions",
            json={
                "model": "openai/gpt-4o-mini",
                "messages": messages,
                **fields,
                **sampling,
                "user": "u-1",
                "top_k": 20,
            },
        )
    else:
        response = client.post(
            "/api/chat",
            json={
                "model": "openai/gpt-4o-mini",
                "messages": messages,
                "stream": False,
                **fields,
                "options": sampling,
                "user": "u-1",
                "extra": {"top_k": 20},
            },
        )
    assert response.status_code == 200, response.get_data(as_text=True)
    sent = fake_openai.last_body()
    assert sent["model"] == "gpt-4o-mini" and sent["stream"] is True
    assert sent["messages"] == messages  # parts, null content, tool calls, tool results: as given
    for name, value in {**fields, **sampling}.items():
        assert sent[name] == value, name
    assert "max_tokens" not in sent  # max_completion_tokens keeps its own name
    assert sent["user"] == "u-1" and sent["top_k"] == 20  # informing fields and extras pass through


def test_openai_upstream_extra_merges_one_level_deep(client, fake_openai):
    response = post_chat(client, model="openai/gpt-4o-mini", extra={"stream_options": {"continuous_usage_stats": True}})
    assert response.status_code == 200
    sent = fake_openai.last_body()
    assert sent["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


def test_max_tokens_is_kept_as_max_tokens(client, fake_openai):
    assert post_v1(client, model="openai/gpt-4o-mini", max_tokens=7).status_code == 200
    sent = fake_openai.last_body()
    assert sent["max_tokens"] == 7 and "max_completion_tokens" not in sent


# -- Ollama: translated per SPEC's table ----------------------------------------------------------


@pytest.mark.parametrize("route", ["v1", "chat"])
def test_ollama_upstream_gets_the_translated_request(client, fake_ollama, route):
    sampling = {**SAMPLING, "max_tokens": 64, "reasoning_effort": "high", "logprobs": True, "top_logprobs": 3}
    fields = {"tools": [WEATHER_TOOL], "tool_choice": "auto", "response_format": {"type": "json_object"}}
    if route == "v1":
        body = {
            "model": "ollama/llama3",
            "messages": AGENT_TURNS,
            **fields,
            **sampling,
            "keep_alive": "5m",
            "options": {"num_ctx": 8192},
        }
        response = client.post("/v1/chat/completions", json=body)
    else:
        body = {
            "model": "ollama/llama3",
            "messages": AGENT_TURNS,
            "stream": False,
            **fields,
            "options": sampling,
            "extra": {"keep_alive": "5m", "options": {"num_ctx": 8192}},
        }
        response = client.post("/api/chat", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    sent = fake_ollama.last_body()
    assert sent["model"] == "llama3" and sent["stream"] is True
    # The extra's options merged into Sluice's.
    assert sent["options"] == {**SAMPLING, "num_predict": 64, "num_ctx": 8192}
    assert sent["format"] == "json"
    assert sent["tools"] == [WEATHER_TOOL]
    assert sent["think"] == "high"
    assert sent["logprobs"] is True and sent["top_logprobs"] == 3
    assert sent["keep_alive"] == "5m"
    assert sent["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "What is in this picture? ", "images": [PNG.partition(",")[2]]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": '{"temp": 21}', "tool_name": "get_weather"},
    ]


def test_ollama_json_schema_becomes_format_and_max_completion_tokens_num_predict(client, fake_ollama):
    response = post_v1(
        client,
        model="ollama/llama3",
        max_completion_tokens=9,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}},
    )
    assert response.status_code == 200
    sent = fake_ollama.last_body()
    assert sent["format"] == SCHEMA and sent["options"] == {"num_predict": 9}


def test_ollama_tool_choice_none_sends_no_tools(client, fake_ollama):
    assert post_v1(client, model="ollama/llama3", tools=[WEATHER_TOOL], tool_choice="none").status_code == 200
    assert "tools" not in fake_ollama.last_body()


def test_ollama_drops_only_fields_that_inform(client, fake_ollama):
    response = post_v1(client, model="ollama/llama3", user="u-1", metadata={"a": "b"}, store=False, service_tier="auto")
    assert response.status_code == 200
    sent = fake_ollama.last_body()
    assert not {"user", "metadata", "store", "service_tier"} & set(sent)


# -- Refused, naming the field and the provider -----------------------------------------------------

REFUSED = [
    pytest.param("ollama/llama3", {"n": 2}, "n", id="ollama-n"),
    pytest.param("openai/gpt-4o-mini", {"n": 3}, "n", id="openai-n"),
    pytest.param("ollama/llama3", {"logit_bias": {"1": 1}}, "logit_bias", id="ollama-logit_bias"),
    pytest.param(
        "ollama/llama3", {"tools": [WEATHER_TOOL], "tool_choice": "required"}, "tool_choice", id="ollama-required"
    ),
    pytest.param(
        "ollama/llama3",
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        "tool_choice",
        id="ollama-forced",
    ),
    pytest.param("ollama/llama3", {"parallel_tool_calls": False}, "parallel_tool_calls", id="ollama-parallel"),
    pytest.param(
        "ollama/llama3",
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}
            ]
        },
        "http",
        id="ollama-http-image",
    ),
    pytest.param(
        "ollama/llama3", {"messages": [{"role": "user", "content": "hi", "name": "ann"}]}, "name", id="ollama-name"
    ),
    pytest.param("demo/echo", {"tools": [WEATHER_TOOL]}, "tools", id="demo-tools"),
    pytest.param("demo/echo", {"response_format": {"type": "json_object"}}, "response_format", id="demo-json"),
    pytest.param("demo/echo", {"logprobs": True}, "logprobs", id="demo-logprobs"),
    pytest.param("demo/echo", {"reasoning_effort": "low"}, "reasoning_effort", id="demo-echo-reasoning"),
    pytest.param(
        "demo/echo",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}]},
        "image_url",
        id="demo-image",
    ),
    pytest.param("demo/echo", {"top_k": 5}, "extra", id="demo-extra"),
]


@pytest.mark.parametrize(("model", "body", "field"), REFUSED)
def test_what_a_provider_cannot_honour_is_a_400_naming_it(client, fake_ollama, fake_openai, model, body, field):
    for route in ("/v1/chat/completions", "/api/generations"):
        payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
        if route != "/v1/chat/completions":  # Sluice's body: sampling under options, knobs under extra
            options = {k: payload.pop(k) for k in ("n", "logit_bias", "logprobs", "reasoning_effort") if k in payload}
            if options:
                payload["options"] = options
            if "top_k" in payload:
                payload["extra"] = {"top_k": payload.pop("top_k")}
        response = client.post(route, json=payload)
        assert response.status_code == 400, (route, response.get_data(as_text=True))
        message = error_of(response)["message"]
        assert field in message and model.split("/")[0] in message, message
    assert not fake_ollama.requests and not fake_openai.requests  # refused before anything was sent


WRONG_TYPES = [
    ("top_p", 1.5),
    ("top_p", "0.5"),
    ("seed", 1.5),
    ("stop", 5),
    ("stop", ["a", 1]),
    ("presence_penalty", 3),
    ("frequency_penalty", "x"),
    ("logit_bias", [1]),
    ("logprobs", "yes"),
    ("top_logprobs", 21),
    ("n", 0),
    ("reasoning_effort", 1),
    ("max_completion_tokens", 0),
]


@pytest.mark.parametrize(("name", "value"), WRONG_TYPES)
def test_sampling_fields_of_the_wrong_type_are_400(client, name, value):
    for response in (post_v1(client, **{name: value}), post_chat(client, options={name: value})):
        assert response.status_code == 400
        assert name in error_of(response)["message"]


BAD_SHAPES = [
    pytest.param({"tools": {"type": "function"}}, id="tools-object"),
    pytest.param({"tools": [{"type": "function", "function": {}}]}, id="tool-without-name"),
    pytest.param({"tool_choice": "sometimes"}, id="tool_choice-word"),
    pytest.param({"response_format": {"type": "xml"}}, id="response_format-type"),
    pytest.param({"response_format": {"type": "json_schema"}}, id="json_schema-missing"),
    pytest.param({"messages": [{"role": "tool", "content": "x"}]}, id="tool-without-id"),
    pytest.param({"messages": [{"role": "user", "content": None}]}, id="user-null-content"),
    pytest.param(
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}],
                }
            ]
        },
        id="arguments-object",
    ),
    pytest.param(
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}
            ]
        },
        id="bad-base64",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, id="audio-part"
    ),
    pytest.param(
        {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}]},
        id="system-image",
    ),
]


@pytest.mark.parametrize("body", BAD_SHAPES)
def test_malformed_rich_fields_are_400(client, body):
    assert post_v1(client, **body).status_code == 400
    assert post_chat(client, **body).status_code == 400


def test_sluice_body_refuses_unknown_fields_and_options(client):
    response = post_chat(client, temprature=0.5)
    assert response.status_code == 400 and "temprature" in error_of(response)["message"]
    response = post_chat(client, options={"num_ctx": 8192})
    assert response.status_code == 400 and "extra" in error_of(response)["message"]


def test_demo_honours_stop_and_accepts_sampling(client):
    response = post_chat(
        client,
        messages=[{"role": "user", "content": "one two three four"}],
        options={"stop": "three", "temperature": 0.7, "seed": 1, "top_p": 0.5},
    )
    assert response.status_code == 200
    reply = response.get_json()
    assert reply["message"]["content"] == "one two " and reply["finish_reason"] == "stop"


def test_default_body_limit_fits_photos(app):
    assert app.config["SLUICE_MAX_BODY_BYTES"] >= 20 * 1024 * 1024


def test_openai_upstream_gets_http_images_and_names(client, fake_openai):
    message = {
        "role": "user",
        "name": "ann",
        "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        ],
    }
    assert post_v1(client, model="openai/gpt-4o-mini", messages=[message]).status_code == 200
    assert fake_openai.last_body()["messages"] == [message]


def test_upstream_reasons_are_short_and_hold_no_url_or_secret():
    from sluice.errors import upstream_reason

    said = upstream_reason("key sk-proj-abcdefgh1234 rejected at https://internal.example:8443/v1 " + "x" * 2000)
    assert len(said) <= 500 and "sk-proj" not in said and "internal.example" not in said
    assert said.startswith("key [redacted] rejected at [url]")


def test_upstream_reasons_lose_lone_surrogates():
    from sluice.errors import upstream_reason

    assert upstream_reason("bad \ud800 token") == "bad \ufffd token"


# -- the request id goes upstream -------------------------------------------------------------------


def _send(client, route: str, model: str, headers: dict[str, str]) -> str:
    """Make a request that reaches ``model``'s upstream; return the id Sluice answered with."""
    messages = [{"role": "user", "content": "hi"}]
    if route == "/stream":
        response = client.get("/stream", query_string={"prompt": "hi", "model": model}, headers=headers)
    else:
        body: dict[str, Any] = {"model": model, "messages": messages}
        if route == "/v1/responses":
            body = {"model": model, "input": "hi"}
        elif route == "/v1/messages":
            body["max_tokens"] = 16
        if route != "/api/generations":
            body["stream"] = False
        response = client.post(route, json=body, headers=headers)
    response.get_data()  # the whole answer: the upstream has been asked
    assert response.status_code in (200, 202), response.get_data(as_text=True)
    return response.headers["X-Request-ID"]


@pytest.mark.parametrize(
    "route",
    [
        "/api/chat",
        "/v1/chat/completions",
        "/api/generations",
        "/stream",
        "/v1/responses",
        "/v1/messages",
        "/ollama/api/chat",
    ],
)
@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "ollama/llama3"])
def test_the_request_id_goes_upstream_as_x_request_id(client, fake_openai, fake_ollama, route, model):
    fake = fake_openai if model.startswith("openai/") else fake_ollama
    assert _send(client, route, model, {"X-Request-ID": "req-from-nginx-7"}) == "req-from-nginx-7"
    assert fake.wait_requests(1)[0].headers["x-request-id"] == "req-from-nginx-7"
    made_up = _send(client, route, model, {})  # none given: Sluice's own id, the same at both ends
    assert fake.wait_requests(2)[1].headers["x-request-id"] == made_up
