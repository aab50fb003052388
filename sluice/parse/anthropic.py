"""Anthropic's Messages API (``POST /v1/messages``): its request body as a ``ChatRequest``.

Field by field (docs/api.md, "Anthropic Messages"):

- ``model`` (Sluice's ``provider/model``) and ``max_tokens`` are required;
  ``max_tokens`` is the token limit;
- ``system`` (a string or text blocks) is the first, ``system``, message;
- ``messages``: ``user`` and ``assistant`` turns, their content a string or
  blocks: ``text``; ``image`` (a ``base64`` or ``url`` source) as an image
  part; an assistant's ``tool_use`` as a tool call (``input`` as its JSON
  arguments); a user's ``tool_result`` as a ``tool`` message answering that
  call, before the rest of the turn (``is_error`` marks its text
  ``Error: …``). ``thinking`` and ``redacted_thinking`` blocks of earlier
  turns are dropped, as Anthropic's API drops them;
- ``tools`` (``name``, ``description``, ``input_schema``) as function tools;
  ``tool_choice`` ``auto``/``any``/``tool``/``none`` as ``auto``/``required``/a
  forced function/``none``, ``disable_parallel_tool_use`` as
  ``parallel_tool_calls: false``;
- ``stop_sequences`` as ``stop``; ``temperature``, ``top_p`` as they are;
  ``top_k`` as a server knob (``sluice.parse.upstream``);
- ``thinking``: ``enabled`` asks for reasoning, its ``budget_tokens`` as a
  ``reasoning_effort`` (up to 2048 ``low``, up to 8192 ``medium``, more
  ``high``); to Ollama, ``think: true`` (``disabled``: ``think: false``;
  ``adaptive``: ``think: true``; both leave other servers at their default);
  ``output_config``: ``effort`` as ``reasoning_effort``, ``format`` (a JSON
  schema) as the ``json_schema`` response format;
- ``metadata.user_id`` as OpenAI's ``user``; ``service_tier``, ``metadata``'s
  other keys and ``cache_control`` (a caching hint) only inform and are dropped;
- ``stream`` (default false).

Anything else is refused with ``400`` naming it: server tools, documents,
fields this API has that Sluice cannot carry.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Any, TypeGuard

from ..chat import ChatRequest, Message, Part, ToolCall
from ..errors import InvalidRequest
from .upstream import OLLAMA, KindOf, knobs_extra

__all__ = ["parse_anthropic"]

_FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "thinking",
        "output_config",
        "metadata",
        "service_tier",
        "cache_control",
        "stream",
    }
)
_MAX_MESSAGES = 10_000
_MEDIA_TYPE = re.compile(r"image/[A-Za-z0-9.+-]+")
# Reasoning budgets to OpenAI's effort words: at most this many tokens -> the word.
_EFFORTS = ((2048, "low"), (8192, "medium"))


def _integer(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, low: float, high: float) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return math.isfinite(value) and low <= value <= high


def _text_of(block: Mapping[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise InvalidRequest(f"{where}.text must be a string.")
    return text


def _image(block: Mapping[str, Any], where: str) -> Part:
    """An ``image`` block as an image part: a ``data:`` URL, or the ``url`` source as is."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64":
        assert isinstance(source, dict)
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not _MEDIA_TYPE.fullmatch(media_type):
            raise InvalidRequest(f"{where}.source.media_type must be an image type such as image/png.")
        if not isinstance(data, str):
            raise InvalidRequest(f"{where}.source.data must be a base64 string.")
        try:
            binascii.a2b_base64(data, strict_mode=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"{where}.source.data is not valid base64.") from None
        return Part("image_url", url=f"data:{media_type};base64,{data}")
    if kind == "url":
        assert isinstance(source, dict)
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidRequest(f"{where}.source.url must be an http(s) URL.")
        return Part("image_url", url=url)
    raise InvalidRequest(f"{where}.source.type must be base64 or url.")


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """A message's content as a list of blocks (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or a list of content blocks.")
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            raise InvalidRequest(f"{where}[{i}] must be an object.")
    return content


def _content(parts: list[Part]) -> str | tuple[Part, ...]:
    """One text part as a plain string; anything else as parts."""
    if len(parts) == 1 and parts[0].type == "text":
        return parts[0].text
    return tuple(parts)


def _tool_result(block: Mapping[str, Any], where: str) -> Message:
    """A ``tool_result`` block as the ``tool`` message that answers its call."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{where}.tool_use_id must be the id of the tool_use it answers.")
    content = block.get("content", "")
    texts = []
    for i, part in enumerate(_blocks(content, f"{where}.content")):
        if part.get("type") != "text":
            raise InvalidRequest(f"{where}.content[{i}]: a tool result carries text only through Sluice.")
        texts.append(_text_of(part, f"{where}.content[{i}]"))
    text = "".join(texts)
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise InvalidRequest(f"{where}.is_error must be true or false.")
    if is_error:
        text = f"Error: {text}"  # OpenAI's tool messages have no error flag: the text says it
    return Message("tool", text, tool_call_id=call_id)


def _user(content: Any, where: str) -> list[Message]:
    """A user turn: its tool results first (each a ``tool`` message), then its text and images."""
    results: list[Message] = []
    parts: list[Part] = []
    for i, block in enumerate(_blocks(content, where)):
        at = f"{where}[{i}]"
        kind = block.get("type")
        if kind == "text":
            parts.append(Part("text", text=_text_of(block, at)))
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_result":
            results.append(_tool_result(block, at))
        else:
            raise InvalidRequest(f"{at}.type {kind!r}: a user turn through Sluice holds text, image and tool_result.")
    if parts or not results:
        return [*results, Message("user", _content(parts) if parts else "")]
    return results


def _assistant(content: Any, where: str) -> Message:
    """An assistant turn: its text and its tool calls (earlier thinking is dropped)."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for i, block in enumerate(_blocks(content, where)):
        at = f"{where}[{i}]"
        kind = block.get("type")
        if kind == "text":
            texts.append(_text_of(block, at))
        elif kind == "tool_use":
            call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequest(f"{at}.id must be a string.")
            if not isinstance(name, str) or not name:
                raise InvalidRequest(f"{at}.name must be a string.")
            if not isinstance(arguments, dict):
                raise InvalidRequest(f"{at}.input must be an object.")
            calls.append(ToolCall(call_id, name, json.dumps(arguments, ensure_ascii=False)))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier turns' reasoning is not the model's input (nor is it in Anthropic's API)
        else:
            raise InvalidRequest(f"{at}.type {kind!r}: an assistant turn through Sluice holds text and tool_use.")
    text = "".join(texts)
    return Message("assistant", None if calls and not text else text, tool_calls=tuple(calls))


def _messages(body: Mapping[str, Any]) -> list[Message]:
    messages: list[Message] = []
    system = body.get("system")
    if system is not None:
        parts = []
        for i, block in enumerate(_blocks(system, "system")):
            if block.get("type") != "text":
                raise InvalidRequest(f"system[{i}].type must be text.")
            parts.append(Part("text", text=_text_of(block, f"system[{i}]")))
        if parts:
            messages.append(Message("system", _content(parts)))
    items = body.get("messages")
    if not isinstance(items, list) or not items:
        raise InvalidRequest("messages: a non-empty list is required.")
    if len(items) > _MAX_MESSAGES:
        raise InvalidRequest(f"messages: at most {_MAX_MESSAGES} items.")
    for index, item in enumerate(items):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object.")
        role = item.get("role")
        if role == "user":
            messages.extend(_user(item.get("content"), f"{where}.content"))
        elif role == "assistant":
            messages.append(_assistant(item.get("content"), f"{where}.content"))
        else:
            raise InvalidRequest(f"{where}.role must be user or assistant.")
    return messages


def _tools(body: Mapping[str, Any]) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` in OpenAI's shape."""
    fields: dict[str, Any] = {}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("tools must be a list.")
        converted = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                raise InvalidRequest(f"tools[{i}] must be an object.")
            kind = tool.get("type")
            if kind not in (None, "custom"):
                raise InvalidRequest(
                    f"tools[{i}].type {kind!r} is one of Anthropic's server tools; "
                    "models through Sluice call your own tools (name, input_schema)."
                )
            name, schema, description = tool.get("name"), tool.get("input_schema"), tool.get("description")
            if not isinstance(name, str) or not name:
                raise InvalidRequest(f"tools[{i}].name must be a string.")
            if not isinstance(schema, dict):
                raise InvalidRequest(f"tools[{i}].input_schema must be a JSON schema object.")
            function: dict[str, Any] = {"name": name}
            if description is not None:
                if not isinstance(description, str):
                    raise InvalidRequest(f"tools[{i}].description must be a string.")
                function["description"] = description
            function["parameters"] = schema
            converted.append({"type": "function", "function": function})
        fields["tools"] = tuple(converted)
    choice = body.get("tool_choice")
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind in ("auto", "any", "none"):
            fields["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
        elif kind == "tool" and isinstance(choice.get("name"), str):
            fields["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        else:
            raise InvalidRequest("tool_choice must be {'type': 'auto' | 'any' | 'none'} or {'type': 'tool', 'name'}.")
        assert isinstance(choice, dict)
        no_parallel = choice.get("disable_parallel_tool_use")
        if no_parallel is not None and not isinstance(no_parallel, bool):
            raise InvalidRequest("tool_choice.disable_parallel_tool_use must be true or false.")
        if no_parallel:
            fields["parallel_tool_calls"] = False
    return fields


def _effort(budget: int) -> str:
    for most, effort in _EFFORTS:
        if budget <= most:
            return effort
    return "high"


def _reasoning(body: Mapping[str, Any], kind: str, options: dict[str, Any], extra: dict[str, Any]) -> None:
    """``thinking`` and ``output_config.effort`` into ``options`` (``reasoning_effort``) or Ollama's ``think``."""
    thinking = body.get("thinking")
    if thinking is not None:
        mode = thinking.get("type") if isinstance(thinking, dict) else None
        if mode not in ("enabled", "disabled", "adaptive"):
            raise InvalidRequest("thinking.type must be enabled, disabled or adaptive.")
        assert isinstance(thinking, dict)
        display = thinking.get("display")
        if display not in (None, "summarized"):
            raise InvalidRequest("thinking.display: Sluice shows the model's reasoning as it comes (summarized).")
        if mode == "enabled":
            budget = thinking.get("budget_tokens")
            if not _integer(budget) or budget < 1:
                raise InvalidRequest("thinking.budget_tokens must be a positive integer.")
            if kind == OLLAMA:
                extra["think"] = True
            else:
                options["reasoning_effort"] = _effort(budget)
        elif kind == OLLAMA:
            extra["think"] = mode == "adaptive"
    config = body.get("output_config")
    if config is None:
        return
    if not isinstance(config, dict):
        raise InvalidRequest("output_config must be an object.")
    unknown = sorted(set(config) - {"effort", "format"})
    if unknown:
        raise InvalidRequest(f"output_config.{unknown[0]}: Sluice has no place for it.")
    effort = config.get("effort")
    if effort is not None:
        if not isinstance(effort, str) or not 0 < len(effort) <= 32:
            raise InvalidRequest("output_config.effort must be low, medium, high, xhigh or max.")
        options["reasoning_effort"] = effort
        extra.pop("think", None)  # the effort says how much (Ollama's think takes the same words)


def _response_format(body: Mapping[str, Any]) -> dict[str, Any] | None:
    config = body.get("output_config")
    spec = config.get("format") if isinstance(config, dict) else None
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("type") != "json_schema" or not isinstance(spec.get("schema"), dict):
        raise InvalidRequest("output_config.format must be {'type': 'json_schema', 'schema': {...}}.")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": spec["schema"], "strict": True}}


def _options(body: Mapping[str, Any]) -> dict[str, Any]:
    """``max_tokens``, ``temperature``, ``top_p`` and ``stop_sequences`` under OpenAI's names."""
    max_tokens = body.get("max_tokens")
    if not _integer(max_tokens) or max_tokens < 1:
        raise InvalidRequest("max_tokens: required, a positive integer.")
    options: dict[str, Any] = {"max_tokens": max_tokens}
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if not _number(value, 0, 1):
                raise InvalidRequest(f"{name} must be a number from 0 to 1.")
            options[name] = value
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(stop, str) and stop for stop in stops):
            raise InvalidRequest("stop_sequences must be a list of non-empty strings.")
        if stops:
            options["stop"] = stops
    return options


def _info(body: Mapping[str, Any]) -> dict[str, Any]:
    metadata = body.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata must be an object.")
    user = metadata.get("user_id")
    if user is None:
        return {}
    if not isinstance(user, str):
        raise InvalidRequest("metadata.user_id must be a string.")
    return {"user": user}  # the same meaning as OpenAI's user: who the end user is


def parse_anthropic(body: Any, kind_of: KindOf) -> ChatRequest:
    """Validate an Anthropic Messages body into a ``ChatRequest`` (see the module docstring).

    :param kind_of: the kind of server a model goes to (``sluice.parse.upstream.kind_of``).
    :raise InvalidRequest: naming the first field that is wrong or cannot be carried.
    :raise sluice.errors.ModelNotFound: the model names no provider.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: Sluice's Messages API has no place for this field.")
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > 256:
        raise InvalidRequest("model: required, a model such as demo/echo or ollama/llama3.")
    options = _options(body)
    kind = kind_of(model)
    top_k = body.get("top_k")
    knobs: dict[str, Any] = {}
    if top_k is not None:
        if not _integer(top_k) or top_k < 1:
            raise InvalidRequest("top_k must be a positive integer.")
        knobs["top_k"] = top_k
    extra = knobs_extra(kind, knobs)
    _reasoning(body, kind, options, extra)
    stream = body.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("stream must be true or false.")
    return ChatRequest(
        model=model,
        messages=tuple(_messages(body)),
        options=options,
        response_format=_response_format(body),
        extra=extra,
        info=_info(body),
        stream=stream,
        **_tools(body),
    )
