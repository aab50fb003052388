"""Server-Sent Events framing, in one place.

``encode`` turns one event into bytes. ``id`` and ``event`` lose any CR/LF (a
field value cannot span lines); ``data`` is split on CRLF, CR and LF, each part
its own ``data:`` line, so no text can end an event early or forge another:
a browser joins the lines back with LF. (Divergence worth knowing: a CR or
CRLF inside plain-text data therefore arrives as LF; JSON data never contains
either, so the JSON formats are byte-exact.)

The heartbeat and the data go through one writer, the response generator that
``listen`` feeds: a ``None`` from the broker means "nothing for
``SLUICE_HEARTBEAT_S``" and becomes a ``: ping`` comment, so pings follow an
idle gap rather than a fixed beat, and nothing writes from two greenlets.
"""

from __future__ import annotations

import re

from .events import Event

__all__ = ["HEADERS", "MIMETYPE", "PING", "encode", "frame", "retry"]

MIMETYPE = "text/event-stream"
# no-cache per SPEC; X-Accel-Buffering tells nginx to pass each event on at once.
# No hop-by-hop headers: Connection and Transfer-Encoding are the server's.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
PING = b": ping\n\n"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _field(value: str) -> str:
    return value.replace("\r", "").replace("\n", "")


def encode(data: str | None, id: str | int | None = None, event: str | None = None) -> bytes:
    """One SSE event as bytes; ``data=None`` means no data line at all."""
    parts = []
    if id is not None:
        # An event number needs no cleaning (this runs for every classic event).
        parts.append(f"id: {id}\n" if type(id) is int else f"id: {_field(str(id))}\n")
    if event is not None:
        parts.append(f"event: {_field(event)}\n")
    if data is not None:
        if "\n" in data or "\r" in data:
            for line in _LINE_BREAK.split(data):
                parts.append(f"data: {line}\n")
        else:  # most pieces: one line, no regex
            parts.append(f"data: {data}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def retry(milliseconds: int) -> bytes:
    """The reconnection delay that opens every stream."""
    return f"retry: {int(milliseconds)}\n\n".encode()


def frame(event: Event) -> str:
    """One JSON event as an SSE frame (JSON has no raw line breaks: no splitting needed)."""
    if event.seq >= 0:
        return f"id: {event.seq}\ndata: {event.json}\n\n"
    # Not part of the generation (the broker went away): no id, so the client's
    # Last-Event-ID stays on the last real event.
    return f"data: {event.json}\n\n"
