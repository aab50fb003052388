"""The one loop that runs a provider and numbers its events.

::

    pump greenlet                 run_events (driven by its consumer)    broker
    provider.stream() ──piece──▶  inbox.take() ──Event───────────────────▶ publish
                      ─finish/─▶  start, delta/reasoning/…, done | error
                       failure        └──▶ yielded in batches to the consumer
    ticker: a deadline passed ─┐
    abort(reason) ◀────────────┘ closes the upstream, kills the pump, wakes the runner

The consumer is the response's own greenlet for a tied stream (it renders
each batch) or a background task for a detached one (``Generations._run``,
which only lets the broker keep the events).

The pump only reads the provider, so killing it (or closing its upstream)
never interrupts a write to the broker. The runner owns every decision that
is the same for all providers: the first-token and idle deadlines, the event
numbers, the single ``done`` or ``error`` that ends each generation, and the
mapping of failures to error events. Every piece from the model (text,
reasoning, a tool-call piece, a refusal) counts as progress for the deadlines.

Backpressure: the inbox holds at most ``hotpath.INBOX_LIMIT`` pieces. When the
consumer cannot take more (a tied response whose client stopped reading is
blocked in its write), the pump waits instead of reading on, so the upstream's
own flow control slows the model and nothing piles up in memory.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from . import events
from .chat import ChatRequest
from .errors import ServerShuttingDown, SluiceError, UpstreamError, UpstreamTimeout
from .events import Event
from .hotpath import Inbox, fairness, spawn_light
from .provider import Abort, Finish, Provider
from .ticker import Deadline, Ticker

__all__ = ["Limits", "run", "run_events"]

log = logging.getLogger(__name__)


class _Kind(enum.IntEnum):
    """What the pump, the ticker and an abort tell the runner."""

    PIECE = 0  # a piece from the model
    FINISH = 1  # the provider returned its Finish
    FAIL = 2  # the provider (or the pump) failed
    ABORTED = 3  # abort() was called
    IDLE = 4  # nothing was yielded for the idle gap


_PIECE, _FINISH, _FAIL, _ABORTED, _IDLE = _Kind
_MAX_BACKOFF_S = 10.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Deadlines and bounds the runner enforces for every provider."""

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


def _pump(
    request: ChatRequest,
    attempts: list[tuple[Provider, str]],
    retries: int,
    inbox: Inbox,
    abort: Abort,
) -> None:
    """Read the provider into ``inbox``; before the first piece, retry and fall back.

    Each target (the model, then its fallbacks) is tried up to ``1 + retries``
    times while its failures are retryable (the upstream's 429, 502, 503, 504; not
    an unreachable upstream, which the client retries); any other failure moves
    on to the next target. Once a piece has been sent,
    nothing is retried: the client has seen part of an answer.
    """
    error: BaseException | None = None
    fair_turn = fairness()
    try:
        for provider, model in attempts:
            for attempt in range(retries + 1):
                if abort.is_set:  # ended before this task first ran, or while it waited
                    return
                sent = 0
                stream = provider.stream(request, model, abort)
                try:
                    with closing(stream):
                        while True:
                            try:
                                piece = next(stream)
                            except StopIteration as stop:
                                finish = stop.value if isinstance(stop.value, Finish) else Finish()
                                inbox.put((_FINISH, finish))
                                return
                            if piece:  # empty pieces are noise (Ollama's final line, role-only chunks)
                                sent += 1
                                inbox.put_piece(_PIECE, piece, abort)
                                fair_turn()
                except SluiceError as exc:
                    if sent or abort.is_set:
                        raise
                    error = exc
                    if not exc.retryable or attempt == retries:
                        break
                    log.info("retrying %s/%s after %s", provider.name, model, exc.code)
                    if abort.wait(_backoff(attempt, exc)):
                        return
            log.info("%s/%s failed before its first token (%s)", provider.name, model, getattr(error, "code", "?"))
        inbox.put((_FAIL, error or UpstreamError()))
    except BaseException as exc:  # GreenletExit included: the runner must hear of it
        inbox.put((_FAIL, exc))
        if not isinstance(exc, Exception):
            raise


def run_events(
    generation_id: str,
    request: ChatRequest,
    attempts: list[tuple[Provider, str]],
    abort: Abort,
    publish: Callable[[Event], None],
    limits: Limits,
    ticker: Ticker,
    idle_s: float | None = None,
    first_idle_s: float | None = None,
    on_failure: Callable[[Exception], Event] | None = None,
    on_exit: Callable[[], None] | None = None,
) -> Generator[list[Event] | None, None, None]:
    """Run one generation to its end, publishing every event and yielding it too.

    Events are yielded in batches, oldest first: ``[start]``, then whatever
    came since the consumer last asked, the final event last in the last batch.
    A consumer that closes the iterator early (a tied client went away, its
    write timed out) still ends the generation: the final event (``done`` with
    ``cancelled``, or the error that stopped it) is published, not yielded.

    :param attempts: the provider and model name (``llama3``) to use, then its fallbacks.
    :param publish: receives ``start``, the model's events and one ``done`` or ``error``.
    :param ticker: watches the deadlines (first token, idle, whole stream, and idle gaps).
    :param idle_s: with it, ``None`` is yielded whenever nothing was yielded for that
        long (heartbeats for a connection that drives the generation itself).
    :param first_idle_s: the first such gap, when it differs (the response hold).
    :param on_failure: turns an exception that escaped (``publish`` failing, a bug)
        into the final event, yielded alone; without it the exception propagates.
    :param on_exit: called once the generation is over, however it ended. (Hooks
        rather than a wrapping generator: one layer less to resume on every event.)
    """
    seq = 0
    ended = False
    pieces = 0

    def emit(data: dict[str, Any]) -> Event:
        nonlocal seq
        event = Event.make(seq, data)
        seq += 1
        publish(event)
        return event

    try:
        try:
            yield [emit(events.start(generation_id, request.model))]
            inbox = Inbox()
            # Registered before the pump starts so an abort in any phase wakes the runner.
            abort.on_abort(lambda: inbox.put((_ABORTED, None)))
            abort.on_abort(spawn_light(_pump, request, attempts, limits.retries, inbox, abort))

            started = time.monotonic()
            end_by = started + limits.max_stream_s

            def expire() -> None:
                abort.abort("length" if time.monotonic() >= end_by else "timeout")

            # The deadline moves forward with each piece; expiring aborts, which wakes the loop.
            # (Moving a deadline later is an attribute write; see ``ticker``.)
            deadline = ticker.add(Deadline(min(started + limits.first_token_s, end_by), expire))
            gap = None
            if idle_s is not None:
                first_gap = first_idle_s if first_idle_s is not None else idle_s
                gap = ticker.add(Deadline(started + first_gap, lambda: inbox.put((_IDLE, None))))
            try:
                while True:
                    # Pieces that arrived together (a fast upstream, a burst after a
                    # stall) become one batch: one write to the client instead of one each.
                    batch: list[Event] = []
                    idle = False
                    for kind, value in inbox.take():
                        if kind == _IDLE:
                            if gap is not None and not abort.is_set:
                                gap.at = time.monotonic() + idle_s  # type: ignore[operator]
                                ticker.add(gap)
                                idle = True
                            continue
                        if abort.is_set:
                            kind = _ABORTED
                        if kind == _PIECE:
                            pieces += 1
                            now = time.monotonic()
                            deadline.at = min(now + limits.idle_s, end_by)
                            if gap is not None:
                                gap.at = now + idle_s  # type: ignore[operator]
                            if pieces == 1:
                                # From the first-token deadline and the hold to the idle ones,
                                # which may be sooner: queue them again for their new times.
                                ticker.add(deadline)
                                if gap is not None:
                                    ticker.add(gap)
                            # Plain text is a bare str (no wrapper per token); the rest make their own event.
                            data = events.delta(value) if type(value) is str else value.event()
                            batch.append(emit(data))
                            if seq >= limits.max_events - 1:  # room for the final event only
                                abort.abort("length")
                            continue
                        if kind == _FINISH:
                            last = emit(events.done(value))
                        elif kind == _FAIL:
                            last = emit(events.error(_as_error(value)))
                        else:
                            last = _emit_aborted(emit, abort.reason)
                        ended = True
                        batch.append(last)
                        yield batch
                        return
                    if batch:
                        yield batch
                    elif idle:
                        yield None
            finally:
                # Whatever ended the loop (the consumer too, by closing us), the upstream
                # is closed and the pump ends.
                ticker.discard(deadline)
                if gap is not None:
                    ticker.discard(gap)
                abort.abort("finished")
        except GeneratorExit:
            # Closed by the consumer before the end: the generation still ends, once,
            # for everyone following it by id.
            if not ended:
                ended = True
                try:
                    _emit_aborted(emit, abort.reason or "disconnected")
                except Exception:
                    log.warning("could not record the end of %s", generation_id)
            raise
    except Exception as exc:
        if on_failure is None:
            raise
        yield [on_failure(exc)]
    finally:
        if on_exit is not None:
            on_exit()


def run(*args: Any, **kwargs: Any) -> Event:
    """Run a generation to its end in the background (see ``run_events``); return the last event."""
    last = None
    for batch in run_events(*args, **kwargs):
        if batch:
            last = batch[-1]
    assert last is not None
    return last


def _emit_aborted(emit: Callable[[dict[str, Any]], Event], reason: str | None) -> Event:
    if reason == "timeout":
        return emit(events.error(UpstreamTimeout()))
    if reason == "shutdown":
        return emit(events.error(ServerShuttingDown()))
    # length (too many events), cancelled, disconnected, detached. The upstream
    # reported no usage for an answer it never finished: none is made up.
    return emit(events.done(Finish("length" if reason == "length" else "cancelled")))


def _as_error(exc: BaseException) -> SluiceError:
    if isinstance(exc, SluiceError):
        return exc
    # A provider let a foreign exception through: log it, never show its text.
    log.warning("provider raised %s", type(exc).__name__, exc_info=exc)
    return UpstreamError()
