"""One blueprint per concern; ``register`` attaches them all."""

from __future__ import annotations

from flask import Flask

__all__ = ["register"]


def register(app: Flask) -> None:
    """Register every blueprint on ``app``."""
    from .. import openapi
    from . import anthropic, chat, embeddings, generations, health, ollama, openai_compat, pages, responses, ws

    for module in (
        pages,
        chat,
        generations,
        openai_compat,
        responses,
        anthropic,
        ollama,
        embeddings,
        health,
        ws,
        openapi,
    ):
        app.register_blueprint(module.bp)
