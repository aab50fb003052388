"""A generation tied to one HTTP connection: held, relayed, and stopped with it.

``open_stream`` starts the generation, watches the client's socket, and holds
the response (SPEC.md "Errors") until the first event after ``start``, a
failure, or ``SLUICE_HOLD_S``. A failure while held is raised as the
contract's HTTP error; otherwise the caller renders ``Relay.events()`` in its
format. The response's own greenlet drives the generation (no task of its own,
no trip through the broker, which still records every event for anyone else
who follows it by id). ``Relay.close`` (called by the WSGI server when the
response ends or the client goes away) stops the watcher and ends a
generation still running, so the upstream is closed within the second either
way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Response, current_app, g, request

from . import disconnect, sse
from .broker import one_by_one
from .chat import ChatRequest
from .errors import error_from_event
from .events import Event
from .generations import Generation, Generations
from .hotpath import PassThroughResponse

__all__ = ["Answer", "Relay", "collect", "open_stream", "streaming_response"]


class Relay:
    """The events of one connection-tied generation; close it exactly when the response ends."""

    def __init__(self, generations: Generations, generation: Generation, stop_watch: Callable[[], None]) -> None:
        self.generations = generations
        self.generation = generation
        self._stop_watch = stop_watch
        self.held: list[Event] = []  # what the hold read before the response began

    def events(self) -> Iterator[list[Event] | None]:
        """All events from ``start``, in batches; ``None`` after each idle gap of ``SLUICE_HEARTBEAT_S``."""
        assert self.generation.events is not None
        # A C-level chain, not a generator: one layer less to resume on every event.
        return itertools.chain((self.held,) if self.held else (), self.generation.events)

    def close(self) -> None:
        """Stop watching the client; end the generation if it still runs."""
        self._stop_watch()
        self.generations.cancel(self.generation.id, "disconnected")
        assert self.generation.events is not None
        # Runs the runner's cleanup (and the slot's release) wherever it stopped.
        self.generation.events.close()


def streaming_response(chunks: Iterator[bytes], mimetype: str, on_close: Callable[[], None]) -> Response:
    """A streamed response with the stream headers; ``on_close`` runs whenever it ends.

    It runs even if the body was never iterated (a HEAD request, a client gone
    before the first byte), before any other ``call_on_close`` callback.
    """
    disconnect.limit_send(request.environ, current_app.config["SLUICE_SEND_TIMEOUT_S"])
    response = PassThroughResponse(chunks, mimetype=mimetype, headers=sse.HEADERS)
    response.call_on_close(on_close)
    return response


def open_stream(chat: ChatRequest, environ: Mapping[str, Any] | None = None, resumable: bool = True) -> Relay:
    """Start ``chat`` tied to the current connection and hold it (see module docstring).

    :raise sluice.errors.SluiceError: any failure before the first token, within the hold.
    """
    generations: Generations = current_app.extensions["sluice"]
    config = current_app.config
    generation = generations.start_tied(
        chat, g.get("key_id"), config["SLUICE_HOLD_S"], config["SLUICE_HEARTBEAT_S"], resumable
    )
    assert generation.events is not None
    g.generation = generation
    relay = Relay(generations, generation, lambda: None)
    try:
        started = next(generation.events)  # [start]: the runner is under way
        relay.held.extend(started or [])
        relay._stop_watch = disconnect.watch(
            environ if environ is not None else request.environ,
            lambda: generations.cancel(generation.id, "disconnected"),
        )
        first = next(generation.events)  # the first tokens, the end, or None: the hold is over
        if first:
            relay.held.extend(first)
            if first[0].type == "error":  # an end before any token: an HTTP error
                raise error_from_event(first[0].data["error"])
    except BaseException:
        relay.close()
        raise
    return relay


@dataclass
class Answer:
    """A whole answer gathered from its events (``stream: false``)."""

    last: Event  # the done event
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[Any] = field(default_factory=list)

    def add(self, event: Event) -> None:
        """Fold one model event in."""
        kind = event.type
        if kind == "delta":
            self.content.append(event.content or "")
            if '"logprobs"' in event.json:  # most deltas carry none: no decoding for them
                self._add_logprobs(event.data.get("logprobs"))
        elif kind == "reasoning":
            self.reasoning.append(event.content or "")
        elif kind == "refusal":
            self.refusal.append(event.content or "")
        elif kind == "tool_call":
            data = event.data
            call = self.tool_calls.setdefault(
                data["index"], {"id": None, "type": "function", "function": {"name": None, "arguments": ""}}
            )
            if data.get("id") is not None:
                call["id"] = data["id"]
            if data.get("name") is not None:
                call["function"]["name"] = data["name"]
            call["function"]["arguments"] += data.get("arguments", "")

    def _add_logprobs(self, logprobs: Any) -> None:
        # OpenAI gives {"content": [...]} per chunk, Ollama a list: the tokens, in order.
        if isinstance(logprobs, dict):
            logprobs = logprobs.get("content")
        if isinstance(logprobs, list):
            self.logprobs.extend(logprobs)

    @property
    def finish_reason(self) -> str:
        """The done event's finish reason."""
        return str(self.last.data["finish_reason"])

    @property
    def usage(self) -> dict[str, Any]:
        """What the upstream reported (``{}`` for nothing)."""
        return dict(self.last.data.get("usage") or {})

    def message(self, reasoning_key: str = "reasoning") -> dict[str, Any]:
        """The assistant message in OpenAI's shape, reasoning under ``reasoning_key`` (when any)."""
        calls = [self.tool_calls[index] for index in sorted(self.tool_calls)]
        text = "".join(self.content)
        message: dict[str, Any] = {"role": "assistant", "content": None if calls and not text else text}
        if self.reasoning:
            message[reasoning_key] = "".join(self.reasoning)
        if calls:
            message["tool_calls"] = calls
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
            if not text:
                message["content"] = None
        return message


def collect(relay: Relay) -> Answer:
    """Wait for the whole answer.

    :raise sluice.errors.SluiceError: the generation ended with an error.
    """
    try:
        answer: Answer | None = None
        pending: list[Event] = []
        for event in one_by_one(relay.events()):
            if event is None:
                continue
            if event.type == "error":
                raise error_from_event(event.data["error"])
            if event.type == "done":
                answer = Answer(event)
            elif event.type != "start":
                pending.append(event)
        assert answer is not None
        for event in pending:
            answer.add(event)
        return answer
    finally:
        relay.close()
