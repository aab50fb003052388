"""One structured (JSON) log line per request, and the request id.

The request id is the client's (or nginx's) ``X-Request-ID`` when it is a sane
token, else a fresh one; it is returned in ``X-Request-ID`` and names the
request in every line. The line is written when the response is closed — for a
stream, when it ends or the client goes — so it carries what only the end
knows: status, model, generation, time to first token, duration, tokens and
outcome. Keys never appear (only their short hash), nor do bodies.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any

from flask import Flask, Response, g, request

from .events import dumps
from .limits import client_address

__all__ = ["access_log", "init_app"]

access_log = logging.getLogger("sluice.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


def _stderr_handler(fmt: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    return handler


def _new_request_id() -> str:
    # 32 hex digits, as uuid4().hex gave, without building a UUID per request.
    return os.urandom(16).hex()


def _begin() -> None:
    g.started = time.monotonic()
    supplied = request.headers.get("X-Request-ID", "")
    g.request_id = supplied if _REQUEST_ID.match(supplied) else _new_request_id()
    g.generation = None


def _finish(response: Response) -> Response:
    request_id = g.get("request_id") or _new_request_id()
    response.headers["X-Request-ID"] = request_id
    line: dict[str, Any] = {
        "request_id": request_id,
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        "client": client_address(),
    }
    if getattr(g, "key_id", None):
        line["key"] = g.key_id
    generation = g.get("generation")
    started = g.get("started", time.monotonic())

    def write() -> None:
        # Runs when the body is closed: after the last byte of a stream, or when its client left.
        line["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        if generation is not None:
            line.update(generation.summary())
        access_log.info(dumps(line))

    response.call_on_close(write)
    return response


def init_app(app: Flask) -> None:
    """Request ids, the access log (JSON lines on stderr) and Sluice's own log."""
    level = app.config["SLUICE_LOG_LEVEL"].upper()
    if not access_log.handlers:
        access_log.addHandler(_stderr_handler("%(message)s"))
        access_log.propagate = False
    access_log.setLevel(level)
    sluice_log = logging.getLogger("sluice")
    if not sluice_log.handlers:
        sluice_log.addHandler(_stderr_handler("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        sluice_log.propagate = False
    for name in ("sluice", "providers"):
        logging.getLogger(name).setLevel(level)
    if not logging.getLogger("providers").handlers:
        logging.getLogger("providers").addHandler(sluice_log.handlers[0])
        logging.getLogger("providers").propagate = False
    app.before_request(_begin)
    app.after_request(_finish)
