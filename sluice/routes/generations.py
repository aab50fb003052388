"""Durable generations: start in the background, follow, resume, inspect, cancel.

``POST /api/generations`` starts a detached generation (it runs on while no one
listens, within ``SLUICE_DETACH_GRACE_S``); ``GET …/events`` replays what came
after ``Last-Event-ID`` (or ``?after=N``; from event 0 when neither is given),
then follows live; ``DELETE`` cancels it wherever it runs.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from ..chat import parse_chat, read_json
from ..errors import InvalidRequest
from ..render.events import SSEEvents
from . import relay

bp = Blueprint("generations", __name__, url_prefix="/api/generations")


def _after() -> int:
    """The last event the client has: ``Last-Event-ID``, else ``?after=``, else none (-1)."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        raw = request.args.get("after")
    if raw is None or raw.strip() == "":
        return -1
    try:
        after = int(raw.strip())
    except ValueError:
        raise InvalidRequest("Last-Event-ID / after must be an event number.") from None
    if after < -1:
        raise InvalidRequest("Last-Event-ID / after must be an event number.")
    return after


@bp.post("")
def start() -> tuple[Response, int]:
    """Start a chat in the background: ``202 {"id", "events_url"}``."""
    config = current_app.config
    body = read_json(request, config["SLUICE_MAX_BODY_BYTES"])
    chat = parse_chat(body, config["SLUICE_DEFAULT_MODEL"])
    generation = relay.start_background(chat)
    events_url = url_for("generations.events", generation_id=generation.id)
    response = jsonify(id=generation.id, events_url=events_url)
    response.headers["Location"] = url_for("generations.state", generation_id=generation.id)
    return response, 202


@bp.get("/<generation_id>")
def state(generation_id: str) -> Response:
    """``{"id", "model", "status", "events"}``."""
    return jsonify(relay.owned_state(generation_id))


@bp.get("/<generation_id>/events")
def events(generation_id: str) -> Response:
    """Replay after the client's position, then follow live; ``204`` if nothing is left."""
    after = _after()
    current = relay.owned_state(generation_id)
    if current["status"] != "running" and after >= current["events"] - 1:
        # Ended and fully seen: 204 makes EventSource stop reconnecting.
        return Response(status=204)
    return relay.follow(generation_id, after, SSEEvents(current_app.config["SLUICE_RETRY_MS"]))


@bp.delete("/<generation_id>")
def cancel(generation_id: str) -> Response:
    """Cancel: the upstream is closed and every listener gets ``done`` / ``cancelled``.

    Answers with the state once the end is recorded (or after a short wait);
    cancelling an ended generation changes nothing and answers its state.
    """
    return jsonify(relay.cancel(generation_id, relay.owned_state(generation_id)))
