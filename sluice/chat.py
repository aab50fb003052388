"""Turn a request body into a validated, frozen ``ChatRequest``.

Everything a client can send wrong is caught here, once, with a message that
says which field is wrong; providers only ever see a valid request.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from flask import Request

from .errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = ["Message", "ChatRequest", "read_json", "parse_chat", "ROLES"]

ROLES = frozenset({"system", "user", "assistant"})
_MAX_MESSAGES = 10_000


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of the conversation."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat: what a provider needs, and nothing of HTTP."""

    model: str  # as the client named it, or the default ("demo/echo")
    messages: tuple[Message, ...]
    temperature: float | None = None
    max_tokens: int | None = None
    stream: bool = True

    @property
    def last_user_message(self) -> str:
        """The content of the last ``user`` turn ("" when there is none)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


def read_json(request: Request, max_bytes: int) -> Any:
    """Read and decode a JSON request body within the contract's limits.

    :raise UnsupportedMediaType: the body is declared as something other than JSON.
    :raise PayloadTooLarge: the body is longer than ``max_bytes``.
    :raise InvalidRequest: the body is not valid UTF-8 JSON or nests too deeply.
    """
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType()
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge()
    # Read one byte past the limit so a body without Content-Length is caught too.
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge()
    if not raw.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not valid UTF-8.") from None
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        raise InvalidRequest("The request body is not valid JSON.") from None
    except RecursionError:
        # The C decoder counts its depth against the recursion limit and stops cleanly.
        raise InvalidRequest("The JSON body nests too deeply.") from None
    # "\ud800" alone parses into a str that no UTF-8 writer can send back; escaped
    # pairs (emoji from ASCII-only encoders) are fine. Only look when an escape is there.
    if _SURROGATE_ESCAPE.search(text) and not _encodable(body):
        raise InvalidRequest("The request body holds a lone UTF-16 surrogate escape.")
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


def parse_chat(body: Any, default_model: str) -> ChatRequest:
    """Validate a chat body (SPEC.md "Chat body") into a ``ChatRequest``.

    :param body: the decoded JSON.
    :param default_model: used when the body names no model.
    :raise InvalidRequest: naming the first field that is wrong.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    model = body.get("model")
    if model is None or model == "":
        model = default_model
    if not isinstance(model, str) or len(model) > 256:
        raise InvalidRequest("'model' must be a string.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list.")
    if len(messages) > _MAX_MESSAGES:
        raise InvalidRequest(f"'messages' may hold at most {_MAX_MESSAGES} items.")
    parsed = []
    for index, item in enumerate(messages):
        if not isinstance(item, dict):
            raise InvalidRequest(f"messages[{index}] must be an object.")
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            raise InvalidRequest(f"messages[{index}].role must be one of system, user, assistant.")
        if not isinstance(content, str):
            raise InvalidRequest(f"messages[{index}].content must be a string.")
        parsed.append(Message(role, content))
    options = body.get("options", {})
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InvalidRequest("'options' must be an object.")
    temperature = options.get("temperature")
    if temperature is not None and (not _number(temperature) or not 0 <= temperature <= 2):
        raise InvalidRequest("options.temperature must be a number from 0 to 2.")
    max_tokens = options.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise InvalidRequest("options.max_tokens must be a positive integer.")
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false.")
    return ChatRequest(model, tuple(parsed), temperature, max_tokens, stream)
