"""The other renderings of a generation's events: NDJSON, plain text, classic SSE.

Each takes the listener's iterator (``Event`` or ``None`` for an idle gap) and
yields bytes; the JSON text of an event is reused as serialised once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from . import sse
from .events import Event

__all__ = ["NDJSON", "TEXT", "ndjson_stream", "text_stream", "classic_stream"]

NDJSON = "application/x-ndjson"
TEXT = "text/plain"


def ndjson_stream(events: Iterable[Event | None]) -> Iterator[bytes]:
    """One JSON event per line. Idle gaps send nothing: an empty line is not NDJSON."""
    for event in events:
        if event is not None:
            yield f"{event.json}\n".encode()


def text_stream(events: Iterable[Event | None]) -> Iterator[bytes]:
    """The answer's text alone, piece by piece; an error just ends the body early."""
    for event in events:
        if event is not None and event.type == "delta":
            yield event.data["content"].encode("utf-8")


def classic_stream(events: Iterable[Event | None], retry_ms: int) -> Iterator[bytes]:
    """``GET /stream``: plain-text ``data:`` events for ``EventSource.onmessage``.

    Deltas become unnamed events whose data is the text itself; the end is
    ``event: done`` with an empty data line (browsers dispatch no event without
    one); a failure is ``event: error`` whose data is the JSON error object.
    """
    yield sse.retry(retry_ms)
    for event in events:
        if event is None:
            yield sse.PING
        elif event.type == "delta":
            yield sse.encode(event.data["content"], id=event.seq)
        elif event.type == "done":
            yield sse.encode("", id=event.seq, event="done")
        elif event.type == "error":
            yield sse.encode(event.json, id=event.seq, event="error")
