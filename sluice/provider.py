"""The provider contract: the pieces a provider yields, its ``Finish``, ``Abort``, ``Provider`` and ``Registry``.

A provider turns a whole ``ChatRequest`` into typed pieces::

    def stream(self, request, model, abort) -> Generator[Piece, None, Finish]

It translates the request into its upstream's shape in one place (refusing
with ``InvalidRequest`` what the upstream cannot honour), yields each piece as
it arrives and *returns* a ``Finish`` (the upstream's finish reason and the
usage it reported, nothing invented). A piece is answer text (a plain ``str``,
or ``Text`` when it carries logprobs), ``Reasoning``, a ``ToolCallPart`` or a
``Refusal`` (``sluice.events`` makes their events). Every piece of the
upstream's text (and its logprobs) passes through ``valid_text``
(``valid_value``) once, in the provider, so what reaches the events is valid
Unicode whatever the upstream sent. A provider knows nothing of SSE,
event ids or numbering: those, timeouts and error events happen once, in
``sluice.runner``. Foreign exceptions (requests, the openai SDK) are translated
into ``sluice.errors`` classes inside the provider, with ``raise ... from exc``.

A provider that serves embeddings also has ``embed`` (the ``Embedder``
protocol): one ``EmbedRequest`` in, its ``Embeddings`` (float vectors, and the
usage the upstream reported) out, in one call; ``embedder_of`` says whether a
provider has it.

A running generator cannot be closed from another greenlet, so cancelling is
done by closing the upstream connection: the provider registers a closer with
``abort.on_abort`` as soon as it holds a connection, and the reader then fails
(or sees EOF) at once, wherever it is blocked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from .chat import ChatRequest
from .errors import InvalidRequest, ModelNotFound
from .tasks import gevent_active

__all__ = [
    "Abort",
    "EmbedRequest",
    "Embedder",
    "Embeddings",
    "Finish",
    "ModelInfo",
    "Piece",
    "Provider",
    "Reasoning",
    "Refusal",
    "Registry",
    "Text",
    "ToolCallPart",
    "embedder_of",
    "merge_extra",
    "refuse_unsupported",
    "retry_after_seconds",
    "valid_text",
    "valid_value",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Text:
    """Answer text that carries the upstream's ``logprobs`` for it (plain text is a bare ``str``)."""

    content: str
    logprobs: Any = None


@dataclass(frozen=True, slots=True)
class Reasoning:
    """Reasoning text (Ollama's ``message.thinking``, OpenAI-compatible ``reasoning_content``)."""

    content: str
    logprobs: Any = None


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    """A piece of tool call ``index``: its first piece has ``id`` and ``name``; ``arguments`` pieces join to JSON."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """The model's refusal text."""

    content: str


# A plain ``str`` is answer text: most pieces are, and a bare string costs no
# wrapper object per token.
Piece = str | Text | Reasoning | ToolCallPart | Refusal


@dataclass(frozen=True, slots=True)
class Finish:
    """How a provider's answer ended, as the upstream said, and the usage it reported.

    ``reason`` is ``stop``, ``length``, ``tool_calls`` or ``content_filter``;
    ``usage`` holds only the counts the upstream reported (details included);
    ``system_fingerprint`` is the upstream's, where it gave one.
    """

    reason: str = "stop"
    usage: dict[str, Any] = field(default_factory=dict)
    #: The upstream's ``system_fingerprint`` (OpenAI-compatible servers), when it sent one.
    system_fingerprint: str | None = None
    #: The stop string that ended the answer (reason ``stop``), where the upstream says which.
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One entry of a model listing."""

    id: str  # "provider/model"
    provider: str


class Abort:
    """Lets any thread or greenlet stop a running provider stream.

    ``abort(reason)`` records why (``cancelled``, ``timeout``, ``disconnected``),
    wakes ``wait`` and calls every registered closer once.
    """

    __slots__ = ("_closers", "_event", "_lock", "reason")

    def __init__(self) -> None:
        self.reason: str | None = None
        self._event = threading.Event()
        self._closers: list[Callable[[], object]] = []
        self._lock = threading.Lock()

    @property
    def is_set(self) -> bool:
        """True once ``abort`` was called."""
        return self._event.is_set()

    def wait(self, timeout: float | None) -> bool:
        """Pause up to ``timeout`` seconds; True (at once) if aborted meanwhile."""
        return self._event.wait(timeout)

    def pause(self, seconds: float) -> bool:
        """Pause between pieces; True if aborted.

        Under gevent a plain sleep, the cheapest timer there is (a wait with a
        timeout allocates one per call, a cost profiling showed on every token),
        and the runner interrupts the sleeping task on abort anyway. Under plain
        threads, which nothing can interrupt, a wait on the abort flag.
        """
        if gevent_active():
            time.sleep(seconds)
            return self._event.is_set()
        return self._event.wait(seconds)

    def on_abort(self, closer: Callable[[], object]) -> None:
        """Call ``closer`` on abort (at once if already aborted)."""
        with self._lock:
            if not self._event.is_set():
                self._closers.append(closer)
                return
        _call(closer)

    def abort(self, reason: str) -> None:
        """Stop the stream for ``reason``; only the first call counts."""
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            closers, self._closers = self._closers, []
        for closer in closers:
            _call(closer)


def _call(closer: Callable[[], object]) -> None:
    try:
        closer()
    except Exception:  # a failing closer must not stop the others
        log.debug("closer failed", exc_info=True)


def valid_text(text: str) -> str:
    """``text`` as valid Unicode: each lone UTF-16 surrogate becomes U+FFFD.

    An upstream's JSON may hold an escape such as ``\\ud800`` alone, which
    decodes into a ``str`` that no UTF-8 writer can send on (a 500, a cut
    stream). It runs on every piece, so ordinary text costs one check: ASCII
    (constant time), else one encode.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Through UTF-16: a high and a low surrogate side by side become their character again.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def valid_value(value: Any) -> Any:
    """``value`` (decoded JSON, such as the upstream's logprobs) with every string through ``valid_text``."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, list):
        return [valid_value(item) for item in value]
    if isinstance(value, dict):
        return {valid_value(key): valid_value(item) for key, item in value.items()}
    return value


def merge_extra(body: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with the client's ``extra`` added as given, objects merged one level deep."""
    for key, value in extra.items():
        built = body.get(key)
        if isinstance(built, dict) and isinstance(value, dict):
            body[key] = {**built, **value}
        else:
            body[key] = value
    return body


def refuse_unsupported(request: ChatRequest, where: str) -> None:
    """Refuse what no provider here can carry back: several answers at once (``n`` > 1).

    :raise sluice.errors.InvalidRequest: naming the field and ``where``.
    """
    if request.options.get("n", 1) != 1:
        raise InvalidRequest(f"n: {where} through Sluice streams one answer; send n=1 or several requests.", param="n")


def retry_after_seconds(value: str | None) -> float | None:
    """An upstream's ``Retry-After`` in seconds (delta form only; dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class Provider(Protocol):
    """What every provider implements."""

    name: str

    def stream(self, request: ChatRequest, model: str, abort: Abort) -> Generator[Piece, None, Finish]:
        """Yield the pieces of ``model``'s answer to ``request``, then return a ``Finish``.

        :raise sluice.errors.InvalidRequest: the request has a field this provider cannot honour.
        :raise sluice.errors.SluiceError: the contract's error for any other failure.
        """
        ...

    def check(self, request: ChatRequest, model: str) -> None:
        """Refuse, before anything starts, a request this provider cannot honour.

        :raise sluice.errors.ModelNotFound: the provider has no such model (where it knows without asking).
        :raise sluice.errors.InvalidRequest: naming the field and the provider.
        """
        ...

    def models(self) -> Iterable[str]:
        """The model names this provider serves (without the provider prefix).

        :raise sluice.errors.SluiceError: the provider cannot be reached.
        """
        ...


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    """A validated embeddings request; ``input`` is as the client gave it: a text, texts, or token ids."""

    model: str  # as the client named it
    input: str | tuple[str, ...] | tuple[int, ...] | tuple[tuple[int, ...], ...]
    dimensions: int | None = None
    #: What goes into the upstream body as given (the client's other fields).
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Fields that only inform (``user``).
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def texts(self) -> list[str] | None:
        """The input as a list of texts; None when it is token ids."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(item, str) for item in self.input):
            return [item for item in self.input if isinstance(item, str)]
        return None


@dataclass(frozen=True, slots=True)
class Embeddings:
    """One vector per input, in order, and the usage the upstream reported (``{}`` for none)."""

    vectors: list[list[float]]
    usage: dict[str, Any] = field(default_factory=dict)


class Embedder(Protocol):
    """What a provider that serves embeddings implements besides ``Provider``."""

    def embed(self, request: EmbedRequest, model: str, timeout_s: float) -> Embeddings:
        """The embeddings of ``request``'s input from ``model``, within ``timeout_s`` seconds.

        :raise sluice.errors.InvalidRequest: a field this provider cannot honour.
        :raise sluice.errors.SluiceError: the contract's error for any other failure.
        """
        ...


def embedder_of(provider: Provider) -> Embedder | None:
    """``provider`` as an ``Embedder``, or None when it serves no embeddings."""
    # A structural check: a provider with an ``embed`` method is an ``Embedder``.
    return cast(Embedder, provider) if callable(getattr(provider, "embed", None)) else None


class Registry:
    """The configured providers, and the rule that resolves a model name to one."""

    def __init__(self, providers: Iterable[Provider], default_provider: str) -> None:
        self.providers: dict[str, Provider] = {p.name: p for p in providers}
        self.default_provider = default_provider

    def resolve(self, name: str) -> tuple[Provider, str]:
        """Split ``provider/model`` (or a bare name for the default provider).

        :raise sluice.errors.ModelNotFound: no such provider.
        """
        prefix, sep, model = name.partition("/")
        if not sep:
            prefix, model = self.default_provider, name
        provider = self.providers.get(prefix)
        if provider is None or not model:
            raise ModelNotFound(f"Unknown model {name!r}: use provider/model, e.g. demo/echo.")
        return provider, model
