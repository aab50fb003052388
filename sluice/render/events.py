"""Sluice's own JSON events: SSE (``text/event-stream``), NDJSON and WebSocket frames.

Each event goes out as its JSON text (``Event.json``, made once and kept, so a
replay or a second listener costs no serialisation): as an SSE ``data:`` line
with the event number as ``id`` (no id for an event outside the numbering,
``seq`` -1, so the client's ``Last-Event-ID`` stays good), as one NDJSON line,
or as one WebSocket text frame. Idle gaps are ``: ping`` comments in SSE;
NDJSON sends nothing (an empty line is not NDJSON).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .. import sse
from ..events import Event
from . import SSERenderer, render

__all__ = ["NDJSON", "NDJSONEvents", "SSEEvents", "json_stream", "ndjson_stream", "ws_frame"]

NDJSON = "application/x-ndjson"


class SSEEvents(SSERenderer):
    """The contract's JSON event stream: ``retry:``, then ``id``/``data`` frames and pings."""

    def frames(self, event: Event) -> bytes:
        return sse.frame(event).encode()


class NDJSONEvents:
    """One JSON event per line."""

    mimetype = NDJSON

    def head(self) -> bytes:
        return b""

    def frames(self, event: Event) -> bytes:
        return f"{event.json}\n".encode()

    def ping(self) -> bytes:
        return b""


def ws_frame(event: Event) -> str:
    """One event as a WebSocket text message: its JSON object."""
    return event.json


def json_stream(batches: Iterable[list[Event] | None], retry_ms: int) -> Iterator[bytes]:
    """The SSE body of ``batches`` (see ``SSEEvents``)."""
    return render(batches, SSEEvents(retry_ms))


def ndjson_stream(batches: Iterable[list[Event] | None]) -> Iterator[bytes]:
    """The NDJSON body of ``batches`` (see ``NDJSONEvents``)."""
    return render(batches, NDJSONEvents())
