"""The ``openai`` SDK's ``embeddings.create`` against Sluice's ``POST /v1/embeddings``, on a real server.

Sluice passes the request to the provider (an OpenAI-compatible server's
``/v1/embeddings``, Ollama's ``/api/embed``) and answers in OpenAI's shape,
as floats or base64; keys, rate limits and metrics apply as for chat.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator

import openai
import pytest
import requests

from tests.fakes import Script
from tests.fakes.upstream import embedding_of

pytestmark = pytest.mark.slow

MODELS = ["openai/text-embedding-3-small", "ollama/nomic-embed-text"]
TEXTS = ["héllo world", "東京 🙂", "three words here"]


@pytest.fixture
def sdk(server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="unused", base_url=server.url + "/v1", max_retries=0, timeout=15) as client:
        yield client


def fake_for(model: str, fake_ollama, fake_openai):
    return fake_ollama if model.startswith("ollama/") else fake_openai


@pytest.mark.parametrize("encoding", [None, "float", "base64"])
@pytest.mark.parametrize("model", MODELS)
def test_embeddings_float_and_base64(sdk, fake_ollama, fake_openai, model, encoding):
    kwargs = {} if encoding is None else {"encoding_format": encoding}
    result = sdk.embeddings.create(model=model, input=TEXTS, **kwargs)
    assert result.object == "list" and result.model == model
    assert [item.index for item in result.data] == [0, 1, 2]
    vectors = [item.embedding for item in result.data]
    if encoding == "base64":  # asked for explicitly: the SDK hands over the strings as they came
        raw = [base64.b64decode(v) for v in vectors]  # type: ignore[arg-type]
        vectors = [list(struct.unpack(f"<{len(r) // 4}f", r)) for r in raw]
    assert vectors == [embedding_of(text) for text in TEXTS]
    words = sum(len(text.split()) for text in TEXTS)
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (words, words)
    sent = fake_for(model, fake_ollama, fake_openai).embed_requests[-1].body
    assert (sent["model"], sent["input"]) == (model.partition("/")[2], TEXTS)


@pytest.mark.parametrize("model", MODELS)
def test_one_text_and_dimensions(sdk, fake_ollama, fake_openai, model):
    result = sdk.embeddings.create(model=model, input="one", dimensions=3, encoding_format="float")
    assert [item.embedding for item in result.data] == [embedding_of("one", 3)]
    sent = fake_for(model, fake_ollama, fake_openai).embed_requests[-1].body
    assert (sent["input"], sent["dimensions"]) == ("one", 3)


def test_token_ids_and_extras_reach_an_openai_compatible_server(sdk, fake_openai):
    result = sdk.embeddings.create(
        model="openai/text-embedding-3-small",
        input=[[1, 2], [3]],
        user="u-1",
        extra_body={"truncate_prompt_tokens": 5},
        encoding_format="float",
    )
    assert [item.embedding for item in result.data] == [embedding_of("1 2"), embedding_of("3")]
    sent = fake_openai.embed_requests[-1].body
    assert (sent["input"], sent["user"], sent["truncate_prompt_tokens"]) == ([[1, 2], [3]], "u-1", 5)


def test_token_ids_to_ollama_are_refused_by_name(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="ollama/nomic-embed-text", input=[1, 2, 3])
    assert "input" in caught.value.message and "token ids" in caught.value.message


def test_demo_has_no_embeddings(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="demo/echo", input="x")
    assert caught.value.status_code == 400 and caught.value.code == "invalid_request"
    assert "no embeddings" in caught.value.message


@pytest.mark.parametrize("model", ["nowhere/x", "openai/nope", "ollama/nope"])
def test_unknown_model_is_not_found(sdk, fake_ollama, fake_openai, model):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.embeddings.create(model=model, input="x")
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize("model", MODELS)
def test_upstream_429_keeps_its_retry_after(sdk, fake_ollama, fake_openai, model):
    fake_for(model, fake_ollama, fake_openai).push(Script(status=429, retry_after="4", error_message="busy"))
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.embeddings.create(model=model, input="x")
    assert caught.value.response.headers["retry-after"] == "4"
    assert caught.value.code == "rate_limited"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"model": "openai/text-embedding-3-small"}, id="no-input"),
        pytest.param({"model": "openai/text-embedding-3-small", "input": []}, id="empty"),
        pytest.param({"model": "openai/text-embedding-3-small", "input": [1, "a"]}, id="mixed"),
        pytest.param({"model": "openai/text-embedding-3-small", "input": "x", "encoding_format": "hex"}, id="encoding"),
        pytest.param({"model": "openai/text-embedding-3-small", "input": "x", "dimensions": 0}, id="dimensions"),
        pytest.param({"model": 5, "input": "x"}, id="model"),
        pytest.param(["x"], id="array"),
    ],
)
def test_bad_input_is_a_400_in_openai_shape(server, body):
    response = requests.post(server.url + "/v1/embeddings", json=body, timeout=10)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_request")


def test_keys_limits_and_metrics_apply(start_server):
    server = start_server(SLUICE_API_KEYS="k1", SLUICE_RATE_LIMIT="2/minute")
    body = {"model": "openai/text-embedding-3-small", "input": "x"}
    assert requests.post(server.url + "/v1/embeddings", json=body, timeout=10).status_code == 401
    with openai.OpenAI(api_key="k1", base_url=server.url + "/v1", max_retries=0) as client:
        client.embeddings.create(**body)
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model="demo/echo", input="x")
        with pytest.raises(openai.RateLimitError):
            client.embeddings.create(**body)
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    assert 'sluice_embeddings_total{outcome="ok",provider="openai"} 1.0' in metrics
    assert 'sluice_http_errors_total{code="rate_limited"} 1.0' in metrics
