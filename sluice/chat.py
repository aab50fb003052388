"""Turn a request body into a validated, frozen ``ChatRequest``: the whole request, carried whole.

Everything a client can send wrong is caught here, once, with a message that
names the field and the field's path in ``InvalidRequest.param``
(``messages[0].role``, ``options.temperature``); providers only ever see a
valid request. Two bodies build the
same value: Sluice's own (``parse_chat``: sampling under ``options``, server
knobs under ``extra``) and OpenAI's (``parse_openai``: sampling at the top
level, any unknown top-level field passed through as an extra). Messages are
OpenAI's shape in both, with content parts, tool calls and tool results.
Whether a provider can honour a field is the provider's decision (it refuses
with ``InvalidRequest``), not this module's.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Request

from .errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = [
    "OPTION_NAMES",
    "ROLES",
    "ChatRequest",
    "Message",
    "Part",
    "ToolCall",
    "loads",
    "parse_chat",
    "parse_openai",
    "read_json",
]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_MAX_MESSAGES = 10_000
# Fields that only inform: a provider with no place for them may drop them (SPEC "Fidelity").
INFO_NAMES = frozenset({"user", "metadata", "store", "service_tier"})


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a message's content: ``text``, or an ``image_url`` (a ``data:`` or ``http(s)`` URL)."""

    type: str  # "text" or "image_url"
    text: str = ""
    url: str = ""
    detail: str | None = None

    @property
    def is_data_url(self) -> bool:
        """True for an inline ``data:`` image."""
        return self.url.startswith("data:")

    def to_openai(self) -> dict[str, Any]:
        """The part in OpenAI's shape."""
        if self.type == "text":
            return {"type": "text", "text": self.text}
        image: dict[str, Any] = {"url": self.url}
        if self.detail is not None:
            image["detail"] = self.detail
        return {"type": "image_url", "image_url": image}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the assistant made in an earlier turn; ``arguments`` is a JSON string."""

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        """The call in OpenAI's shape."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of the conversation, in OpenAI's shape.

    ``content`` is a string, a tuple of parts, or ``None`` (an assistant turn
    that only called tools).
    """

    role: str
    content: str | tuple[Part, ...] | None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """The message's text: the string, or its text parts joined ("" for none)."""
        if isinstance(self.content, str):
            return self.content
        if self.content is None:
            return ""
        return "".join(part.text for part in self.content if part.type == "text")

    @property
    def images(self) -> tuple[Part, ...]:
        """The message's image parts."""
        if isinstance(self.content, tuple):
            return tuple(part for part in self.content if part.type == "image_url")
        return ()

    def to_openai(self) -> dict[str, Any]:
        """The message in OpenAI's shape, as the client sent it."""
        message: dict[str, Any] = {"role": self.role}
        if isinstance(self.content, tuple):
            message["content"] = [part.to_openai() for part in self.content]
        else:
            message["content"] = self.content
        if self.name is not None:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat: everything the client asked of the model, and nothing of HTTP.

    ``options`` holds the sampling and limit fields that were given, under
    OpenAI's names (``OPTION_NAMES``); ``info`` the fields that only inform;
    ``extra`` what goes into the upstream body as given; ``request_id`` the id
    the route gave the request, forwarded upstream.
    """

    model: str  # as the client named it, or the default ("demo/echo")
    messages: tuple[Message, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    tools: tuple[Mapping[str, Any], ...] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = True
    # The request's id (``X-Request-ID``, see ``sluice.logs``): it only informs, and
    # providers send it upstream so both ends' logs name the same request.
    request_id: str | None = None

    @property
    def max_tokens(self) -> int | None:
        """The token limit, under either of its names."""
        value = self.options.get("max_completion_tokens", self.options.get("max_tokens"))
        return value if isinstance(value, int) else None

    @property
    def last_user_message(self) -> str:
        """The text of the last ``user`` turn ("" when there is none)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text
        return ""

    def fields_set(self) -> list[str]:
        """The names of the request-level fields the client set (for a provider's refusal)."""
        names = list(self.options)
        for name in ("tools", "tool_choice", "parallel_tool_calls", "response_format"):
            if getattr(self, name) is not None:
                names.append(name)
        if self.extra:
            names.append("extra")
        return names


def read_json(request: Request, max_bytes: int, any_type: bool = False) -> Any:
    """Read and decode a JSON request body within the contract's limits.

    :param any_type: read the body as JSON whatever its declared type (Ollama's API does:
        ``curl -d``, its usual client, declares a form).
    :raise UnsupportedMediaType: the body is declared as something other than JSON.
    :raise PayloadTooLarge: the body is longer than ``max_bytes``.
    :raise InvalidRequest: the body is not valid UTF-8 JSON or nests too deeply.
    """
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json") and not any_type:
        raise UnsupportedMediaType()
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge()
    # Read one byte past the limit so a body without Content-Length is caught too.
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge()
    if not raw.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    return loads(raw, "request body")


def loads(raw: bytes | str, what: str = "message") -> Any:
    """Decode one JSON document (a request body, a WebSocket message) by the body's rules.

    :param what: how messages name it ("request body", "message").
    :raise InvalidRequest: it is not valid UTF-8 JSON, nests too deeply, or holds a lone surrogate.
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"The {what} is not valid UTF-8.") from None
    else:
        text = raw
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        raise InvalidRequest(f"The {what} is not valid JSON.") from None
    except RecursionError:
        # The C decoder counts its depth against the recursion limit and stops cleanly.
        raise InvalidRequest(f"The JSON {what} nests too deeply.") from None
    # "\ud800" alone parses into a str that no UTF-8 writer can send back; escaped
    # pairs (emoji from ASCII-only encoders) are fine. Only look when an escape is there.
    if _SURROGATE_ESCAPE.search(text) and not _encodable(body):
        raise InvalidRequest(f"The {what} holds a lone UTF-16 surrogate escape.")
    return body


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _encodable(value: Any) -> bool:
    """True when every string in ``value`` (keys included) can be encoded as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python accepts them unless told not to.
    raise ValueError(name)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(low: float, high: float) -> Callable[[Any], bool]:
    return lambda value: _number(value) and low <= value <= high


def _positive_int(value: Any) -> bool:
    return _integer(value) and value >= 1


def _stop(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _logit_bias(value: Any) -> bool:
    return isinstance(value, dict) and all(_number(bias) for bias in value.values())


# Sampling and limit fields: name -> (check, what a valid value is).
_OPTIONS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "temperature": (_in_range(0, 2), "a number from 0 to 2"),
    "top_p": (_in_range(0, 1), "a number from 0 to 1"),
    "max_tokens": (_positive_int, "a positive integer"),
    "max_completion_tokens": (_positive_int, "a positive integer"),
    "stop": (_stop, "a string or a list of strings"),
    "seed": (_integer, "an integer"),
    "presence_penalty": (_in_range(-2, 2), "a number from -2 to 2"),
    "frequency_penalty": (_in_range(-2, 2), "a number from -2 to 2"),
    "logit_bias": (_logit_bias, "an object of token ids to numbers"),
    "logprobs": (lambda v: isinstance(v, bool), "true or false"),
    "top_logprobs": (lambda v: _integer(v) and 0 <= v <= 20, "an integer from 0 to 20"),
    "n": (_positive_int, "a positive integer"),
    "reasoning_effort": (lambda v: isinstance(v, str) and 0 < len(v) <= 32, "a string such as low, medium or high"),
}
OPTION_NAMES = frozenset(_OPTIONS)

_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,")
_TOOL_CHOICES = frozenset({"none", "auto", "required"})


def _check_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate sampling fields by type; ``None`` values count as not given."""
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        check, valid = _OPTIONS[name]
        if not check(value):
            raise InvalidRequest(f"{where}{name} must be {valid}.", param=f"{where}{name}")
        checked[name] = value
    return checked


def _parse_part(part: Any, where: str) -> Part:
    if not isinstance(part, dict):
        raise InvalidRequest(f"{where} must be an object.", param=where)
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidRequest(f"{where}.text must be a string.", param=f"{where}.text")
        return Part("text", text=text)
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str):
            raise InvalidRequest(f"{where}.image_url.url must be a string.", param=f"{where}.image_url.url")
        detail = image.get("detail")  # type: ignore[union-attr]
        if detail is not None and detail not in ("auto", "low", "high"):
            raise InvalidRequest(
                f"{where}.image_url.detail must be auto, low or high.", param=f"{where}.image_url.detail"
            )
        if url.startswith("data:"):
            header = _DATA_URL.match(url)
            if header is None:
                raise InvalidRequest(
                    f"{where}.image_url.url: a data URL must be data:image/<type>;base64,<data>.",
                    param=f"{where}.image_url.url",
                )
            try:
                binascii.a2b_base64(url[header.end() :], strict_mode=True)
            except (binascii.Error, ValueError):
                raise InvalidRequest(
                    f"{where}.image_url.url: the data URL is not valid base64.", param=f"{where}.image_url.url"
                ) from None
        elif not url.startswith(("http://", "https://")):
            raise InvalidRequest(
                f"{where}.image_url.url must be a data: or http(s) URL.", param=f"{where}.image_url.url"
            )
        return Part("image_url", url=url, detail=detail)
    raise InvalidRequest(f"{where}.type must be text or image_url.", param=f"{where}.type")


def _parse_tool_call(call: Any, where: str) -> ToolCall:
    if not isinstance(call, dict):
        raise InvalidRequest(f"{where} must be an object.", param=where)
    function = call.get("function")
    if call.get("type", "function") != "function" or not isinstance(function, dict):
        raise InvalidRequest(f"{where} must be {{'type': 'function', 'function': {{...}}}}.", param=where)
    call_id, name, arguments = call.get("id"), function.get("name"), function.get("arguments", "")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{where}.id must be a string.", param=f"{where}.id")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{where}.function.name must be a string.", param=f"{where}.function.name")
    if not isinstance(arguments, str):
        raise InvalidRequest(f"{where}.function.arguments must be a JSON string.", param=f"{where}.function.arguments")
    return ToolCall(call_id, name, arguments)


def _parse_message(item: Any, index: int) -> Message:
    where = f"messages[{index}]"
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where} must be an object.", param=where)
    role = item.get("role")
    if role not in ROLES:
        raise InvalidRequest(
            f"{where}.role must be one of system, developer, user, assistant, tool.", param=f"{where}.role"
        )
    raw_calls = item.get("tool_calls")
    calls: tuple[ToolCall, ...] = ()
    if raw_calls is not None:
        if role != "assistant" or not isinstance(raw_calls, list):
            raise InvalidRequest(
                f"{where}.tool_calls must be a list, on an assistant message.", param=f"{where}.tool_calls"
            )
        calls = tuple(_parse_tool_call(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(raw_calls))
    content = item.get("content")
    parsed: str | tuple[Part, ...] | None
    if isinstance(content, str):
        parsed = content
    elif isinstance(content, list):
        parsed = tuple(_parse_part(part, f"{where}.content[{i}]") for i, part in enumerate(content))
        if role != "user" and any(part.type != "text" for part in parsed):
            raise InvalidRequest(f"{where}.content: only user messages may carry images.", param=f"{where}.content")
    elif content is None and role == "assistant" and ("content" in item or calls):
        parsed = None
    else:
        raise InvalidRequest(f"{where}.content must be a string or a list of parts.", param=f"{where}.content")
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidRequest(f"{where}.name must be a string.", param=f"{where}.name")
    tool_call_id = item.get("tool_call_id")
    if role == "tool":
        if not isinstance(tool_call_id, str) or not tool_call_id:
            raise InvalidRequest(
                f"{where}.tool_call_id must be the id of the call it answers.", param=f"{where}.tool_call_id"
            )
    elif tool_call_id is not None:
        raise InvalidRequest(f"{where}.tool_call_id belongs on tool messages only.", param=f"{where}.tool_call_id")
    return Message(role, parsed, name, calls, tool_call_id)


def _parse_tools(body: Mapping[str, Any]) -> dict[str, Any]:
    """``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``response_format``, checked."""
    fields: dict[str, Any] = {}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be a list.", param="tools")
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or tool.get("type") != "function":
                raise InvalidRequest(
                    f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}.", param=f"tools[{i}]"
                )
            if not isinstance(function.get("name"), str) or not function["name"]:
                raise InvalidRequest(f"tools[{i}].function.name must be a string.", param=f"tools[{i}].function.name")
            parameters = function.get("parameters")
            if parameters is not None and not isinstance(parameters, dict):
                raise InvalidRequest(
                    f"tools[{i}].function.parameters must be a JSON schema object.",
                    param=f"tools[{i}].function.parameters",
                )
        fields["tools"] = tuple(tools)
    choice = body.get("tool_choice")
    if choice is not None:
        forced = isinstance(choice, dict) and choice.get("type") == "function"
        name = choice.get("function", {}).get("name") if forced and isinstance(choice.get("function"), dict) else None
        if not (isinstance(choice, str) and choice in _TOOL_CHOICES) and not (forced and isinstance(name, str)):
            raise InvalidRequest(
                "'tool_choice' must be none, auto, required or {'type': 'function', 'function': {'name'}}.",
                param="tool_choice",
            )
        fields["tool_choice"] = choice
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise InvalidRequest("'parallel_tool_calls' must be true or false.", param="parallel_tool_calls")
        fields["parallel_tool_calls"] = parallel
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind == "json_schema":
            schema = response_format.get("json_schema")
            if (
                not isinstance(schema, dict)
                or not isinstance(schema.get("name"), str)
                or not isinstance(schema.get("schema", {}), dict)
            ):
                raise InvalidRequest(
                    "response_format.json_schema must be {'name', 'schema', 'strict'?}.",
                    param="response_format.json_schema",
                )
        elif kind not in ("text", "json_object"):
            raise InvalidRequest(
                "response_format.type must be text, json_object or json_schema.", param="response_format.type"
            )
        fields["response_format"] = response_format
    return fields


def _parse_common(body: Mapping[str, Any], default_model: str, stream_default: bool) -> dict[str, Any]:
    model = body.get("model")
    if model is None or model == "":
        model = default_model
    if not isinstance(model, str) or len(model) > 256:
        raise InvalidRequest("'model' must be a string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list.", param="messages")
    if len(messages) > _MAX_MESSAGES:
        raise InvalidRequest(f"'messages' may hold at most {_MAX_MESSAGES} items.", param="messages")
    stream = body.get("stream", stream_default)
    if stream is None:
        stream = stream_default
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false.", param="stream")
    return {
        "model": model,
        "messages": tuple(_parse_message(item, index) for index, item in enumerate(messages)),
        "stream": stream,
        **_parse_tools(body),
    }


_SLUICE_FIELDS = frozenset(
    {
        "model",
        "messages",
        "options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "extra",
        "stream",
    }
)


def parse_chat(body: Any, default_model: str, request_id: str | None = None) -> ChatRequest:
    """Validate Sluice's chat body (docs/api.md) into a ``ChatRequest``.

    :param body: the decoded JSON.
    :param default_model: used when the body names no model.
    :param request_id: the request's id, carried to the upstream.
    :raise InvalidRequest: naming the first field that is wrong, or one Sluice does not know
        (server-specific knobs belong under ``extra``; nothing is dropped in silence).
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    unknown = sorted(set(body) - _SLUICE_FIELDS - INFO_NAMES)
    if unknown:
        raise InvalidRequest(
            f"Unknown field {unknown[0]!r}: put server-specific fields under 'extra'.", param=unknown[0]
        )
    options = body.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InvalidRequest("'options' must be an object.", param="options")
    unknown = sorted(set(options) - OPTION_NAMES)
    if unknown:
        raise InvalidRequest(
            f"options.{unknown[0]} is not a sampling field Sluice knows: put server-specific knobs under 'extra'.",
            param=f"options.{unknown[0]}",
        )
    extra = body.get("extra")
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise InvalidRequest("'extra' must be an object.", param="extra")
    return ChatRequest(
        options=_check_options(options, "options."),
        extra=extra,
        info={name: body[name] for name in INFO_NAMES if body.get(name) is not None},
        request_id=request_id,
        **_parse_common(body, default_model, True),
    )


# /v1 fields that are OpenAI's own and handled here, not passed through as extras.
_OPENAI_FIELDS = frozenset(
    {"model", "messages", "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls", "response_format"}
)


def parse_openai(body: Any, default_model: str, request_id: str | None = None) -> tuple[ChatRequest, bool]:
    """Validate an OpenAI chat-completions body; also return ``stream_options.include_usage``.

    Sampling fields are at the top level under OpenAI's names; every other
    top-level field the client sent is carried as an extra, as given.

    :param request_id: the request's id, carried to the upstream.
    :raise InvalidRequest: naming the first field that is wrong.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    stream_options = body.get("stream_options")
    if stream_options is None:
        stream_options = {}
    if not isinstance(stream_options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    include_usage = stream_options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise InvalidRequest(
            "stream_options.include_usage must be true or false.", param="stream_options.include_usage"
        )
    options = {name: body[name] for name in OPTION_NAMES if name in body}
    extra = {
        name: value
        for name, value in body.items()
        if name not in _OPENAI_FIELDS and name not in OPTION_NAMES and name not in INFO_NAMES
    }
    chat = ChatRequest(
        options=_check_options(options, ""),
        extra=extra,
        info={name: body[name] for name in INFO_NAMES if body.get(name) is not None},
        request_id=request_id,
        **_parse_common(body, default_model, False),
    )
    return chat, include_usage
