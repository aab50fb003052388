"""The one loop that runs a provider and numbers its events.

::

    pump task                     runner (its own task)                broker
    provider.stream() ──piece──▶  queue.get(timeout=deadline) ──Event──▶ publish
                      ─finish/─▶  start, delta…, done | error
                       failure
    abort(reason) ── closes the upstream, kills the pump, wakes the runner

The pump only reads the provider, so killing it (or closing its upstream)
never interrupts a write to the broker. The runner owns every decision that
is the same for all providers: the first-token and idle deadlines, the event
numbers, the single ``done`` or ``error`` that ends each generation, and the
mapping of failures to error events.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import dataclass

from providers import Abort, Finish, Provider

from . import events
from .chat import ChatRequest
from .errors import SluiceError, UpstreamError, UpstreamTimeout
from .events import Event
from .tasks import spawn

__all__ = ["Limits", "run"]

log = logging.getLogger(__name__)

_PIECE, _FINISH, _FAIL, _ABORTED = range(4)


@dataclass(frozen=True, slots=True)
class Limits:
    """Deadlines and bounds the runner enforces for every provider."""

    first_token_s: float = 60.0
    idle_s: float = 60.0
    # Events kept per generation, the final one included; past it the answer
    # ends with finish_reason "length", so one runaway model cannot fill memory.
    max_events: int = 100_000


def _pump(
    stream: Generator[str, None, Finish], inbox: queue.SimpleQueue, abort: Abort
) -> None:
    """Read the provider into ``inbox``; the generator is closed on every exit."""
    try:
        with closing(stream):
            while True:
                try:
                    piece = next(stream)
                except StopIteration as stop:
                    inbox.put((_FINISH, stop.value if isinstance(stop.value, Finish) else Finish()))
                    return
                if piece:  # empty pieces are noise (Ollama's final line, role-only chunks)
                    inbox.put((_PIECE, piece))
    except BaseException as exc:  # GreenletExit included: the runner must hear of it
        inbox.put((_FAIL, exc))
        if not isinstance(exc, Exception):
            raise


def run(
    generation_id: str,
    request: ChatRequest,
    provider: Provider,
    model: str,
    abort: Abort,
    publish: Callable[[Event], None],
    limits: Limits,
) -> Event:
    """Run one generation to its end, publishing every event; return the last one.

    :param model: the model's name at the provider (``llama3``).
    :param publish: receives ``start``, the deltas and one ``done`` or ``error``.
    """
    seq = 0

    def emit(data: dict) -> Event:
        nonlocal seq
        event = Event.make(seq, data)
        seq += 1
        publish(event)
        return event

    emit(events.start(generation_id, request.model))
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    # Registered before the pump starts so an abort in any phase wakes the runner.
    abort.on_abort(lambda: inbox.put((_ABORTED, None)))
    try:
        stream = provider.stream(request, model, abort)
    except SluiceError as exc:
        return emit(events.error(exc))
    pump = spawn(_pump, stream, inbox, abort)
    abort.on_abort(pump.kill)

    pieces = 0
    deadline = time.monotonic() + limits.first_token_s
    try:
        while True:
            try:
                kind, value = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                abort.abort("timeout")
                kind, value = _ABORTED, None
            if abort.is_set:
                kind = _ABORTED
            if kind == _PIECE:
                pieces += 1
                deadline = time.monotonic() + limits.idle_s
                emit(events.delta(value))
                if seq >= limits.max_events - 1:  # room for the final event only
                    abort.abort("length")
            elif kind == _FINISH:
                return emit(events.done(value))
            elif kind == _FAIL:
                return emit(events.error(_as_error(value)))
            else:
                return _emit_aborted(emit, abort.reason, pieces)
    finally:
        # Whatever ended the loop, the upstream is closed and the pump ends.
        abort.abort("finished")


def _emit_aborted(emit: Callable[[dict], Event], reason: str | None, pieces: int) -> Event:
    if reason == "timeout":
        return emit(events.error(UpstreamTimeout()))
    # length (too many events), cancelled, disconnected, detached: the usage so far.
    finish_reason = "length" if reason == "length" else "cancelled"
    return emit(events.done(Finish(finish_reason, None, pieces)))


def _as_error(exc: BaseException) -> SluiceError:
    if isinstance(exc, SluiceError):
        return exc
    # A provider let a foreign exception through: log it, never show its text.
    log.warning("provider raised %s", type(exc).__name__, exc_info=exc)
    return UpstreamError()
