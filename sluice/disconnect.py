"""Notice that an HTTP client went away, without waiting for the next write.

Under WSGI a dead peer shows only when a write fails, and a stream that waits
for a slow first token writes nothing for a long time. So the client's socket
(``gunicorn.socket``, or ``werkzeug.socket`` under ``flask run``) is watched
for readability: EOF means the client closed. Under gevent this is a libev
I/O watcher, which costs no greenlet while nothing happens; under threads a
small polling thread. A client that half-closes its sending side after the
request looks the same as one that left; such clients are rare and get the
same treatment from Go's net/http.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .tasks import gevent_active, spawn

__all__ = ["limit_send", "watch"]

log = logging.getLogger(__name__)

_POLL_S = 0.2  # thread fallback only (flask run)


def _peer_closed(sock: socket.socket) -> bool | None:
    """True: EOF or reset. False: data waits (a pipelined request). None: nothing yet."""
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return True
    return not data


def watch(environ: Mapping[str, Any], on_gone: Callable[[], object]) -> Callable[[], None]:
    """Call ``on_gone()`` once if the client of ``environ`` disconnects; return a stopper."""
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if sock is None:
        return lambda: None
    try:
        fd = sock.fileno()
    except OSError:
        return lambda: None
    if fd < 0:
        return lambda: None
    if gevent_active():
        return _watch_gevent(sock, fd, on_gone)
    return _watch_thread(sock, on_gone)


def _watch_gevent(sock: socket.socket, fd: int, on_gone: Callable[[], object]) -> Callable[[], None]:
    import gevent

    watcher = gevent.get_hub().loop.io(fd, 1)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            watcher.stop()
            watcher.close()

    def readable() -> None:
        # Runs in the hub: no blocking here, so the reaction gets its own greenlet.
        state = _peer_closed(sock)
        if state is None:
            return
        stop()
        if state:
            gevent.spawn(on_gone)

    watcher.start(readable)
    return stop


def _watch_thread(sock: socket.socket, on_gone: Callable[[], object]) -> Callable[[], None]:
    stopped = threading.Event()

    def poll() -> None:
        while not stopped.is_set():
            try:
                readable, _, _ = select.select([sock], [], [], _POLL_S)
            except (OSError, ValueError):
                return
            if readable:
                state = _peer_closed(sock)
                if state is not None:
                    if state:
                        on_gone()
                    return

    spawn(poll)
    return stopped.set


def limit_send(environ: Mapping[str, Any], seconds: float) -> None:
    """Make a write to this client fail after ``seconds`` without progress.

    A client that stops reading (a frozen tab, a phone gone underground) then
    costs one blocked task for at most that long: the failed write ends the
    response, the response's ``close`` releases the stream, and the client
    resumes from its ``Last-Event-ID``. It never slows anyone else's stream.
    """
    sock = environ.get("gunicorn.socket")
    if sock is not None and seconds > 0:
        try:
            sock.settimeout(seconds)
        except OSError:
            pass
