"""The JSON events of a generation: ``start``; the model's ``delta``, ``reasoning``,
``tool_call`` and ``refusal`` pieces (made by the pieces themselves, see
``sluice.provider``); and one ``done`` or ``error`` at the end.

An ``Event`` is numbered by ``runner`` (its ``seq`` is the SSE ``id``) and
serialised once, at creation, to compact JSON; every output format reuses that
text. U+2028, U+2029 and U+0085 are escaped in it (and in every JSON response,
through ``JSONProvider``), because line decoders built on ``str.splitlines``
(httpx's among them) break lines there; JSON itself escapes the other
characters ``splitlines`` breaks on, which are all below U+0020.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

from .errors import SluiceError
from .provider import Finish

__all__ = ["TERMINAL", "Event", "JSONProvider", "delta", "done", "dumps", "error", "escape_line_separators", "start"]

TERMINAL = frozenset({"done", "error"})


_LINE_SEPARATORS = {0x2028: "\\u2028", 0x2029: "\\u2029", 0x85: "\\u0085"}


def escape_line_separators(text: str) -> str:
    """Escape the characters ``str.splitlines`` breaks on that JSON leaves raw."""
    if "\u2028" in text or "\u2029" in text or "\x85" in text:
        return text.translate(_LINE_SEPARATORS)
    return text


def dumps(obj: Any) -> str:
    """Compact JSON with UTF-8 text kept as is, line separators escaped.

    orjson writes the same bytes as ``json.dumps(ensure_ascii=False,
    separators=(",", ":"))``, an order of magnitude faster (it is on every
    token). Text it cannot encode (a lone surrogate a provider sent) falls back
    to ASCII-escaped JSON, which still decodes to the same string.
    """
    try:
        text = orjson.dumps(obj).decode("utf-8")
    except TypeError:
        return json.dumps(obj, separators=(",", ":"))
    return escape_line_separators(text)


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, UTF-8 kept, with the same escaping as the event stream."""

    ensure_ascii = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return escape_line_separators(super().dumps(obj, **kwargs))


class Event:
    """One numbered event of a generation.

    It keeps its JSON text, its type and (for a delta) its text, not the dict it
    was made from: a generation keeps all its events for resumes, and a small
    dict per token would double what that costs. ``data`` decodes on demand.
    """

    __slots__ = ("content", "json", "seq", "type")

    def __init__(self, seq: int, type: str, json: str, content: str | None = None) -> None:
        self.seq = seq
        self.type = type  # start, delta, reasoning, tool_call, refusal, done or error
        self.json = json
        self.content = content  # the text of a delta, reasoning or refusal

    @property
    def data(self) -> dict[str, Any]:
        """The event as a dict (decoded from its JSON)."""
        data: dict[str, Any] = orjson.loads(self.json)
        return data

    @classmethod
    def make(cls, seq: int, data: dict[str, Any]) -> Event:
        """Number ``data`` and serialise it once."""
        return cls(seq, data["type"], dumps(data), data.get("content"))

    @classmethod
    def from_json(cls, seq: int, text: str) -> Event:
        """Rebuild an event that a broker stored as JSON text."""
        data = json.loads(text)
        return cls(seq, data["type"], text, data.get("content"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and (self.seq, self.json) == (other.seq, other.json)

    def __repr__(self) -> str:
        return f"Event({self.seq}, {self.json})"


def start(generation_id: str, model: str) -> dict[str, Any]:
    """The first event: which generation and which model."""
    return {"type": "start", "id": generation_id, "model": model}


def delta(content: str) -> dict[str, Any]:
    """A piece of the answer's text."""
    return {"type": "delta", "content": content}


def done(finish: Finish) -> dict[str, Any]:
    """The successful end: the finish reason and the usage the upstream reported (``{}`` for none)."""
    return {"type": "done", "finish_reason": finish.reason, "usage": dict(finish.usage)}


def error(exc: SluiceError) -> dict[str, Any]:
    """The failed end: the contract's code, our own safe message, and the upstream's ``Retry-After``."""
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.upstream_retry_after is not None:
        body["retry_after"] = exc.upstream_retry_after
    return {"type": "error", "error": body}
