"""``GET /openapi.json``: the API described as OpenAPI 3.1, for clients and fuzzers."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

__all__ = ["bp", "DOCUMENT"]

bp = Blueprint("openapi", __name__)

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {"role": {"enum": ["system", "user", "assistant"]}, "content": {"type": "string"}},
}
_CHAT = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "model": {"type": "string", "examples": ["demo/echo", "ollama/llama3"]},
        "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Message"}},
        "options": {
            "type": "object",
            "properties": {
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "max_tokens": {"type": "integer", "minimum": 1},
            },
        },
        "stream": {"type": "boolean", "default": True},
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for status in statuses
    }


_STREAM = {
    "description": "The generation's events (SSE by default; see Accept).",
    "content": {
        "text/event-stream": {"schema": {"type": "string"}},
        "application/x-ndjson": {"schema": {"type": "string"}},
        "text/plain": {"schema": {"type": "string"}},
        "application/json": {"schema": {"type": "object"}},
    },
}
_ID = [{"name": "generation_id", "in": "path", "required": True, "schema": {"type": "string"}}]

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Sluice", "version": "1.0.0", "description": "Stream a language model's answer token by token."},
    "components": {
        "schemas": {"Error": _ERROR, "Message": _MESSAGE, "Chat": _CHAT},
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"bearer": []}, {}],
    "paths": {
        "/api/chat": {
            "post": {
                "summary": "Run a chat tied to this connection",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Chat"}}}},
                "responses": {"200": _STREAM, **_errors(400, 401, 404, 413, 415, 429, 502, 503, 504)},
            }
        },
        "/stream": {
            "get": {
                "summary": "Plain-text SSE for EventSource + onmessage",
                "parameters": [
                    {"name": "prompt", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1}},
                    {"name": "model", "in": "query", "schema": {"type": "string"}},
                    {"name": "max_tokens", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                ],
                "responses": {"200": {"description": "text/event-stream"}, "204": {"description": "Reconnect"}, **_errors(400, 401, 404, 429, 502, 503, 504)},
            }
        },
        "/api/generations": {
            "post": {
                "summary": "Start a chat in the background",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Chat"}}}},
                "responses": {"202": {"description": "{id, events_url}"}, **_errors(400, 401, 404, 413, 415, 429, 503)},
            }
        },
        "/api/generations/{generation_id}": {
            "get": {"summary": "State", "parameters": _ID, "responses": {"200": {"description": "{id, model, status, events}"}, **_errors(401, 404)}},
            "delete": {"summary": "Cancel", "parameters": _ID, "responses": {"200": {"description": "State after cancel"}, **_errors(401, 404)}},
        },
        "/api/generations/{generation_id}/events": {
            "get": {
                "summary": "Events after Last-Event-ID or ?after=N, then live",
                "parameters": _ID + [
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": -1}},
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "text/event-stream"}, "204": {"description": "Nothing left"}, **_errors(400, 401, 404)},
            }
        },
        "/api/models": {"get": {"summary": "Models of every provider", "responses": {"200": {"description": "{models, providers}"}}}},
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI-compatible chat completions",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "chat.completion or SSE chunks"}},
            }
        },
        "/v1/models": {"get": {"summary": "OpenAI-compatible model list", "responses": {"200": {"description": "list"}}}},
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
        "/readyz": {"get": {"summary": "Readiness", "security": [], "responses": {"200": {"description": "ok"}, "503": {"description": "not ready"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
    },
}


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI document."""
    return jsonify(DOCUMENT)
