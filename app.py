"""Sluice: stream a language model's answer token by token from a Flask app.

``create_app(config)`` applies the defaults, then the environment, then
``config``; wires the providers, the broker and the generations; and registers
the blueprints and the error handlers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from providers.demo import DemoProvider
from providers.llama_server import local_spec
from providers.local import LocalProvider
from providers.ollama import OllamaProvider
from providers.openai import OpenAIProvider
from sluice import auth, bodies, errors, generations, limits, logs, metrics, routes
from sluice.broker import Broker
from sluice.broker.memory import MemoryBroker
from sluice.broker.redis_broker import RedisBroker
from sluice.config import load_config
from sluice.events import JSONProvider
from sluice.provider import Provider, Registry
from sluice.ticker import Ticker

__all__ = ["create_app"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build a Sluice application.

    :param config: settings that override the defaults and the environment (tests use this).
    """
    app = Flask(__name__)
    # UTF-8 kept, line separators escaped: the same JSON as the event stream.
    app.json = JSONProvider(app)
    app.config.update(load_config())
    if config:
        app.config.update(config)
    settings = app.config
    connect_s = settings["SLUICE_CONNECT_TIMEOUT_S"]
    list_s = settings["SLUICE_MODELS_TIMEOUT_S"]
    providers: list[Provider] = [
        DemoProvider(settings["SLUICE_DEMO_DELAY_MS"]),
        OllamaProvider(settings["OLLAMA_BASE_URL"], connect_s, list_s),
        OpenAIProvider(settings["OPENAI_API_KEY"], settings["OPENAI_BASE_URL"], connect_s, list_s),
    ]
    # The built-in local model, started on first use (under gunicorn, the master has started it).
    spec = local_spec(settings)
    if spec is not None:
        providers.append(LocalProvider(spec, connect_s, list_s))
    if not settings["SLUICE_DEFAULT_MODEL"]:
        settings["SLUICE_DEFAULT_MODEL"] = f"local/{spec.alias}" if spec else "demo/echo"
    default_provider = settings["SLUICE_DEFAULT_PROVIDER"] or settings["SLUICE_DEFAULT_MODEL"].partition("/")[0]
    registry = Registry(providers, default_provider)
    ticker = Ticker()
    broker: Broker
    if settings["SLUICE_REDIS_URL"]:
        broker = RedisBroker(
            settings["SLUICE_REDIS_URL"],
            settings["SLUICE_GENERATION_TTL_S"],
            settings["SLUICE_MAX_GENERATIONS"],
            settings["SLUICE_LEASE_S"],
            settings["SLUICE_REDIS_TIMEOUT_S"],
            settings["SLUICE_REDIS_MAX_CONNECTIONS"],
            settings["SLUICE_REDIS_FLUSH_MS"],
            settings["SLUICE_REDIS_MAX_PENDING"],
            ticker,
        )
    else:
        broker = MemoryBroker(settings["SLUICE_GENERATION_TTL_S"], settings["SLUICE_MAX_GENERATIONS"], ticker)
    # Order matters: request id first, then the key, then limits that count by key.
    logs.init_app(app)
    auth.init_app(app)
    limits.init_app(app)
    bodies.init_app(app)  # after the key and the rate limit: a refused request costs no read
    generations.init_app(app, registry, broker, metrics.init_app(app), ticker)
    errors.init_app(app)
    routes.register(app)
    return app
