"""Ollama's own API, under ``/ollama``, so ``ollama.Client(host="http://<sluice>/ollama")`` works unchanged.

``POST /api/chat`` and ``POST /api/generate`` (``sluice.parse.ollama`` in,
``sluice.render.ollama`` out): NDJSON by default, one object with
``stream: false``; a tied generation, ended when the client goes. A chat
with no messages (or a generate with no prompt) answers at once with
``done_reason: "load"``, as Ollama does when asked to load a model.
``GET /api/tags`` lists every provider's models as ``provider/model``,
``POST /api/show`` describes one, ``GET /api/version`` says which version of
Ollama's API Sluice speaks, ``POST /api/embed`` is the provider's embeddings
(``sluice.embeddings``). Bodies are read as JSON whatever their declared type,
as Ollama reads them (``curl -d`` declares a form). Errors are Ollama's
``{"error": "…"}`` with the contract's status (``sluice.errors``).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ..catalog import list_models
from ..chat import read_json
from ..embeddings import embed
from ..errors import InvalidRequest, ModelNotFound
from ..parse.ollama import model_of, parse_chat_body, parse_embed, parse_generate
from ..parse.upstream import kind_of
from ..provider import Registry
from ..render.ollama import OllamaLines, answer, loaded
from . import relay

bp = Blueprint("ollama", __name__, url_prefix="/ollama")

#: The version of Ollama's API whose shapes Sluice speaks (tool call ids came in 0.12.10).
VERSION = "0.12.10"
# Go's zero time: Sluice knows no modification time of a model.
_NO_TIME = "0001-01-01T00:00:00Z"


def _body() -> Any:
    return read_json(request, current_app.config["SLUICE_MAX_BODY_BYTES"], any_type=True)


def _run(body: Any, generate: bool) -> Response:
    started = time.monotonic()
    empty = not (body.get("prompt") or body.get("images")) if generate else not body.get("messages")
    if empty:
        kind_of(model_of(body))  # an unknown provider is still a 404
        return jsonify(loaded(body["model"], generate))
    chat = (parse_generate if generate else parse_chat_body)(body, kind_of)
    # Ollama's clients never resume by id: it may run without Redis.
    stream = relay.open_stream(chat, resumable=False)
    if chat.stream:
        return relay.respond(stream, OllamaLines(chat.model, generate, started))
    return jsonify(answer(relay.collect(stream), chat.model, generate, started))


@bp.post("/api/chat")
def chat() -> Response:
    """Ollama's chat: NDJSON lines, or one object with ``stream: false``."""
    body = _body()
    model_of(body)
    return _run(body, generate=False)


@bp.post("/api/generate")
def generate() -> Response:
    """Ollama's generate: a prompt (and system), answered as a chat; the text as ``response``."""
    body = _body()
    model_of(body)
    return _run(body, generate=True)


def _details(provider: str) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "",
        "family": provider,
        "families": [provider],
        "parameter_size": "",
        "quantization_level": "",
    }


@bp.get("/api/tags")
def tags() -> Response:
    """Every provider's models, named ``provider/model``; a provider that cannot be reached is left out."""
    catalog = list_models(current_app.extensions["sluice"].registry, current_app.config["SLUICE_MODELS_TIMEOUT_S"])
    return jsonify(
        models=[
            {
                "name": m.id,
                "model": m.id,
                "modified_at": _NO_TIME,
                "size": 0,
                "digest": hashlib.sha256(m.id.encode()).hexdigest(),
                "details": _details(m.provider),
            }
            for m in catalog.models
        ]
    )


@bp.post("/api/show")
def show() -> Response:
    """What Sluice knows of one model: its provider, and whether it reasons (``demo/think``)."""
    body = _body()
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    name = body.get("model", body.get("name"))  # "name" is the older spelling
    if not isinstance(name, str) or not name:
        raise InvalidRequest("model is required.")
    registry: Registry = current_app.extensions["sluice"].registry
    provider, model = registry.resolve(name)
    known = set(provider.models())
    if model not in known and f"{model}:latest" not in known:
        raise ModelNotFound(f"model '{name}' not found")
    capabilities = ["completion"]
    if name == "demo/think":
        capabilities.append("thinking")
    return jsonify(
        modelfile="",
        parameters="",
        template="",
        details=_details(provider.name),
        model_info={"general.architecture": provider.name},
        capabilities=capabilities,
        modified_at=_NO_TIME,
    )


@bp.get("/api/version")
def version() -> Response:
    """The version of Ollama's API that Sluice speaks."""
    return jsonify(version=VERSION)


@bp.post("/api/embed")
def embeddings() -> Response:
    """Ollama's embeddings, from the model's provider."""
    started = time.monotonic()
    embed_request = parse_embed(_body(), kind_of)
    result = embed(embed_request)
    body: dict[str, Any] = {
        "model": embed_request.model,
        "embeddings": result.vectors,
        "total_duration": max(1, int((time.monotonic() - started) * 1e9)),
    }
    if isinstance(result.usage.get("prompt_tokens"), int):
        body["prompt_eval_count"] = result.usage["prompt_tokens"]
    return jsonify(body)


@bp.route("/", methods=["GET", "HEAD"])
def root() -> Response:
    """What ``ollama serve`` answers at its root (clients check it to see a server is there)."""
    return Response("Ollama is running", mimetype="text/plain")
