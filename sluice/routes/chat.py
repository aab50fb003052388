"""Sluice's own streaming API: ``POST /api/chat``, ``GET /stream``, ``GET /api/models``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .. import sse
from ..catalog import list_models
from ..chat import parse_chat, read_json
from ..errors import InvalidRequest
from ..render import Renderer
from ..render.events import NDJSON, NDJSONEvents, SSEEvents
from ..render.text import TEXT, ClassicEvents, PlainText
from . import relay

bp = Blueprint("chat", __name__)

_FORMATS = [sse.MIMETYPE, NDJSON, TEXT]


def _renderer(wanted: str) -> Renderer:
    """The renderer for the best ``Accept`` match (SSE by default)."""
    if wanted == NDJSON:
        return NDJSONEvents()
    if wanted == TEXT:
        return PlainText()
    return SSEEvents(current_app.config["SLUICE_RETRY_MS"])


@bp.post("/api/chat")
def chat() -> Response:
    """Run a chat tied to this connection: SSE, NDJSON, plain text, or one JSON object."""
    config = current_app.config
    body = read_json(request, config["SLUICE_MAX_BODY_BYTES"])
    chat_request = parse_chat(body, config["SLUICE_DEFAULT_MODEL"])
    if not chat_request.stream:
        # Its id arrives with the end: nothing to resume, so it may run without Redis.
        stream = relay.open_stream(chat_request, resumable=False)
        answer = relay.collect(stream)
        return jsonify(
            id=stream.id,
            model=chat_request.model,
            message=answer.message(with_logprobs=True),
            finish_reason=answer.finish_reason,
            usage=answer.usage,
        )
    wanted = request.accept_mimetypes.best_match(_FORMATS, default=sse.MIMETYPE)
    return relay.respond(relay.open_stream(chat_request), _renderer(wanted or sse.MIMETYPE))


@bp.get("/stream")
def classic() -> Response:
    """The minimal form for ``EventSource`` + ``onmessage``: text ``data:`` events, then ``done``.

    Query: ``prompt`` (required), ``model``, ``max_tokens``.
    """
    # A reconnect (the browser sends Last-Event-ID) would re-run the prompt and pay
    # for a second answer: 204 tells EventSource to stop instead.
    if request.headers.get("Last-Event-ID") is not None:
        return Response(status=204)
    prompt = request.args.get("prompt")
    if prompt is None or prompt == "":
        raise InvalidRequest("Give the prompt as ?prompt=…")
    config = current_app.config
    if len(prompt.encode("utf-8")) > config["SLUICE_MAX_BODY_BYTES"]:
        raise InvalidRequest("The prompt is too long.")
    model = request.args.get("model") or config["SLUICE_DEFAULT_MODEL"]
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    if "max_tokens" in request.args:
        try:
            body["options"] = {"max_tokens": int(request.args["max_tokens"])}
        except ValueError:
            raise InvalidRequest("max_tokens must be a positive integer.") from None
    stream = relay.open_stream(parse_chat(body, config["SLUICE_DEFAULT_MODEL"]))
    return relay.respond(stream, ClassicEvents(config["SLUICE_RETRY_MS"]))


@bp.get("/api/models")
def models() -> Response:
    """Every provider's models; a provider that cannot be reached is reported, not fatal."""
    registry = current_app.extensions["sluice"].registry
    catalog = list_models(registry, current_app.config["SLUICE_MODELS_TIMEOUT_S"])
    providers = {
        name: {"status": "ok"}
        if name not in catalog.errors
        else {
            "status": "unavailable",
            "error": {"code": catalog.errors[name].code, "message": catalog.errors[name].message},
        }
        for name in registry.providers
    }
    return jsonify(
        models=[{"id": m.id, "provider": m.provider} for m in catalog.models],
        providers=providers,
    )
