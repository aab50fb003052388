"""One blueprint per concern; ``register`` attaches them all."""

from __future__ import annotations

from flask import Flask

__all__ = ["register"]


def register(app: Flask) -> None:
    """Register every blueprint on ``app``."""
    from . import chat, health, openai_compat, pages

    for module in (pages, chat, openai_compat, health):
        app.register_blueprint(module.bp)
