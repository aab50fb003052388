"""OpenAI-compatible routes: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The ``openai`` SDK works with ``base_url`` pointed at Sluice's ``/v1``. Chunks
are shaped as OpenAI sends them: a role-only first delta, content deltas, a
chunk with ``finish_reason``, the usage chunk when ``stream_options.include_usage``
asks for it, then ``data: [DONE]``. Errors use OpenAI's error shape (see
``sluice.errors.error_response``); one after the first byte is sent as an
``error`` event, which the SDK raises as ``APIError``. Fields Sluice does not use
(``tools``, ``n``, ``logprobs`` …) are ignored rather than refused, as most
compatible servers do.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .. import relay, sse
from ..catalog import list_models
from ..chat import ChatRequest, parse_chat, read_json
from ..errors import InvalidRequest, error_body, error_from_code
from ..events import Event, dumps

bp = Blueprint("openai_compat", __name__, url_prefix="/v1")

_ROLES = {"developer": "system"}


def _content(value: Any, index: int) -> Any:
    """OpenAI allows content as a list of parts; text parts are joined, others refused."""
    if not isinstance(value, list):
        return value
    texts = []
    for part in value:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidRequest(f"messages[{index}].content: only text parts are supported.")
        texts.append(part["text"])
    return "".join(texts)


def _to_chat(body: Any, default_model: str) -> tuple[ChatRequest, bool]:
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    messages = body.get("messages")
    if isinstance(messages, list):
        messages = [
            {**m, "role": _ROLES.get(m.get("role"), m.get("role")), "content": _content(m.get("content"), i)}
            if isinstance(m, dict)
            else m
            for i, m in enumerate(messages)
        ]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    options = {k: v for k, v in (("temperature", body.get("temperature")), ("max_tokens", max_tokens)) if v is not None}
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise InvalidRequest("'stream_options' must be an object.")
    chat = parse_chat(
        {"model": body.get("model"), "messages": messages, "options": options, "stream": body.get("stream", False)},
        default_model,
    )
    return chat, bool(stream_options.get("include_usage"))


def _usage(done: dict[str, Any]) -> dict[str, int]:
    usage = done.get("usage", {})
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(done: dict[str, Any]) -> str:
    return "length" if done.get("finish_reason") == "length" else "stop"


def _chunks(batches: Iterator[list[Event] | None], base: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    """OpenAI's stream chunks; the events of one batch go out as one write."""

    def frame(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {**base, "choices": choices, **extra}
        if include_usage and "usage" not in extra:
            chunk["usage"] = None
        return b"data: " + dumps(chunk).encode() + b"\n\n"

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    def frames(event: Event) -> Iterator[bytes]:
        if event.type == "start":
            yield frame(choice({"role": "assistant", "content": ""}))
        elif event.type == "delta":
            yield frame(choice({"content": event.content}))
        elif event.type == "done":
            yield frame(choice({}, _finish_reason(event.data)))
            if include_usage:
                yield frame([], usage=_usage(event.data))
            yield b"data: [DONE]\n\n"
        elif event.type == "error":
            exc = error_from_code(event.data["error"]["code"], event.data["error"]["message"])
            yield b"data: " + dumps(error_body(exc, openai_shape=True)).encode() + b"\n\n"

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
    chat, include_usage = _to_chat(body, config["SLUICE_DEFAULT_MODEL"])
    stream = relay.open_stream(chat)
    base = {
        "id": "chatcmpl-" + stream.generation.id.removeprefix("gen_"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": chat.model,
    }
    if chat.stream:
        chunks = _chunks(stream.events(), base, include_usage)
        return relay.streaming_response(chunks, sse.MIMETYPE, stream.close)
    text, last = relay.collect(stream)
    return jsonify(
        {
            **base,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": _finish_reason(last.data),
                }
            ],
            "usage": _usage(last.data),
        }
    )


@bp.get("/models")
def models() -> Response:
    """OpenAI's model list; providers that cannot be reached are left out."""
    catalog = list_models(current_app.extensions["sluice"].registry, current_app.config["SLUICE_MODELS_TIMEOUT_S"])
    created = int(time.time())
    return jsonify(
        object="list",
        data=[{"id": m.id, "object": "model", "created": created, "owned_by": m.provider} for m in catalog.models],
    )
