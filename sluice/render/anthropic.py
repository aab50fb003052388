"""Anthropic's Messages API: the named SSE events of ``POST /v1/messages``, and the whole ``Message``.

A stream is shaped as Anthropic sends it, each SSE event named by its
``type``: ``message_start`` (for ``start``: the message with empty content);
then content blocks, each ``content_block_start``, its
``content_block_delta``\\ s and ``content_block_stop``: a ``thinking`` block
(``thinking_delta``) for reasoning, a ``text`` block (``text_delta``) for
answer text and refusal text, a ``tool_use`` block (``input_json_delta`` with
the pieces of its JSON arguments) per tool call. A block opens when its first
piece arrives and closes when a piece of another block does, or at the end.
Then ``message_delta`` with the ``stop_reason`` (``stop`` is ``end_turn``, or
``stop_sequence`` with the ``stop_sequence`` when the upstream named the stop
string; ``length`` is ``max_tokens``, ``tool_calls`` ``tool_use``,
``content_filter`` ``refusal``) and the usage; then ``message_stop``. An idle
gap is ``event: ping``; a failure after the start is ``event: error`` with
Anthropic's error object, and the end of the stream.

Usage: ``input_tokens`` is the prompt tokens the upstream reported less those
read from its cache (``cache_read_input_tokens``), ``output_tokens`` its
completion tokens (reasoning tokens as ``output_tokens_details.thinking_tokens``).
Anthropic's shape requires both counts: one the upstream did not report is 0.
``message_start`` carries 0 for both (Sluice learns the counts at the end);
``message_delta`` carries the reported ones, which the SDK keeps.

Thinking blocks carry an empty ``signature``: no upstream behind Sluice signs
its reasoning, and the SDK takes the block as it is.
``message`` is the non-streamed object: the fold of the same events, its
blocks in the order a stream opens them (thinking, text, tool calls).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from .. import sse
from ..errors import UpstreamError, error_body
from ..events import Event, Kind, dumps
from ..fold import Answer
from ..provider import Finish

__all__ = ["MessageEvents", "message", "message_id", "stop_reason", "usage"]

_STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
_PING = b'event: ping\ndata: {"type":"ping"}\n\n'


def message_id(generation_id: str) -> str:
    """The message id for a generation (``msg_`` and the generation's random part)."""
    return "msg_" + generation_id.removeprefix("gen_")


def _tool_id() -> str:
    return "toolu_" + secrets.token_hex(12)


def stop_reason(finish: Finish | None) -> tuple[str, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for how the answer ended."""
    if finish is None:
        return "end_turn", None
    if finish.reason == "stop" and finish.stop_sequence is not None:
        return "stop_sequence", finish.stop_sequence
    return _STOP_REASONS.get(finish.reason, "end_turn"), None


def usage(finish: Finish | None) -> dict[str, Any]:
    """Anthropic's usage for the counts the upstream reported (see the module docstring)."""
    counts = finish.usage if finish is not None else {}
    prompt, completion = counts.get("prompt_tokens"), counts.get("completion_tokens")
    prompt_details = counts.get("prompt_tokens_details") or {}
    cached = prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else None
    out: dict[str, Any] = {
        "input_tokens": (prompt - cached if cached else prompt) if isinstance(prompt, int) else 0,
        "output_tokens": completion if isinstance(completion, int) else 0,
    }
    if isinstance(cached, int) and cached:
        out["cache_read_input_tokens"] = cached
    details = counts.get("completion_tokens_details") or {}
    thinking = details.get("reasoning_tokens") if isinstance(details, dict) else None
    if isinstance(thinking, int):
        out["output_tokens_details"] = {"thinking_tokens": thinking}
    return out


def _event(data: dict[str, Any]) -> bytes:
    name: str = data["type"]
    return b"event: " + name.encode() + b"\ndata: " + dumps(data).encode() + b"\n\n"


class MessageEvents:
    """The named SSE events of one streamed message (see the module docstring)."""

    mimetype = sse.MIMETYPE

    def __init__(self, model: str) -> None:
        self.model = model
        self._open: tuple[str, int] | None = None  # the open block: ("text" | "thinking" | "tool", call index)
        self._blocks = 0  # blocks opened so far: the next block's index
        self._calls: dict[int, int] = {}  # tool call index -> its block's index

    def head(self) -> bytes:
        return b""

    def ping(self) -> bytes:
        return _PING

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _event({"type": "content_block_stop", "index": self._blocks - 1})

    def _start(self, key: tuple[str, int], block: dict[str, Any]) -> bytes:
        out = self._close()
        self._open = key
        index = self._blocks
        self._blocks += 1
        return out + _event({"type": "content_block_start", "index": index, "content_block": block})

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _event({"type": "content_block_delta", "index": index, "delta": delta})

    def _text(self, kind: str, text: str) -> bytes:
        out = b""
        if self._open != (kind, 0):
            if kind == "text":
                out = self._start((kind, 0), {"type": "text", "text": ""})
            else:
                out = self._start((kind, 0), {"type": "thinking", "thinking": "", "signature": ""})
        delta = {"type": "text_delta", "text": text} if kind == "text" else {"type": "thinking_delta", "thinking": text}
        return out + self._delta(self._blocks - 1, delta)

    def frames(self, event: Event) -> bytes:
        kind, piece = event.kind, event.piece
        if kind is Kind.DELTA:
            return self._text("text", piece if type(piece) is str else piece.content)
        if kind is Kind.REASONING:
            return self._text("thinking", piece.content)
        if kind is Kind.REFUSAL:
            return self._text("text", piece.content)  # Anthropic says a refusal in text, with stop_reason refusal
        if kind is Kind.TOOL_CALL:
            return self._tool_call(piece.index, piece.id, piece.name, piece.arguments)
        if kind is Kind.START:
            start: dict[str, Any] = {
                "id": message_id(piece.id),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "stop_details": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
            return _event({"type": "message_start", "message": start})
        if kind is Kind.DONE:
            reason, sequence = stop_reason(piece)
            return (
                self._close()
                + _event(
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": reason, "stop_sequence": sequence, "stop_details": None},
                        "usage": usage(piece),
                    }
                )
                + _event({"type": "message_stop"})
            )
        return b"event: error\ndata: " + dumps(error_body(piece, "anthropic")).encode() + b"\n\n"

    def _tool_call(self, index: int, call_id: str | None, name: str | None, arguments: str) -> bytes:
        out = b""
        block = self._calls.get(index)
        if block is None:
            block = self._calls[index] = self._blocks
            out = self._start(
                ("tool", index), {"type": "tool_use", "id": call_id or _tool_id(), "name": name or "", "input": {}}
            )
        if arguments:
            # A piece of a call whose block another block closed (interleaved calls) still
            # goes to that call's index: the SDK gathers each block's pieces by index.
            out += self._delta(block, {"type": "input_json_delta", "partial_json": arguments})
        return out


def _input(arguments: str) -> dict[str, Any]:
    """A call's joined JSON arguments as the ``input`` object.

    :raise UpstreamError: they are not a JSON object (Anthropic's ``input`` always is).
    """
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamError("The model's tool call arguments are not a JSON object.")
    return value


def message(answer: Answer, generation_id: str, model: str) -> dict[str, Any]:
    """The whole ``Message`` for a folded answer.

    :raise UpstreamError: a tool call's arguments are not a JSON object.
    """
    content: list[dict[str, Any]] = []
    if answer.reasoning:
        content.append({"type": "thinking", "thinking": answer.reasoning_text, "signature": ""})
    text = answer.text + answer.refusal_text
    if answer.content or answer.refusal:
        content.append({"type": "text", "text": text})
    for call in answer.tool_calls:
        content.append(
            {"type": "tool_use", "id": call.id or _tool_id(), "name": call.name or "", "input": _input(call.arguments)}
        )
    reason, sequence = stop_reason(answer.finish)
    return {
        "id": message_id(generation_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "stop_details": None,
        "usage": usage(answer.finish),
    }
