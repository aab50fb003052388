"""``GET /openapi.json``: the API described as OpenAPI 3.1, for clients and fuzzers."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

__all__ = ["DOCUMENT", "bp"]

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
_PART = {
    "oneOf": [
        {
            "type": "object",
            "required": ["type", "text"],
            "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
        },
        {
            "type": "object",
            "required": ["type", "image_url"],
            "properties": {
                "type": {"const": "image_url"},
                "image_url": {
                    "type": "object",
                    "required": ["url"],
                    "properties": {"url": {"type": "string"}, "detail": {"enum": ["auto", "low", "high"]}},
                },
            },
        },
    ]
}
_TOOL_CALL = {
    "type": "object",
    "required": ["id", "function"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
        },
    },
}
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _PART}, {"type": "null"}]},
        "name": {"type": "string"},
        "tool_calls": {"type": "array", "items": _TOOL_CALL},
        "tool_call_id": {"type": "string"},
    },
}
_NUMBER = {"type": "number"}
_OPTIONS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "max_tokens": {"type": "integer", "minimum": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "seed": {"type": "integer"},
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "logit_bias": {"type": "object", "additionalProperties": _NUMBER},
        "logprobs": {"type": "boolean"},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
        "n": {"type": "integer", "minimum": 1},
        "reasoning_effort": {"type": "string"},
    },
}
_CHAT = {
    "type": "object",
    "required": ["messages"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "examples": ["demo/echo", "demo/think", "ollama/llama3"]},
        "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Message"}},
        "options": _OPTIONS,
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"oneOf": [{"enum": ["none", "auto", "required"]}, {"type": "object"}]},
        "parallel_tool_calls": {"type": "boolean"},
        "response_format": {"type": "object", "required": ["type"]},
        "extra": {"type": "object", "description": "Merged into the upstream request body as given."},
        "user": {"type": "string"},
        "metadata": {"type": "object"},
        "store": {"type": "boolean"},
        "service_tier": {"type": "string"},
        "stream": {"type": "boolean", "default": True},
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {
            "description": "Error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for status in statuses
    }


_ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}
_OLLAMA_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _dialect_errors(schema: str, *statuses: int) -> dict[str, Any]:
    """Error responses in a dialect's own shape (``schema`` names it under components)."""
    return {
        str(status): {
            "description": "Error",
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
        for status in statuses
    }


def _ollama(summary: str, response: str, method: str = "post") -> dict[str, Any]:
    """One route of Ollama's API under ``/ollama``."""
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": response}, **_dialect_errors("OllamaError", 400, 401, 404, 429, 502, 503)},
    }
    if method == "post":
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    return {method: operation}


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
_RESPONSE_ID = {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Sluice", "version": "1.0.0", "description": "Stream a language model's answer token by token."},
    "components": {
        "schemas": {
            "Error": _ERROR,
            "Message": _MESSAGE,
            "Chat": _CHAT,
            "AnthropicError": _ANTHROPIC_ERROR,
            "OllamaError": _OLLAMA_ERROR,
        },
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "/v1/messages only"},
        },
    },
    "security": [{"bearer": []}, {}],
    "paths": {
        "/api/chat": {
            "post": {
                "summary": "Run a chat tied to this connection",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Chat"}}},
                },
                "responses": {"200": _STREAM, **_errors(400, 401, 404, 408, 413, 415, 429, 502, 503, 504)},
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
                "responses": {
                    "200": {"description": "text/event-stream"},
                    "204": {"description": "Reconnect"},
                    **_errors(400, 401, 404, 429, 502, 503, 504),
                },
            }
        },
        "/api/generations": {
            "post": {
                "summary": "Start a chat in the background",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Chat"}}},
                },
                "responses": {
                    "202": {"description": "{id, events_url}"},
                    **_errors(400, 401, 404, 408, 413, 415, 429, 503),
                },
            }
        },
        "/api/generations/{generation_id}": {
            "get": {
                "summary": "State",
                "parameters": _ID,
                "responses": {"200": {"description": "{id, model, status, events}"}, **_errors(401, 404, 503)},
            },
            "delete": {
                "summary": "Cancel",
                "parameters": _ID,
                "responses": {"200": {"description": "State after cancel"}, **_errors(401, 404, 503)},
            },
        },
        "/api/generations/{generation_id}/events": {
            "get": {
                "summary": "Events after Last-Event-ID or ?after=N, then live",
                "parameters": [
                    *_ID,
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": -1}},
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "text/event-stream"},
                    "204": {"description": "Nothing left"},
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/api/models": {
            "get": {"summary": "Models of every provider", "responses": {"200": {"description": "{models, providers}"}}}
        },
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI-compatible chat completions",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "chat.completion or SSE chunks"}},
            }
        },
        "/v1/models": {
            "get": {"summary": "OpenAI-compatible model list", "responses": {"200": {"description": "list"}}}
        },
        "/v1/responses": {
            "post": {
                "summary": "OpenAI's Responses API: streamed, whole, or in the background",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "Response object or SSE semantic events"}},
            }
        },
        "/v1/responses/{response_id}": {
            "get": {
                "summary": "A response's state and output; ?stream=true&starting_after=N replays after N, then live",
                "parameters": [
                    _RESPONSE_ID,
                    {"name": "stream", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "starting_after", "in": "query", "schema": {"type": "integer", "minimum": -1}},
                ],
                "responses": {"200": {"description": "Response object or SSE semantic events"}},
            },
            "delete": {
                "summary": "Forget a response (cancelling it first)",
                "parameters": [_RESPONSE_ID],
                "responses": {"200": {"description": "{id, object, deleted}"}},
            },
        },
        "/v1/responses/{response_id}/cancel": {
            "post": {
                "summary": "Cancel a response: the upstream request is closed",
                "parameters": [_RESPONSE_ID],
                "responses": {"200": {"description": "Response object"}},
            }
        },
        "/v1/embeddings": {
            "post": {
                "summary": "OpenAI-compatible embeddings, passed through to the model's provider",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "list of embedding objects (float or base64)"}},
            }
        },
        "/v1/messages": {
            "post": {
                "summary": "Anthropic's Messages API, streamed (named SSE events) or not",
                "security": [{"apiKey": []}, {"bearer": []}, {}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {
                    "200": {"description": "Message, or SSE message_start … message_stop"},
                    **_dialect_errors("AnthropicError", 400, 401, 404, 413, 415, 429, 502, 503, 504),
                },
            }
        },
        "/ollama/api/chat": _ollama("Ollama's chat", "NDJSON lines, or one object with stream: false"),
        "/ollama/api/generate": _ollama("Ollama's generate, answered as a chat", "NDJSON lines, or one object"),
        "/ollama/api/tags": _ollama("Every provider's models as provider/model", "{models}", "get"),
        "/ollama/api/show": _ollama("One model's details", "{details, capabilities, …}"),
        "/ollama/api/version": _ollama("The version of Ollama's API Sluice speaks", "{version}", "get"),
        "/ollama/api/embed": _ollama("Ollama's embeddings, from the model's provider", "{model, embeddings}"),
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness",
                "security": [],
                "responses": {"200": {"description": "ok"}, "503": {"description": "not ready"}},
            }
        },
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
    },
}


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI document."""
    return jsonify(DOCUMENT)
