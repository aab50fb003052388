"""OpenAI's Responses API: the semantic events of ``/v1/responses``, and the whole ``Response`` object.

A generation's events become OpenAI's stream, each event numbered by
``sequence_number`` (0, 1, 2, …)::

    start      response.created, response.in_progress
    reasoning  (first) response.output_item.added (a ``reasoning`` item),
               response.content_part.added (``reasoning_text``); response.reasoning_text.delta
    delta      (first) response.output_item.added (a ``message``),
               response.content_part.added (``output_text``); response.output_text.delta
    refusal    (first) a ``refusal`` part of the message; response.refusal.delta
    tool_call  (a call's first piece) response.output_item.added (a ``function_call``);
               response.function_call_arguments.delta
    done       each open item's ….done events, response.output_item.done; then one of
               response.completed; response.incomplete (``length``: max_output_tokens,
               ``content_filter``; a cancelled response, status ``cancelled``)
    error      the same closing events, then response.failed (status ``failed``, ``error``)

Exactly one terminal event ends every stream. Items open at their first piece
and stay open until the end, so pieces of different kinds may interleave
(each event names its ``output_index``). The renderer depends only on the
events before it, so rendering a generation again from event 0 gives the same
bytes: a resume (``starting_after=N``) renders from the start and drops the
frames numbered N or less, losing nothing and repeating nothing.

The ``Response`` object (``response_object``) is built from the fold
(``sluice.fold``): the final object of the stream (on its terminal event), the
non-streamed answer and a retrieved response are the same function of the
same events, so ``output_text`` equals the streamed text. Its output lists the
reasoning, then the message, then the calls (the stream's order, unless an
upstream sent text before its reasoning). Usage is the upstream's, under the
Responses names (``input_tokens``, ``output_tokens``, their details), and is
absent when the upstream reported none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import sse
from ..errors import SluiceError
from ..events import Event, Kind, dumps
from ..fold import Answer, logprob_tokens
from ..provider import Finish

__all__ = [
    "Head",
    "ResponsesEvents",
    "generation_id_of",
    "response_id_of",
    "response_object",
    "usage",
]

_RESPONSE_PREFIX = "resp_"
_GENERATION_PREFIX = "gen_"


def response_id_of(generation_id: str) -> str:
    """The response id of a generation (``gen_x`` → ``resp_x``)."""
    return _RESPONSE_PREFIX + generation_id.removeprefix(_GENERATION_PREFIX)


def generation_id_of(response_id: str) -> str | None:
    """The generation behind a response id (None when it is not one)."""
    if not response_id.startswith(_RESPONSE_PREFIX) or len(response_id) > 256:
        return None
    return _GENERATION_PREFIX + response_id.removeprefix(_RESPONSE_PREFIX)


@dataclass(frozen=True, slots=True)
class Head:
    """What a ``Response`` object repeats whatever its state: id, creation time, the request's fields."""

    id: str
    created_at: int
    echo: Mapping[str, Any]


def usage(finish: Finish | None) -> dict[str, Any] | None:
    """The upstream's usage under the Responses names; None when it reported none.

    Only reported counts appear (``total_tokens`` is their sum where both are known).
    """
    if finish is None or not finish.usage:
        return None
    counts = finish.usage
    out: dict[str, Any] = {}
    if isinstance(counts.get("prompt_tokens"), int):
        out["input_tokens"] = counts["prompt_tokens"]
    details = counts.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        out["input_tokens_details"] = {"cached_tokens": details["cached_tokens"]}
    if isinstance(counts.get("completion_tokens"), int):
        out["output_tokens"] = counts["completion_tokens"]
    details = counts.get("completion_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("reasoning_tokens"), int):
        out["output_tokens_details"] = {"reasoning_tokens": details["reasoning_tokens"]}
    total = counts.get("total_tokens")
    if isinstance(total, int):
        out["total_tokens"] = total
    elif "input_tokens" in out and "output_tokens" in out:
        out["total_tokens"] = out["input_tokens"] + out["output_tokens"]
    return out or None


def _status(answer: Answer) -> tuple[str, dict[str, Any] | None]:
    """The response's status and ``incomplete_details`` for a fold (running: ``in_progress``)."""
    if answer.error is not None:
        return "failed", None
    if answer.finish is None:
        return ("in_progress" if answer.id is not None else "queued"), None
    reason = answer.finish.reason
    if reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    if reason == "cancelled":
        return "cancelled", None
    return "completed", None


def _item_status(status: str) -> str:
    if status in ("in_progress", "queued"):
        return "in_progress"
    return "completed" if status == "completed" else "incomplete"


def _error(exc: SluiceError) -> dict[str, Any]:
    """A failed response's ``error``: Sluice's code (as in every ``/v1`` error) and safe message."""
    return {"code": exc.code, "message": exc.message}


# -- output items (one builder for the stream's items and the whole object) -----------


def _ids(head: Head) -> tuple[str, str, str]:
    token = head.id.removeprefix(_RESPONSE_PREFIX)
    return "rs_" + token, "msg_" + token, "fc_" + token


def _text_part(text: str, logprobs: list[Any]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}


def _reasoning_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [{"type": "reasoning_text", "text": text}]
    return {"type": "reasoning", "id": item_id, "summary": [], "content": content, "status": status}


def _message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": content}


def _call_item(item_id: str, call_id: str | None, name: str | None, arguments: str, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id or "",
        "name": name or "",
        "arguments": arguments,
        "status": status,
    }


def _output(answer: Answer, head: Head, status: str, order: list[tuple[str, int]] | None) -> list[dict[str, Any]]:
    """The output items of ``answer``, in ``order`` (kind, call index), else reasoning, message, calls."""
    reasoning_id, message_id, call_prefix = _ids(head)
    item_status = _item_status(status)
    if order is None:
        order = [("reasoning", 0)] if answer.reasoning else []
        if answer.content or answer.refusal:
            order.append(("message", 0))
        order.extend(("call", index) for index in sorted(answer.calls))
    output = []
    for kind, index in order:
        if kind == "reasoning":
            output.append(_reasoning_item(reasoning_id, answer.reasoning_text, item_status))
        elif kind == "message":
            content = []
            if answer.content:
                content.append(_text_part(answer.text, answer.logprobs))
            if answer.refusal:
                content.append({"type": "refusal", "refusal": answer.refusal_text})
            output.append(_message_item(message_id, content, item_status))
        else:
            call = answer.calls[index]
            output.append(_call_item(f"{call_prefix}_{index}", call.id, call.name, call.arguments, item_status))
    return output


def response_object(answer: Answer, head: Head, order: list[tuple[str, int]] | None = None) -> dict[str, Any]:
    """The whole ``Response`` for a fold of the generation's events (any state: queued to ended)."""
    status, incomplete = _status(answer)
    echo = head.echo
    return {
        "id": head.id,
        "object": "response",
        "created_at": head.created_at,
        "status": status,
        "background": echo.get("background", False),
        "error": _error(answer.error) if answer.error is not None else None,
        "incomplete_details": incomplete,
        "instructions": echo.get("instructions"),
        "max_output_tokens": echo.get("max_output_tokens"),
        "metadata": echo.get("metadata") or {},
        "model": echo.get("model") if answer.model is None else answer.model,
        "output": _output(answer, head, status, order),
        "parallel_tool_calls": echo.get("parallel_tool_calls", True),
        "previous_response_id": echo.get("previous_response_id"),
        "reasoning": echo.get("reasoning") or {"effort": None, "summary": None},
        "service_tier": echo.get("service_tier"),
        "store": echo.get("store", True),
        "temperature": echo.get("temperature"),
        "text": echo.get("text") or {"format": {"type": "text"}},
        "tool_choice": echo.get("tool_choice", "auto"),
        "tools": echo.get("tools") or [],
        "top_logprobs": echo.get("top_logprobs"),
        "top_p": echo.get("top_p"),
        "truncation": echo.get("truncation", "disabled"),
        "usage": usage(answer.finish),
        "user": echo.get("user"),
    }


# -- the stream ----------------------------------------------------------------------


class ResponsesEvents:
    """The semantic events of one response, from its generation's event 0.

    ``after``: the frames numbered ``after`` or less are left out (a resume by
    ``starting_after``); they are still rendered, so the numbering is the same.
    """

    mimetype = sse.MIMETYPE

    def __init__(self, head: Head, after: int = -1) -> None:
        self.head_ = head
        self.after = after
        self.sequence = -1
        self.answer = Answer()  # the fold, for the final object
        self.order: list[tuple[str, int]] = []  # output items by output_index: (kind, call index)
        self.reasoning_id, self.message_id, self.call_prefix = _ids(head)
        self.reasoning_index: int | None = None
        self.message_index: int | None = None
        self.parts: dict[str, int] = {}  # the message's open parts: "text"/"refusal" → content_index
        self.calls: dict[int, int] = {}  # call index → output_index
        self.ended = False
        self._out: list[bytes] = []

    def head(self) -> bytes:
        return b""

    def ping(self) -> bytes:
        return sse.PING

    def _emit(self, kind: str, fields: dict[str, Any]) -> None:
        self.sequence += 1
        if self.sequence > self.after:
            fields["type"] = kind
            fields["sequence_number"] = self.sequence
            self._out.append(b"event: " + kind.encode() + b"\ndata: " + dumps(fields).encode() + b"\n\n")

    def frames(self, event: Event) -> bytes:
        if self.ended:
            return b""
        self.answer.add(event)
        kind, piece = event.kind, event.piece
        if kind is Kind.DELTA:
            if type(piece) is str:
                self._text(piece, [])
            else:
                self._text(piece.content, logprob_tokens(piece.logprobs))
        elif kind is Kind.REASONING:
            self._reasoning(piece.content)
        elif kind is Kind.TOOL_CALL:
            self._call(piece.index, piece.arguments)
        elif kind is Kind.REFUSAL:
            self._refusal(piece.content)
        elif kind is Kind.START:
            self._lifecycle("response.created")
            self._lifecycle("response.in_progress")
        else:  # DONE or ERROR: close every item, then the one terminal event
            self._close()
            status, _ = _status(self.answer)
            terminal = {"completed": "response.completed", "failed": "response.failed"}.get(
                status, "response.incomplete"
            )
            self._lifecycle(terminal)
            self.ended = True
        out, self._out = self._out, []
        return b"".join(out)

    def _lifecycle(self, kind: str) -> None:
        self._emit(kind, {"response": response_object(self.answer, self.head_, self.order)})

    def _add(self, kind: str, index: int, item: dict[str, Any]) -> int:
        output_index = len(self.order)
        self.order.append((kind, index))
        self._emit("response.output_item.added", {"output_index": output_index, "item": item})
        return output_index

    # Each piece kind: open its item (and part) at the first piece, then a delta.

    def _message(self) -> int:
        if self.message_index is None:
            item = _message_item(self.message_id, [], "in_progress")
            self.message_index = self._add("message", 0, item)
        return self.message_index

    def _part(self, name: str, part: dict[str, Any]) -> tuple[int, int]:
        output_index = self._message()
        content_index = self.parts.get(name)
        if content_index is None:
            content_index = self.parts[name] = len(self.parts)
            self._emit(
                "response.content_part.added",
                {
                    "item_id": self.message_id,
                    "output_index": output_index,
                    "content_index": content_index,
                    "part": part,
                },
            )
        return output_index, content_index

    def _text(self, text: str, logprobs: list[Any]) -> None:
        output_index, content_index = self._part("text", _text_part("", []))
        self._emit(
            "response.output_text.delta",
            {
                "item_id": self.message_id,
                "output_index": output_index,
                "content_index": content_index,
                "delta": text,
                "logprobs": logprobs,
            },
        )

    def _refusal(self, text: str) -> None:
        output_index, content_index = self._part("refusal", {"type": "refusal", "refusal": ""})
        self._emit(
            "response.refusal.delta",
            {"item_id": self.message_id, "output_index": output_index, "content_index": content_index, "delta": text},
        )

    def _reasoning(self, text: str) -> None:
        if self.reasoning_index is None:
            self.reasoning_index = self._add("reasoning", 0, _reasoning_item(self.reasoning_id, None, "in_progress"))
            self._emit(
                "response.content_part.added",
                {
                    "item_id": self.reasoning_id,
                    "output_index": self.reasoning_index,
                    "content_index": 0,
                    "part": {"type": "reasoning_text", "text": ""},
                },
            )
        self._emit(
            "response.reasoning_text.delta",
            {"item_id": self.reasoning_id, "output_index": self.reasoning_index, "content_index": 0, "delta": text},
        )

    def _call(self, index: int, arguments: str) -> None:
        output_index = self.calls.get(index)
        item_id = f"{self.call_prefix}_{index}"
        if output_index is None:
            call = self.answer.calls[index]
            item = _call_item(item_id, call.id, call.name, "", "in_progress")
            output_index = self.calls[index] = self._add("call", index, item)
        if arguments:
            self._emit(
                "response.function_call_arguments.delta",
                {"item_id": item_id, "output_index": output_index, "delta": arguments},
            )

    def _close(self) -> None:
        """The ….done events of every item, in output order, and their final state."""
        status, _ = _status(self.answer)
        items = _output(self.answer, self.head_, status, self.order)
        for output_index, ((kind, _), item) in enumerate(zip(self.order, items, strict=True)):
            item_id = item["id"]
            if kind == "reasoning":
                text = self.answer.reasoning_text
                where = {"item_id": item_id, "output_index": output_index, "content_index": 0}
                self._emit("response.reasoning_text.done", {**where, "text": text})
                self._emit("response.content_part.done", {**where, "part": {"type": "reasoning_text", "text": text}})
            elif kind == "message":
                for name, content_index in self.parts.items():
                    where = {"item_id": item_id, "output_index": output_index, "content_index": content_index}
                    if name == "text":
                        part = _text_part(self.answer.text, self.answer.logprobs)
                        self._emit(
                            "response.output_text.done", {**where, "text": part["text"], "logprobs": part["logprobs"]}
                        )
                    else:
                        part = {"type": "refusal", "refusal": self.answer.refusal_text}
                        self._emit("response.refusal.done", {**where, "refusal": part["refusal"]})
                    self._emit("response.content_part.done", {**where, "part": part})
            else:
                self._emit(
                    "response.function_call_arguments.done",
                    {
                        "item_id": item_id,
                        "output_index": output_index,
                        "arguments": item["arguments"],
                    },
                )
            self._emit("response.output_item.done", {"output_index": output_index, "item": item})
