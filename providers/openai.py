"""``openai/<model>``: OpenAI, or any server that speaks its chat API, via the official SDK.

``OPENAI_BASE_URL`` points the SDK at vLLM, llama.cpp's server or LM Studio;
such servers often need no key, so a placeholder is sent when none is set.
The SDK's exceptions are mapped to the contract's codes here, with messages of
our own: an SDK message can quote the key or the URL.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

import openai

from sluice.chat import ChatRequest
from sluice.errors import (
    ModelNotFound,
    SluiceError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

from . import Abort, Finish, retry_after_seconds

__all__ = ["OpenAIProvider", "map_openai_error"]

log = logging.getLogger(__name__)

_FINISH = {"stop": "stop", "length": "length"}


def map_openai_error(exc: Exception) -> SluiceError:
    """The contract's error for an exception of the ``openai`` SDK."""
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout()
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamUnavailable()
    if isinstance(exc, openai.NotFoundError):
        return ModelNotFound("The model is not available at the OpenAI-compatible server.")
    if isinstance(exc, openai.AuthenticationError):
        return UpstreamError("The OpenAI-compatible server refused Sluice's API key.")
    if isinstance(exc, (openai.RateLimitError, openai.APIStatusError)) and exc.status_code in (429, 503):
        error: SluiceError = UpstreamUnavailable()
        error.upstream_retry_after = retry_after_seconds(exc.response.headers.get("Retry-After"))
        return error
    if isinstance(exc, openai.APIStatusError):
        return UpstreamError(f"The OpenAI-compatible server answered {exc.status_code}.", retryable=exc.status_code == 502)
    return UpstreamError()


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

    def _check(self) -> None:
        if not self.configured:
            raise UpstreamUnavailable("The openai provider is not configured: set OPENAI_API_KEY or OPENAI_BASE_URL.")

    def stream(
        self, request: ChatRequest, model: str, abort: Abort
    ) -> Generator[str, None, Finish]:
        """Yield the content deltas of a streamed chat completion."""
        self._check()
        kwargs: dict[str, Any] = {}
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        try:
            stream = self.client.chat.completions.create(
                model=model,
                messages=[{"role": m.role, "content": m.content} for m in request.messages],
                stream=True,
                stream_options={"include_usage": True},
                **kwargs,
            )
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from exc
        reason, usage = "stop", None
        with stream:
            abort.on_abort(stream.close)
            try:
                for chunk in stream:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in chunk.choices:
                        if choice.delta is not None and choice.delta.content:
                            yield choice.delta.content
                        if choice.finish_reason:
                            reason = _FINISH.get(choice.finish_reason, "stop")
            except openai.APIConnectionError as exc:  # mid-stream: broken off, not unreachable
                raise UpstreamError("The model provider's stream broke off.") from exc
            except openai.OpenAIError as exc:
                raise map_openai_error(exc) from exc
            except Exception as exc:  # httpx transport errors surface unwrapped mid-stream
                raise UpstreamError("The model provider's stream broke off.") from exc
        if usage is None:
            return Finish(reason)
        return Finish(reason, usage.prompt_tokens, usage.completion_tokens)

    def models(self) -> list[str]:
        """Model ids from ``GET /v1/models``."""
        self._check()
        try:
            page = self.client.with_options(timeout=self.list_timeout_s).models.list()
            return [m.id for m in page.data]
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from exc
