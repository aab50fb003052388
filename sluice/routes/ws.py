"""``GET /ws``: the same generations and JSON events over a WebSocket.

Client messages (JSON text frames):

- ``{"type": "chat", …chat body}`` starts a background generation and streams
  its events, each frame the same JSON object as the SSE ``data``;
- ``{"type": "cancel"}`` cancels it (the upstream is closed; the last frame is
  ``done`` with ``finish_reason: "cancelled"``);
- ``{"type": "resume", "id": "gen_…", "after": N}`` re-attaches after a
  reconnect and streams what came after event ``N``.

Events are numbered 0, 1, 2 … in each generation, so a client knows ``after``
by counting the frames of that generation (the ``start`` frame is 0). An
invalid message gets an ``error`` frame and the socket stays usable; one
generation streams per socket at a time. Closing the socket detaches: the
generation runs on within ``SLUICE_DETACH_GRACE_S`` so a reconnect can resume
it. The server pings every ``SLUICE_WS_PING_S`` so proxies keep the
connection, and closes one whose client answered no ping.

One greenlet per socket, the request's own (the generation's producer is
the other): the session is a listener of the generation plus the WebSocket
renderer, and the socket's reader (``sluice.websocket``) wakes the same
signal the listener waits on, so the session hears the client while it
relays events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from wsproto.frame_protocol import CloseReason

from .. import limits
from ..chat import loads, parse_chat
from ..errors import InvalidRequest, SluiceError
from ..events import TERMINAL, Event, dumps, error
from ..generations import Generations, Policy
from ..render.events import ws_frame
from ..websocket import WebSocket, accept
from . import relay

bp = Blueprint("ws", __name__)

log = logging.getLogger(__name__)


class _Session:
    """One WebSocket: at most one generation relayed at a time, from one greenlet."""

    def __init__(self, ws: WebSocket, generations: Generations, config: dict[str, Any], key: str | None) -> None:
        self.ws = ws
        self.key = key
        self.generations = generations
        self.default_model: str = config["SLUICE_DEFAULT_MODEL"]
        self.grace_s: float = config["SLUICE_DETACH_GRACE_S"]
        self.ping_s: float = config["SLUICE_WS_PING_S"]
        self.generation_id: str | None = None
        self.listener: Iterator[list[Event] | None] | None = None

    def run(self) -> None:
        """Serve the socket until the client closes it (or stops answering pings)."""
        ws = self.ws
        next_ping = time.monotonic() + self.ping_s if self.ping_s > 0 else float("inf")
        self.generations.on_drain.add(ws.signal.set)
        try:
            while not ws.closed:
                for message in ws.take():
                    self.handle(message)
                if ws.closed:
                    break
                if self.generations.draining and self.listener is None:
                    # This worker is going (a reload, a stop): the client reconnects to another.
                    ws.close(CloseReason.GOING_AWAY, "The server is restarting; reconnect.")
                    break
                now = time.monotonic()
                if now >= next_ping:
                    if not ws.ping():
                        break
                    next_ping = now + self.ping_s
                if self.listener is None:
                    ws.signal.wait(max(0.0, next_ping - time.monotonic()) if next_ping != float("inf") else None)
                    continue
                self._relay()
        except OSError:
            pass  # the client is gone, or stopped reading for SLUICE_SEND_TIMEOUT_S
        finally:
            self.generations.on_drain.discard(ws.signal.set)
            self.detach()
            if not ws.closed:
                ws.close()

    def _relay(self) -> None:
        """One turn of the listener: the events that came (``[]`` when the client spoke instead)."""
        assert self.listener is not None
        try:
            batch = next(self.listener)
        except StopIteration:
            self.detach()
            return
        for event in batch or ():
            self.ws.send(ws_frame(event))
            if event.kind in TERMINAL:
                self.detach()
                return

    def error_frame(self, exc: SluiceError) -> None:
        """An ``error`` frame; ``retry_after`` when the error carries a ``Retry-After``."""
        data = error(exc)
        retry_after = exc.headers.get("Retry-After")
        if retry_after is not None:
            data["error"].setdefault("retry_after", int(retry_after))
        self.ws.send(dumps(data))

    def handle(self, raw: str | bytes) -> None:
        """Act on one client message; a bad one is answered with an ``error`` frame.

        Messages are decoded by the request body's rules (``chat.loads``); each
        ``chat`` and ``resume`` spends one request of the key's rate limit.
        """
        try:
            message = loads(raw)
            if not isinstance(message, dict):
                raise InvalidRequest("Each message must be a JSON object.")
            kind = message.get("type")
            if kind == "chat":
                limits.spend_request()
                self._chat(message)
            elif kind == "resume":
                limits.spend_request()
                self._resume(message)
            elif kind == "cancel":  # never limited: stopping what one started is always allowed
                self._cancel()
            else:
                raise InvalidRequest("'type' must be chat, resume or cancel.", param="type")
        except SluiceError as exc:
            self.error_frame(exc)
        except OSError:
            raise  # the socket: the session ends
        except Exception:  # a bug: logged, and the socket lives (no HTTP 500 written into it)
            log.exception("unhandled error on a WebSocket message")
            self.error_frame(SluiceError())

    def _busy(self) -> None:
        if self.listener is not None:
            raise InvalidRequest("A generation is streaming on this socket; cancel it or wait for its end.")

    def _chat(self, message: dict[str, Any]) -> None:
        self._busy()
        body = {key: value for key, value in message.items() if key != "type"}
        chat = parse_chat(body, self.default_model, g.get("request_id"))
        generation = self.generations.start(chat, self.key, Policy.background(self.grace_s))
        self._follow(generation.id, -1)

    def _resume(self, message: dict[str, Any]) -> None:
        self._busy()
        generation_id, after = message.get("id"), message.get("after", -1)
        if not isinstance(generation_id, str):
            raise InvalidRequest("'id' must be a generation id.")
        if not isinstance(after, int) or isinstance(after, bool) or after < -1:
            raise InvalidRequest("'after' must be an event number.")
        relay.owned_state(generation_id)  # unknown, or another key's → an error frame
        self._follow(generation_id, after)

    def _cancel(self) -> None:
        if self.generation_id is None or self.listener is None:
            raise InvalidRequest("Nothing to cancel.")
        if not self.generations.cancel(self.generation_id):
            self.generations.broker.request_cancel(self.generation_id)

    def _follow(self, generation_id: str, after: int) -> None:
        broker = self.generations.broker
        self.listener = broker.listen(generation_id, after, self.ping_s or 15.0, wake=self.ws.signal)
        broker.attach(generation_id)
        self.generation_id = generation_id

    def detach(self) -> None:
        """Stop relaying and count this socket out of the generation's listeners."""
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.close()  # type: ignore[attr-defined]  # a generator
        if self.generation_id is not None:
            self.generations.broker.detach(self.generation_id)
            self.generation_id = None


class _Ended(Response):
    """What the view returns once the socket is done: nothing more for the server to write."""

    def __call__(self, environ: Any, start_response: Any) -> Any:
        if "gunicorn.socket" in environ:
            raise StopIteration()  # gunicorn closes the connection, writing nothing
        return super().__call__(environ, start_response)


@bp.route("/ws", websocket=True)
def websocket() -> Response:
    """Serve one WebSocket until the client closes it."""
    config = current_app.config
    ws = accept(
        request.environ,
        config["SLUICE_CORS_ORIGINS"],
        config["SLUICE_MAX_BODY_BYTES"],
        config["SLUICE_SEND_TIMEOUT_S"],
    )
    _Session(ws, current_app.extensions["sluice"], config, g.get("key_id")).run()
    return _Ended()
