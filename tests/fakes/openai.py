"""A fake OpenAI API speaking the wire format of api.openai.com.

``POST /v1/chat/completions`` streams Server-Sent Events
(``text/event-stream; charset=utf-8``, chunked, ``data: {json}\\n\\n`` with
compact raw-UTF-8 JSON, ending with ``data: [DONE]``); non-streaming and
error bodies are indented JSON like the real API's; errors carry
``{"error":{"message","type","param","code"}}``.

Chunk shapes follow recorded API streams (openai-python's
``.inline-snapshot`` fixtures): the role chunk is
``{"role":"assistant","content":"","refusal":null}``, or with content null and
``"refusal":""`` for a refusal-only answer; a tool-only answer's first chunk
carries the role and the first call's ``id``/``type``/``name`` together, then
argument pieces per ``index``; with ``"logprobs": true`` the role chunk has
``{"content":[],"refusal":null}`` and each token chunk its own entry.
Reasoning comes as ``delta.reasoning_content`` (vLLM, llama.cpp, DeepSeek) or
``delta.reasoning`` (OpenRouter), which api.openai.com itself never sends.

``POST /v1/embeddings`` answers for the models in ``embedding_models`` (not
listed by ``/v1/models``, so the chat listing stays as it was): one
``embedding_of`` vector per input (a list of token ids embeds as its ids
joined by spaces), ``dimensions`` long when asked, as floats or, with
``encoding_format: "base64"``, as base64 little-endian float32; ``usage``
counts the inputs' words (or token ids).

A streamed chunk whose text holds a lone surrogate (a script's ``"a\\ud800b"``)
is sent ASCII-escaped, ``"a\\ud800b"`` on the wire, as an ASCII-only encoder would.
"""

from __future__ import annotations

import base64
import enum
import json
import secrets
import string
import struct
import time
from typing import Any, ClassVar

from .upstream import EMBED_DIMENSIONS, ChatContext, Exchange, FakeUpstream, Request, Script, embedding_of, http_date

__all__ = ["FakeOpenAI"]

# (type, code) of the error body OpenAI sends for a status.
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
}
_ALNUM = string.ascii_letters + string.digits
# OpenAI's 400 for a prompt over the model's context (param "messages", code "context_length_exceeded").
_CONTEXT_MESSAGE = (
    "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens. "
    "Please reduce the length of the messages."
)
_DEFAULT_ERROR_MESSAGE = Script.__dataclass_fields__["error_message"].default
_LOGPROB = -0.1  # every sampled token's logprob; top_logprobs alternatives get lower ones


class _Default(enum.Enum):
    """Sentinel type: "use the status's default error code"."""

    DEFAULT = enum.auto()


_DEFAULT = _Default.DEFAULT
_KEYS_URL = "https://platform.openai.com/account/api-keys"


def _compact(obj: Any) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A script's lone surrogate ("a\ud800b") is no UTF-8: sent as the escape an ASCII-only
        # JSON encoder writes (valid JSON, invalid Unicode), as some OpenAI-compatible servers do.
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


def _random_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def _token_logprob(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _mask_key(key: str) -> str:
    """Hide the middle of an API key the way OpenAI's 401 message does."""
    return key if len(key) <= 8 else key[:3] + "*" * (len(key) - 7) + key[-4:]


class FakeOpenAI(FakeUpstream):
    """Fake OpenAI API; :attr:`url` is ``http://127.0.0.1:PORT/v1`` (an SDK ``base_url``).

    With ``api_key`` set, requests without ``Authorization: Bearer <api_key>``
    get OpenAI's 401; with the default ``None`` any key is accepted.
    """

    chat_path: ClassVar[str] = "/v1/chat/completions"
    url_suffix: ClassVar[str] = "/v1"
    default_models: ClassVar[list[str]] = ["gpt-4o-mini", "gpt-4o"]
    embedding_models: ClassVar[list[str]] = ["text-embedding-3-small"]
    stream_content_type: ClassVar[str] = "text/event-stream; charset=utf-8"

    def __init__(
        self,
        models: list[str] | None = None,
        default: Script | None = None,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.api_key = api_key
        super().__init__(models, default, host=host)

    # -- plumbing ----------------------------------------------------------------

    def response_headers(
        self, ex: Exchange, status: int, content_type: str, length: int | None
    ) -> list[tuple[str, str]]:
        framing = ("Content-Length", str(length)) if length is not None else ("Transfer-Encoding", "chunked")
        return [
            ("Date", http_date()),
            ("Content-Type", content_type),
            framing,
            ("Connection", "close" if ex.handler.close_connection else "keep-alive"),
            ("access-control-expose-headers", "X-Request-ID"),
            ("openai-organization", "user-fake"),
            ("openai-processing-ms", "42"),
            ("openai-version", "2020-10-01"),
            ("x-request-id", "req_" + secrets.token_hex(16)),
        ]

    def _send_json(self, ex: Exchange, status: int, obj: Any, indent: int = 2) -> None:
        body = json.dumps(obj, ensure_ascii=False, indent=indent).encode("utf-8") + b"\n"
        content_type = "application/json" if status < 400 else "application/json; charset=utf-8"
        ex.send(status, content_type, body)

    def _error(
        self,
        ex: Exchange,
        status: int,
        message: str,
        *,
        code: str | _Default | None = _DEFAULT,
        param: str | None = None,
    ) -> None:
        """Send OpenAI's error body; ``type``/``code`` follow ``status`` unless ``code`` is given."""
        type_, default_code = _ERROR_KINDS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        error = {
            "message": message,
            "type": type_,
            "param": param,
            "code": default_code if isinstance(code, _Default) else code,
        }
        self._send_json(ex, status, {"error": error}, indent=4)  # OpenAI's errors use 4 spaces

    def send_error(self, ex: Exchange, status: int, message: str) -> None:
        self._error(ex, status, message)

    def send_scripted_error(self, ex: Exchange, script: Script) -> None:
        assert script.status is not None
        if script.error_code == "context_length_exceeded":
            message = _CONTEXT_MESSAGE if script.error_message == _DEFAULT_ERROR_MESSAGE else script.error_message
            self._error(ex, script.status, message, code=script.error_code, param="messages")
        elif script.error_code is not None:
            self._error(ex, script.status, script.error_message, code=script.error_code)
        else:
            self._error(ex, script.status, script.error_message)

    def _authorized(self, ex: Exchange) -> bool:
        """Answer 401 like OpenAI unless the request carries the configured key."""
        if self.api_key is None:
            return True
        auth = ex.headers.get("authorization", "")
        if not auth:
            self._error(
                ex,
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                "or as the basic auth username and password (i.e. -u YOUR_KEY:). "
                f"You can obtain an API key from {_KEYS_URL}.",
                code=None,
            )
            return False
        key = auth[len("Bearer ") :] if auth.startswith("Bearer ") else auth
        if key != self.api_key:
            self._error(
                ex,
                401,
                f"Incorrect API key provided: {_mask_key(key)}. You can find your API key at {_KEYS_URL}.",
                code="invalid_api_key",
            )
            return False
        return True

    # -- chat hooks --------------------------------------------------------------

    def reject(self, ex: Exchange, request: Request, raw: bytes, body: dict[str, Any] | None) -> bool:
        if not self._authorized(ex):
            return True
        if body is None:
            self._error(
                ex,
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
                "contact us through our help center at help.openai.com.)",
                code=None,
            )
            return True
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self._error(ex, 400, "you must provide a model parameter")
            return True
        if "messages" not in body:
            self._error(
                ex,
                400,
                "Missing required parameter: 'messages'.",
                code="missing_required_parameter",
                param="messages",
            )
            return True
        if model not in self.models:
            self._model_not_found(ex, model)
            return True
        return False

    def _model_not_found(self, ex: Exchange, model: str) -> None:
        self._error(
            ex,
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )

    def token_limit(self, body: dict[str, Any]) -> int | None:
        for key in ("max_completion_tokens", "max_tokens"):
            limit = body.get(key)
            if isinstance(limit, int) and not isinstance(limit, bool):
                return limit
        return None

    def wants_stream(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def _ids(self, ctx: ChatContext) -> dict[str, Any]:
        """The id/object/created/model/system_fingerprint head shared by a response's chunks."""
        if not ctx.extra:
            ctx.extra.update(
                id=_random_id("chatcmpl-", 29),
                created=int(time.time()),
                system_fingerprint="fp_" + secrets.token_hex(5),
                role_sent=False,
            )
            body = ctx.request.body
            options = body.get("stream_options")
            ctx.extra["include_usage"] = (
                isinstance(options, dict) and options.get("include_usage") is True and ctx.script.report_usage
            )
            top = body.get("top_logprobs")
            ctx.extra["logprobs"] = body.get("logprobs") is True
            ctx.extra["top_logprobs"] = top if isinstance(top, int) and not isinstance(top, bool) else 0
            ctx.extra["call_ids"] = [call.get("id") or _random_id("call_", 24) for call in ctx.tool_calls]
        return {
            "id": ctx.extra["id"],
            "object": "chat.completion.chunk" if ctx.stream else "chat.completion",
            "created": ctx.extra["created"],
            "model": ctx.model,
            "system_fingerprint": ctx.extra["system_fingerprint"],
        }

    def _chunk(
        self,
        ctx: ChatContext,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> bytes:
        chunk: dict[str, Any] = {
            **self._ids(ctx),
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
        }
        if ctx.extra["include_usage"]:
            chunk["usage"] = None
        return self._event(chunk)

    @staticmethod
    def _event(obj: Any) -> bytes:
        return b"data: " + _compact(obj) + b"\n\n"

    # -- pieces --------------------------------------------------------------------

    def _null_content(self, ctx: ChatContext) -> bool:
        """Content is null (not "") when the answer is only tool calls and/or a refusal."""
        return not ctx.tokens and bool(ctx.tool_calls or ctx.script.refusal)

    def _opening(self, ctx: ChatContext) -> list[bytes]:
        """The role chunk, once, before the first piece (a refusal-only answer opens with ``refusal: ""``)."""
        self._ids(ctx)
        if ctx.extra["role_sent"]:
            return []
        ctx.extra["role_sent"] = True
        null = self._null_content(ctx)
        delta = {
            "role": "assistant",
            "content": None if null else "",
            "refusal": "" if null and ctx.script.refusal else None,
        }
        logprobs = {"content": [], "refusal": None} if ctx.extra["logprobs"] else None
        return [self._chunk(ctx, delta, logprobs=logprobs)]

    def _logprob_entry(self, ctx: ChatContext, token: str) -> dict[str, Any]:
        top = [_token_logprob(token, _LOGPROB)] + [
            _token_logprob(f"{token}~{k}", _LOGPROB - k) for k in range(1, ctx.extra["top_logprobs"])
        ]
        return {**_token_logprob(token, _LOGPROB), "top_logprobs": top[: ctx.extra["top_logprobs"]]}

    def _finish_reason(self, ctx: ChatContext) -> str:
        if ctx.tool_calls_sent and ctx.done_reason == "stop":
            return "tool_calls"
        return ctx.done_reason

    def _usage(self, ctx: ChatContext) -> dict[str, Any]:
        if ctx.script.usage is not None:
            return dict(ctx.script.usage)
        prompt, completion = ctx.script.prompt_tokens, ctx.generated
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def reasoning_frames(self, ctx: ChatContext, index: int, piece: str) -> list[bytes]:
        return [*self._opening(ctx), self._chunk(ctx, {ctx.script.reasoning_field: piece})]

    def token_frames(self, ctx: ChatContext, index: int, token: str) -> list[bytes]:
        # The role chunk travels with the first piece (it is not sent before the first-token delay).
        opening = self._opening(ctx)
        logprobs = {"content": [self._logprob_entry(ctx, token)], "refusal": None} if ctx.extra["logprobs"] else None
        return [*opening, self._chunk(ctx, {"content": token}, logprobs=logprobs)]

    def refusal_frames(self, ctx: ChatContext, index: int, piece: str) -> list[bytes]:
        opening = self._opening(ctx)
        logprobs = {"content": None, "refusal": [self._logprob_entry(ctx, piece)]} if ctx.extra["logprobs"] else None
        return [*opening, self._chunk(ctx, {"refusal": piece}, logprobs=logprobs)]

    def _arguments(self, call: dict[str, Any]) -> str:
        args = call.get("arguments", "")
        return args if isinstance(args, str) else _compact(args).decode("utf-8")

    def tool_call_frames(self, ctx: ChatContext) -> list[bytes]:
        self._ids(ctx)
        frames: list[bytes] = []
        size = max(ctx.script.tool_args_chunk, 1)
        for i, call in enumerate(ctx.tool_calls):
            head = {
                "index": i,
                "id": ctx.extra["call_ids"][i],
                "type": "function",
                "function": {"name": call["name"], "arguments": ""},
            }
            if ctx.extra["role_sent"]:
                frames.append(self._chunk(ctx, {"tool_calls": [head]}))
            else:
                # Like the real API, a tool-only answer's first chunk is the role and the first call together.
                ctx.extra["role_sent"] = True
                delta = {"role": "assistant", "content": None, "tool_calls": [head], "refusal": None}
                frames.append(self._chunk(ctx, delta))
            args = self._arguments(call)
            for start in range(0, len(args), size):
                delta = {"tool_calls": [{"index": i, "function": {"arguments": args[start : start + size]}}]}
                frames.append(self._chunk(ctx, delta))
        return frames

    def final_frames(self, ctx: ChatContext) -> list[bytes]:
        frames = self._opening(ctx)
        last = self._chunk(ctx, {}, self._finish_reason(ctx))
        if ctx.script.stop_sequence is not None:  # vLLM's field, after finish_reason
            chunk = json.loads(last[len(b"data: ") :])
            chunk["choices"][0]["stop_reason"] = ctx.script.stop_sequence
            last = self._event(chunk)
        frames.append(last)
        if ctx.extra["include_usage"]:
            frames.append(self._event({**self._ids(ctx), "choices": [], "usage": self._usage(ctx)}))
        frames.append(b"data: [DONE]\n\n")
        return frames

    def error_frame(self, ctx: ChatContext, message: str) -> bytes:
        return self._event({"error": {"message": message, "type": "server_error", "param": None, "code": None}})

    def send_complete(self, ex: Exchange, ctx: ChatContext) -> None:
        self._ids(ctx)
        refusal = "".join(ctx.script.refusal[: ctx.refusal_sent]) or None
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if self._null_content(ctx) else "".join(ctx.tokens),
        }
        if ctx.tool_calls_sent:
            message["tool_calls"] = [
                {
                    "id": ctx.extra["call_ids"][i],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": self._arguments(call)},
                }
                for i, call in enumerate(ctx.tool_calls)
            ]
        message["refusal"] = refusal
        if ctx.reasoning_sent:
            message[ctx.script.reasoning_field] = "".join(ctx.script.reasoning)
        logprobs = None
        if ctx.extra["logprobs"]:
            content = [self._logprob_entry(ctx, t) for t in ctx.tokens] if message["content"] is not None else None
            refusals = [self._logprob_entry(ctx, p) for p in ctx.script.refusal] if refusal else None
            logprobs = {"content": content, "refusal": refusals}
        body = {
            **self._ids(ctx),
            "choices": [
                {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": self._finish_reason(ctx)}
            ],
        }
        if ctx.script.report_usage:
            body["usage"] = self._usage(ctx)
        # Real non-streaming responses put system_fingerprint last.
        body["system_fingerprint"] = body.pop("system_fingerprint")
        self._send_json(ex, 200, body)

    # -- other endpoints -----------------------------------------------------------

    def _model(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 1_715_367_049, "owned_by": "system"}

    def _embeddings(self, ex: Exchange) -> None:
        _, body, script = self._embed_request(ex)
        if not self._authorized(ex):
            return
        if script.status is not None:
            self.send_scripted_error(ex, script)
            return
        if body is None or "input" not in body:
            self._error(ex, 400, "'input' is a required property", code=None, param="input")
            return
        model = body.get("model")
        if model not in self.embedding_models:
            self._model_not_found(ex, str(model))
            return
        given = body["input"]
        items = [given] if isinstance(given, str) or (given and isinstance(given[0], int)) else list(given)
        texts = [item if isinstance(item, str) else " ".join(map(str, item)) for item in items]
        dimensions = body.get("dimensions") or EMBED_DIMENSIONS
        base64_wanted = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embedding_of(text, dimensions)
            encoded: Any = vector
            if base64_wanted:  # OpenAI's base64: little-endian float32
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(text.split()) for text in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        self._send_json(ex, 200, {"object": "list", "data": data, "model": model, "usage": usage})

    def handle_other(self, ex: Exchange) -> None:
        if ex.method == "POST" and ex.path == "/v1/embeddings":
            self._embeddings(ex)
            return
        ex.read_body()  # keep the connection usable
        if ex.path.startswith("/v1/") and not self._authorized(ex):
            return
        if ex.method == "GET" and ex.path == "/v1/models":
            self._send_json(ex, 200, {"object": "list", "data": [self._model(m) for m in self.models]})
        elif ex.method == "GET" and ex.path.startswith("/v1/models/"):
            name = ex.path[len("/v1/models/") :]
            if name in self.models:
                self._send_json(ex, 200, self._model(name))
            else:
                self._model_not_found(ex, name)
        else:
            self._error(ex, 404, f"Invalid URL ({ex.method} {ex.path})", code=None)
