"""OpenAI's Responses API: a ``POST /v1/responses`` body → a ``ChatRequest``, and what is kept of it.

Every field is honoured, refused by name (``400`` whose ``param`` names it),
or, for the fields that only inform, accepted and kept on Sluice's side:

==========================  ==============================================================
Responses field             becomes
==========================  ==============================================================
``input`` (a string)        one ``user`` message
``input`` items             ``message`` items (``input_text``, ``input_image``; an
                            assistant's ``output_text`` and ``refusal`` as its text) →
                            messages; ``function_call`` → the assistant's ``tool_calls``
                            (consecutive calls join one assistant turn);
                            ``function_call_output`` → a ``tool`` message; ``reasoning``
                            items are skipped (chat APIs take no earlier reasoning back);
                            any other item type is refused
``instructions``            a ``system`` message first (not carried to a later response)
``tools`` (``function``)    chat's ``{"type":"function","function":{…}}``; hosted tools refused
``tool_choice``             ``none``/``auto``/``required``, or a named function
``parallel_tool_calls``     as is
``text.format``             ``response_format`` (``json_schema``, ``json_object``; ``text``: none)
``temperature``, ``top_p``  as is
``max_output_tokens``       ``max_completion_tokens`` (Ollama: ``options.num_predict``)
``reasoning.effort``        ``reasoning_effort`` (Ollama: ``think``)
``include``, ``top_logprobs``  ``message.output_text.logprobs`` → ``logprobs``; ``top_logprobs``
``user``, ``service_tier``  as on chat completions (informing)
``metadata``, ``store``     kept with the response, never sent upstream
``previous_response_id``    that response's input and output, before this input
``background``, ``stream``  how the route answers
``seed``, ``stop``, …       chat's sampling fields the Responses API lacks, under chat's names
any other field             passed to the upstream body as given (as on ``/v1/chat/completions``)
==========================  ==============================================================

Checking happens in two steps: the Responses shape here, with a ``param`` for
every field; then the chat body it becomes goes through ``chat.parse_openai``,
the same checks ``/v1/chat/completions`` makes, and an error there is given
back the Responses field it came from. A provider's refusal (it cannot honour
a field) is named back the same way (``ResponsesRequest.blame``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..chat import OPTION_NAMES, ChatRequest, parse_openai
from ..errors import InvalidRequest

__all__ = ["ResponsesRequest", "Stored", "output_as_input", "parse_responses", "previous_response_id"]

# Responses fields Sluice cannot honour: refused by name whenever they are set (null is "not set").
_REFUSED = {
    "conversation": "Sluice keeps no conversation objects; chain responses with previous_response_id",
    "prompt": "Sluice has no stored prompt templates; send instructions and input",
    "context_management": "Sluice does not compact context",
    "prompt_cache_retention": "Sluice has no prompt cache to configure",
    "prompt_cache_options": "Sluice has no prompt cache to configure",
    "background_options": "Sluice's background responses take no options",
    "moderation": "Sluice runs no moderation",
    "image": "Sluice has no image settings",
    "access_programs": "Sluice has no access programs",
    "max_tool_calls": "Sluice cannot bound the number of tool calls a model makes",
}
# Chat-completions names the Responses API spells otherwise: refused, naming the right one.
_RENAMED = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort",
    "response_format": "text.format",
    "logprobs": "include: ['message.output_text.logprobs']",
    "functions": "tools",
    "function_call": "tool_choice",
}
# Chat sampling fields the Responses API lacks: accepted under chat's names (so Ollama gets them too).
_CHAT_OPTIONS = frozenset(
    OPTION_NAMES - {"max_tokens", "max_completion_tokens", "reasoning_effort", "logprobs", "top_logprobs"}
)
# The fields handled here; any other goes to the upstream as given.
_FIELDS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "temperature",
        "top_p",
        "max_output_tokens",
        "reasoning",
        "metadata",
        "store",
        "previous_response_id",
        "background",
        "stream",
        "stream_options",
        "include",
        "top_logprobs",
        "truncation",
        "user",
        "service_tier",
        # Informing only: accepted, not sent upstream (chat APIs have no place for them everywhere).
        "safety_identifier",
        "prompt_cache_key",
    }
)
_LOGPROBS_INCLUDE = "message.output_text.logprobs"
_MAX_ITEMS = 10_000
_DETAILS = ("auto", "low", "high")
_CHOICES = frozenset({"none", "auto", "required"})
# The chat name an error or a provider's refusal starts with → the Responses field.
_CHAT_TO_RESPONSES = {
    "max_completion_tokens": "max_output_tokens",
    "max_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort",
    "response_format": "text.format",
    "logprobs": "include",
    "image_url": "input",
    "messages": "input",
    "model": "model",
}
_LEADING_NAME = re.compile(r"^'?([A-Za-z_]+)(?:\[(\d+)\])?")


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


@dataclass(frozen=True, slots=True)
class Stored:
    """What Sluice keeps of a response's request, with its generation (``Broker.meta``).

    ``input`` is the whole conversation so far in Responses items (the earlier
    responses' input and output, then this input: what ``previous_response_id``
    prepends), ``echo`` the request fields a ``Response`` object repeats.
    """

    created_at: int
    input: tuple[Mapping[str, Any], ...]
    echo: Mapping[str, Any]
    store: bool = True

    def to_meta(self) -> str:
        """The text kept as the generation's meta."""
        return json.dumps(
            {
                "responses": 1,
                "created_at": self.created_at,
                "input": self.input,
                "echo": self.echo,
                "store": self.store,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_meta(cls, meta: str | None) -> Stored | None:
        """The stored request of a response; None for a generation that is not one."""
        if not meta:
            return None
        try:
            data = json.loads(meta)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("responses") != 1:
            return None
        return cls(int(data["created_at"]), tuple(data["input"]), data["echo"], bool(data["store"]))


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A validated Responses request: the chat to run, and what the response keeps and repeats."""

    chat: ChatRequest
    input: tuple[Mapping[str, Any], ...]  # the whole conversation, in Responses items (see ``Stored``)
    echo: Mapping[str, Any]
    background: bool = False
    store: bool = True
    stream: bool = False
    # The Responses field each chat message came from (``input[3]``, ``instructions``, …).
    sources: tuple[str, ...] = ()
    # The fields passed to the upstream as given.
    extras: tuple[str, ...] = ()

    def blame(self, exc: InvalidRequest) -> InvalidRequest:
        """Give a chat-level refusal (a provider's) the Responses field it is about, in ``param``."""
        return _blame(exc, self.sources, self.extras)


def _blame(exc: InvalidRequest, sources: Sequence[str], extras: Sequence[str]) -> InvalidRequest:
    """``exc`` with ``param`` naming the Responses field it is about.

    The chat-level ``param`` (or, without one, the field the message names
    first) is translated: a chat message's position (``messages[3]``) becomes
    the input item it came from, in the message too, so the client reads its
    own field names; ``response_format`` becomes ``text.format``, and so on.
    """
    match = _LEADING_NAME.match(exc.param if exc.param is not None else exc.message)
    if match is None:
        return exc
    name, index = match.group(1), match.group(2)
    if name == "messages" and index is not None and int(index) < len(sources):
        chat_name = match.group(0).lstrip("'")
        exc.param = sources[int(index)]
        if exc.message.startswith(chat_name):
            exc.message = exc.param + exc.message[len(chat_name) :]
    elif name == "messages":
        exc.param = "input"
    elif name == "extra":
        exc.param = extras[0] if extras else None
    elif name in _CHAT_TO_RESPONSES:
        exc.param = _CHAT_TO_RESPONSES[name]
    elif exc.param is None and (name in OPTION_NAMES or name in ("tools", "tool_choice", "parallel_tool_calls")):
        exc.param = name if index is None else f"{name}[{index}]"
    return exc


def previous_response_id(body: Any) -> str | None:
    """The body's ``previous_response_id``, checked (None when not given).

    :raise InvalidRequest: it is not a non-empty string.
    """
    if not isinstance(body, dict):
        return None
    value = body.get("previous_response_id")
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 256:
        raise _bad("'previous_response_id' must be a response id (a string).", "previous_response_id")
    return value


def _flag(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(f"'{name}' must be true or false.", name)
    return value


def _string(value: Any, where: str, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise _bad(f"{where} must be a{'' if empty else ' non-empty'} string.", where)
    return value


# -- input items -------------------------------------------------------------------


def _part(part: Any, role: str, where: str) -> dict[str, Any]:
    """One content part, checked; returned in the stored (Responses) shape."""
    if not isinstance(part, dict):
        raise _bad(f"{where} must be an object.", where)
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        if kind == "output_text" and role != "assistant":
            raise _bad(f"{where}: output_text belongs to assistant messages; use input_text.", f"{where}.type")
        return {"type": kind, "text": _string(part.get("text"), f"{where}.text")}
    if kind == "refusal" and role == "assistant":
        return {"type": "refusal", "refusal": _string(part.get("refusal"), f"{where}.refusal")}
    if kind == "input_image":
        if role != "user":
            raise _bad(f"{where}: only user messages may carry images.", f"{where}.type")
        if part.get("file_id") is not None:
            raise _bad(f"{where}.file_id: Sluice has no file store; send the image as image_url.", f"{where}.file_id")
        url = part.get("image_url")
        if not isinstance(url, str) or not url.startswith(("data:", "http://", "https://")):
            raise _bad(f"{where}.image_url must be a data: or http(s) URL.", f"{where}.image_url")
        image: dict[str, Any] = {"type": "input_image", "image_url": url}
        detail = part.get("detail")
        if detail is not None:
            if detail not in _DETAILS:
                raise _bad(f"{where}.detail must be auto, low or high.", f"{where}.detail")
            image["detail"] = detail
        return image
    if kind == "input_file":
        raise _bad(f"{where}: Sluice takes no input_file parts (no provider here reads files).", f"{where}.type")
    allowed = "input_text, output_text or refusal" if role == "assistant" else "input_text or input_image"
    raise _bad(f"{where}.type must be {allowed}.", f"{where}.type")


def _message_item(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        raise _bad(f"{where}.role must be user, system, developer or assistant.", f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"type": "message", "role": role, "content": content}
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or a list of parts.", f"{where}.content")
    parts = [_part(part, role, f"{where}.content[{i}]") for i, part in enumerate(content)]
    return {"type": "message", "role": role, "content": parts}


def _call_item(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    arguments = item.get("arguments")
    if not isinstance(arguments, str):
        raise _bad(f"{where}.arguments must be a JSON string.", f"{where}.arguments")
    return {
        "type": "function_call",
        "call_id": _string(item.get("call_id"), f"{where}.call_id", empty=False),
        "name": _string(item.get("name"), f"{where}.name", empty=False),
        "arguments": arguments,
    }


def _call_output_item(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    call_id = _string(item.get("call_id"), f"{where}.call_id", empty=False)
    output = item.get("output")
    if isinstance(output, list):
        for i, part in enumerate(output):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "input_text" or not isinstance(part.get("text"), str):
                raise _bad(
                    f"{where}.output[{i}]: a tool's output reaches the model as text; send input_text parts.",
                    f"{where}.output",
                )
        output = [{"type": "input_text", "text": part["text"]} for part in output]
    elif not isinstance(output, str):
        raise _bad(f"{where}.output must be a string or a list of input_text parts.", f"{where}.output")
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def _item(item: Any, where: str) -> dict[str, Any] | None:
    """One input item, checked, in its stored shape; None for one the model does not take back (reasoning)."""
    if not isinstance(item, dict):
        raise _bad(f"{where} must be an object.", where)
    kind = item.get("type")
    if (kind is None and "role" in item) or kind == "message":
        return _message_item(item, where)
    if kind == "function_call":
        return _call_item(item, where)
    if kind == "function_call_output":
        return _call_output_item(item, where)
    if kind == "reasoning":
        return None
    raise _bad(
        f"{where}.type must be message, function_call, function_call_output or reasoning "
        f"(Sluice runs no hosted tools and keeps no item references).",
        f"{where}.type",
    )


def _input(body: Mapping[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """The request's input items (checked, stored shape) with the ``param`` each came from."""
    value = body.get("input")
    if isinstance(value, str):
        return [({"type": "message", "role": "user", "content": value}, "input")]
    if not isinstance(value, list) or not value:
        raise _bad("'input' is required: a string or a non-empty list of input items.", "input")
    if len(value) > _MAX_ITEMS:
        raise _bad(f"'input' may hold at most {_MAX_ITEMS} items.", "input")
    items = []
    for i, raw in enumerate(value):
        checked = _item(raw, f"input[{i}]")
        if checked is not None:
            items.append((checked, f"input[{i}]"))
    return items


def _chat_part(part: Mapping[str, Any]) -> dict[str, Any]:
    kind = part["type"]
    if kind == "input_image":
        image = {"url": part["image_url"]}
        if "detail" in part:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    return {"type": "text", "text": part["refusal"] if kind == "refusal" else part["text"]}


def _chat_messages(items: Sequence[tuple[Mapping[str, Any], str]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Chat messages for stored-shape items, and the source of each."""
    messages: list[dict[str, Any]] = []
    sources: list[str] = []
    for item, source in items:
        kind = item["type"]
        if kind == "message":
            content = item["content"]
            if not isinstance(content, str):
                content = [_chat_part(part) for part in content]
            messages.append({"role": item["role"], "content": content})
            sources.append(source)
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                # The same assistant turn: its text and the calls it made, or several calls.
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
                sources.append(source)
        else:
            output = item["output"]
            if not isinstance(output, str):
                output = [{"type": "text", "text": part["text"]} for part in output]
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
            sources.append(source)
    return messages, sources


def output_as_input(output: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items as the input items that carry them into the next response."""
    items: list[dict[str, Any]] = []
    for item in output:
        kind = item.get("type")
        if kind == "message":
            parts = [
                {"type": "refusal", "refusal": part["refusal"]}
                if part["type"] == "refusal"
                else {"type": "output_text", "text": part["text"]}
                for part in item["content"]
            ]
            items.append({"type": "message", "role": "assistant", "content": parts})
        elif kind == "function_call":
            items.append(
                {
                    "type": "function_call",
                    "call_id": item["call_id"],
                    "name": item["name"],
                    "arguments": item["arguments"],
                }
            )
    return items


# -- the other fields --------------------------------------------------------------


def _tools(body: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _bad("'tools' must be a list.", "tools")
    converted = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad(f"{where} must be an object.", where)
        if tool.get("type") != "function":
            raise _bad(
                f"{where}.type: Sluice runs function tools only (no hosted tools such as {tool.get('type')!r}).",
                f"{where}.type",
            )
        function: dict[str, Any] = {"name": _string(tool.get("name"), f"{where}.name", empty=False)}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        if "parameters" in function and not isinstance(function["parameters"], dict):
            raise _bad(f"{where}.parameters must be a JSON schema object.", f"{where}.parameters")
        converted.append({"type": "function", "function": function})
    return converted


def _tool_choice(body: Mapping[str, Any]) -> Any:
    choice = body.get("tool_choice")
    if choice is None or (isinstance(choice, str) and choice in _CHOICES):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("'tool_choice' must be none, auto, required or {'type': 'function', 'name'}.", "tool_choice")


def _text(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """``text.format`` as chat's ``response_format`` (None for plain text)."""
    text = body.get("text")
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _bad("'text' must be an object.", "text")
    if text.get("verbosity") is not None:
        raise _bad("text.verbosity: chat APIs have no verbosity setting.", "text.verbosity")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(fmt.get("name"), str) or not isinstance(schema, dict):
            raise _bad("text.format json_schema needs 'name' (a string) and 'schema' (an object).", "text.format")
        spec: dict[str, Any] = {"name": fmt["name"], "schema": schema}
        for name in ("strict", "description"):
            if fmt.get(name) is not None:
                spec[name] = fmt[name]
        return {"type": "json_schema", "json_schema": spec}
    raise _bad("text.format.type must be text, json_object or json_schema.", "text.format")


def _options(body: Mapping[str, Any]) -> dict[str, Any]:
    """Sampling fields under chat's names (their ranges are checked by ``parse_openai``)."""
    options: dict[str, Any] = {name: body[name] for name in ("temperature", "top_p") if body.get(name) is not None}
    limit = body.get("max_output_tokens")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise _bad("'max_output_tokens' must be a positive integer.", "max_output_tokens")
        options["max_completion_tokens"] = limit
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise _bad("'reasoning' must be an object.", "reasoning")
        if reasoning.get("effort") is not None:
            options["reasoning_effort"] = reasoning["effort"]
        for name in ("summary", "generate_summary"):
            if reasoning.get(name) not in (None, "auto"):
                raise _bad(
                    f"reasoning.{name}: Sluice streams the model's own reasoning text, never a summary; "
                    "leave it unset or auto.",
                    f"reasoning.{name}",
                )
    include = body.get("include")
    if include is not None:
        if not isinstance(include, list) or not all(isinstance(name, str) for name in include):
            raise _bad("'include' must be a list of strings.", "include")
        for name in include:
            if name != _LOGPROBS_INCLUDE:
                raise _bad(f"include: Sluice can include {_LOGPROBS_INCLUDE!r} only, not {name!r}.", "include")
        if include:
            options["logprobs"] = True
    if body.get("top_logprobs") is not None:
        options["top_logprobs"] = body["top_logprobs"]
        options["logprobs"] = True
    for name in _CHAT_OPTIONS:
        if body.get(name) is not None:
            options[name] = body[name]
    return options


def _metadata(body: Mapping[str, Any]) -> dict[str, str] | None:
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if (
        not isinstance(metadata, dict)
        or len(metadata) > 16
        or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in metadata.items()
        )
    ):
        raise _bad(
            "'metadata' must be at most 16 string pairs (keys up to 64, values up to 512 characters).", "metadata"
        )
    return metadata


def _check_minor(body: Mapping[str, Any]) -> None:
    """The fields that change nothing here but must be well formed."""
    truncation = body.get("truncation")
    if truncation not in (None, "disabled"):
        raise _bad("truncation: Sluice never truncates the input; send 'disabled' or leave it unset.", "truncation")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise _bad("'stream_options' must be an object.", "stream_options")
    for name in ("instructions", "user", "service_tier", "safety_identifier", "prompt_cache_key"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise _bad(f"'{name}' must be a string.", name)
    _metadata(body)


def parse_responses(body: Any, default_model: str, history: Sequence[Mapping[str, Any]] = ()) -> ResponsesRequest:
    """Validate a Responses body into the chat to run (see the module docstring).

    :param history: the conversation ``previous_response_id`` names (its input and output, stored shape).
    :raise InvalidRequest: naming the first field that is wrong, or one Sluice cannot honour, in ``param``.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    for name, why in _REFUSED.items():
        if body.get(name) is not None:
            raise _bad(f"{name}: {why}.", name)
    for name, instead in _RENAMED.items():
        if name in body:
            raise _bad(f"{name!r} is a chat-completions field; the Responses API's is {instead}.", name)
    _check_minor(body)
    stream = _flag(body, "stream", False)
    background = _flag(body, "background", False)
    store = _flag(body, "store", True)
    if background and not store:
        raise _bad("A background response is stored: send store true (or leave it unset).", "store")
    items = _input(body)
    instructions = body.get("instructions")
    stored = [*((item, "previous_response_id") for item in history), *items]
    messages, sources = _chat_messages(stored)
    if instructions:
        messages.insert(0, {"role": "system", "content": instructions})
        sources.insert(0, "instructions")
    extras = sorted(name for name, value in body.items() if name not in _FIELDS | _CHAT_OPTIONS and value is not None)
    chat_body: dict[str, Any] = {
        "model": body.get("model"),
        "messages": messages,
        "stream": stream,
        "tools": _tools(body),
        "tool_choice": _tool_choice(body),
        "parallel_tool_calls": body.get("parallel_tool_calls"),
        "response_format": _text(body),
        **_options(body),
        **{name: body[name] for name in ("user", "service_tier") if body.get(name) is not None},
        **{name: body[name] for name in extras},
    }
    try:
        chat, _ = parse_openai({k: v for k, v in chat_body.items() if v is not None}, default_model)
    except InvalidRequest as exc:
        raise _blame(exc, sources, extras) from None
    return ResponsesRequest(
        chat,
        tuple(item for item, _ in stored),
        _echo(body, default_model),
        background,
        store,
        stream,
        tuple(sources),
        tuple(extras),
    )


def _echo(body: Mapping[str, Any], default_model: str) -> dict[str, Any]:
    """The request fields a ``Response`` object repeats, as OpenAI fills them when not given."""
    reasoning = body.get("reasoning") or {}
    text = body.get("text") or {}
    model = body.get("model") or default_model
    return {
        "model": model,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "background": body.get("background") is True,
        "store": body.get("store") is not False,
        "temperature": body.get("temperature"),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_logprobs": body.get("top_logprobs"),
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation") or "disabled",
        "user": body.get("user"),
        "service_tier": body.get("service_tier"),
    }
