"""Embeddings: an OpenAI ``/v1/embeddings`` body in, the provider's vectors out, in OpenAI's shape.

``parse_embeddings`` validates OpenAI's body: ``input`` (a text, texts, token
ids or lists of them), ``model``, ``dimensions``, ``encoding_format``
(``float``, the default, or ``base64``: little-endian float32, as OpenAI
sends it), ``user``; any other field is carried to the upstream as given.
``embed`` passes the request to the provider that serves the model (its
``embed``, see ``sluice.provider.Embedder``): an OpenAI-compatible server's
``/v1/embeddings``, Ollama's ``/api/embed``. A provider with none (``demo``)
is a ``400``. The provider's answer must come within
``SLUICE_FIRST_TOKEN_TIMEOUT_S``. Keys, rate limits, body limits and the
access log apply as to every route; ``sluice_embeddings`` counts requests by
provider and outcome. ``openai_list`` is OpenAI's response object.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from typing import Any

from flask import current_app

from .errors import InvalidRequest, SluiceError, UpstreamError
from .provider import Embeddings, EmbedRequest, Registry, embedder_of

__all__ = ["embed", "encode_base64", "openai_list", "parse_embeddings"]

_MAX_INPUTS = 2048
_NAMED = frozenset({"model", "input", "dimensions", "encoding_format"})


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _input(value: Any) -> str | tuple[str, ...] | tuple[int, ...] | tuple[tuple[int, ...], ...]:
    """OpenAI's ``input``: a text, texts, one list of token ids, or lists of them."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and len(value) <= _MAX_INPUTS:
        if all(isinstance(item, str) for item in value):
            return tuple(value)
        if all(_integer(item) for item in value):
            return tuple(value)
        if all(isinstance(item, list) and item and all(_integer(t) for t in item) for item in value):
            return tuple(tuple(item) for item in value)
    raise InvalidRequest(
        f"input must be a string, a list of strings, or token ids (a list of integers, or of such lists); "
        f"at most {_MAX_INPUTS} items."
    )


def parse_embeddings(body: Any, default_model: str) -> tuple[EmbedRequest, str]:
    """Validate OpenAI's embeddings body; also return its ``encoding_format``.

    :raise InvalidRequest: naming the first field that is wrong.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    model = body.get("model") or default_model
    if not isinstance(model, str) or len(model) > 256:
        raise InvalidRequest("'model' must be a string.")
    if "input" not in body:
        raise InvalidRequest("'input' is required.")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not _integer(dimensions) or dimensions < 1):
        raise InvalidRequest("'dimensions' must be a positive integer.")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be float or base64.")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string.")
    info = {"user": user} if user is not None else {}
    extra = {name: value for name, value in body.items() if name not in _NAMED and name != "user"}
    return EmbedRequest(model, _input(body["input"]), dimensions, extra, info), encoding


def _count(request: EmbedRequest) -> int:
    """How many vectors ``request`` asks for."""
    given = request.input
    if isinstance(given, str) or (given and isinstance(given[0], int)):
        return 1
    return len(given)


def embed(request: EmbedRequest) -> Embeddings:
    """The embeddings of ``request`` from the provider that serves its model.

    :raise sluice.errors.ModelNotFound: no such provider.
    :raise InvalidRequest: the provider serves no embeddings, or refuses a field.
    :raise sluice.errors.SluiceError: the provider failed.
    """
    registry: Registry = current_app.extensions["sluice"].registry
    provider, model = registry.resolve(request.model)
    embedder = embedder_of(provider)
    if embedder is None:
        raise InvalidRequest(
            f"{request.model}: the {provider.name} provider has no embeddings; "
            "name an ollama/ or openai/ embedding model."
        )
    metrics = current_app.extensions.get("sluice.metrics")
    outcome = "error"
    try:
        result = embedder.embed(request, model, current_app.config["SLUICE_FIRST_TOKEN_TIMEOUT_S"])
        if len(result.vectors) != _count(request):
            raise UpstreamError("The model provider sent a different number of embeddings than inputs.")
        outcome = "ok"
        return result
    except SluiceError as exc:
        outcome = exc.code
        raise
    finally:
        if metrics is not None:
            metrics.embeddings.labels(provider.name, outcome).inc()


def encode_base64(vector: list[float]) -> str:
    """A vector as OpenAI's base64: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def openai_list(result: Embeddings, model: str, encoding: str) -> dict[str, Any]:
    """OpenAI's ``list`` of ``embedding`` objects; ``usage`` only where the upstream reported it."""
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": encode_base64(vector) if encoding == "base64" else vector,
        }
        for index, vector in enumerate(result.vectors)
    ]
    body: dict[str, Any] = {"object": "list", "data": data, "model": model}
    usage: Mapping[str, Any] = result.usage
    if usage:
        body["usage"] = dict(usage)
    return body
