"""Dialect parsers: each turns one client API's request body into a ``ChatRequest``.

Sluice's own body and OpenAI's are parsed in ``sluice.chat``; every other
dialect has a module here (``anthropic``, ``ollama``, ``responses``). A parser validates what
its API defines, names the field that is wrong in its error, and carries every
field into the ``ChatRequest`` (or refuses it by name): whether a provider can
honour it stays the provider's decision.
"""
