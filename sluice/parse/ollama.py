"""Ollama's own API (under ``/ollama``): ``/api/chat``, ``/api/generate`` and ``/api/embed`` bodies.

A chat or generate body is translated into Sluice's own chat body and
validated by ``sluice.chat.parse_chat``, so every check (and its message)
is the one Sluice's own API makes:

- ``messages`` in OpenAI's shape: ``images`` (base64) become image parts
  (``data:`` URLs, their type read from the bytes); an assistant's
  ``tool_calls`` get ids where Ollama sent none (arguments as JSON text); a
  ``tool`` message answers the call named by its ``tool_call_id``, else the
  first unanswered call of its ``tool_name``, else the first unanswered one;
  an earlier turn's ``thinking`` is dropped;
- ``generate``: ``system`` and ``prompt`` (with its ``images``) are a
  system and a user message; ``suffix``, ``template``, ``context`` and
  ``raw`` have no place in a chat and are refused;
- ``stream`` defaults to true; ``tools`` are already OpenAI's shape.

``options``, ``format``, ``think``, ``keep_alive`` and any other field go to an
Ollama upstream unchanged (as ``extra``). For any other server they are
translated: ``num_predict`` (> 0) is ``max_tokens`` (-1 and -2 mean no
limit); ``temperature``, ``top_p``, ``seed``, ``stop`` and the penalties keep
their names; ``top_k`` and ``min_p`` are server knobs
(``sluice.parse.upstream``); ``format`` ``"json"`` is the ``json_object``
response format, a schema the ``json_schema`` one; ``think`` is a
``reasoning_effort`` (``true`` ``medium``, ``false`` ``none``, a level as
itself); ``keep_alive`` only manages Ollama's memory and is dropped;
``logprobs``/``top_logprobs`` keep their names. Any other option or field is
refused by name: it is Ollama's alone.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from ..chat import ChatRequest, parse_chat
from ..errors import InvalidRequest
from ..provider import EmbedRequest
from .upstream import DEMO, OLLAMA, KindOf, knobs_extra

__all__ = ["model_of", "parse_chat_body", "parse_embed", "parse_generate"]

_CHAT_FIELDS = frozenset(
    {"model", "messages", "tools", "format", "options", "stream", "keep_alive", "think", "logprobs", "top_logprobs"}
)
_GENERATE_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "system",
        "images",
        "format",
        "options",
        "stream",
        "keep_alive",
        "think",
        "logprobs",
        "top_logprobs",
        "suffix",
        "template",
        "context",
        "raw",
    }
)
# Generate fields that only a raw completion has; empty, they ask for nothing.
_RAW_ONLY = ("suffix", "template", "context", "raw")
# Ollama options that keep their names in OpenAI's API.
_SAME_OPTIONS = frozenset({"temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty"})
# Ollama options that vLLM and llama.cpp take under the same name.
_KNOBS = frozenset({"top_k", "min_p"})
# The first bytes of the image types a model may see, and their media types.
_MAGIC = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
)


def model_of(body: Any) -> str:
    """The body's ``model`` (Sluice's ``provider/model``).

    :raise InvalidRequest: the body is not an object, or names no model.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > 256:
        raise InvalidRequest("model is required: a model such as demo/echo or ollama/llama3.")
    return model


def _image_url(data: Any, where: str) -> str:
    """One of Ollama's base64 images as a ``data:`` URL."""
    if not isinstance(data, str):
        raise InvalidRequest(f"{where} must be a base64 string.")
    try:
        head = base64.b64decode(data[:16] + "=" * (-len(data[:16]) % 4))
        binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where} is not valid base64.") from None
    media_type = next((kind for magic, kind in _MAGIC if head.startswith(magic)), "image/png")
    return f"data:{media_type};base64,{data}"


def _content(text: Any, images: Any, where: str) -> str | list[dict[str, Any]]:
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InvalidRequest(f"{where}.content must be a string.")
    if images is None or images == []:
        return text
    if not isinstance(images, list):
        raise InvalidRequest(f"{where}.images must be a list of base64 strings.")
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for i, image in enumerate(images):
        parts.append({"type": "image_url", "image_url": {"url": _image_url(image, f"{where}.images[{i}]")}})
    return parts


def _arguments(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}.function.arguments must be an object.")
    return json.dumps(value, ensure_ascii=False)


def _messages(items: Any) -> list[dict[str, Any]]:
    """Ollama's messages in OpenAI's shape (see the module docstring)."""
    if not isinstance(items, list) or not items:
        raise InvalidRequest("messages must be a non-empty list.")
    unanswered: list[tuple[str, str]] = []  # (id, name) of calls no tool message answered yet
    out = []
    for index, item in enumerate(items):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object.")
        role = item.get("role")
        message: dict[str, Any] = {"role": role, "content": _content(item.get("content"), item.get("images"), where)}
        calls = item.get("tool_calls")
        if calls:
            if not isinstance(calls, list):
                raise InvalidRequest(f"{where}.tool_calls must be a list.")
            converted = []
            for j, call in enumerate(calls):
                function = call.get("function") if isinstance(call, dict) else None
                name = function.get("name") if isinstance(function, dict) else None
                if not isinstance(name, str) or not name:
                    raise InvalidRequest(f"{where}.tool_calls[{j}].function.name must be a string.")
                call_id = call.get("id")
                if not isinstance(call_id, str) or not call_id:
                    call_id = f"call_{index}_{j}"
                arguments = _arguments(function.get("arguments", {}), f"{where}.tool_calls[{j}]")  # type: ignore[union-attr]
                function = {"name": name, "arguments": arguments}
                converted.append({"id": call_id, "type": "function", "function": function})
                unanswered.append((call_id, name))
            message["tool_calls"] = converted
        if role == "tool":
            message["tool_call_id"] = _answered(item, unanswered, index)
        out.append(message)
    return out


def _answered(item: Mapping[str, Any], unanswered: list[tuple[str, str]], index: int) -> str:
    """The id of the call a ``tool`` message answers (and forget that call)."""
    wanted_id, wanted_name = item.get("tool_call_id"), item.get("tool_name")
    for position, (call_id, name) in enumerate(unanswered):
        if call_id == wanted_id or (not isinstance(wanted_id, str) and wanted_name in (None, name)):
            del unanswered[position]
            return call_id
    if isinstance(wanted_id, str) and wanted_id:
        return wanted_id
    return f"call_{index}"  # answers no call Sluice saw: the upstream decides


def _think_effort(think: Any) -> str:
    if think is True:
        return "medium"
    if think is False:
        return "none"
    if isinstance(think, str) and think in ("low", "medium", "high"):
        return think
    raise InvalidRequest("think must be true, false, or one of low, medium, high.")


def _response_format(spec: Any) -> dict[str, Any] | None:
    if spec is None or spec == "":
        return None
    if spec == "json":
        return {"type": "json_object"}
    if isinstance(spec, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": spec}}
    raise InvalidRequest('format must be "json" or a JSON schema object.')


def _translated(options: Mapping[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ollama's ``options`` as OpenAI's sampling fields and server knobs (for any server but Ollama)."""
    sampling: dict[str, Any] = {}
    knobs: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if name in _SAME_OPTIONS:
            sampling[name] = value
        elif name == "num_predict":
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                sampling["max_tokens"] = value
            elif value not in (-1, -2):  # -1 infinite, -2 fill the context: no limit
                raise InvalidRequest("options.num_predict must be a positive integer, -1 or -2.")
        elif name in _KNOBS:
            knobs[name] = value
        else:
            raise InvalidRequest(f"options.{name}: {where} is not an Ollama server and has no such setting.")
    return sampling, knobs


def _settings(body: Mapping[str, Any], fields: frozenset[str], kind: str, model: str) -> dict[str, Any]:
    """``options``, ``format``, ``think``, ``keep_alive``, ``logprobs`` and other fields, in Sluice's body."""
    options = body.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InvalidRequest("options must be an object.")
    out: dict[str, Any] = {}
    sampling: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name in ("logprobs", "top_logprobs"):
        if body.get(name) is not None:
            sampling[name] = body[name]
    unknown = {name: body[name] for name in sorted(set(body) - fields)}
    if kind == OLLAMA:
        # Ollama's own knobs reach it unchanged.
        if options:
            extra["options"] = options
        for name in ("format", "think", "keep_alive"):
            if body.get(name) is not None:
                extra[name] = body[name]
        extra.update(unknown)
    else:
        if unknown:
            raise InvalidRequest(f"{next(iter(unknown))}: {model} is not an Ollama server and has no such field.")
        more, knobs = _translated(options, model)
        sampling.update(more)
        extra = knobs_extra(kind, knobs)
        response_format = _response_format(body.get("format"))
        if response_format is not None:
            out["response_format"] = response_format
        think = body.get("think")
        if think is not None and not (kind == DEMO and think is False):  # demo/echo needs no "don't think"
            sampling["reasoning_effort"] = _think_effort(think)
    out["options"] = sampling
    out["extra"] = extra
    return out


def _stream(body: Mapping[str, Any]) -> bool:
    stream = body.get("stream")
    if stream is None:
        return True  # Ollama streams unless told not to
    if not isinstance(stream, bool):
        raise InvalidRequest("stream must be true or false.")
    return stream


def parse_chat_body(body: Any, kind_of: KindOf) -> ChatRequest:
    """Validate an ``/api/chat`` body into a ``ChatRequest`` (see the module docstring).

    :raise InvalidRequest: naming the field that is wrong or cannot be carried.
    :raise sluice.errors.ModelNotFound: the model names no provider.
    """
    model = model_of(body)
    kind = kind_of(model)
    sluice: dict[str, Any] = {
        "model": model,
        "messages": _messages(body.get("messages")),
        "stream": _stream(body),
        **_settings(body, _CHAT_FIELDS, kind, model),
    }
    if body.get("tools") is not None:
        sluice["tools"] = body["tools"]
    return parse_chat(sluice, model)


def parse_generate(body: Any, kind_of: KindOf) -> ChatRequest:
    """Validate an ``/api/generate`` body into a ``ChatRequest``: its system and prompt as a chat.

    :raise InvalidRequest: naming the field that is wrong or cannot be carried.
    :raise sluice.errors.ModelNotFound: the model names no provider.
    """
    model = model_of(body)
    for name in _RAW_ONLY:
        if body.get(name):
            raise InvalidRequest(f"{name}: Sluice answers /api/generate as a chat; a raw completion has no {name}.")
    kind = kind_of(model)
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise InvalidRequest("system must be a string.")
        if system:
            messages.append({"role": "system", "content": system})
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string.")
    messages.append({"role": "user", "content": _content(prompt, body.get("images"), "prompt")})
    sluice = {
        "model": model,
        "messages": messages,
        "stream": _stream(body),
        **_settings(body, _GENERATE_FIELDS, kind, model),
    }
    return parse_chat(sluice, model)


def parse_embed(body: Any, kind_of: KindOf) -> EmbedRequest:
    """Validate an ``/api/embed`` body into an ``EmbedRequest``.

    ``truncate``, ``options`` and ``keep_alive`` go to Ollama unchanged; for any
    other server ``truncate: false`` is what it does anyway and ``keep_alive`` is
    dropped, while ``truncate: true`` and ``options`` are refused by name.

    :raise InvalidRequest: naming the field that is wrong or cannot be carried.
    :raise sluice.errors.ModelNotFound: the model names no provider.
    """
    model = model_of(body)
    kind = kind_of(model)
    given = body.get("input")
    if isinstance(given, str):
        texts: str | tuple[str, ...] = given
    elif isinstance(given, list) and given and all(isinstance(item, str) for item in given):
        texts = tuple(given)
    else:
        raise InvalidRequest("input must be a string or a non-empty list of strings.")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise InvalidRequest("dimensions must be a positive integer.")
    rest = {name: value for name, value in body.items() if name not in ("model", "input", "dimensions")}
    extra: dict[str, Any] = {}
    if kind == OLLAMA:
        extra = {name: value for name, value in rest.items() if value is not None}
    else:
        for name, value in rest.items():
            if value is None or name == "keep_alive" or (name == "truncate" and value is False):
                continue
            if name == "options" and value == {}:
                continue
            raise InvalidRequest(f"{name}: {model} is not an Ollama server and cannot honour it.")
    return EmbedRequest(model, texts, dimensions, extra)
