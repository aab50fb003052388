"""Anthropic's Messages API: ``POST /v1/messages``.

The ``anthropic`` SDK works with ``base_url`` pointed at Sluice (its
``messages.create`` and ``messages.stream``), the key in ``x-api-key`` or
``Authorization: Bearer``. The body becomes a ``ChatRequest``
(``sluice.parse.anthropic``); the answer is a tied generation rendered as
Anthropic's named events (``sluice.render.anthropic``), or folded into one
``Message``. Errors use Anthropic's shape (``sluice.errors``).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from ..chat import read_json
from ..parse.anthropic import parse_anthropic
from ..parse.upstream import kind_of
from ..render.anthropic import MessageEvents, message
from . import relay

bp = Blueprint("anthropic", __name__)


@bp.post("/v1/messages")
def messages() -> Response:
    """Anthropic's Messages API, streamed or not."""
    body = read_json(request, current_app.config["SLUICE_MAX_BODY_BYTES"])
    chat = parse_anthropic(body, kind_of)
    # Anthropic's clients never resume by id: it may run without Redis.
    stream = relay.open_stream(chat, resumable=False)
    if chat.stream:
        return relay.respond(stream, MessageEvents(chat.model))
    return jsonify(message(relay.collect(stream), stream.id, chat.model))
