"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can serve streams)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: always ``{"status": "ok"}`` while the worker answers."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: the broker answers and there is room for another stream."""
    generations = current_app.extensions["sluice"]
    if not generations.broker.ping():
        response = jsonify(status="broker_unavailable")
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return response
    if len(generations.running) >= generations.max_streams:
        response = jsonify(status="overloaded")
        response.status_code = 503
        response.headers["Retry-After"] = "1"
        return response
    return jsonify(status="ok", streams=len(generations.running))
