"""What a dialect's parser needs to know of the upstream: its kind, and where server knobs go.

A dialect's sampling knobs that OpenAI's API has no field for (Anthropic's
``top_k``, Ollama's ``options.min_p``) are server-specific: an
OpenAI-compatible server (vLLM, llama.cpp) takes them at the top level of its
body, Ollama under ``options``. So a parser asks which kind of server the model
goes to (``kind_of``) and puts them where that server reads them
(``knobs_extra``), as ``ChatRequest.extra``. The demo model is deterministic:
any setting of a sampling knob gives the same answer, so they go nowhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import current_app

from ..provider import Registry

__all__ = ["DEMO", "OLLAMA", "OPENAI", "KindOf", "kind_of", "knobs_extra"]

DEMO, OLLAMA, OPENAI = "demo", "ollama", "openai"

#: A model name -> the kind of server it goes to (``demo``, ``ollama`` or ``openai``).
KindOf = Callable[[str], str]


def kind_of(model: str) -> str:
    """The kind of server the current app sends ``model`` to (any provider but demo and ollama is OpenAI-compatible).

    :raise sluice.errors.ModelNotFound: no such provider.
    """
    registry: Registry = current_app.extensions["sluice"].registry
    provider, _ = registry.resolve(model)
    return provider.name if provider.name in (DEMO, OLLAMA) else OPENAI


def knobs_extra(kind: str, knobs: Mapping[str, Any]) -> dict[str, Any]:
    """The ``extra`` that carries server-specific sampling ``knobs`` to a server of ``kind``."""
    if not knobs or kind == DEMO:
        return {}
    if kind == OLLAMA:
        return {"options": dict(knobs)}
    return dict(knobs)
