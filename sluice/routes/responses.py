"""OpenAI's Responses API: ``/v1/responses``, on every provider, as durable generations.

- ``POST /v1/responses``: the body (``sluice.parse.responses``) becomes a chat
  run like any other; ``stream: true`` renders its events as OpenAI's semantic
  events (``sluice.render.responses``), otherwise one ``Response`` object, the
  fold of the same events. Without ``background`` the run is tied to the
  connection (a client that leaves closes the upstream); with
  ``background: true`` it answers at once (``queued``) and runs to its end with
  nobody listening: no detach grace, only a cancel, the run's own limits or a
  failure end it (streamed too, when ``stream`` is also true).
- ``GET /v1/responses/<id>``: its state and output so far (the fold of the
  events kept); ``?stream=true&starting_after=N`` replays the events numbered
  after N, then follows live. Reading is not listening: polling keeps nothing
  alive and stops nothing.
- ``POST /v1/responses/<id>/cancel`` closes the upstream (wherever it runs)
  and answers the response once its end is recorded; ``DELETE`` forgets it.

A response is a generation (``resp_x`` is ``gen_x``) whose meta holds its
stored request (``Stored``): the input ``previous_response_id`` prepends and
the fields the object repeats. It is kept as long as a generation is
(``SLUICE_GENERATION_TTL_S`` after its end), readable from any worker with
Redis, and only with the key that made it (another key gets ``404``).
``store: false`` makes a response nobody can read back: it runs in this
worker alone (it needs no broker), and retrieve, cancel, delete and chaining
answer ``404`` as for an unknown id.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ..broker import one_by_one
from ..chat import read_json
from ..errors import GenerationNotFound, InvalidRequest
from ..events import TERMINAL
from ..fold import Answer
from ..parse.responses import Stored, output_as_input, parse_responses, previous_response_id
from ..render.responses import Head, ResponsesEvents, generation_id_of, response_id_of, response_object
from . import relay

bp = Blueprint("responses", __name__, url_prefix="/v1/responses")

# How long a fold of the events kept waits for one that is due (the count came from the state just read).
_READ_WAIT_S = 1.0


def _not_found(response_id: str, param: str | None = None) -> GenerationNotFound:
    return GenerationNotFound(f"No response with id {response_id[:80]!r} (unknown, expired or deleted).", param=param)


def _owned(response_id: str, param: str | None = None) -> tuple[str, dict[str, Any], Stored]:
    """The generation id, state and stored request of a response this key may read.

    :raise GenerationNotFound: unknown, expired, another key's, not a response, or not stored.
    """
    generation_id = generation_id_of(response_id)
    if generation_id is None:
        raise _not_found(response_id, param)
    try:
        state = relay.owned_state(generation_id)
        stored = Stored.from_meta(relay.generations().broker.meta(generation_id))
    except GenerationNotFound:
        raise _not_found(response_id, param) from None
    if stored is None or not stored.store:
        raise _not_found(response_id, param)
    return generation_id, state, stored


def _fold(generation_id: str, events: int) -> Answer:
    """The fold of the generation's first ``events`` events (all of them once it has ended)."""
    answer = Answer()
    if events <= 0:
        return answer
    listener = relay.generations().broker.listen(generation_id, -1, _READ_WAIT_S)
    try:
        for event in one_by_one(listener):
            if event is None:
                break
            answer.add(event)
            if event.kind in TERMINAL or event.seq >= events - 1:
                break
    finally:
        close = getattr(listener, "close", None)
        if close is not None:
            close()
    return answer


def _history(response_id: str) -> list[dict[str, Any]]:
    """What ``previous_response_id`` prepends: that response's input, then its output as input items.

    :raise GenerationNotFound: unknown, expired or another key's (``param``: previous_response_id).
    :raise InvalidRequest: it has not ended yet.
    """
    generation_id, state, stored = _owned(response_id, "previous_response_id")
    if state["status"] == "running":
        raise InvalidRequest(
            f"Response {response_id[:80]!r} is still in progress; chain from it once it has ended.",
            param="previous_response_id",
        )
    head = Head(response_id, stored.created_at, stored.echo)
    output = response_object(_fold(generation_id, state["events"]), head)["output"]
    return [*(dict(item) for item in stored.input), *output_as_input(output)]


@bp.post("")
def create() -> Response:
    """Create a response: streamed, whole, or in the background."""
    config = current_app.config
    body = read_json(request, config["SLUICE_MAX_BODY_BYTES"])
    previous = previous_response_id(body)
    history = _history(previous) if previous is not None else []
    parsed = parse_responses(body, config["SLUICE_DEFAULT_MODEL"], history)
    stored = Stored(int(time.time()), parsed.input, parsed.echo, parsed.store)
    try:
        if parsed.background:
            generation = relay.start_background(parsed.chat, meta=stored.to_meta(), to_the_end=True)
            head = Head(response_id_of(generation.id), stored.created_at, stored.echo)
            if parsed.stream:
                return relay.follow(generation.id, -1, ResponsesEvents(head))
            return jsonify(response_object(Answer(), head))
        # Not stored: nobody may resume it, so it needs no broker (as /v1/chat/completions).
        stream = relay.open_stream(parsed.chat, resumable=parsed.store, meta=stored.to_meta())
    except InvalidRequest as exc:  # the provider cannot honour a field: name it as the client did
        raise parsed.blame(exc) from None
    head = Head(response_id_of(stream.id), stored.created_at, stored.echo)
    if parsed.stream:
        return relay.respond(stream, ResponsesEvents(head))
    return jsonify(response_object(relay.collect(stream), head))


def _starting_after() -> int:
    raw = request.args.get("starting_after", "").strip()
    if not raw:
        return -1
    try:
        after = int(raw)
    except ValueError:
        raise InvalidRequest("starting_after must be a sequence number.", param="starting_after") from None
    if after < -1:
        raise InvalidRequest("starting_after must be a sequence number.", param="starting_after")
    return after


@bp.get("/<response_id>")
def retrieve(response_id: str) -> Response:
    """The response as it stands; ``?stream=true`` its events after ``starting_after``, then live."""
    generation_id, state, stored = _owned(response_id)
    head = Head(response_id, stored.created_at, stored.echo)
    if request.args.get("stream", "").strip().lower() in ("true", "1"):
        return relay.follow(generation_id, -1, ResponsesEvents(head, _starting_after()))
    return jsonify(response_object(_fold(generation_id, state["events"]), head))


@bp.post("/<response_id>/cancel")
def cancel(response_id: str) -> Response:
    """Cancel: the upstream request is closed; answers the response once its end is recorded."""
    generation_id, state, stored = _owned(response_id)
    state = relay.cancel(generation_id, state)
    head = Head(response_id, stored.created_at, stored.echo)
    return jsonify(response_object(_fold(generation_id, state["events"]), head))


@bp.delete("/<response_id>")
def delete(response_id: str) -> Response:
    """Forget the response (cancelling it first if it runs)."""
    generation_id, _, _ = _owned(response_id)
    relay.generations().delete(generation_id)
    return jsonify(id=response_id, object="response", deleted=True)
