"""One blueprint per concern; ``register`` attaches them all."""

from __future__ import annotations

from flask import Flask

__all__ = ["register"]


def register(app: Flask) -> None:
    """Register every blueprint on ``app``."""
    from .. import openapi
    from . import chat, generations, health, openai_compat, pages, responses, ws

    ws.init_app(app)
    for module in (pages, chat, generations, openai_compat, responses, health, ws, openapi):
        app.register_blueprint(module.bp)
