"""Who is asking, and how much they may ask: client address, rate limits, CORS.

- ``client_address()``: the peer's address; ``X-Forwarded-For`` is honoured only
  when the peer is one of ``SLUICE_TRUSTED_PROXIES`` (addresses or networks),
  and then the right-most address that is not a trusted proxy is the client.
- ``SLUICE_RATE_LIMIT`` (e.g. ``60/minute``) per API key, or per client address
  when keys are off, through Flask-Limiter, stored in Redis when
  ``SLUICE_REDIS_URL`` is set so every worker and host shares the counts.
  It is one budget for every route (an application limit, not one per route):
  each HTTP request spends one, and so does each WebSocket ``chat`` or
  ``resume`` message (``spend_request``, called by the WebSocket route).
  Over it: ``429 rate_limited`` with ``Retry-After`` (on a WebSocket, an
  ``error`` frame with ``retry_after``). Health checks, metrics and
  the page shell are never limited. While Redis does not answer, each worker
  counts in its own memory (one WARNING when that starts, back to Redis once
  it answers): an outage of the store never turns into refused requests.
- ``SLUICE_CORS_ORIGINS``: an allow-list; an allowed ``Origin`` is echoed
  exactly (with ``Vary: Origin``), preflights for the streaming routes are
  answered, and any other origin gets no ``Access-Control-Allow-Origin``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask_limiter import ApplicationLimit, Limiter, RequestLimit
from limits import RateLimitItem, parse_many

from .auth import OPEN_ENDPOINTS
from .errors import RateLimited, error_response

__all__ = ["client_address", "init_app", "spend_request"]

log = logging.getLogger(__name__)

# The one budget's name in the store: Flask-Limiter counts an application limit
# under (key prefix, key, scope), and ``spend_request`` counts under the same.
_KEY_PREFIX = "sluice"
_SCOPE = "requests"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(entries: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address() -> str:
    """The client's address, through trusted proxies only."""
    peer = request.remote_addr or ""
    networks: tuple[Network, ...] = current_app.extensions["sluice.proxies"]
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else peer


def _limit_key() -> str:
    key = getattr(g, "key_id", None)
    return f"key:{key}" if key else f"addr:{client_address()}"


def _exempt() -> bool:
    return request.endpoint in OPEN_ENDPOINTS or request.method == "OPTIONS"


def spend_request() -> None:
    """Spend one request of the current key's (or address's) budget: a WebSocket message.

    The same counter as the HTTP requests'. When the store does not answer, the
    message is let through, as Flask-Limiter does for HTTP (in its memory).

    :raise RateLimited: over ``SLUICE_RATE_LIMIT``, ``retry_after`` = seconds until the window frees one.
    """
    limiter: Limiter | None = current_app.extensions.get("sluice.limiter")
    if limiter is None:
        return
    items: list[RateLimitItem] = current_app.extensions["sluice.rate"]
    identifiers = (_KEY_PREFIX, _limit_key(), _SCOPE)
    try:
        strategy = limiter.limiter
        for item in items:
            if not strategy.hit(item, *identifiers):
                reset_at = strategy.get_window_stats(item, *identifiers).reset_time
                error = RateLimited()
                error.retry_after = max(1, math.ceil(reset_at - time.time()))
                raise error
    except RateLimited:
        raise
    except Exception:  # the store failed: an outage never refuses requests
        log.debug("rate limit store failed; message let through", exc_info=True)


def _on_breach(limit: RequestLimit) -> Response:
    # Returned, not raised: Flask-Limiter takes any exception from inside its check
    # for a storage failure (and would fall back to memory for nothing).
    error = RateLimited()
    error.retry_after = max(1, math.ceil(limit.reset_at - time.time()))
    return error_response(error)


# -- CORS ---------------------------------------------------------------------------

_ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
_ALLOWED_HEADERS = "Authorization, Content-Type, Accept, Last-Event-ID, X-Request-ID"


def _cors_preflight() -> Response | None:
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    return Response(status=204)


def _cors_headers(response: Response) -> Response:
    origin = request.headers.get("Origin")
    allowed: tuple[str, ...] = current_app.config["SLUICE_CORS_ORIGINS"]
    response.vary.add("Origin")
    if origin and origin in allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "X-Request-ID, Retry-After"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = _ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
    return response


def _storage_uri(redis_url: str | None) -> str:
    """The limits library's name for the same Redis (it spells unix sockets redis+unix://)."""
    if not redis_url:
        return "memory://"
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url.removeprefix("unix://")
    return redis_url


def _storage_options(config: dict[str, Any]) -> dict[str, Any]:
    """The same bounded waits as the broker's: a hung Redis must not hold every request."""
    if not config["SLUICE_REDIS_URL"]:
        return {}
    timeout = config["SLUICE_REDIS_TIMEOUT_S"]
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout}


def init_app(app: Flask) -> None:
    """Trusted proxies, the rate limiter and CORS."""
    config = app.config
    app.extensions["sluice.proxies"] = _networks(config["SLUICE_TRUSTED_PROXIES"])
    if config["SLUICE_CORS_ORIGINS"]:
        app.before_request(_cors_preflight)
        app.after_request(_cors_headers)
    if config["SLUICE_RATE_LIMIT"]:
        limiter = Limiter(
            _limit_key,
            app=app,
            # One budget shared by every route, not a count per route.
            application_limits=[ApplicationLimit(config["SLUICE_RATE_LIMIT"], scope=_SCOPE, exempt_when=_exempt)],
            storage_uri=_storage_uri(config["SLUICE_REDIS_URL"]),
            storage_options=_storage_options(config),
            in_memory_fallback_enabled=True,
            strategy="moving-window",
            on_breach=_on_breach,
            headers_enabled=False,
            key_prefix=_KEY_PREFIX,
        )
        app.extensions["sluice.limiter"] = limiter
        app.extensions["sluice.rate"] = parse_many(config["SLUICE_RATE_LIMIT"])
