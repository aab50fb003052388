"""Read Sluice's streams with a parser that is not Sluice's own (httpx-sse)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
from httpx_sse import EventSource, ServerSentEvent

__all__ = ["hang_up_after", "open_events", "read_events", "text_of"]


@contextmanager
def open_events(
    url: str, body: dict[str, Any] | None = None, timeout: float = 30.0, **kwargs: Any
) -> Iterator[tuple[httpx.Response, Iterator[ServerSentEvent]]]:
    """POST ``body`` to ``url`` (GET without a body) and yield the response and its SSE events, as they arrive."""
    method = "GET" if body is None else "POST"
    with httpx.Client(timeout=timeout) as client:
        with client.stream(method, url, json=body, **kwargs) as response:
            # A block with no data (the opening "retry:") dispatches no event in browsers.
            yield response, (e for e in EventSource(response).iter_sse() if e.data)


def read_events(url: str, body: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """The whole stream as ``[{"seq": int (the SSE id), **data}]``; asserts a 200 SSE response."""
    with open_events(url, body, **kwargs) as (response, events):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [{"seq": int(e.id), **json.loads(e.data)} for e in events]


def text_of(events: list[dict[str, Any]]) -> str:
    """The answer's text from a list of events."""
    return "".join(e["content"] for e in events if e["type"] == "delta")


def hang_up_after(url: str, path: str, body: dict[str, Any], marker: bytes, count: int) -> float:
    """POST ``body`` raw, read until ``marker`` was seen ``count`` times, hang up; the ``time.monotonic()`` then."""
    payload = json.dumps(body).encode()
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    seen = b""
    while seen.count(marker) < count:
        chunk = sock.recv(65536)
        assert chunk, seen
        seen += chunk
    closed = time.monotonic()
    sock.close()
    return closed
