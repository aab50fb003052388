"""Fake upstream LLM servers (Ollama, OpenAI) on real sockets, scriptable per request.

Example::

    with FakeOllama() as fake:
        fake.push(Script(tokens=["Hi"], delay_s=0.05))
        ...  # point the code under test at fake.url
"""

from .ollama import FakeOllama
from .openai import FakeOpenAI
from .upstream import FakeUpstream, Request, Script

__all__ = ["FakeOllama", "FakeOpenAI", "FakeUpstream", "Request", "Script"]
