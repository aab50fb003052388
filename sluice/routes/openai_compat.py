"""OpenAI-compatible routes: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The ``openai`` SDK works with ``base_url`` pointed at Sluice's ``/v1``. The
body is read whole (``chat.parse_openai``): tools, response formats, every
sampling field, and any other top-level field as an extra for the upstream.
The answer is a tied generation rendered as OpenAI's chunks
(``sluice.render.openai_chat``), or folded into one completion. Errors use
OpenAI's error shape (``sluice.errors``).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ..catalog import list_models
from ..chat import parse_openai, read_json
from ..render.openai_chat import ChatChunks, completion
from . import relay

bp = Blueprint("openai_compat", __name__, url_prefix="/v1")


@bp.post("/chat/completions")
def chat_completions() -> Response:
    """OpenAI's chat completions, streamed or not."""
    config = current_app.config
    body = read_json(request, config["SLUICE_MAX_BODY_BYTES"])
    chat, include_usage = parse_openai(body, config["SLUICE_DEFAULT_MODEL"])
    # OpenAI's clients never resume by id: it may run without Redis.
    stream = relay.open_stream(chat, resumable=False)
    base: dict[str, Any] = {
        "id": "chatcmpl-" + stream.id.removeprefix("gen_"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": chat.model,
    }
    if chat.stream:
        return relay.respond(stream, ChatChunks(base, include_usage))
    return jsonify(completion(relay.collect(stream), base))


@bp.get("/models")
def models() -> Response:
    """OpenAI's model list; providers that cannot be reached are left out."""
    catalog = list_models(current_app.extensions["sluice"].registry, current_app.config["SLUICE_MODELS_TIMEOUT_S"])
    created = int(time.time())
    return jsonify(
        object="list",
        data=[{"id": m.id, "object": "model", "created": created, "owned_by": m.provider} for m in catalog.models],
    )
