"""Ollama's own API: NDJSON lines of ``/api/chat`` and ``/api/generate``, and their single objects.

One JSON object per line, as ``ollama serve`` writes them: each piece of
answer text a line with ``message.content`` (``/api/generate``: ``response``),
each piece of reasoning one with ``message.thinking`` (``thinking``), the
piece's ``logprobs`` (Ollama's list of tokens) where the upstream gave them;
refusal text reads as content. Ollama sends a model's tool calls whole, so
the pieces of every call are gathered and go out in one line,
``message.tool_calls`` with each call's ``id``, ``function.index``, ``name`` and
``arguments`` as a JSON object, before the last line. The last line has
``done: true``, ``done_reason`` (``length`` for the token limit, else
``stop``, as Ollama says it after tool calls too), ``total_duration``
(measured by Sluice, in nanoseconds) and the counts the upstream reported
(``prompt_eval_count``, ``eval_count``), none made up. A failure after the
first line is a line ``{"error": "…"}``, which Ollama's clients raise. An idle
gap sends nothing (an empty line is not NDJSON).

``answer`` is ``stream: false``'s single object: the fold of the same events.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from ..errors import UpstreamError, error_body
from ..events import Event, Kind, dumps
from ..fold import Answer, ToolCall, logprob_tokens
from ..provider import Finish

__all__ = ["NDJSON", "OllamaLines", "answer", "created_at", "loaded"]

NDJSON = "application/x-ndjson"


def created_at() -> str:
    """Now, as Ollama writes ``created_at`` (RFC 3339, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _done_reason(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _arguments(call: ToolCall) -> dict[str, Any]:
    """A call's JSON arguments as the object Ollama sends.

    :raise UpstreamError: they are not a JSON object.
    """
    if not call.arguments.strip():
        return {}
    try:
        value = json.loads(call.arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamError("The model's tool call arguments are not a JSON object.")
    return value


def _tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Tool calls in Ollama's shape (0.12.10+: an ``id``, ``function.index`` always)."""
    out = []
    for position, call in enumerate(calls):
        function = {"index": position, "name": call.name or "", "arguments": _arguments(call)}
        entry: dict[str, Any] = {"id": call.id, "function": function} if call.id else {"function": function}
        out.append(entry)
    return out


def _end(finish: Finish | None, started: float) -> dict[str, Any]:
    """The fields of the last line: ``done``, ``done_reason``, the duration and the reported counts."""
    end: dict[str, Any] = {
        "done": True,
        "done_reason": _done_reason(finish.reason if finish is not None else "stop"),
        "total_duration": max(1, int((time.monotonic() - started) * 1e9)),
    }
    counts = finish.usage if finish is not None else {}
    if isinstance(counts.get("prompt_tokens"), int):
        end["prompt_eval_count"] = counts["prompt_tokens"]
    if isinstance(counts.get("completion_tokens"), int):
        end["eval_count"] = counts["completion_tokens"]
    return end


class OllamaLines:
    """The NDJSON lines of one ``/api/chat`` (or, with ``generate``, ``/api/generate``) answer."""

    mimetype = NDJSON

    def __init__(self, model: str, generate: bool = False, started: float | None = None) -> None:
        self.model = model
        self.generate = generate
        self.started = time.monotonic() if started is None else started
        self._calls: dict[int, ToolCall] = {}

    def head(self) -> bytes:
        return b""

    def ping(self) -> bytes:
        return b""

    def _line(self, text: str = "", thinking: str | None = None, logprobs: Any = None, **end: Any) -> bytes:
        line: dict[str, Any] = {"model": self.model, "created_at": created_at()}
        if self.generate:
            line["response"] = text
            if thinking is not None:
                line["thinking"] = thinking
        else:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking is not None:
                message["thinking"] = thinking
            line["message"] = message
        if logprobs is not None:
            line["logprobs"] = logprob_tokens(logprobs)
        line.update(end or {"done": False})
        return dumps(line).encode() + b"\n"

    def frames(self, event: Event) -> bytes:
        kind, piece = event.kind, event.piece
        if kind is Kind.DELTA:
            if type(piece) is str:
                return self._line(piece)
            return self._line(piece.content, logprobs=piece.logprobs)
        if kind is Kind.REASONING:
            return self._line(thinking=piece.content, logprobs=piece.logprobs)
        if kind is Kind.REFUSAL:
            return self._line(piece.content)
        if kind is Kind.TOOL_CALL:
            call = self._calls.get(piece.index)
            if call is None:
                call = self._calls[piece.index] = ToolCall(piece.index)
            call.id = piece.id or call.id
            call.name = piece.name or call.name
            call.arguments += piece.arguments
            return b""
        if kind is Kind.DONE:
            out = b""
            if self._calls and not self.generate:  # (generate offers no tools)
                try:
                    calls = _tool_calls([self._calls[index] for index in sorted(self._calls)])
                except UpstreamError as exc:
                    return dumps(error_body(exc, "ollama")).encode() + b"\n"
                message = {"role": "assistant", "content": "", "tool_calls": calls}
                line = {"model": self.model, "created_at": created_at(), "message": message, "done": False}
                out = dumps(line).encode() + b"\n"
            return out + self._line(**_end(piece, self.started))
        if kind is Kind.ERROR:
            return dumps(error_body(piece, "ollama")).encode() + b"\n"
        return b""  # start: Ollama has no such line


def answer(folded: Answer, model: str, generate: bool, started: float) -> dict[str, Any]:
    """``stream: false``'s single object for a folded answer.

    :raise UpstreamError: a tool call's arguments are not a JSON object.
    """
    text = folded.text + folded.refusal_text
    body: dict[str, Any] = {"model": model, "created_at": created_at()}
    if generate:
        body["response"] = text
        if folded.reasoning:
            body["thinking"] = folded.reasoning_text
    else:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if folded.reasoning:
            message["thinking"] = folded.reasoning_text
        if folded.calls:
            message["tool_calls"] = _tool_calls(folded.tool_calls)
        body["message"] = message
    if folded.logprobs:
        body["logprobs"] = folded.logprobs
    body.update(_end(folded.finish, started))
    return body


def loaded(model: str, generate: bool) -> dict[str, Any]:
    """The answer to a request with nothing to say (no messages, no prompt): Ollama's "model loaded"."""
    body: dict[str, Any] = {"model": model, "created_at": created_at()}
    if generate:
        body["response"] = ""
    else:
        body["message"] = {"role": "assistant", "content": ""}
    body.update(done=True, done_reason="load")
    return body
