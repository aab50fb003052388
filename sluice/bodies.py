"""Request bodies: read whole, within a deadline, before any view sees them.

gunicorn hands the application a body that it reads from the socket on
demand, with no time limit: a client that declares more than it sends, opens
a chunked body and never sends the last chunk, or sends a byte a second would
hold a connection and a greenlet for as long as it likes. So a
``before_request`` hook (after the request id, the key and the rate limit, so
a refused request costs no read) reads every body here, once:

- the whole body must arrive within ``SLUICE_BODY_TIMEOUT_S`` of the request's
  headers; one that has not is answered ``408 request_timeout`` and its
  connection closed;
- a body declared larger than ``SLUICE_MAX_BODY_BYTES`` is refused with
  ``413 payload_too_large`` before a byte of it is read (the shipped gunicorn
  config's ``pre_request`` also keeps gunicorn from inviting it with
  ``100 Continue``), one that turns out larger when read is refused as well;
- broken framing (a bad chunk size, a chunked body cut short) is a
  ``400 invalid_request``, mapped in ``sluice.errors``, never a trace; so is
  a body that ends (the client half-closed) before its ``Content-Length``;
- under gunicorn, a chunk that declares more than ``SLUICE_MAX_BODY_BYTES``
  is refused as its size line arrives, not after waiting for bytes that can
  never be accepted: ``413``, or ``400`` for a size past 64 bits
  (``ffffffffffffffffffff``), which no HTTP parser takes. gunicorn's chunked
  reader, which has no bound of its own, is swapped for ``_BoundedChunks``
  before the first byte is read.

The view then reads the body from memory, exactly as before (``read_json``).
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, request
from gunicorn.http.body import ChunkedReader
from gunicorn.http.errors import InvalidChunkSize

from .errors import InvalidRequest, PayloadTooLarge, RequestTimeout
from .tasks import gevent_active

__all__ = ["init_app"]

_STEP = 64 * 1024
_MAX_CHUNK_SIZE = 2**64 - 1  # past it a size line is malformed, as for nginx and llhttp


class _BoundedChunks(ChunkedReader):  # type: ignore[misc]  # gunicorn ships no types
    """gunicorn's chunked reader that refuses a chunk larger than the whole body may be, at its size line."""

    def __init__(self, req: Any, unreader: Any, limit: int) -> None:
        super().__init__(req, unreader)
        self.limit = limit

    def parse_chunk_size(self, unreader: Any, data: Any = None) -> Any:
        size, rest = super().parse_chunk_size(unreader, data)
        if size > _MAX_CHUNK_SIZE:
            raise InvalidChunkSize(b"over 64 bits")
        if size > self.limit:
            raise PayloadTooLarge()
        return size, rest


def _bound_chunks(stream: Any, limit: int) -> None:
    """Under gunicorn, read a chunked body with ``_BoundedChunks`` (nothing of it has been read yet)."""
    reader: Any = getattr(stream, "reader", None)
    if type(reader) is ChunkedReader:
        stream.reader = _BoundedChunks(reader.req, reader.req.unreader, limit)


class _Late(Exception):
    """The body's deadline passed (an ``Exception``, so gunicorn marks the connection unusable)."""


def _has_body(environ: Mapping[str, Any]) -> bool:
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return True
    return environ.get("CONTENT_LENGTH", "").strip() not in ("", "0")


def _read(stream: Any, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``stream``, until its end."""
    parts = []
    size = 0
    while size < limit:
        part = stream.read(min(_STEP, limit - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _read_within(environ: Mapping[str, Any], limit: int, seconds: float) -> bytes:
    """The body, up to ``limit`` bytes, or ``RequestTimeout`` once ``seconds`` have passed."""
    stream = environ["wsgi.input"]
    if seconds <= 0:  # 0: no deadline (as for SLUICE_SEND_TIMEOUT_S)
        return _read(stream, limit)
    if gevent_active():
        import gevent

        # One timer for the whole body: a byte a second does not restart it.
        try:
            with gevent.Timeout(seconds, _Late):
                return _read(stream, limit)
        except _Late:
            raise RequestTimeout() from None
    sock = environ.get("werkzeug.socket")  # flask run: a socket timeout, per read
    if sock is None:
        return _read(stream, limit)
    deadline = time.monotonic() + seconds
    previous = sock.gettimeout()
    parts = []
    size = 0
    try:
        while size < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RequestTimeout()
            sock.settimeout(remaining)
            part = stream.read(min(_STEP, limit - size))
            if not part:
                break
            parts.append(part)
            size += len(part)
    except TimeoutError:
        raise RequestTimeout() from None
    finally:
        sock.settimeout(previous)
    return b"".join(parts)


def _read_body() -> None:
    environ = request.environ
    if not _has_body(environ):
        return
    config = current_app.config
    max_bytes = config["SLUICE_MAX_BODY_BYTES"]
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise PayloadTooLarge()
    # Never past Content-Length (a server may hand over the raw socket: flask run);
    # without one, a byte past the limit tells a body that is too large.
    limit = declared if declared is not None else max_bytes + 1
    if declared is None:
        _bound_chunks(environ["wsgi.input"], max_bytes)
    body = _read_within(environ, limit, config["SLUICE_BODY_TIMEOUT_S"])
    if len(body) > max_bytes:
        raise PayloadTooLarge()
    if declared is not None and len(body) < declared:
        # The client closed its side before the body was whole: what came is not the request.
        raise InvalidRequest("The request body ended before its Content-Length.")
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ["wsgi.input_terminated"] = True


def init_app(app: Flask) -> None:
    """Read every request body within ``SLUICE_BODY_TIMEOUT_S`` before the view runs."""
    app.before_request(_read_body)
