"""The model catalog: every provider asked at once, none allowed to stall the answer."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .errors import SluiceError, UpstreamTimeout
from .provider import ModelInfo, Registry
from .tasks import spawn

__all__ = ["Catalog", "list_models"]


@dataclass
class Catalog:
    """Models found, and for each provider that failed, the error it gave."""

    models: list[ModelInfo] = field(default_factory=list)
    errors: dict[str, SluiceError] = field(default_factory=dict)


def list_models(registry: Registry, timeout_s: float) -> Catalog:
    """Ask every provider for its models in parallel, waiting at most ``timeout_s``."""
    found: dict[str, list[str] | SluiceError] = {}
    lock = threading.Lock()

    def ask(name: str) -> None:
        try:
            result: list[str] | SluiceError = list(registry.providers[name].models())
        except SluiceError as exc:
            result = exc
        except Exception:  # a provider bug must not hide the others' models
            result = SluiceError()
        with lock:
            found[name] = result

    tasks = [spawn(ask, name) for name in registry.providers]
    deadline = time.monotonic() + timeout_s
    for task in tasks:
        task.join(max(0.0, deadline - time.monotonic()))
    catalog = Catalog()
    with lock:
        for name in registry.providers:
            result = found.get(name, UpstreamTimeout())
            if isinstance(result, SluiceError):
                catalog.errors[name] = result
            else:
                catalog.models.extend(ModelInfo(f"{name}/{model}", name) for model in result)
    return catalog
