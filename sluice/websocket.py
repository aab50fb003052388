"""The WebSocket's edge: the handshake checked before it is accepted, and writes that are whole.

``check_handshake`` runs before ``/ws`` accepts a connection (after the key and
the rate limit):

- the request must be HTTP/1.1 or later and carry a ``Sec-WebSocket-Key`` that
  is base64 of 16 bytes (RFC 6455 4.2.1), else ``400 invalid_request``; the
  version (13) is checked by wsproto, which answers ``400``/``426``;
- a browser's ``Origin`` must be the server's own (the ``Host`` it was sent
  to, scheme's default port implied) or one of ``SLUICE_CORS_ORIGINS``, else
  ``403 forbidden``: a page on another site cannot drive a user's Sluice.
  A request without ``Origin`` is not from a browser (browsers always send
  it on a WebSocket handshake) and connects.

It also hands the WebSocket library (simple-websocket) a socket whose ``send``
is a complete ``sendall`` under one lock (``WholeWrites``). The library writes
with ``sock.send(data)`` and ignores what it returns, and a gevent socket's
``send`` writes only what the kernel takes: to a client that reads slowly, a
frame was cut short and the next frame's header landed inside its payload
(the client closed with 1007). The lock keeps the library's own writes (pings,
pongs, the close frame, from its reader task) from landing inside a frame.
"""

from __future__ import annotations

import binascii
import threading
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, request

from .errors import Forbidden, InvalidRequest

__all__ = ["WholeWrites", "check_handshake"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# Where each server puts the client's socket in the WSGI environ (gunicorn; flask run).
_SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")


class WholeWrites:
    """A socket whose ``send`` writes every byte it is given, one writer at a time."""

    __slots__ = ("_lock", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, data: bytes, flags: int = 0) -> int:
        """Write all of ``data`` (``sendall``); return its length, as a complete ``send`` would."""
        with self._lock:
            self._sock.sendall(data, flags)
        return len(data)

    def sendall(self, data: bytes, flags: int = 0) -> None:
        """Write all of ``data``, under the same lock as ``send``."""
        with self._lock:
            self._sock.sendall(data, flags)

    def __getattr__(self, name: str) -> Any:
        # recv, close, fileno (the library's selector), settimeout: the socket's own.
        return getattr(self._sock, name)


def _key_is_valid(key: str) -> bool:
    """True for base64 of 16 bytes (24 characters, ``==`` at the end)."""
    try:
        return len(key) == 24 and len(binascii.a2b_base64(key, strict_mode=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``netloc`` with the scheme's default port, lower-case; None if malformed."""
    try:
        parts = urlsplit("//" + netloc)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path:
        return None
    default = _DEFAULT_PORTS.get(scheme)
    if port is None and default is None:
        return None
    return parts.hostname.lower(), port if port is not None else default  # type: ignore[return-value]


def _same_origin(origin: str, host: str) -> bool:
    """True when ``origin`` (``scheme://host[:port]``) names the ``Host`` the request was sent to."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not host:
        return False
    mine = _host_port(parts.netloc, parts.scheme)
    return mine is not None and mine == _host_port(host, parts.scheme)


def check_handshake() -> None:
    """Refuse a malformed handshake (``400``) or a foreign browser origin (``403``); wrap the socket.

    :raise InvalidRequest: HTTP/1.0, or a ``Sec-WebSocket-Key`` that is not base64 of 16 bytes.
    :raise Forbidden: an ``Origin`` that is neither this server's nor in ``SLUICE_CORS_ORIGINS``.
    """
    environ = request.environ
    protocol = environ.get("SERVER_PROTOCOL", "")
    if not protocol.startswith("HTTP/") or protocol in ("HTTP/0.9", "HTTP/1.0"):
        raise InvalidRequest("A WebSocket handshake needs HTTP/1.1.")
    if not _key_is_valid(request.headers.get("Sec-WebSocket-Key", "")):
        raise InvalidRequest("Sec-WebSocket-Key must be base64 of 16 random bytes.", param="Sec-WebSocket-Key")
    origin = request.headers.get("Origin")
    if origin is not None:
        allowed: tuple[str, ...] = current_app.config["SLUICE_CORS_ORIGINS"]
        if origin not in allowed and not _same_origin(origin, request.headers.get("Host", "")):
            raise Forbidden()
    for name in _SOCKET_KEYS:
        sock = environ.get(name)
        if sock is not None and not isinstance(sock, WholeWrites):
            environ[name] = WholeWrites(sock)
