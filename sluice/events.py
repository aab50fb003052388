"""The typed events of a generation, and their one JSON form.

A generation is a numbered list of events: ``start``; the model's ``delta``,
``reasoning``, ``tool_call`` and ``refusal`` pieces; and one ``done`` or
``error`` at the end. An ``Event`` carries its ``Kind`` and its typed piece:

===========  ==========================================================
kind         piece
===========  ==========================================================
START        ``Start(id, model)``
DELTA        a ``str`` (most tokens: no wrapper), or ``Text`` (logprobs)
REASONING    ``Reasoning``
TOOL_CALL    ``ToolCallPart``
REFUSAL      ``Refusal``
DONE         ``Finish`` (finish reason, usage)
ERROR        a ``SluiceError`` (its code, safe message, Retry-After)
===========  ==========================================================

Renderers switch on ``kind`` and read the piece; nothing decodes JSON that
Sluice wrote. The JSON form (the ``data`` of Sluice's own SSE, NDJSON and
WebSocket events, and what the Redis broker stores) is made here, in
``to_data``/``from_data``, lazily and at most once per event (``Event.json``):
a ``/v1`` stream from the in-memory broker never makes it at all.

U+2028, U+2029 and U+0085 are escaped in that JSON (and in every JSON
response, through ``JSONProvider``), because line decoders built on
``str.splitlines`` (httpx's among them) break lines there; JSON itself escapes
the other characters ``splitlines`` breaks on, which are all below U+0020.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

from .errors import SluiceError, error_from_code
from .provider import Finish, Piece, Reasoning, Refusal, Text, ToolCallPart

__all__ = [
    "TERMINAL",
    "Event",
    "JSONProvider",
    "Kind",
    "Start",
    "delta",
    "done",
    "dumps",
    "error",
    "escape_line_separators",
    "from_data",
    "start",
    "to_data",
]


class Kind(enum.StrEnum):
    """What an event is; its value is the ``type`` of its JSON form."""

    START = "start"
    DELTA = "delta"
    REASONING = "reasoning"
    TOOL_CALL = "tool_call"
    REFUSAL = "refusal"
    DONE = "done"
    ERROR = "error"


#: The kinds that end a generation: exactly one of them, last.
TERMINAL = frozenset({Kind.DONE, Kind.ERROR})

#: The kinds that come from the model (each counts as a token for deadlines and metrics).
FROM_MODEL = frozenset({Kind.DELTA, Kind.REASONING, Kind.TOOL_CALL, Kind.REFUSAL})

_PIECE_KINDS: dict[type, Kind] = {
    str: Kind.DELTA,
    Text: Kind.DELTA,
    Reasoning: Kind.REASONING,
    ToolCallPart: Kind.TOOL_CALL,
    Refusal: Kind.REFUSAL,
}


@dataclass(frozen=True, slots=True)
class Start:
    """The first event's piece: which generation, which model."""

    id: str
    model: str


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
    token). Text it cannot encode (a lone surrogate) falls back to
    ASCII-escaped JSON, which still decodes to the same string.
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


# -- the JSON form -----------------------------------------------------------------


def to_data(kind: Kind, piece: Any) -> dict[str, Any]:
    """The JSON object of one event (the contract's shape, SPEC "Event format")."""
    if kind is Kind.DELTA:
        if type(piece) is str:
            return {"type": "delta", "content": piece}
        data: dict[str, Any] = {"type": "delta", "content": piece.content}
        if piece.logprobs is not None:
            data["logprobs"] = piece.logprobs
        return data
    if kind is Kind.REASONING:
        data = {"type": "reasoning", "content": piece.content}
        if piece.logprobs is not None:
            data["logprobs"] = piece.logprobs
        return data
    if kind is Kind.TOOL_CALL:
        data = {"type": "tool_call", "index": piece.index}
        if piece.id is not None:
            data["id"] = piece.id
        if piece.name is not None:
            data["name"] = piece.name
        data["arguments"] = piece.arguments
        return data
    if kind is Kind.REFUSAL:
        return {"type": "refusal", "content": piece.content}
    if kind is Kind.START:
        return {"type": "start", "id": piece.id, "model": piece.model}
    if kind is Kind.DONE:
        data = {"type": "done", "finish_reason": piece.reason, "usage": dict(piece.usage)}
        if piece.system_fingerprint is not None:
            data["system_fingerprint"] = piece.system_fingerprint
        if piece.stop_sequence is not None:
            data["stop_sequence"] = piece.stop_sequence
        return data
    body: dict[str, Any] = {"code": piece.code, "message": piece.message}
    if piece.upstream_retry_after is not None:
        body["retry_after"] = piece.upstream_retry_after
    if piece.param is not None:
        body["param"] = piece.param
    return {"type": "error", "error": body}


def from_data(data: dict[str, Any]) -> tuple[Kind, Any]:
    """The kind and typed piece of an event's JSON object (what a broker stored).

    :raise ValueError: not an event of the contract.
    """
    kind = Kind(data["type"])
    if kind is Kind.DELTA:
        logprobs = data.get("logprobs")
        return kind, data["content"] if logprobs is None else Text(data["content"], logprobs)
    if kind is Kind.REASONING:
        return kind, Reasoning(data["content"], data.get("logprobs"))
    if kind is Kind.TOOL_CALL:
        return kind, ToolCallPart(data["index"], data.get("arguments", ""), data.get("id"), data.get("name"))
    if kind is Kind.REFUSAL:
        return kind, Refusal(data["content"])
    if kind is Kind.START:
        return kind, Start(data["id"], data["model"])
    if kind is Kind.DONE:
        return kind, Finish(
            data["finish_reason"], data.get("usage") or {}, data.get("system_fingerprint"), data.get("stop_sequence")
        )
    body = data["error"]
    return kind, error_from_code(body["code"], body.get("message"), body.get("retry_after"), body.get("param"))


class Event:
    """One numbered, typed event of a generation.

    ``seq`` is its number in the generation (the SSE ``id``); -1 marks an event
    that is not part of it (a listener's own end when the broker went away:
    sent without an id, so the client's ``Last-Event-ID`` stays good). The
    JSON text is made on first use and kept: a generation keeps its events for
    resumes, and the text is what most of them are read as.
    """

    __slots__ = ("_json", "kind", "piece", "seq")

    def __init__(self, seq: int, kind: Kind, piece: Any, json: str | None = None) -> None:
        self.seq = seq
        self.kind = kind
        self.piece = piece
        self._json = json

    @classmethod
    def of_piece(cls, seq: int, piece: Piece) -> Event:
        """A model piece as event ``seq``."""
        return cls(seq, _PIECE_KINDS[type(piece)], piece)

    @classmethod
    def make(cls, seq: int, data: dict[str, Any]) -> Event:
        """Event ``seq`` from its JSON object (tests and the broker's own events)."""
        kind, piece = from_data(data)
        return cls(seq, kind, piece)

    @classmethod
    def from_json(cls, seq: int, text: str) -> Event:
        """Rebuild an event that a broker stored as JSON text (the text is kept as is)."""
        kind, piece = from_data(json.loads(text))
        return cls(seq, kind, piece, text)

    @property
    def json(self) -> str:
        """The event's JSON text, made once."""
        text = self._json
        if text is None:
            text = self._json = dumps(to_data(self.kind, self.piece))
        return text

    @property
    def data(self) -> dict[str, Any]:
        """The event's JSON object (a fresh dict)."""
        return to_data(self.kind, self.piece)

    @property
    def type(self) -> Kind:
        """The kind (a ``str`` enum: ``event.type == "delta"`` holds)."""
        return self.kind

    @property
    def content(self) -> str | None:
        """The text of a ``delta``, ``reasoning`` or ``refusal`` event; None for others."""
        piece = self.piece
        if type(piece) is str:
            return piece
        if isinstance(piece, Text | Reasoning | Refusal):
            return piece.content
        return None

    @property
    def error(self) -> SluiceError:
        """The error that ended the generation (``ERROR`` events only)."""
        assert self.kind is Kind.ERROR
        error: SluiceError = self.piece
        return error

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and (self.seq, self.json) == (other.seq, other.json)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Event({self.seq}, {self.json})"


# -- the JSON objects, for tests and the broker's own events ------------------------


def start(generation_id: str, model: str) -> dict[str, Any]:
    """The first event: which generation and which model."""
    return to_data(Kind.START, Start(generation_id, model))


def delta(content: str) -> dict[str, Any]:
    """A piece of the answer's text."""
    return {"type": "delta", "content": content}


def done(finish: Finish) -> dict[str, Any]:
    """The successful end: the finish reason and the usage the upstream reported (``{}`` for none)."""
    return to_data(Kind.DONE, finish)


def error(exc: SluiceError) -> dict[str, Any]:
    """The failed end: the contract's code, our own safe message, and the upstream's ``Retry-After``."""
    return to_data(Kind.ERROR, exc)
