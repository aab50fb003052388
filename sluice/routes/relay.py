"""How a route answers with a generation: start it, hold it, then render it or fold it.

Every answer is a listener plus a renderer (``sluice.render``). A route
parses its body into a ``ChatRequest``, then:

- ``open_stream(chat)`` starts a generation tied to this connection and holds
  the response (SPEC "Errors") until the first event after ``start``, a
  failure, or ``SLUICE_HOLD_S``: a failure while held is raised as the
  contract's HTTP error (the dialect's error shape, see ``sluice.errors``);
- ``respond(stream, renderer)`` streams it in the renderer's format, and the
  generation ends with the response (the client left, a write timed out);
- ``collect(stream)`` waits for the whole answer instead: the fold
  (``sluice.fold``) of the same events;
- ``start_background(chat, …)`` starts one that runs on while no one listens,
  and ``follow(id, after, renderer)`` is a listener by id from any position
  (``GET /api/generations/<id>/events``, a dialect's resume).

The client's socket is watched while the response is held or silent, so a
client that leaves is noticed without waiting for a write (``disconnect``).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from flask import Response, current_app, g, request

from .. import disconnect, sse
from ..broker import one_by_one
from ..chat import ChatRequest
from ..errors import GenerationNotFound
from ..events import TERMINAL, Event, Kind
from ..fold import Answer
from ..generations import Generation, Generations, Policy
from ..hotpath import PassThroughResponse
from ..render import Renderer, render

__all__ = [
    "Stream",
    "cancel",
    "collect",
    "follow",
    "generations",
    "open_stream",
    "owned_state",
    "respond",
    "start_background",
    "streaming_response",
]


def _with_request_id(chat: ChatRequest) -> ChatRequest:
    """``chat`` carrying this request's id (it goes upstream as ``X-Request-ID``), whatever parsed it."""
    if chat.request_id is None and g.get("request_id"):
        return dataclasses.replace(chat, request_id=g.request_id)
    return chat


def generations() -> Generations:
    """This worker's generations."""
    found: Generations = current_app.extensions["sluice"]
    return found


class Stream:
    """A tied generation's own response: its first listener, held; render it or fold it, once."""

    def __init__(self, generations: Generations, generation: Generation) -> None:
        self.generations = generations
        self.generation = generation
        self.listener = generation.listen()
        self.held: list[Event] = []  # what the hold read before the response began
        self._stop_watch: Callable[[], None] = lambda: None

    @property
    def id(self) -> str:
        """The generation's id."""
        return self.generation.id

    def batches(self) -> Iterator[list[Event] | None]:
        """All events from ``start``, in batches; ``None`` after each idle gap of ``SLUICE_HEARTBEAT_S``."""
        # A C-level chain, not a generator: one layer less to resume on every event.
        return itertools.chain((self.held,) if self.held else (), self.listener)

    def leave(self) -> None:
        """The client has gone (or the response ended): the generation ends unless someone else listens."""
        self.generations.leave(self.generation)

    def close(self) -> None:
        """Stop watching the client and listening; leave the generation."""
        self._stop_watch()
        self.listener.close()  # type: ignore[attr-defined]  # a generator
        self.leave()


def streaming_response(chunks: Iterator[bytes], mimetype: str, on_close: Callable[[], None]) -> Response:
    """A streamed response with the stream headers; ``on_close`` runs whenever it ends.

    It runs even if the body was never iterated (a HEAD request, a client gone
    before the first byte), before any other ``call_on_close`` callback.
    """
    disconnect.limit_send(request.environ, current_app.config["SLUICE_SEND_TIMEOUT_S"])
    response = PassThroughResponse(chunks, mimetype=mimetype, headers=sse.HEADERS)
    response.call_on_close(on_close)
    return response


def open_stream(
    chat: ChatRequest, resumable: bool = True, environ: Mapping[str, Any] | None = None, meta: str | None = None
) -> Stream:
    """Start ``chat`` tied to the current connection and hold it (see the module docstring).

    :param resumable: the client learns the id and may resume by it (see ``Policy``).
    :param meta: text kept with the generation (``Broker.meta``), as for ``start_background``.
    :raise sluice.errors.SluiceError: any failure before the first token, within the hold.
    """
    found = generations()
    config = current_app.config
    policy = Policy.tied_to(config["SLUICE_HOLD_S"], config["SLUICE_HEARTBEAT_S"], resumable)
    generation = found.start(_with_request_id(chat), g.get("key_id"), policy, meta)
    g.generation = generation
    stream = Stream(found, generation)
    try:
        stream._stop_watch = disconnect.watch(environ if environ is not None else request.environ, stream.leave)
        # Held until an event after ``start`` (the first tokens, or the end) or the hold's idle gap.
        for batch in stream.listener:
            if batch is None:
                break  # the hold is over: 200, the start event, then pings
            stream.held.extend(batch)
            first = next((event for event in batch if event.kind is not Kind.START), None)
            if first is not None:
                if first.kind is Kind.ERROR:  # an end before any token: an HTTP error
                    raise first.error
                break
    except BaseException:
        stream.close()
        raise
    return stream


def respond(stream: Stream, renderer: Renderer) -> Response:
    """Stream ``stream`` in ``renderer``'s format; the generation ends with the response."""
    return streaming_response(render(stream.batches(), renderer), renderer.mimetype, stream.close)


def collect(stream: Stream) -> Answer:
    """Wait for the whole answer: the fold of its events.

    :raise sluice.errors.SluiceError: the generation ended with an error.
    """
    answer = Answer()
    try:
        for event in one_by_one(stream.batches()):
            if event is None:
                continue
            answer.add(event)
            if event.kind in (Kind.DONE, Kind.ERROR):
                break
    finally:
        stream.close()
    if answer.error is not None:
        raise answer.error
    return answer


def start_background(chat: ChatRequest, meta: str | None = None, to_the_end: bool = False) -> Generation:
    """Start ``chat`` in the background, owned by the request's key.

    :param meta: text kept with the generation (``Broker.meta``).
    :param to_the_end: runs to its end with no listener attached (no detach grace:
        only a cancel, its own limits or a failure end it); otherwise cancelled once
        no listener has been attached for ``SLUICE_DETACH_GRACE_S``.
    """
    grace = None if to_the_end else current_app.config["SLUICE_DETACH_GRACE_S"]
    generation = generations().start(_with_request_id(chat), g.get("key_id"), Policy.background(grace), meta)
    g.generation = generation
    return generation


def owned_state(generation_id: str) -> dict[str, Any]:
    """The generation's state; with API keys on, only for the key that started it.

    :raise sluice.errors.GenerationNotFound: unknown, expired, or another key's.
    """
    broker = generations().broker
    state = broker.state(generation_id)
    if current_app.extensions["sluice.keys"] and broker.key_of(generation_id) != g.get("key_id"):
        raise GenerationNotFound()  # the same answer as for an unknown id: ids reveal nothing
    return state


# How long a cancel waits for the producer to record the end.
_CANCEL_WAIT_S = 2.0


def cancel(generation_id: str, state: dict[str, Any]) -> dict[str, Any]:
    """Cancel a running generation wherever it runs; its state once the end is recorded (or after 2 s).

    The caller has checked it is the key's (``owned_state``, which gave ``state``);
    cancelling an ended generation changes nothing.
    """
    if state["status"] != "running":
        return state
    found = generations()
    broker = found.broker
    if not found.cancel(generation_id):
        broker.request_cancel(generation_id)
    for event in one_by_one(broker.listen(generation_id, state["events"] - 1, _CANCEL_WAIT_S)):
        if event is None or event.kind in TERMINAL:
            break
    return broker.state(generation_id)


def follow(generation_id: str, after: int, renderer: Renderer) -> Response:
    """A listener by id: everything after event ``after``, then live until the end, rendered.

    The caller has checked the generation exists and is the key's (``owned_state``).
    """
    broker = generations().broker
    listener = broker.listen(generation_id, after, current_app.config["SLUICE_HEARTBEAT_S"])
    broker.attach(generation_id)
    return streaming_response(render(listener, renderer), renderer.mimetype, lambda: broker.detach(generation_id))
