"""``ollama/<model>``: Ollama's ``POST /api/chat``, NDJSON, read with ``requests``.

The request is translated in one place, ``ollama_body`` (docs/api.md, "The request, field by field"):
the token limit becomes ``options.num_predict``; the sampling fields go under
``options``; ``response_format`` becomes ``format`` (``"json"`` or the schema);
``reasoning_effort`` becomes ``think``; ``logprobs``/``top_logprobs`` stay top
level; tools pass as they are; an assistant's tool calls carry their arguments
as objects and a tool result names its tool (``tool_name``); ``data:`` images
become the message's base64 ``images``. What Ollama cannot do (``n`` > 1,
``logit_bias``, a forced ``tool_choice``, an ``http(s)`` image, a message
``name``) is refused with ``400``. ``extra`` is merged in last.

The body is read as raw chunks as they arrive and split into lines as bytes;
only whole lines are decoded, so a UTF-8 character split across two network
reads survives. Bytes that are not UTF-8, and lone ``\\ud800`` escapes,
become U+FFFD (``valid_text``) in every piece. Each line's
``message.thinking`` is reasoning, its ``message.content`` answer text (with
the line's ``logprobs``), each of its ``message.tool_calls`` one whole
``tool_call`` piece (with an id made up when Ollama gives none); the ``done``
line gives the finish reason (``tool_calls`` when the model called tools, as
OpenAI says it) and the usage it reported (``prompt_eval_count``,
``eval_count``); an ``{"error": …}`` line is an upstream error. The client's
request id goes upstream as ``X-Request-ID``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
from collections.abc import Generator, Iterable, Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from sluice.chat import ChatRequest, Message
from sluice.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    RateLimited,
    SluiceError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    upstream_reason,
)
from sluice.provider import (
    Abort,
    Embeddings,
    EmbedRequest,
    Finish,
    Piece,
    Reasoning,
    Text,
    ToolCallPart,
    merge_extra,
    refuse_unsupported,
    retry_after_seconds,
    valid_text,
    valid_value,
)

__all__ = ["OllamaProvider", "iter_lines", "ollama_body"]

log = logging.getLogger(__name__)

# A line longer than this is not a token: refuse it rather than buffer it.
MAX_LINE_BYTES = 8 * 1024 * 1024


def iter_lines(chunks: Iterable[bytes], max_line: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """Split a byte stream on LF into whole lines (LF dropped, blank lines skipped).

    :raise UpstreamError: a line grows past ``max_line`` bytes.
    """
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        if b"\n" not in chunk:
            if len(buffer) > max_line:
                raise UpstreamError("The model provider sent an oversized line.")
            continue
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer


def _close_response(response: requests.Response) -> None:
    """Close ``response`` so that a reader blocked on it wakes at once.

    ``shutdown`` first: closing alone may leave a blocked ``recv`` in another
    thread waiting, while a shut-down socket returns EOF to it immediately and
    tells the upstream (the model) that nobody listens any more.
    """
    connection = getattr(response.raw, "connection", None) or getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    response.close()


class OllamaProvider:
    """Talks to one Ollama server."""

    name = "ollama"

    def __init__(self, base_url: str, connect_timeout_s: float = 5.0, list_timeout_s: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.list_timeout_s = list_timeout_s
        self.session = requests.Session()
        # Many streams at once reuse the connections instead of discarding them.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=1024)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # What requests would look up in the environment on every request (proxies,
        # NO_PROXY, a CA bundle, .netrc), looked up once: the same settings for
        # the same base URL, without a walk through os.environ per stream.
        settings = self.session.merge_environment_settings(self.base_url, {}, None, None, None)
        netrc_auth = requests.utils.get_netrc_auth(self.base_url)
        self.session.trust_env = False
        self.session.proxies = settings["proxies"]
        self.session.verify = settings["verify"]
        if netrc_auth:
            self.session.auth = netrc_auth

    def check(self, request: ChatRequest, model: str) -> None:
        """Refuse what Ollama cannot honour (see the module docstring)."""
        ollama_body(request, model)

    def stream(self, request: ChatRequest, model: str, abort: Abort) -> Generator[Piece, None, Finish]:
        """Yield the pieces of Ollama's answer; see the module docstring."""
        body = ollama_body(request, model)
        headers = {"X-Request-ID": request.request_id} if request.request_id else None
        try:
            # Read timeout None: the runner enforces first-token and idle deadlines.
            response = self.session.post(
                f"{self.base_url}/api/chat",
                json=body,
                headers=headers,
                stream=True,
                timeout=(self.connect_timeout_s, None),
            )
        except requests.RequestException as exc:
            raise UpstreamUnavailable() from exc
        with response:
            abort.on_abort(lambda: _close_response(response))
            _raise_for_status(response, model)
            calls = 0
            try:
                for line in iter_lines(response.iter_content(chunk_size=None)):
                    part = _parse(line)
                    if "error" in part:
                        reason = upstream_reason(part.get("error"))
                        log.warning("ollama sent an error line mid-stream")
                        raise UpstreamError(f"The Ollama server failed: {reason}" if reason else None)
                    message = part.get("message") or {}
                    thinking = message.get("thinking")
                    if thinking:
                        yield Reasoning(valid_text(thinking))
                    content = message.get("content")
                    if content:
                        logprobs = part.get("logprobs")
                        yield Text(valid_text(content), valid_value(logprobs)) if logprobs else valid_text(content)
                    for call in message.get("tool_calls") or ():
                        yield _tool_call(call, calls)
                        calls += 1
                    if part.get("done"):
                        return _finish(part, calls)
            except requests.RequestException as exc:
                raise UpstreamError("The model provider's stream broke off.") from exc
        raise UpstreamError("The model provider's stream ended before it was done.")

    def embed(self, request: EmbedRequest, model: str, timeout_s: float) -> Embeddings:
        """Ollama's ``POST /api/embed``: the texts' vectors, ``prompt_eval_count`` as the usage."""
        texts = request.texts
        if texts is None:
            raise InvalidRequest(f"input: ollama/{model} embeds text, not token ids.")
        body: dict[str, Any] = {"model": model, "input": request.input if isinstance(request.input, str) else texts}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        merge_extra(body, request.extra)
        try:
            response = self.session.post(
                f"{self.base_url}/api/embed", json=body, timeout=(self.connect_timeout_s, timeout_s)
            )
        except requests.Timeout as exc:
            raise (UpstreamUnavailable() if isinstance(exc, requests.ConnectTimeout) else UpstreamTimeout()) from exc
        except requests.RequestException as exc:
            raise UpstreamUnavailable() from exc
        with response:
            _raise_for_status(response, model)
            try:
                data = response.json()
            except ValueError:
                raise UpstreamError("The Ollama server sent embeddings that are not JSON.") from None
        vectors = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(vectors, list) or not all(
            isinstance(vector, list) and all(isinstance(x, int | float) for x in vector) for vector in vectors
        ):
            raise UpstreamError("The Ollama server sent no embeddings.")
        count = data.get("prompt_eval_count")
        usage = {"prompt_tokens": count, "total_tokens": count} if isinstance(count, int) else {}
        return Embeddings([[float(x) for x in vector] for vector in vectors], usage)

    def models(self) -> list[str]:
        """Model names from ``GET /api/tags``."""
        try:
            response = self.session.get(
                f"{self.base_url}/api/tags", timeout=(self.connect_timeout_s, self.list_timeout_s)
            )
            response.raise_for_status()
            return [m["name"] for m in response.json().get("models", []) if m.get("name")]
        except (requests.RequestException, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UpstreamUnavailable() from exc


def _parse(line: bytes) -> dict[str, Any]:
    try:
        # Bytes that are not UTF-8 become U+FFFD here rather than failing the line.
        part = json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        raise UpstreamError("The model provider sent a line that is not JSON.") from None
    if not isinstance(part, dict):
        raise UpstreamError("The model provider sent a line that is not a JSON object.")
    return part


# The words Ollama and llama.cpp use when a prompt does not fit the context.
_CONTEXT = re.compile(r"context (length|window|size)|exceeds? (the )?(maximum|context)|too (long|many tokens)", re.I)
# What Ollama's ``think`` takes for each ``reasoning_effort``.
_THINK = {"none": False, "minimal": "low"}
# Sampling fields that keep their names under Ollama's ``options``.
_SAME_OPTIONS = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")


def ollama_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The ``/api/chat`` body for ``request``, translated per docs/api.md, "The request, field by field".

    :raise InvalidRequest: a field Ollama cannot honour, named.
    """
    where = f"ollama/{model}"
    refuse_unsupported(request, where)
    given = request.options
    if "logit_bias" in given:
        raise InvalidRequest(f"logit_bias: {where} has no logit bias.", param="logit_bias")
    tools = request.tools
    choice = request.tool_choice
    if choice == "required" or isinstance(choice, dict):
        raise InvalidRequest(
            f"tool_choice: {where} cannot be made to call a tool; use auto or none.", param="tool_choice"
        )
    if choice == "none":
        tools = None  # a model offered no tools calls none
    if request.parallel_tool_calls is False:
        raise InvalidRequest(f"parallel_tool_calls: {where} cannot be kept to one call.", param="parallel_tool_calls")
    names = {call.id: call.name for m in request.messages for call in m.tool_calls}
    body: dict[str, Any] = {
        "model": model,
        "messages": [_message(m, i, names, where) for i, m in enumerate(request.messages)],
        "stream": True,
    }
    options = {name: given[name] for name in _SAME_OPTIONS if name in given}
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    if options:
        body["options"] = options
    response_format = request.response_format or {}
    if response_format.get("type") == "json_object":
        body["format"] = "json"
    elif response_format.get("type") == "json_schema":
        body["format"] = response_format["json_schema"].get("schema", {})
    if tools:
        body["tools"] = list(tools)
    if "reasoning_effort" in given:
        body["think"] = _THINK.get(given["reasoning_effort"], given["reasoning_effort"])
    if given.get("logprobs"):
        body["logprobs"] = True
    if "top_logprobs" in given:
        body["top_logprobs"] = given["top_logprobs"]
    return merge_extra(body, request.extra)


def _message(message: Message, index: int, names: dict[str, str], where: str) -> dict[str, Any]:
    """One message in Ollama's shape."""
    role = "system" if message.role == "developer" else message.role
    out: dict[str, Any] = {"role": role, "content": message.text}
    images = []
    for part in message.images:
        if not part.is_data_url:
            raise InvalidRequest(
                f"messages[{index}]: {where} takes images as data: URLs only, not http(s) links.",
                param=f"messages[{index}].content",
            )
        images.append(part.url.partition(",")[2])
    if images:
        out["images"] = images
    if message.tool_calls:
        calls = []
        for call in message.tool_calls:
            try:
                arguments = json.loads(call.arguments or "{}")
            except ValueError:
                arguments = None
            if not isinstance(arguments, dict):
                raise InvalidRequest(
                    f"messages[{index}].tool_calls: arguments must be a JSON object for {where}.",
                    param=f"messages[{index}].tool_calls",
                )
            calls.append({"function": {"name": call.name, "arguments": arguments}})
        out["tool_calls"] = calls
    if role == "tool":
        tool_name = message.name or names.get(message.tool_call_id or "")
        if tool_name:
            out["tool_name"] = tool_name
    elif message.name is not None:
        raise InvalidRequest(
            f"messages[{index}].name: {where} has no participant names.", param=f"messages[{index}].name"
        )
    return out


def _tool_call(call: Any, index: int) -> ToolCallPart:
    """One of Ollama's whole tool calls as one piece (arguments back to a JSON string)."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise UpstreamError("The Ollama server sent a tool call without a function name.")
    arguments = function.get("arguments", {})
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
    return ToolCallPart(
        index,
        valid_text(text),
        valid_text(call_id) if call_id else "call_" + secrets.token_hex(12),
        valid_text(function["name"]),
    )


def _finish(part: dict[str, Any], calls: int) -> Finish:
    reason = part.get("done_reason") or "stop"
    if calls and reason == "stop":
        reason = "tool_calls"  # OpenAI's word for an answer that ends in tool calls
    usage = {}
    if isinstance(part.get("prompt_eval_count"), int):
        usage["prompt_tokens"] = part["prompt_eval_count"]
    if isinstance(part.get("eval_count"), int):
        usage["completion_tokens"] = part["eval_count"]
    return Finish(reason, usage)


def _raise_for_status(response: requests.Response, model: str) -> None:
    status = response.status_code
    if status < 400:
        return
    try:
        said = response.json().get("error")
    except (ValueError, AttributeError):
        said = response.text[:1000]
    reason = upstream_reason(said)
    log.warning("ollama answered %s", status)
    raise _status_error(status, reason, model, response.headers.get("Retry-After"))


def _status_error(status: int, reason: str, model: str, retry_after: str | None) -> SluiceError:
    """The contract's error for an Ollama status (docs/api.md, "Upstream refusals")."""
    said = f": {reason}" if reason else "."
    if status in (400, 413, 422):
        if _CONTEXT.search(reason):
            return ContextLengthExceeded(f"The prompt does not fit ollama/{model}'s context{said}", param="messages")
        return InvalidRequest(f"The Ollama server refused the request{said}")
    if status == 404:
        return ModelNotFound(f"The model 'ollama/{model}' is not available on the Ollama server{said}")
    if status == 429:
        error: SluiceError = RateLimited(f"The Ollama server is rate limiting{said}", retryable=True)
        error.upstream_retry_after = retry_after_seconds(retry_after)
        return error
    if status in (401, 403):
        return UpstreamError(f"The Ollama server rejected Sluice's credentials ({status}){said}")
    error = UpstreamError(f"The Ollama server answered {status}{said}", retryable=status in (502, 503, 504))
    error.upstream_retry_after = retry_after_seconds(retry_after)
    return error
