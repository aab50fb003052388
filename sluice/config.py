"""Settings: the only module that reads ``os.environ``.

Each setting is declared once with its default and its type; ``load_config``
casts every value once and names the key when a value is wrong, so the rest of
the code reads plain, typed values from ``app.config``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SETTINGS", "ConfigError", "load_config"]


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _csv(raw: str) -> tuple[str, ...]:
    # Empty strings are noise: "a,,b" and a trailing comma mean a and b.
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _optional_str(raw: str) -> str | None:
    return raw or None


def _non_negative(cast: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        value = cast(raw)
        if value < 0:
            raise ValueError("must not be negative")
        return value

    return parse


_float = _non_negative(float)
_int = _non_negative(int)


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _gguf(raw: str) -> str:
    # "" is the shipped model, "off" turns the provider off, anything else names a file.
    value = raw.strip()
    if value.lower() in {"", "off"}:
        return value.lower()
    if not os.path.isfile(os.path.expanduser(value)):
        raise ValueError("no such file (a GGUF model file, or off)")
    return value


# name -> (default, parser). Defaults are the contract's (docs/configuration.md, "Settings").
SETTINGS: dict[str, tuple[Any, Callable[[str], Any]]] = {
    # Unset: local/smollm2-135m where the local provider is on, else demo/echo (app.py decides).
    "SLUICE_DEFAULT_MODEL": (None, _optional_str),
    # Provider that a bare model name ("llama3") goes to; empty = the default model's provider.
    "SLUICE_DEFAULT_PROVIDER": (None, _optional_str),
    "SLUICE_DEMO_DELAY_MS": (30.0, _float),
    "OLLAMA_BASE_URL": ("http://localhost:11434", str),
    "OPENAI_API_KEY": (None, _optional_str),
    "OPENAI_BASE_URL": (None, _optional_str),
    # The local provider (providers/local.py): a GGUF path, "off", or unset for SmolLM2-135M.
    "SLUICE_LOCAL_MODEL": ("", _gguf),
    "SLUICE_LOCAL_CTX": (2048, _positive),  # tokens per request (one slot)
    "SLUICE_LOCAL_THREADS": (0, _int),  # 0: llama.cpp's choice, the machine's cores
    "SLUICE_LOCAL_PARALLEL": (2, _positive),  # requests generated at once; more wait their turn
    "SLUICE_CONNECT_TIMEOUT_S": (5.0, _float),
    "SLUICE_HOLD_S": (5.0, _float),
    "SLUICE_FIRST_TOKEN_TIMEOUT_S": (60.0, _float),
    "SLUICE_IDLE_TIMEOUT_S": (60.0, _float),
    "SLUICE_HEARTBEAT_S": (15.0, _float),
    "SLUICE_RETRY_MS": (3000, _int),
    # 32 MiB: a few photos as base64 data URLs (OpenAI takes images up to 20 MB).
    "SLUICE_MAX_BODY_BYTES": (33_554_432, _int),
    # A request body must arrive within this (slow, short or never-ending bodies are cut: 408).
    "SLUICE_BODY_TIMEOUT_S": (30.0, _float),
    "SLUICE_MAX_STREAMS": (10_000, _int),
    "SLUICE_MODELS_TIMEOUT_S": (2.0, _float),
    "SLUICE_GENERATION_TTL_S": (600.0, _float),
    "SLUICE_DETACH_GRACE_S": (30.0, _float),
    # On a stop or reload, running generations go on this long (gunicorn.conf.py's graceful_timeout follows).
    "SLUICE_DRAIN_S": (120.0, _float),
    "SLUICE_MAX_EVENTS": (100_000, _int),
    "SLUICE_MAX_GENERATIONS": (10_000, _int),
    "SLUICE_SEND_TIMEOUT_S": (30.0, _float),
    "SLUICE_WS_PING_S": (25.0, _float),
    "SLUICE_REDIS_URL": (None, _optional_str),
    "SLUICE_LEASE_S": (5.0, _float),
    # Each Redis call gives up after this long: a dead or hung Redis is an outage, not a hang.
    "SLUICE_REDIS_TIMEOUT_S": (2.0, _float),
    # Request-time Redis calls share this many connections per worker; waiting longer than
    # SLUICE_REDIS_TIMEOUT_S for one is 503 overloaded (streams and listeners hold none).
    "SLUICE_REDIS_MAX_CONNECTIONS": (64, _int),
    # Events wait this long for the worker's next write to Redis (a stream's end goes at once).
    "SLUICE_REDIS_FLUSH_MS": (5.0, _float),
    # Events a worker may hold unwritten; past it streams wait for Redis (backpressure).
    "SLUICE_REDIS_MAX_PENDING": (100_000, _int),
    "SLUICE_API_KEYS": ((), _csv),
    "SLUICE_API_KEYS_FILE": (None, _optional_str),
    "SLUICE_METRICS_KEY": (None, _optional_str),
    "SLUICE_CORS_ORIGINS": ((), _csv),
    "SLUICE_RATE_LIMIT": (None, _optional_str),
    "SLUICE_MAX_STREAMS_PER_KEY": (0, _int),  # 0: no per-key cap
    "SLUICE_TRUSTED_PROXIES": ((), _csv),
    "SLUICE_RETRIES": (2, _int),
    "SLUICE_FALLBACKS": ((), _csv),
    "SLUICE_MAX_STREAM_S": (3600.0, _float),
    "SLUICE_LOG_LEVEL": ("info", str),
}


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return every setting, cast, from its default overridden by ``environ``.

    :param environ: where to read overrides; ``os.environ`` when omitted.
    :raise ConfigError: a value does not parse; the message names the key.
    """
    environ = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    for key, (default, parse) in SETTINGS.items():
        raw = environ.get(key)
        if raw is None:
            config[key] = default
            continue
        try:
            config[key] = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{key}={raw!r}: {exc}") from None
    return config
