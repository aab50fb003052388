"""``GET /ws``: the same generations and JSON events over a WebSocket (flask-sock).

Client messages (JSON text frames):

- ``{"type": "chat", …chat body}`` starts a detached generation and streams its
  events, each frame the same JSON object as the SSE ``data``;
- ``{"type": "cancel"}`` cancels it (the upstream is closed; the last frame is
  ``done`` with ``finish_reason: "cancelled"``);
- ``{"type": "resume", "id": "gen_…", "after": N}`` re-attaches after a
  reconnect and streams what came after event ``N``.

Events are numbered 0, 1, 2 … in each generation, so a client knows ``after``
by counting the frames of that generation (the ``start`` frame is 0). An invalid
message (bad JSON, nested 100,000 deep, a lone surrogate: ``chat.loads``, the
body's rules) gets an ``error`` frame and the socket stays usable; one
generation streams per socket at a time. Each ``chat`` and ``resume`` message
spends one request of the key's rate limit (``limits.spend_request``); over
it, an ``error`` frame ``rate_limited`` with ``retry_after``. Before the socket
is accepted the handshake is checked (key, HTTP version, ``Origin``) and its
writes are made whole: see ``sluice.websocket``. Closing the socket detaches:
the generation runs on within ``SLUICE_DETACH_GRACE_S`` so a reconnect can
resume it. The server pings every ``SLUICE_WS_PING_S`` so proxies keep the
connection.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Blueprint, current_app, g
from flask_sock import Sock

from .. import limits
from ..broker import one_by_one
from ..chat import loads, parse_chat
from ..errors import GenerationNotFound, InvalidRequest, SluiceError
from ..events import TERMINAL, dumps, error
from ..generations import Generations
from ..tasks import Task, spawn
from ..websocket import check_handshake

bp = Blueprint("ws", __name__)
bp.before_request(check_handshake)
sock = Sock()
log = logging.getLogger(__name__)


def _error_frame(exc: SluiceError) -> str:
    """An ``error`` frame; ``retry_after`` when the error carries a ``Retry-After``."""
    data = error(exc)
    retry_after = exc.headers.get("Retry-After")
    if retry_after is not None:
        data["error"].setdefault("retry_after", int(retry_after))
    return dumps(data)


class _Session:
    """One WebSocket: at most one generation relayed at a time, one writer lock."""

    def __init__(
        self, ws: Any, generations: Generations, default_model: str, heartbeat_s: float, key: str | None, keys_on: bool
    ) -> None:
        self.ws = ws
        self.key = key
        self.keys_on = keys_on
        self.generations = generations
        self.default_model = default_model
        self.heartbeat_s = heartbeat_s
        self.generation_id: str | None = None
        self._send_lock = threading.Lock()
        self._relay: Task | None = None
        self._active = threading.Event()  # set while a relay streams

    def send(self, text: str) -> None:
        with self._send_lock:
            self.ws.send(text)

    def handle(self, raw: str | bytes) -> None:
        """Act on one client message; a bad one is answered with an ``error`` frame."""
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
            self.send(_error_frame(exc))
        except Exception:  # a bug: logged, and the socket lives (no HTTP 500 written into it)
            log.exception("unhandled error on a WebSocket message")
            self.send(_error_frame(SluiceError()))

    def _busy(self) -> None:
        if self._active.is_set():
            raise InvalidRequest("A generation is streaming on this socket; cancel it or wait for its end.")

    def _chat(self, message: dict[str, Any]) -> None:
        self._busy()
        body = {key: value for key, value in message.items() if key != "type"}
        chat = parse_chat(body, self.default_model, g.get("request_id"))
        generation = self.generations.start_detached(chat, owner=self.key)
        self._follow(generation.id, -1)

    def _resume(self, message: dict[str, Any]) -> None:
        self._busy()
        generation_id, after = message.get("id"), message.get("after", -1)
        if not isinstance(generation_id, str):
            raise InvalidRequest("'id' must be a generation id.")
        if not isinstance(after, int) or isinstance(after, bool) or after < -1:
            raise InvalidRequest("'after' must be an event number.")
        broker = self.generations.broker
        broker.state(generation_id)  # unknown → error frame
        if self.keys_on and broker.key_of(generation_id) != self.key:
            raise GenerationNotFound()
        self._follow(generation_id, after)

    def _cancel(self) -> None:
        if self.generation_id is None or not self._active.is_set():
            raise InvalidRequest("Nothing to cancel.")
        if not self.generations.cancel(self.generation_id):
            self.generations.broker.request_cancel(self.generation_id)

    def _follow(self, generation_id: str, after: int) -> None:
        broker = self.generations.broker
        listener = one_by_one(broker.listen(generation_id, after, self.heartbeat_s))
        self.detach()
        broker.attach(generation_id)
        self.generation_id = generation_id
        self._active.set()
        self._relay = spawn(self._pump, listener)

    def _pump(self, listener: Any) -> None:
        try:
            for event in listener:
                if not self._active.is_set():
                    return
                if event is not None:
                    self.send(event.json)
                    if event.type in TERMINAL:
                        return
        except Exception:  # the socket closed under us: the main loop detaches
            return
        finally:
            self._active.clear()

    def detach(self) -> None:
        """Stop relaying and count this socket out of the generation's listeners."""
        self._active.clear()
        if self._relay is not None:
            self._relay.kill()
            self._relay = None
        if self.generation_id is not None:
            self.generations.broker.detach(self.generation_id)
            self.generation_id = None


@sock.route("/ws", bp=bp)  # type: ignore[untyped-decorator]  # flask-sock ships no types
def websocket(ws: Any) -> None:
    """Serve one WebSocket until the client closes it."""
    config = current_app.config
    session = _Session(
        ws,
        current_app.extensions["sluice"],
        config["SLUICE_DEFAULT_MODEL"],
        config["SLUICE_HEARTBEAT_S"],
        g.get("key_id"),
        bool(current_app.extensions["sluice.keys"]),
    )
    try:
        while True:
            session.handle(ws.receive())
    finally:
        session.detach()


def init_app(app: Any) -> None:
    """Pings keep the socket open through proxies; messages are as large as a chat body."""
    app.config.setdefault(
        "SOCK_SERVER_OPTIONS",
        {"ping_interval": app.config["SLUICE_WS_PING_S"], "max_message_size": app.config["SLUICE_MAX_BODY_BYTES"]},
    )
    sock.init_app(app)
