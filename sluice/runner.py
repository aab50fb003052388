"""The one loop that produces a generation: it reads the provider and numbers its events.

::

    producer (one greenlet per generation)                       log / broker
    provider.stream() ──piece──▶ number, deadlines ──publish(Event)──▶ start, delta/reasoning/…, done | error
                     ◀── Interrupted (abort while reading)                    │ once durable
    ticker: a deadline passed ─▶ abort(reason) ─▶ closes the upstream         ▼
                                                  interrupts the read    listeners + renderers

``run`` is the producer: one loop, in one task, for every provider and every
kind of response (a tied stream, a background generation, the WebSocket). It
owns every decision that is the same for all providers: retries and
fallbacks before the first piece, the first-token and idle deadlines, the
event numbers, the single ``done`` or ``error`` that ends each generation, and
the mapping of failures to error events. Every piece from the model (text,
reasoning, a tool-call piece, a refusal) counts as progress for the deadlines.

An abort (a cancel, a deadline, the last listener of a tied stream leaving, a
drain) closes the upstream through the provider's closer and interrupts the
producer where it reads the provider (``hotpath.Interrupt``), never while it
publishes: the final event for the reason is always written.

Backpressure: ``publish`` may park the producer while the slowest tied
listener is far behind (``broker.log``), so a client that stops reading stops
the model through the upstream's own flow control.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

from .chat import ChatRequest
from .errors import GenerationLost, ServerShuttingDown, SluiceError, UpstreamError, UpstreamTimeout
from .events import Event, Kind, Start
from .hotpath import Interrupt, Interrupted, fairness
from .provider import Abort, Finish, Provider
from .ticker import Deadline, Ticker

__all__ = ["Limits", "run"]

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 10.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Deadlines and bounds the producer enforces for every provider."""

    first_token_s: float = 60.0
    idle_s: float = 60.0
    # Events kept per generation, the final one included; past it the answer
    # ends with finish_reason "length", so one runaway model cannot fill memory.
    max_events: int = 100_000
    # A whole generation's wall-clock bound; past it, "length" as well.
    max_stream_s: float = 3600.0
    # Retries of retryable failures before the first token, per target.
    retries: int = 2


def _backoff(attempt: int, error: SluiceError) -> float:
    """Full jitter on an exponential base, or the upstream's own ``Retry-After`` (capped)."""
    hinted = error.upstream_retry_after
    if hinted is not None:
        return min(float(hinted), _MAX_BACKOFF_S)
    return random.uniform(0, min(_MAX_BACKOFF_S, 0.25 * 2**attempt))


def run(
    generation_id: str,
    request: ChatRequest,
    attempts: list[tuple[Provider, str]],
    abort: Abort,
    publish: Callable[[Event], None],
    limits: Limits,
    ticker: Ticker,
) -> Event:
    """Produce one generation to its end in this task; return its final event.

    ``publish`` receives ``start``, the model's events and one ``done`` or
    ``error``, numbered 0, 1, 2 …; it may park the producer (backpressure).
    Each target (the model, then its fallbacks) is tried up to ``1 +
    limits.retries`` times while its failures are retryable (the upstream's
    own 429, 502, 503, 504; not an unreachable upstream, which the client
    retries: docs/api.md) and nothing was sent; any other failure moves on to
    the next target. Once a piece has been sent, nothing is retried: the client has
    seen part of an answer.

    :param attempts: the provider and model name (``llama3``) to use, then its fallbacks.
    :param ticker: watches the deadlines (first token, idle, whole stream).
    """
    seq = 0

    def emit(kind: Kind, piece: object) -> Event:
        nonlocal seq
        event = Event(seq, kind, piece)
        seq += 1
        publish(event)
        return event

    interrupt = Interrupt()
    abort.on_abort(interrupt)
    started = time.monotonic()
    end_by = started + limits.max_stream_s

    def expire() -> None:
        abort.abort("length" if time.monotonic() >= end_by else "timeout")

    # The deadline moves forward with each piece; expiring aborts, which interrupts the read.
    # (Moving a deadline later is an attribute write; see ``ticker``.)
    deadline = ticker.add(Deadline(min(started + limits.first_token_s, end_by), expire))
    fair_turn = fairness()
    try:
        emit(Kind.START, Start(generation_id, request.model))
        error: SluiceError | None = None
        sent = 0
        for provider, model in attempts:
            for attempt in range(limits.retries + 1):
                if abort.is_set:
                    return _emit_aborted(emit, abort.reason)
                stream = provider.stream(request, model, abort)
                try:
                    with closing(stream):
                        while True:
                            interrupt.reading = True
                            try:
                                piece = next(stream)
                            except StopIteration as stop:
                                finish = stop.value if isinstance(stop.value, Finish) else Finish()
                                if abort.is_set:  # ended because it was aborted: say why
                                    return _emit_aborted(emit, abort.reason)
                                return emit(Kind.DONE, finish)
                            finally:
                                interrupt.reading = False
                            if abort.is_set:
                                return _emit_aborted(emit, abort.reason)
                            if not piece:  # empty pieces are noise (Ollama's final line, role-only chunks)
                                continue
                            sent += 1
                            if sent == 1:
                                # From the first-token deadline to the idle one, which may be
                                # sooner: queue it again for its new time.
                                deadline.at = min(time.monotonic() + limits.idle_s, end_by)
                                ticker.add(deadline)
                            else:
                                deadline.at = min(time.monotonic() + limits.idle_s, end_by)
                            event = Event.of_piece(seq, piece)
                            seq += 1
                            publish(event)
                            if seq >= limits.max_events - 1:  # room for the final event only
                                abort.abort("length")
                            if abort.is_set:
                                return _emit_aborted(emit, abort.reason)
                            fair_turn()
                except SluiceError as exc:
                    if sent or abort.is_set:
                        if abort.is_set:
                            return _emit_aborted(emit, abort.reason)
                        return emit(Kind.ERROR, exc)
                    error = exc
                    if not exc.retryable or attempt == limits.retries:
                        break
                    log.info("retrying %s/%s after %s", provider.name, model, exc.code)
                    if abort.wait(_backoff(attempt, exc)):
                        return _emit_aborted(emit, abort.reason)
            log.info("%s/%s failed before its first token (%s)", provider.name, model, getattr(error, "code", "?"))
        return emit(Kind.ERROR, error or UpstreamError())
    except Interrupted:
        return _emit_aborted(emit, abort.reason)
    except Exception as exc:
        if abort.is_set:
            return _emit_aborted(emit, abort.reason)
        return emit(Kind.ERROR, _as_error(exc))
    finally:
        # However it ended, the deadline is dropped and the upstream closed.
        ticker.discard(deadline)
        abort.abort("finished")


def _emit_aborted(emit: Callable[[Kind, object], Event], reason: str | None) -> Event:
    if reason == "timeout":
        return emit(Kind.ERROR, UpstreamTimeout())
    if reason == "shutdown":
        return emit(Kind.ERROR, ServerShuttingDown())
    if reason == "lost":
        return emit(Kind.ERROR, GenerationLost())
    # length (too many events), cancelled, disconnected, detached. The upstream
    # reported no usage for an answer it never finished: none is made up.
    return emit(Kind.DONE, Finish("length" if reason == "length" else "cancelled"))


def _as_error(exc: BaseException) -> SluiceError:
    if isinstance(exc, SluiceError):
        return exc
    # A provider let a foreign exception through: log it, never show its text.
    log.warning("provider raised %s", type(exc).__name__, exc_info=exc)
    return UpstreamError()
