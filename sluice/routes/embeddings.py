"""OpenAI's embeddings: ``POST /v1/embeddings``, passed through to the model's provider (``sluice.embeddings``)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from ..chat import read_json
from ..embeddings import embed, openai_list, parse_embeddings

bp = Blueprint("embeddings", __name__)


@bp.post("/v1/embeddings")
def embeddings() -> Response:
    """OpenAI's embeddings, ``float`` or ``base64``."""
    config = current_app.config
    body = read_json(request, config["SLUICE_MAX_BODY_BYTES"])
    embed_request, encoding = parse_embeddings(body, config["SLUICE_DEFAULT_MODEL"])
    return jsonify(openai_list(embed(embed_request), embed_request.model, encoding))
