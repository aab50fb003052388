"""``openai/<model>``: OpenAI, or any server that speaks its chat API, via the official SDK.

``OPENAI_BASE_URL`` points the SDK at vLLM, llama.cpp's server or LM Studio;
such servers often need no key, so a placeholder is sent when none is set.

The request goes out in OpenAI's own shape (``openai_body``): the messages as
the client sent them, tools, tool choice, response format, every sampling
field under its own name (``max_completion_tokens`` stays itself), the
informing fields, and the client's extras merged in (sent through the SDK's
``extra_body``, so server-specific knobs such as vLLM's ``top_k`` need no code
here). The answer comes back as typed pieces: ``content`` (with its
``logprobs``), ``reasoning_content`` or ``reasoning``, ``refusal``, and
``tool_calls`` fragments as they arrive, each string made valid Unicode
(``valid_text``: a lone ``\\ud800`` escape becomes U+FFFD); the upstream's own
``finish_reason``, the usage it reported, details included, and its
``system_fingerprint``. The client's request id goes upstream as
``X-Request-ID``.

Embeddings (``embed``) go to the server's ``/v1/embeddings`` through the
SDK, the client's extras in ``extra_body``.

The SDK's exceptions are mapped to the contract's codes here (docs/api.md,
"Upstream refusals"), with the upstream's own reason
cleaned of URLs and secrets: an SDK message can quote the key or the URL.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator
from typing import Any

import openai

from sluice.chat import INFO_NAMES, ChatRequest
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
    Refusal,
    Text,
    ToolCallPart,
    merge_extra,
    refuse_unsupported,
    retry_after_seconds,
    valid_text,
    valid_value,
)

__all__ = ["OpenAIProvider", "map_openai_error", "openai_body"]

log = logging.getLogger(__name__)

# Older servers still say function_call for a tool call.
_FINISH = {"function_call": "tool_calls"}
# OpenAI says context_length_exceeded; vLLM "maximum context length"; llama.cpp's server
# "exceeds the available context size" with type exceed_context_size_error.
_CONTEXT = re.compile(r"context (length|window|size)|maximum context|too many tokens", re.I)
_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
# Arguments the SDK's ``create`` takes by name; everything else goes in ``extra_body``.
_NAMED = frozenset(
    {
        "messages",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "n",
        "reasoning_effort",
        *INFO_NAMES,
    }
)


def _reason(exc: openai.APIStatusError) -> str:
    body = exc.body
    said = body.get("message") if isinstance(body, dict) else None
    return upstream_reason(said if isinstance(said, str) else exc.message)


def map_openai_error(exc: Exception) -> SluiceError:
    """The contract's error for an exception of the ``openai`` SDK."""
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout()
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamUnavailable()
    if not isinstance(exc, openai.APIStatusError):
        return UpstreamError()
    status, reason = exc.status_code, _reason(exc)
    said = f": {reason}" if reason else "."
    retry_after = retry_after_seconds(exc.response.headers.get("Retry-After"))
    if status in (400, 413, 422):
        param = exc.param if isinstance(exc.param, str) else None  # the field the upstream named
        if exc.code in _CONTEXT_CODES or exc.type in _CONTEXT_CODES or _CONTEXT.search(reason):
            return ContextLengthExceeded(f"The prompt does not fit the model's context{said}", param=param)
        return InvalidRequest(f"The OpenAI-compatible server refused the request{said}", param=param)
    if status == 404:
        return ModelNotFound(f"The model is not available at the OpenAI-compatible server{said}")
    if status == 429:
        error: SluiceError = RateLimited(f"The OpenAI-compatible server is rate limiting{said}", retryable=True)
        error.upstream_retry_after = retry_after
        return error
    if status in (401, 403):
        return UpstreamError(f"The OpenAI-compatible server rejected Sluice's credentials ({status}){said}")
    error = UpstreamError(f"The OpenAI-compatible server answered {status}{said}", retryable=status in (502, 503, 504))
    error.upstream_retry_after = retry_after
    return error


def openai_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The chat-completions body for ``request``: OpenAI's shape, extras merged in.

    :raise InvalidRequest: a field no OpenAI-compatible stream through Sluice can carry.
    """
    refuse_unsupported(request, f"openai/{model}")
    body: dict[str, Any] = {
        "model": model,
        "messages": [message.to_openai() for message in request.messages],
        "stream": True,
        # Usage in the stream, so the client's done event can report it.
        "stream_options": {"include_usage": True},
        **request.options,
        **request.info,
    }
    for name in ("tools", "tool_choice", "parallel_tool_calls", "response_format"):
        value = getattr(request, name)
        if value is not None:
            body[name] = list(value) if name == "tools" else value
    return merge_extra(body, request.extra)


def _pieces(chunk: Any) -> Generator[Piece, None, tuple[str, str | None] | None]:
    """The pieces of one streamed chunk (its first choice); return its finish reason and stop string."""
    reason = None
    for choice in chunk.choices:
        if choice.index != 0:  # n is 1; a server that sends more is ignored past the first
            continue
        delta = choice.delta
        if delta is not None:
            extra = delta.model_extra or {}
            thought = extra.get("reasoning_content") or extra.get("reasoning") or getattr(delta, "reasoning", None)
            if isinstance(thought, str) and thought:
                yield Reasoning(valid_text(thought))
            if delta.content:
                logprobs = choice.logprobs
                if logprobs is not None:
                    yield Text(valid_text(delta.content), valid_value(logprobs.model_dump(exclude_none=True)))
                else:
                    yield valid_text(delta.content)
            if delta.refusal:
                yield Refusal(valid_text(delta.refusal))
            for call in delta.tool_calls or ():
                function = call.function
                name = function.name if function is not None else None
                yield ToolCallPart(
                    call.index,
                    valid_text((function.arguments if function is not None else None) or ""),
                    valid_text(call.id) if call.id else None,
                    valid_text(name) if name else None,
                )
        if choice.finish_reason:
            # vLLM names the stop string that ended the answer in ``stop_reason`` (a token id is an int).
            stop = (choice.model_extra or {}).get("stop_reason")
            reason = (_FINISH.get(choice.finish_reason, choice.finish_reason), stop if isinstance(stop, str) else None)
    return reason


class OpenAIProvider:
    """Talks to one OpenAI-compatible server."""

    name = "openai"

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None,
        connect_timeout_s: float = 5.0,
        list_timeout_s: float = 2.0,
    ) -> None:
        self.configured = bool(api_key or base_url)
        self.list_timeout_s = list_timeout_s
        self.client = openai.OpenAI(
            api_key=api_key or "sk-no-key-set",
            base_url=base_url or None,
            # Retries belong to Sluice (before the first token only), not to the SDK.
            max_retries=0,
            # Read timeout None: the runner enforces first-token and idle deadlines.
            timeout=openai.Timeout(None, connect=connect_timeout_s),
        )

    def _check_configured(self) -> None:
        if not self.configured:
            raise UpstreamUnavailable("The openai provider is not configured: set OPENAI_API_KEY or OPENAI_BASE_URL.")

    def check(self, request: ChatRequest, model: str) -> None:
        """Refuse what cannot be carried (``n`` > 1); 503 at once when no server is configured."""
        self._check_configured()
        refuse_unsupported(request, f"openai/{model}")

    def stream(self, request: ChatRequest, model: str, abort: Abort) -> Generator[Piece, None, Finish]:
        """Yield the pieces of a streamed chat completion."""
        self._check_configured()
        body = openai_body(request, model)
        named = {key: value for key, value in body.items() if key in _NAMED}
        extra_body = {key: value for key, value in body.items() if key not in _NAMED and key != "model"}
        headers = {"X-Request-ID": request.request_id} if request.request_id else None
        try:
            stream = self.client.chat.completions.create(
                model=body["model"], extra_body=extra_body or None, extra_headers=headers, **named
            )
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from exc
        reason, stop, usage, fingerprint = "stop", None, None, None
        with stream:
            abort.on_abort(stream.close)
            try:
                for chunk in stream:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if chunk.system_fingerprint:
                        fingerprint = chunk.system_fingerprint
                    said = yield from _pieces(chunk)
                    if said:
                        reason, stop = said
            except openai.APIConnectionError as exc:  # mid-stream: broken off, not unreachable
                raise UpstreamError("The model provider's stream broke off.") from exc
            except openai.APIError as exc:
                if isinstance(exc, openai.APIStatusError):
                    raise map_openai_error(exc) from exc
                reason_text = upstream_reason(exc.message)
                raise UpstreamError(f"The model provider failed: {reason_text}" if reason_text else None) from exc
            except openai.OpenAIError as exc:
                raise map_openai_error(exc) from exc
            except Exception as exc:  # httpx transport errors surface unwrapped mid-stream
                raise UpstreamError("The model provider's stream broke off.") from exc
        counts = usage.model_dump(exclude_none=True, exclude_unset=True) if usage is not None else {}
        return Finish(
            reason,
            counts,
            valid_text(fingerprint) if fingerprint else None,
            stop if reason == "stop" else None,
        )

    def embed(self, request: EmbedRequest, model: str, timeout_s: float) -> Embeddings:
        """``POST /v1/embeddings`` through the SDK (which asks for base64 and decodes it)."""
        self._check_configured()
        given: Any = request.input
        if not isinstance(given, str):  # the SDK's types want lists
            given = [list(item) if isinstance(item, tuple) else item for item in given]
        named: dict[str, Any] = {**request.info}
        if request.dimensions is not None:
            named["dimensions"] = request.dimensions
        try:
            result = self.client.with_options(timeout=timeout_s).embeddings.create(
                model=model,
                input=given,
                extra_body=dict(request.extra) or None,
                **named,
            )
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from exc
        vectors = [list(item.embedding) for item in sorted(result.data or (), key=lambda item: item.index)]
        usage = getattr(result, "usage", None)
        return Embeddings(vectors, usage.model_dump(exclude_none=True) if usage is not None else {})

    def models(self) -> list[str]:
        """Model ids from ``GET /v1/models``."""
        self._check_configured()
        try:
            page = self.client.with_options(timeout=self.list_timeout_s).models.list()
            return [m.id for m in page.data]
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from exc
