"""Pytest fixtures yielding started fake upstreams, closed at teardown.

Import them into a test module (or a conftest) to use them::

    from tests.fakes.fixtures import fake_ollama, fake_openai  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .ollama import FakeOllama
from .openai import FakeOpenAI

__all__ = ["fake_ollama", "fake_openai"]


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    """A running :class:`FakeOllama` (models ``llama3``, ``mistral``)."""
    with FakeOllama() as fake:
        yield fake


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running :class:`FakeOpenAI` (models ``gpt-4o-mini``, ``gpt-4o``; any API key accepted)."""
    with FakeOpenAI() as fake:
        yield fake
