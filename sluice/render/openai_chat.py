"""OpenAI's chat completions: the ``/v1/chat/completions`` chunks, and the whole completion.

Chunks are shaped as OpenAI sends them: a role-only first delta (for
``start``); ``content``, ``reasoning_content``, ``refusal`` and ``tool_calls``
deltas (``index``, and ``id``, ``type``, ``function.name`` on a call's first
piece); the piece's ``logprobs``; a chunk with the upstream's
``finish_reason`` (Sluice's ``cancelled`` reads as ``stop``); the usage chunk
when ``stream_options.include_usage`` asked for it and the upstream reported
any (nothing is made up); then ``data: [DONE]``. The upstream's
``system_fingerprint`` is known only at the end: it is on the final chunks
and on the whole completion. A failure after the first byte is an ``error``
event in OpenAI's error shape, which the SDK raises as ``APIError``.
``completion`` is the non-streamed object: the fold of the same events.
"""

from __future__ import annotations

from typing import Any

from .. import sse
from ..errors import error_body
from ..events import Event, Kind, dumps
from ..fold import Answer
from ..provider import Finish

__all__ = ["ChatChunks", "completion", "finish_reason", "usage"]

# Sluice's finish reasons that OpenAI has no word for.
_FINISH = {"cancelled": "stop", "error": "stop"}
_DONE = b"data: [DONE]\n\n"


def usage(finish: Finish | None) -> dict[str, Any] | None:
    """The upstream's usage with ``total_tokens`` where both counts are known; None when it reported none."""
    if finish is None or not finish.usage:
        return None
    counts = dict(finish.usage)
    prompt, completion_tokens = counts.get("prompt_tokens"), counts.get("completion_tokens")
    if "total_tokens" not in counts and prompt is not None and completion_tokens is not None:
        counts["total_tokens"] = prompt + completion_tokens
    return counts


def finish_reason(reason: str) -> str:
    """OpenAI's word for Sluice's finish reason."""
    return _FINISH.get(reason, reason)


def _logprobs(value: Any) -> Any:
    """OpenAI's ``{"content": [...]}`` from what the upstream gave (Ollama gives the list)."""
    if value is None or isinstance(value, dict):
        return value
    return {"content": value, "refusal": None}


class ChatChunks:
    """The chunks of one streamed completion (``base``: ``id``, ``object``, ``created``, ``model``)."""

    mimetype = sse.MIMETYPE

    def __init__(self, base: dict[str, Any], include_usage: bool) -> None:
        self.base = base
        self.include_usage = include_usage

    def head(self) -> bytes:
        return b""

    def ping(self) -> bytes:
        return sse.PING

    def _chunk(self, delta: dict[str, Any], logprobs: Any = None) -> bytes:
        chunk = {
            **self.base,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return b"data: " + dumps(chunk).encode() + b"\n\n"

    def frames(self, event: Event) -> bytes:
        kind, piece = event.kind, event.piece
        if kind is Kind.DELTA:
            if type(piece) is str:
                return self._chunk({"content": piece})
            return self._chunk({"content": piece.content}, _logprobs(piece.logprobs))
        if kind is Kind.REASONING:
            return self._chunk({"reasoning_content": piece.content}, _logprobs(piece.logprobs))
        if kind is Kind.TOOL_CALL:
            call: dict[str, Any] = {"index": piece.index}
            if piece.id is not None:
                call["id"] = piece.id
                call["type"] = "function"
            function: dict[str, Any] = {}
            if piece.name is not None:
                function["name"] = piece.name
            function["arguments"] = piece.arguments
            call["function"] = function
            return self._chunk({"tool_calls": [call]})
        if kind is Kind.REFUSAL:
            return self._chunk({"refusal": piece.content})
        if kind is Kind.START:
            return self._chunk({"role": "assistant", "content": ""})
        if kind is Kind.DONE:
            return self._done(piece)
        return b"data: " + dumps(error_body(piece, "openai")).encode() + b"\n\n"

    def _done(self, finish: Finish) -> bytes:
        base = self.base
        if finish.system_fingerprint is not None:
            base = {**base, "system_fingerprint": finish.system_fingerprint}
        last: dict[str, Any] = {
            **base,
            "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason(finish.reason)}],
        }
        if self.include_usage:
            last["usage"] = None
        out = [b"data: ", dumps(last).encode(), b"\n\n"]
        counts = usage(finish)
        if self.include_usage and counts is not None:
            out += [b"data: ", dumps({**base, "choices": [], "usage": counts}).encode(), b"\n\n"]
        out.append(_DONE)
        return b"".join(out)


def completion(answer: Answer, base: dict[str, Any]) -> dict[str, Any]:
    """The whole ``chat.completion`` object for a folded answer."""
    message = answer.message(reasoning_key="reasoning_content")
    message.setdefault("refusal", None)
    body: dict[str, Any] = {
        **base,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": {"content": answer.logprobs, "refusal": None} if answer.logprobs else None,
                "finish_reason": finish_reason(answer.finish_reason),
            }
        ],
    }
    if answer.finish is not None and answer.finish.system_fingerprint is not None:
        body["system_fingerprint"] = answer.finish.system_fingerprint
    counts = usage(answer.finish)
    if counts is not None:
        body["usage"] = counts
    return body
