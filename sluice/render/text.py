"""The answer's text alone: ``Accept: text/plain`` and the classic ``GET /stream``.

``text/plain`` is the text of the ``delta`` events, piece by piece; anything
else (reasoning, tool calls, the end) shows nothing, and an error just ends
the body early. ``GET /stream`` is for ``EventSource`` + ``onmessage``: each
delta an unnamed event whose data is the text itself (split on line breaks by
``sse.encode``, so no text can forge an event), the end ``event: done`` with
an empty data line (browsers dispatch no event without one), a failure
``event: error`` whose data is the JSON error object.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .. import sse
from ..events import Event, Kind
from . import SSERenderer, render

__all__ = ["TEXT", "ClassicEvents", "PlainText", "classic_stream", "text_stream"]

TEXT = "text/plain"


class PlainText:
    """The answer's text, chunked."""

    mimetype = TEXT

    def head(self) -> bytes:
        return b""

    def frames(self, event: Event) -> bytes:
        if event.kind is Kind.DELTA:
            text = event.piece if type(event.piece) is str else event.piece.content
            return text.encode("utf-8")
        return b""

    def ping(self) -> bytes:
        return b""


class ClassicEvents(SSERenderer):
    """``GET /stream``: plain-text ``data:`` events, then ``event: done``."""

    def frames(self, event: Event) -> bytes:
        kind = event.kind
        if kind is Kind.DELTA:
            text = event.piece if type(event.piece) is str else event.piece.content
            return sse.encode(text, id=event.seq)
        if kind is Kind.DONE:
            return sse.encode("", id=event.seq, event="done")
        if kind is Kind.ERROR:
            return sse.encode(event.json, id=event.seq if event.seq >= 0 else None, event="error")
        return b""  # start, reasoning, tool calls, refusals: the classic form is text only


def text_stream(batches: Iterable[list[Event] | None]) -> Iterator[bytes]:
    """The ``text/plain`` body of ``batches``."""
    return render(batches, PlainText())


def classic_stream(batches: Iterable[list[Event] | None], retry_ms: int) -> Iterator[bytes]:
    """The ``GET /stream`` body of ``batches``."""
    return render(batches, ClassicEvents(retry_ms))
