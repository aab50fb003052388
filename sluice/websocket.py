"""A server-side WebSocket on the client's own socket: one greenlet, complete writes.

``accept(environ, …)`` checks the handshake (RFC 6455 §4.2.1: HTTP/1.1 or
later, ``Upgrade: websocket``, a ``Sec-WebSocket-Key`` that is base64 of 16
bytes, version 13, and the ``Origin`` against an allow-list), answers ``101``
and returns a ``WebSocket``. A refused handshake raises the contract's error
before anything is written, so the client gets an ordinary HTTP answer
(``400``, ``403``, ``426`` with ``Sec-WebSocket-Version: 13``).

Frames are parsed and built by ``wsproto``'s frame layer. Reading costs no
greenlet: under gevent a libev watcher on the socket reads whatever has
arrived, in the hub, without blocking (``os.read`` on the non-blocking
descriptor), queues whole messages and the control frames to answer, and
sets ``signal`` — the same signal the session's listener waits on, so one
greenlet both relays events and hears the client. Under ``flask run`` a
small thread reads instead. Every write is a whole ``sendall`` from the
session's greenlet, bounded by ``SLUICE_SEND_TIMEOUT_S``: a frame is never
cut short, however slowly the client reads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .errors import Forbidden, InvalidRequest, UpgradeRequired
from .hotpath import Signal
from .tasks import gevent_active, spawn

__all__ = ["WebSocket", "accept"]

log = logging.getLogger(__name__)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_READ = 65536


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _origin_allowed(environ: Mapping[str, Any], allowed: tuple[str, ...]) -> bool:
    """No ``Origin`` (not a browser), the page's own host, or one on the allow-list.

    "The page's own host": the origin names the ``Host`` the request was sent
    to, the scheme's default port implied (``http://a`` is ``a:80``).
    """
    origin = environ.get("HTTP_ORIGIN")
    if origin is None:
        return True
    if origin in allowed:
        return True
    host = environ.get("HTTP_HOST", "")
    if not host:
        return False
    try:
        parts, asked = urlsplit(origin), urlsplit("//" + host)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        asked_port = asked.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port that is not a number
        return False
    return bool(parts.hostname) and (parts.hostname, port) == (asked.hostname, asked_port)


def _check_handshake(environ: Mapping[str, Any], allowed_origins: tuple[str, ...]) -> str:
    """The handshake's ``Sec-WebSocket-Accept``; the contract's error if it is not one to accept."""
    if environ.get("SERVER_PROTOCOL", "HTTP/1.0") in ("HTTP/1.0", "HTTP/0.9"):
        raise InvalidRequest("A WebSocket handshake needs HTTP/1.1.")
    if environ.get("REQUEST_METHOD") != "GET":
        raise InvalidRequest("A WebSocket handshake is a GET.")
    if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
        raise InvalidRequest("A WebSocket handshake asks for Upgrade: websocket.")
    if "upgrade" not in [token.strip().lower() for token in environ.get("HTTP_CONNECTION", "").split(",")]:
        raise InvalidRequest("A WebSocket handshake asks for Connection: Upgrade.")
    version = environ.get("HTTP_SEC_WEBSOCKET_VERSION")
    if version is None:
        raise BadHandshake("A WebSocket handshake names its version: Sec-WebSocket-Version: 13.")
    if version.strip() != "13":
        raise UpgradeRequired()
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        nonce = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        nonce = b""
    if len(nonce) != 16:
        raise BadHandshake("Sec-WebSocket-Key must be 16 random bytes in base64.")
    if not _origin_allowed(environ, allowed_origins):
        raise Forbidden("This origin may not open a WebSocket here (SLUICE_CORS_ORIGINS).")
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


class BadHandshake(InvalidRequest):
    """A handshake without a usable key or version: ``400`` naming the version Sluice speaks."""

    @property
    def headers(self) -> dict[str, str]:
        return {"Sec-WebSocket-Version": "13"}


def accept(
    environ: Mapping[str, Any], allowed_origins: tuple[str, ...], max_message_bytes: int, send_timeout_s: float
) -> WebSocket:
    """Check the handshake, answer ``101`` and return the open WebSocket.

    :raise sluice.errors.SluiceError: a handshake to refuse (nothing was written yet).
    """
    answer = _check_handshake(environ, allowed_origins)
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if sock is None:
        raise InvalidRequest("This server cannot hand the connection over to a WebSocket.")
    if send_timeout_s > 0:
        sock.settimeout(send_timeout_s)
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + answer.encode("ascii") + b"\r\n\r\n"
    )
    websocket = WebSocket(sock, max_message_bytes)
    websocket.start()
    return websocket


class WebSocket:
    """One open WebSocket: messages in (``take``), frames out (``send``); see the module docstring."""

    def __init__(self, sock: socket.socket, max_message_bytes: int) -> None:
        self.sock = sock
        self.max_message_bytes = max_message_bytes
        #: Set whenever a message, a control frame or the end arrives.
        self.signal = Signal()
        self.closed = False  # no more frames will come; the session ends
        self.pong_seen = True
        self._proto = Connection(ConnectionType.SERVER)
        self._messages: deque[str | bytes] = deque()
        self._control: list[bytes] = []  # pongs and the close reply, sent by the session
        self._parts: list[str | bytes] = []
        self._size = 0
        self._lock = threading.Lock()  # the reader thread (flask run) and the session
        self._watcher: Any = None

    # -- reading: in the hub (gevent) or a thread (flask run) -----------------------------

    def start(self) -> None:
        """Start reading the client's frames."""
        if gevent_active():
            import gevent

            self._watcher = gevent.get_hub().loop.io(self.sock.fileno(), 1)
            self._watcher.start(self._readable)
        else:
            spawn(self._read_thread)

    def _readable(self) -> None:
        # In the hub: read what has arrived without blocking, never write.
        try:
            while True:
                data = os.read(self.sock.fileno(), _READ)
                if not data:
                    self._feed(None)
                    break
                self._feed(data)
                if len(data) < _READ:
                    break
        except BlockingIOError:
            pass
        except OSError:
            self._feed(None)
        if self.closed:
            self._stop_watching()
        self.signal.set()

    def _read_thread(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(_READ)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            self._feed(data or None)
            self.signal.set()

    def _feed(self, data: bytes | None) -> None:
        with self._lock:
            try:
                self._proto.receive_data(data)
                self._take_events()
            except (LocalProtocolError, RemoteProtocolError):
                self.closed = True

    def _take_events(self) -> None:
        for event in self._proto.events():
            if isinstance(event, TextMessage | BytesMessage):
                self._size += len(event.data)
                if self._size > self.max_message_bytes:
                    self._close_with(CloseReason.MESSAGE_TOO_BIG, "Message too big")
                    return
                self._parts.append(bytes(event.data) if isinstance(event.data, bytearray) else event.data)
                if event.message_finished:
                    parts, self._parts, self._size = self._parts, [], 0
                    if isinstance(event, TextMessage):
                        self._messages.append("".join(parts))  # type: ignore[arg-type]
                    else:
                        self._messages.append(b"".join(parts))  # type: ignore[arg-type]
            elif isinstance(event, Ping):
                self._control.append(self._proto.send(event.response()))
            elif isinstance(event, Pong):
                self.pong_seen = True
            elif isinstance(event, CloseConnection):
                if self._proto.state is ConnectionState.REMOTE_CLOSING:
                    self._control.append(self._proto.send(event.response()))
                self.closed = True
                return

    def _close_with(self, code: int, reason: str) -> None:
        try:
            self._control.append(self._proto.send(CloseConnection(code, reason)))
        except LocalProtocolError:
            pass
        self.closed = True

    def _stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None

    # -- the session's side ---------------------------------------------------------------

    def take(self) -> list[str | bytes]:
        """The whole messages received since the last call (and send what the reader owes: pongs, a close)."""
        with self._lock:
            messages = list(self._messages)
            self._messages.clear()
            control, self._control = self._control, []
        if control:
            self._write(b"".join(control))
        return messages

    def send(self, text: str) -> None:
        """One text message, written whole.

        :raise OSError: the client is gone, or did not read for ``SLUICE_SEND_TIMEOUT_S``.
        """
        with self._lock:
            if self.closed:
                raise ConnectionResetError("the WebSocket is closed")
            data = self._proto.send(TextMessage(data=text))
        self._write(data)

    def ping(self) -> bool:
        """Ping the client; False (and the socket closed) if the last ping got no pong."""
        if not self.pong_seen:
            self.close(CloseReason.POLICY_VIOLATION, "Ping/Pong timeout")
            return False
        self.pong_seen = False
        with self._lock:
            data = self._proto.send(Ping())
        self._write(data)
        return True

    def _write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)  # gevent's sendall loops over partial sends
        except OSError:
            self.closed = True
            raise

    def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """Say goodbye (if the socket still takes it) and stop reading; the server closes the socket."""
        with self._lock:
            try:
                data = b"".join(self._control) + self._proto.send(CloseConnection(code, reason))
            except LocalProtocolError:
                data = b"".join(self._control)
            self._control = []
            self.closed = True
        self._stop_watching()
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                pass
