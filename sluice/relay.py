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
from typing import Any

from flask import Response, current_app, g, request

from .broker import one_by_one
from .chat import ChatRequest
from .errors import error_from_code
from .events import Event
from .generations import Generation, Generations
from . import disconnect, sse

__all__ = ["Relay", "open_stream", "streaming_response", "collect"]


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


class _Body:
    """The WSGI body of a stream: the server iterates ``chunks`` itself and calls ``close``.

    Werkzeug would wrap a streamed body in a re-encoding generator and a
    ``ClosingIterator``: two more layers to resume for every event. The bytes
    are the same either way.
    """

    __slots__ = ("chunks", "close")

    def __init__(self, chunks: Iterator[bytes], close: Callable[[], None]) -> None:
        self.chunks = chunks
        self.close = close

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks


class _StreamResponse(Response):
    """A response whose body (bytes chunks) goes to the WSGI server as it is."""

    def get_app_iter(self, environ: Mapping[str, Any]) -> Any:
        status = self.status_code
        if environ["REQUEST_METHOD"] == "HEAD" or 100 <= status < 200 or status in (204, 304):
            return super().get_app_iter(environ)  # type: ignore[arg-type]
        # ``close`` closes the chunks, then runs the call_on_close callbacks.
        return _Body(self.response, self.close)  # type: ignore[arg-type]


def streaming_response(chunks: Iterator[bytes], mimetype: str, on_close: Callable[[], None]) -> Response:
    """A streamed response with the stream headers; ``on_close`` runs whenever it ends.

    It runs even if the body was never iterated (a HEAD request, a client gone
    before the first byte), before any other ``call_on_close`` callback.
    """
    disconnect.limit_send(request.environ, current_app.config["SLUICE_SEND_TIMEOUT_S"])
    response = _StreamResponse(chunks, mimetype=mimetype, headers=sse.HEADERS)
    response.call_on_close(on_close)
    return response


def open_stream(chat: ChatRequest, environ: Mapping[str, Any] | None = None) -> Relay:
    """Start ``chat`` tied to the current connection and hold it (see module docstring).

    :raise sluice.errors.SluiceError: any failure before the first token, within the hold.
    """
    generations: Generations = current_app.extensions["sluice"]
    config = current_app.config
    generation = generations.start(
        chat, owner=g.get("key_id"), drive=(config["SLUICE_HOLD_S"], config["SLUICE_HEARTBEAT_S"])
    )
    assert generation.events is not None
    g.generation = generation
    relay = Relay(generations, generation, lambda: None)
    try:
        relay.held.extend(next(generation.events) or ())  # [start]: the runner is under way
        relay._stop_watch = disconnect.watch(
            environ if environ is not None else request.environ,
            lambda: generations.cancel(generation.id, "disconnected"),
        )
        first = next(generation.events)  # the first tokens, the end, or None: the hold is over
        if first:
            relay.held.extend(first)
            if first[0].type == "error":  # an end before any token: an HTTP error
                error = first[0].data["error"]
                raise error_from_code(error["code"], error["message"])
    except BaseException:
        relay.close()
        raise
    return relay


def collect(relay: Relay) -> tuple[str, Event]:
    """Wait for the whole answer: its text and the final event.

    :raise sluice.errors.SluiceError: the generation ended with an error.
    """
    try:
        parts = []
        last: Event | None = None
        for event in one_by_one(relay.events()):
            if event is None:
                continue
            last = event
            if event.type == "delta":
                parts.append(event.content)
        assert last is not None
        if last.type == "error":
            raise error_from_code(last.data["error"]["code"], last.data["error"]["message"])
        return "".join(parts), last
    finally:
        relay.close()
