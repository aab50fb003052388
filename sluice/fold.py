"""The one answer fold: a generation's events in, the whole answer out, no I/O.

Every non-streamed answer (``stream: false``, ``/v1`` without ``stream``, and
each dialect's final object) is this fold of the same events the stream
carries, so nothing a stream has can be missing from it. It follows the way
openai-python's ``ChatCompletionStreamState`` accumulates chunks: text,
reasoning and refusal pieces are joined; tool-call pieces are gathered per
``index`` (``id`` and ``name`` from the piece that has them, ``arguments``
joined); logprobs are the tokens' entries in order; the final event gives the
finish reason and the usage the upstream reported (nothing invented).

The chat page keeps its own fold in JavaScript (``static/js/fold.js``) with the
same rules; ``tests/test_fold.py`` drives one event list through both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import SluiceError
from .events import Event, Kind, Start
from .provider import Finish

__all__ = ["Answer", "ToolCall", "fold", "logprob_tokens"]


def logprob_tokens(logprobs: Any) -> list[Any]:
    """The token entries of one piece's logprobs (OpenAI gives ``{"content": [...]}``, Ollama a list)."""
    if isinstance(logprobs, dict):
        logprobs = logprobs.get("content")
    return list(logprobs) if isinstance(logprobs, list) else []


@dataclass(slots=True)
class ToolCall:
    """One tool call, gathered from its pieces; ``arguments`` is the joined JSON text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def to_openai(self) -> dict[str, Any]:
        """The call in OpenAI's shape (``message.tool_calls[i]``)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(slots=True)
class Answer:
    """A whole answer, folded from its events."""

    id: str | None = None
    model: str | None = None
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    calls: dict[int, ToolCall] = field(default_factory=dict)
    logprobs: list[Any] = field(default_factory=list)
    reasoning_logprobs: list[Any] = field(default_factory=list)
    finish: Finish | None = None
    error: SluiceError | None = None
    #: The number of the last event folded in (-1 before any).
    last_seq: int = -1

    def add(self, event: Event) -> None:
        """Fold one event in."""
        kind, piece = event.kind, event.piece
        if event.seq >= 0:
            self.last_seq = event.seq
        if kind is Kind.DELTA:
            if type(piece) is str:
                self.content.append(piece)
            else:
                self.content.append(piece.content)
                if piece.logprobs is not None:
                    self.logprobs.extend(logprob_tokens(piece.logprobs))
        elif kind is Kind.REASONING:
            self.reasoning.append(piece.content)
            if piece.logprobs is not None:
                self.reasoning_logprobs.extend(logprob_tokens(piece.logprobs))
        elif kind is Kind.TOOL_CALL:
            call = self.calls.get(piece.index)
            if call is None:
                call = self.calls[piece.index] = ToolCall(piece.index)
            if piece.id is not None:
                call.id = piece.id
            if piece.name is not None:
                call.name = piece.name
            call.arguments += piece.arguments
        elif kind is Kind.REFUSAL:
            self.refusal.append(piece.content)
        elif kind is Kind.DONE:
            self.finish = piece
        elif kind is Kind.ERROR:
            self.error = piece
        elif kind is Kind.START:
            start: Start = piece
            self.id, self.model = start.id, start.model

    @property
    def ended(self) -> bool:
        """True once the final event (``done`` or ``error``) is in."""
        return self.finish is not None or self.error is not None

    @property
    def text(self) -> str:
        """The answer's text."""
        return "".join(self.content)

    @property
    def reasoning_text(self) -> str:
        """The reasoning's text ("" for none)."""
        return "".join(self.reasoning)

    @property
    def refusal_text(self) -> str:
        """The refusal's text ("" for none)."""
        return "".join(self.refusal)

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls, by index."""
        return [self.calls[index] for index in sorted(self.calls)]

    @property
    def finish_reason(self) -> str:
        """The finish reason (``error`` when it failed, ``stop`` before the end)."""
        if self.finish is not None:
            return self.finish.reason
        return "error" if self.error is not None else "stop"

    @property
    def usage(self) -> dict[str, Any]:
        """What the upstream reported, details included (``{}`` for nothing)."""
        return dict(self.finish.usage) if self.finish is not None else {}

    def message(self, reasoning_key: str = "reasoning", with_logprobs: bool = False) -> dict[str, Any]:
        """The assistant message in OpenAI's shape.

        ``content`` is ``None`` when the answer is only tool calls or a
        refusal; reasoning sits under ``reasoning_key`` (when any); ``logprobs``
        (OpenAI's ``{"content": [...]}``) only when ``with_logprobs``.
        """
        calls = self.tool_calls
        text = self.text
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if not text and (calls or self.refusal):
            message["content"] = None
        if self.reasoning:
            message[reasoning_key] = self.reasoning_text
        if calls:
            message["tool_calls"] = [call.to_openai() for call in calls]
        if self.refusal:
            message["refusal"] = self.refusal_text
        if with_logprobs and self.logprobs:
            message["logprobs"] = {"content": self.logprobs}
        return message


def fold(events: Iterable[Event]) -> Answer:
    """Fold ``events`` (from any position) into an ``Answer``."""
    answer = Answer()
    for event in events:
        answer.add(event)
    return answer
