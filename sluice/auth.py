"""API keys: ``Authorization: Bearer <key>`` on API routes when keys are configured.

The Anthropic dialect (``/v1/messages``) also takes the key as ``x-api-key``,
as Anthropic's clients send it.

Keys come from ``SLUICE_API_KEYS`` (comma-separated) and/or ``SLUICE_API_KEYS_FILE``
(one per line, ``#`` comments). Every configured key is compared in constant
time, and the comparison never stops early, so timing tells nothing about which
key nearly matched. A key is never logged or echoed: requests carry
``g.key_id``, a short hash that names the key in logs, limits and generation
ownership. Health checks and the page shell stay open; ``/metrics`` has its own
key (``SLUICE_METRICS_KEY``) so scrapers need no API key.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from flask import Flask, current_app, g, request

from .errors import Unauthorized, dialect_of

__all__ = ["init_app", "key_id", "load_keys"]

# Endpoints that never need an API key.
OPEN_ENDPOINTS = frozenset(
    {"health.healthz", "health.readyz", "pages.index", "static", "metrics.metrics", "openapi.openapi"}
)


def key_id(key: str) -> str:
    """A stable, non-reversible name for a key (first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def load_keys(keys: tuple[str, ...], keys_file: str | None) -> tuple[bytes, ...]:
    """All configured keys, as bytes for ``hmac.compare_digest``."""
    found = list(keys)
    if keys_file:
        for line in Path(keys_file).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found.append(line)
    return tuple(dict.fromkeys(k.encode("utf-8") for k in found))


def _presented() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        # Anthropic's clients send their key as x-api-key, and only to its dialect's routes.
        api_key = request.headers.get("x-api-key", "").strip()
        return api_key if api_key and dialect_of(request.path) == "anthropic" else None
    return token.strip()


def _matches(token: str, keys: tuple[bytes, ...]) -> bool:
    candidate = token.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:  # no early exit: the time taken does not depend on which key matched
        matched |= hmac.compare_digest(candidate, key)
    return matched


def _check() -> None:
    keys: tuple[bytes, ...] = current_app.extensions["sluice.keys"]
    g.key_id = None
    if request.endpoint == "metrics.metrics" or request.method == "OPTIONS":
        return  # metrics check their own key; CORS preflights carry no credentials
    if not keys:
        return
    token = _presented()
    if token is not None and _matches(token, keys):
        g.key_id = key_id(token)
        return
    if request.endpoint in OPEN_ENDPOINTS:
        return
    raise Unauthorized()


def init_app(app: Flask) -> None:
    """Load the keys once and check every request before its view runs."""
    app.extensions["sluice.keys"] = load_keys(app.config["SLUICE_API_KEYS"], app.config["SLUICE_API_KEYS_FILE"])
    app.before_request(_check)
