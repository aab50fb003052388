"""Abort wakes and closes once; the registry resolves provider/model names."""

from __future__ import annotations

import pytest

from providers.demo import DemoProvider
from sluice.errors import ModelNotFound
from sluice.provider import Abort, Registry

# -- Abort, registry --------------------------------------------------------------


def test_abort_calls_each_closer_once_even_if_registered_late():
    calls = []
    abort = Abort()
    abort.on_abort(lambda: calls.append(1))
    abort.on_abort(lambda: 1 / 0)  # a failing closer does not stop the others
    abort.on_abort(lambda: calls.append(2))
    abort.abort("cancelled")
    abort.abort("timeout")
    abort.on_abort(lambda: calls.append(3))
    assert calls == [1, 2, 3] and abort.reason == "cancelled" and abort.wait(0)


def test_registry_resolves_prefixed_and_bare_names():
    demo = DemoProvider(0)
    registry = Registry([demo], "demo")
    assert registry.resolve("demo/echo") == (demo, "echo")
    assert registry.resolve("echo") == (demo, "echo")
    for name in ("x/echo", "demo/", "/echo"):
        with pytest.raises(ModelNotFound):
            registry.resolve(name)
