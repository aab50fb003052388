"""OpenAI-compatible routes: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The ``openai`` SDK works with ``base_url`` pointed at Sluice's ``/v1``. The
body is read whole (``chat.parse_openai``): tools, response formats, every
sampling field, and any other top-level field as an extra for the upstream.
Chunks are shaped as OpenAI sends them: a role-only first delta; ``content``,
``reasoning_content``, ``refusal`` and ``tool_calls`` deltas (``index``, and
``id``, ``type``, ``function.name`` on a call's first chunk); ``logprobs``;
a chunk with the upstream's ``finish_reason``; the usage chunk when
``stream_options.include_usage`` asks for it and the upstream reported any;
then ``data: [DONE]``. Errors use OpenAI's error shape (see
``sluice.errors.error_response``); one after the first byte is sent as an
``error`` event, which the SDK raises as ``APIError``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from .. import relay, sse
from ..catalog import list_models
from ..chat import parse_openai, read_json
from ..errors import error_body, error_from_event
from ..events import Event, dumps

bp = Blueprint("openai_compat", __name__, url_prefix="/v1")

# Sluice's finish reasons that OpenAI has no word for.
_FINISH = {"cancelled": "stop", "error": "stop"}


def _usage(done: dict[str, Any]) -> dict[str, Any] | None:
    """The upstream's usage with ``total_tokens`` where both counts are known; None when it reported none."""
    usage = dict(done.get("usage") or {})
    if not usage:
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if "total_tokens" not in usage and prompt is not None and completion is not None:
        usage["total_tokens"] = prompt + completion
    return usage


def _finish_reason(done: dict[str, Any]) -> str:
    reason = str(done.get("finish_reason", "stop"))
    return _FINISH.get(reason, reason)


def _logprobs(value: Any) -> Any:
    """OpenAI's ``{"content": [...]}`` from what the upstream gave (Ollama gives the list)."""
    if value is None or isinstance(value, dict):
        return value
    return {"content": value, "refusal": None}


def _delta(event: Event) -> tuple[dict[str, Any], Any]:
    """The chunk delta (and logprobs) for one model event."""
    kind = event.type
    if kind == "delta":
        if '"logprobs"' not in event.json:  # the common case: no decoding
            return {"content": event.content}, None
        return {"content": event.content}, _logprobs(event.data.get("logprobs"))
    data = event.data
    if kind == "reasoning":
        return {"reasoning_content": data["content"]}, _logprobs(data.get("logprobs"))
    if kind == "refusal":
        return {"refusal": data["content"]}, None
    call: dict[str, Any] = {"index": data["index"]}
    if "id" in data:
        call["id"] = data["id"]
        call["type"] = "function"
    function: dict[str, Any] = {}
    if "name" in data:
        function["name"] = data["name"]
    function["arguments"] = data.get("arguments", "")
    call["function"] = function
    return {"tool_calls": [call]}, None


def _chunks(batches: Iterator[list[Event] | None], base: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    """OpenAI's stream chunks; the events of one batch go out as one write."""

    def frame(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {**base, "choices": choices, **extra}
        if include_usage and "usage" not in extra:
            chunk["usage"] = None
        return b"data: " + dumps(chunk).encode() + b"\n\n"

    def choice(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]

    def frames(event: Event) -> Iterator[bytes]:
        kind = event.type
        if kind == "start":
            yield frame(choice({"role": "assistant", "content": ""}))
        elif kind == "done":
            data = event.data
            yield frame(choice({}, _finish_reason(data)))
            usage = _usage(data)
            if include_usage and usage is not None:
                yield frame([], usage=usage)
            yield b"data: [DONE]\n\n"
        elif kind == "error":
            exc = error_from_event(event.data["error"])
            yield b"data: " + dumps(error_body(exc, openai_shape=True)).encode() + b"\n\n"
        else:
            delta, logprobs = _delta(event)
            yield frame(choice(delta, None, logprobs))

    for batch in batches:
        if batch is None:
            yield sse.PING
        else:
            data = b"".join(chunk for event in batch for chunk in frames(event))
            if data:  # never an empty write: to a chunked response that reads as the end
                yield data


@bp.post("/chat/completions")
def chat_completions() -> Response:
    """OpenAI's chat completions, streamed or not."""
    config = current_app.config
    body = read_json(request, config["SLUICE_MAX_BODY_BYTES"])
    chat, include_usage = parse_openai(body, config["SLUICE_DEFAULT_MODEL"], g.get("request_id"))
    # OpenAI's clients never resume by id: it may run without Redis.
    stream = relay.open_stream(chat, resumable=False)
    base = {
        "id": "chatcmpl-" + stream.generation.id.removeprefix("gen_"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": chat.model,
    }
    if chat.stream:
        chunks = _chunks(stream.events(), base, include_usage)
        return relay.streaming_response(chunks, sse.MIMETYPE, stream.close)
    answer = relay.collect(stream)
    message = answer.message(reasoning_key="reasoning_content")
    message.setdefault("refusal", None)
    completion: dict[str, Any] = {
        **base,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": {"content": answer.logprobs, "refusal": None} if answer.logprobs else None,
                "finish_reason": _finish_reason(answer.last.data),
            }
        ],
    }
    usage = _usage(answer.last.data)
    if usage is not None:
        completion["usage"] = usage
    return jsonify(completion)


@bp.get("/models")
def models() -> Response:
    """OpenAI's model list; providers that cannot be reached are left out."""
    catalog = list_models(current_app.extensions["sluice"].registry, current_app.config["SLUICE_MODELS_TIMEOUT_S"])
    created = int(time.time())
    return jsonify(
        object="list",
        data=[{"id": m.id, "object": "model", "created": created, "owned_by": m.provider} for m in catalog.models],
    )
