"""Renderers: a generation's events in one wire format, and the one loop that writes them.

A dialect is a parser (its request body → ``ChatRequest``, see ``sluice.chat``
and ``sluice.parse``) and a renderer (events → its wire frames), one module
each. A renderer is a small stateful object made per response; it switches on
the event's ``Kind`` in one place and never decodes JSON that Sluice wrote:

- ``head()``: bytes before the first event (SSE's ``retry:``), or ``b""``;
- ``frames(event)``: the bytes for one event (``b""`` for one it does not show);
- ``ping()``: what an idle gap sends (an SSE comment), or ``b""``.

``render`` is the one loop every streamed response runs: each batch the
listener hands over (one event live, many on a replay) is one write, an idle
gap (``None``) is a ping, and an empty write is never made (to a chunked
response it reads as the end). The modules: ``events`` (Sluice's JSON events:
SSE, NDJSON, WebSocket frames), ``text`` (``text/plain`` and the classic
``GET /stream``), ``openai_chat`` (``/v1/chat/completions`` chunks),
``anthropic`` (``/v1/messages``' named events), ``ollama`` (``/ollama``'s
NDJSON lines).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from .. import sse
from ..events import Event

__all__ = ["Renderer", "SSERenderer", "render"]


class Renderer(Protocol):
    """One response's wire format (see the module docstring)."""

    #: The response's media type.
    mimetype: str

    def head(self) -> bytes:
        """Bytes before the first event (``b""`` for none)."""
        ...

    def frames(self, event: Event) -> bytes:
        """The bytes of one event (``b""`` when the format does not show it)."""
        ...

    def ping(self) -> bytes:
        """What an idle gap sends (``b""`` for nothing)."""
        ...


class SSERenderer:
    """The SSE part every SSE renderer shares: ``retry:`` first, ``: ping`` on an idle gap."""

    mimetype = sse.MIMETYPE

    def __init__(self, retry_ms: int) -> None:
        self.retry_ms = retry_ms

    def head(self) -> bytes:
        return sse.retry(self.retry_ms)

    def ping(self) -> bytes:
        return sse.PING


def render(batches: Iterable[list[Event] | None], renderer: Renderer) -> Iterator[bytes]:
    """The response body: ``renderer``'s head, then one write per batch, a ping per idle gap."""
    head = renderer.head()
    if head:
        yield head
    frames = renderer.frames
    for batch in batches:
        if batch is None:
            ping = renderer.ping()
            if ping:
                yield ping
        elif len(batch) == 1:
            data = frames(batch[0])
            if data:
                yield data
        else:
            data = b"".join(map(frames, batch))
            if data:
                yield data
