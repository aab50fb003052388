"""The other renderings of a generation's events: NDJSON, plain text, classic SSE.

Each takes the broker's batches (a list of events, or ``None`` for an idle gap)
and yields bytes, one write per batch; the JSON text of an event is reused as
serialised once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from . import sse
from .events import Event

__all__ = ["NDJSON", "TEXT", "classic_stream", "ndjson_stream", "text_stream"]

NDJSON = "application/x-ndjson"
TEXT = "text/plain"


def ndjson_stream(batches: Iterable[list[Event] | None]) -> Iterator[bytes]:
    """One JSON event per line. Idle gaps send nothing: an empty line is not NDJSON."""
    for batch in batches:
        if batch:
            yield "".join(f"{event.json}\n" for event in batch).encode()


def text_stream(batches: Iterable[list[Event] | None]) -> Iterator[bytes]:
    """The answer's text alone, piece by piece; an error just ends the body early."""
    for batch in batches:
        text = "".join(e.content or "" for e in batch or () if e.type == "delta")
        if text:
            yield text.encode("utf-8")


def classic_stream(batches: Iterable[list[Event] | None], retry_ms: int) -> Iterator[bytes]:
    """``GET /stream``: plain-text ``data:`` events for ``EventSource.onmessage``.

    Deltas become unnamed events whose data is the text itself; the end is
    ``event: done`` with an empty data line (browsers dispatch no event without
    one); a failure is ``event: error`` whose data is the JSON error object.
    """
    yield sse.retry(retry_ms)
    for batch in batches:
        if batch is None:
            yield sse.PING
            continue
        chunk = b"".join(map(_classic_frame, batch))
        if chunk:  # never an empty write: to a chunked response that reads as the end
            yield chunk


def _classic_frame(event: Event) -> bytes:
    if event.type == "delta":
        return sse.encode(event.content, id=event.seq)
    if event.type == "done":
        return sse.encode("", id=event.seq, event="done")
    if event.type == "error":
        return sse.encode(event.json, id=event.seq if event.seq >= 0 else None, event="error")
    return b""  # start: the classic form has no use for it
