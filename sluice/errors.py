"""One family of exceptions, mapped in one place to the contract's error shape.

::

    SluiceError                      500 internal_error
    ├── InvalidRequest               400 invalid_request
    │   └── ContextLengthExceeded    400 context_length_exceeded
    ├── Unauthorized                 401 unauthorized
    ├── Forbidden                    403 forbidden             (a WebSocket from an origin not allowed)
    ├── ModelNotFound                404 model_not_found
    ├── GenerationNotFound           404 generation_not_found
    ├── RequestTimeout               408 request_timeout       (the body came too slowly)
    ├── PayloadTooLarge              413 payload_too_large
    ├── UnsupportedMediaType         415 unsupported_media_type
    ├── UpgradeRequired              426 upgrade_required      (a WebSocket version we do not speak)
    ├── RateLimited (RetryAfter)     429 rate_limited
    ├── UpstreamError                502 upstream_error
    ├── Overloaded (RetryAfter)      503 overloaded
    ├── UpstreamUnavailable (RA)     503 upstream_unavailable
    ├── BrokerUnavailable (RA)       503 broker_unavailable    (Redis does not answer)
    ├── UpstreamTimeout              504 upstream_timeout
    ├── GenerationLost (RA)          503 generation_lost       (mostly in-band)
    └── ServerShuttingDown (RA)      503 server_shutting_down  (mostly in-band)

Before the first byte of a response an exception becomes an HTTP status with
its dialect's error body (``SHAPES``: Sluice's ``{"error": {"code",
"message"}}``, OpenAI's on ``/v1``, Anthropic's on ``/v1/messages``, Ollama's
``{"error": "…"}`` under ``/ollama/``; the request's path decides which);
after it, the same exception ends the generation as an ``error`` event, which
each dialect's renderer draws with the same ``SHAPES``. The two "mostly
in-band" codes are HTTP 503s only when they end a response still held for its
first token (a Redis outage, a drain). Messages are
always ours: never ``str()`` of a foreign exception, which may hold keys or
URLs.

A request the client framed wrong (a bad chunk size, a chunked body cut
short, a WebSocket handshake without a usable key or version) is the client's
fault, not a bug: ``400`` (``426`` for the WebSocket version, ``403`` for an
origin not allowed), with no trace logged.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

__all__ = [
    "SHAPES",
    "BrokerUnavailable",
    "ContextLengthExceeded",
    "Forbidden",
    "GenerationLost",
    "GenerationNotFound",
    "InvalidRequest",
    "ModelNotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RateLimited",
    "RequestTimeout",
    "ServerShuttingDown",
    "SluiceError",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpgradeRequired",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "dialect_of",
    "error_body",
    "error_from_code",
    "init_app",
    "upstream_reason",
]

log = logging.getLogger(__name__)


class SluiceError(Exception):
    """Base of every error Sluice reports; carries its status, code and a safe message."""

    status: int = 500
    code: str = "internal_error"
    message: str = "Internal server error."
    # Worth another try before the first token (the runner's retries and fallbacks).
    retryable: bool = False
    # The upstream's own Retry-After, in seconds, when it gave one.
    upstream_retry_after: float | None = None
    # The request field at fault (``messages[0].role``, ``temperature``), when one is:
    # OpenAI's error shape carries it as ``param``.
    param: str | None = None

    def __init__(self, message: str | None = None, *, retryable: bool | None = None, param: str | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        if retryable is not None:
            self.retryable = retryable
        if param is not None:
            self.param = param

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers (``Retry-After`` for the retryable ones)."""
        return {}


class _RetryAfter:
    """Mixin: the client may try again after ``retry_after`` seconds (the upstream's, when it said)."""

    retry_after: int = 1
    upstream_retry_after: float | None

    @property
    def headers(self) -> dict[str, str]:
        hinted = self.upstream_retry_after
        seconds = max(1, math.ceil(hinted)) if hinted is not None else self.retry_after
        return {"Retry-After": str(seconds)}


class InvalidRequest(SluiceError):
    status, code, message = 400, "invalid_request", "The request is not valid."


class ContextLengthExceeded(InvalidRequest):
    status, code, message = 400, "context_length_exceeded", "The request is longer than the model's context."


class Unauthorized(SluiceError):
    status, code, message = 401, "unauthorized", "A valid API key is required."


class Forbidden(SluiceError):
    status, code, message = 403, "forbidden", "This origin may not open a WebSocket here."


class ModelNotFound(SluiceError):
    status, code, message = 404, "model_not_found", "No such model."


class GenerationNotFound(SluiceError):
    status, code, message = 404, "generation_not_found", "No such generation."


class RequestTimeout(SluiceError):
    status, code, message = 408, "request_timeout", "The request body did not arrive in time."


class PayloadTooLarge(SluiceError):
    status, code, message = 413, "payload_too_large", "The request body is too large."


class UnsupportedMediaType(SluiceError):
    status, code, message = 415, "unsupported_media_type", "The request body must be JSON."


class UpgradeRequired(SluiceError):
    status, code, message = 426, "upgrade_required", "Only WebSocket version 13 is supported."

    @property
    def headers(self) -> dict[str, str]:
        return {"Sec-WebSocket-Version": "13"}


class RateLimited(_RetryAfter, SluiceError):
    status, code, message = 429, "rate_limited", "Too many requests."


class UpstreamError(SluiceError):
    status, code, message = 502, "upstream_error", "The model provider returned an error."


class Overloaded(_RetryAfter, SluiceError):
    status, code, message = 503, "overloaded", "The server is at capacity; retry shortly."


class UpstreamUnavailable(_RetryAfter, SluiceError):
    # Not retried by Sluice, and Retry-After 1: the client retries (the SDKs do by
    # default), and retries at both ends would multiply (docs/api.md, "Timeouts and retries").
    status, code, message = 503, "upstream_unavailable", "The model provider cannot be reached."


class UpstreamTimeout(SluiceError):
    status, code, message = 504, "upstream_timeout", "The model provider did not answer in time."


class BrokerUnavailable(_RetryAfter, SluiceError):
    # A dependency outage, not a bug: no trace, and the client retries.
    status, code, message = 503, "broker_unavailable", "The event store is unreachable; retry shortly."
    retry_after = 5


class GenerationLost(_RetryAfter, SluiceError):
    # In-band; a 503 only when it ends a response still held for its first token.
    status, code, message = 503, "generation_lost", "The worker running this generation stopped."


class ServerShuttingDown(_RetryAfter, SluiceError):
    status, code, message = 503, "server_shutting_down", "The server is restarting; retry."


def _all_subclasses(cls: type[SluiceError]) -> list[type[SluiceError]]:
    found: list[type[SluiceError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


_BY_CODE: dict[str, type[SluiceError]] = {c.code: c for c in _all_subclasses(SluiceError)}


def error_from_code(
    code: str, message: str | None = None, retry_after: float | None = None, param: str | None = None
) -> SluiceError:
    """Rebuild the exception behind an ``error`` event stored as JSON (by a broker)."""
    error = _BY_CODE.get(code, SluiceError)(message, param=param)
    if retry_after is not None:
        error.upstream_retry_after = retry_after
    return error


_MAX_REASON = 500
# What an upstream's words may hold that a client must not see: URLs (internal
# addresses) and anything shaped like a credential.
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_SECRET = re.compile(
    r"\b(?:sk|pk|rk|ak)-[A-Za-z0-9_*-]{6,}|\bBearer\s+\S+|\b(?:api[_-]?key|token|secret|password)\s*[=:]\s*\S+",
    re.IGNORECASE,
)


def upstream_reason(text: Any) -> str:
    """An upstream's own error text, safe to show: no URL, no secret, at most 500 characters."""
    if not isinstance(text, str):
        return ""
    if not text.isascii():
        # A lone surrogate (a \ud800 escape in the upstream's JSON) cannot be written as UTF-8.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    text = _SECRET.sub("[redacted]", _URL.sub("[url]", text))
    text = " ".join(text.split())
    cleaned: str = text
    return cleaned if len(cleaned) <= _MAX_REASON else cleaned[: _MAX_REASON - 1] + "…"


# OpenAI's error "type" for each of our statuses, so its SDK raises the right class.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    426: "invalid_request_error",
    429: "rate_limit_error",
}


def sluice_error_body(exc: SluiceError) -> dict[str, Any]:
    """Sluice's own error shape: ``{"error": {"code", "message"}}``."""
    return {"error": {"code": exc.code, "message": exc.message}}


def openai_error_body(exc: SluiceError) -> dict[str, Any]:
    """OpenAI's error shape, with the ``type`` its SDK maps to the right exception class."""
    kind = _OPENAI_TYPES.get(exc.status, "server_error")
    return {"error": {"message": exc.message, "type": kind, "param": exc.param, "code": exc.code}}


# Anthropic's error "type" for each of our statuses, so its SDK raises the right class.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def anthropic_error_body(exc: SluiceError) -> dict[str, Any]:
    """Anthropic's error shape: ``{"type": "error", "error": {"type", "message"}}``."""
    kind = _ANTHROPIC_TYPES.get(exc.status, "invalid_request_error" if exc.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


def ollama_error_body(exc: SluiceError) -> dict[str, Any]:
    """Ollama's error shape: ``{"error": "message"}``."""
    return {"error": exc.message}


#: Each dialect's error shape: the one place an exception becomes a dialect's error body
#: (before the first byte, and in-band in the dialect's renderer after it).
SHAPES: dict[str, Callable[[SluiceError], dict[str, Any]]] = {
    "sluice": sluice_error_body,
    "openai": openai_error_body,
    "anthropic": anthropic_error_body,
    "ollama": ollama_error_body,
}

# Which dialect a path speaks (its routes, and its unknown paths): the longest prefix wins.
_PATH_DIALECTS: list[tuple[str, str]] = [("/v1/messages", "anthropic"), ("/ollama/", "ollama"), ("/v1/", "openai")]


def dialect_of(path: str) -> str:
    """The dialect whose error shape a request to ``path`` gets (``sluice`` by default)."""
    for prefix, dialect in _PATH_DIALECTS:
        if path.startswith(prefix):
            return dialect
    return "sluice"


def error_body(exc: SluiceError, dialect: str = "sluice") -> dict[str, Any]:
    """The JSON body for ``exc`` in ``dialect``'s shape."""
    return SHAPES[dialect](exc)


def error_response(exc: SluiceError) -> Response:
    """The HTTP response for ``exc`` in the shape the current route's dialect speaks."""
    metrics = current_app.extensions.get("sluice.metrics")
    if metrics is not None:
        metrics.http_errors.labels(exc.code).inc()
        if exc.code == "rate_limited":
            metrics.rate_limited.inc()
    response = jsonify(error_body(exc, dialect_of(request.path)))
    response.status_code = exc.status
    response.headers.update(exc.headers)
    return response


# werkzeug's own errors (routing, body size, method) in the contract's codes.
_HTTP_TO_ERROR: dict[int, type[SluiceError]] = {
    400: InvalidRequest,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def _handle_http_exception(exc: HTTPException) -> Response:
    if isinstance(exc.response, Response):  # made by us already (the rate limiter's on_breach)
        return exc.response
    if exc.code in _HTTP_TO_ERROR:
        return error_response(_HTTP_TO_ERROR[exc.code]())
    error = SluiceError(exc.description or exc.name)
    error.status = exc.code or 500
    error.code = (exc.name or "error").lower().replace(" ", "_")
    error.message = exc.name
    response = error_response(error)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _handle_client_fault(exc: Exception) -> Response:
    return error_response(InvalidRequest("The request is malformed (its body framing)."))


def _client_faults() -> list[type[Exception]]:
    """The foreign exceptions that mean the client framed its request wrong."""
    faults: list[type[Exception]] = []
    try:  # reading a body under gunicorn: bad chunk size or extension, cut short
        from gunicorn.http.errors import NoMoreData, ParseException

        faults += [ParseException, NoMoreData]
    except ImportError:  # pragma: no cover - gunicorn is a dependency
        pass
    return faults


def _handle_unexpected(exc: Exception) -> Response:
    # The trace goes to the log at ERROR, never into the response.
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(SluiceError())


def init_app(app: Flask) -> None:
    """Register the handlers: ours by class, werkzeug's by status, anything else as 500."""
    app.register_error_handler(SluiceError, error_response)
    app.register_error_handler(HTTPException, _handle_http_exception)
    for fault in _client_faults():
        app.register_error_handler(fault, _handle_client_fault)
    app.register_error_handler(Exception, _handle_unexpected)
