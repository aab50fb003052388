"""``ollama/<model>``: Ollama's ``POST /api/chat``, NDJSON, read with ``requests``.

The body is read as raw chunks as they arrive and split into lines as bytes;
only whole lines are decoded, so a UTF-8 character split across two network
reads survives. Each line's ``message.content`` is a piece; the ``done`` line
gives the finish reason (``done_reason``) and usage (``prompt_eval_count``,
``eval_count``); an ``{"error": …}`` line is an upstream error.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Generator, Iterable, Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from sluice.chat import ChatRequest
from sluice.errors import ModelNotFound, UpstreamError, UpstreamUnavailable

from . import Abort, Finish, retry_after_seconds

__all__ = ["OllamaProvider", "iter_lines"]

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

    def _body(self, request: ChatRequest, model: str) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
        }
        if options:
            body["options"] = options
        return body

    def stream(
        self, request: ChatRequest, model: str, abort: Abort
    ) -> Generator[str, None, Finish]:
        """Yield the pieces of Ollama's answer; see the module docstring."""
        try:
            # Read timeout None: the runner enforces first-token and idle deadlines.
            response = self.session.post(
                f"{self.base_url}/api/chat",
                json=self._body(request, model),
                stream=True,
                timeout=(self.connect_timeout_s, None),
            )
        except requests.RequestException as exc:
            raise UpstreamUnavailable() from exc
        with response:
            abort.on_abort(lambda: _close_response(response))
            _raise_for_status(response, model)
            try:
                for line in iter_lines(response.iter_content(chunk_size=None)):
                    part = _parse(line)
                    if "error" in part:
                        log.warning("ollama sent an error line mid-stream")
                        log.debug("ollama's error line: %.200s", part.get("error"))
                        raise UpstreamError()
                    content = (part.get("message") or {}).get("content") or ""
                    if content:
                        yield content
                    if part.get("done"):
                        reason = "length" if part.get("done_reason") == "length" else "stop"
                        return Finish(reason, part.get("prompt_eval_count"), part.get("eval_count"))
            except requests.RequestException as exc:
                raise UpstreamError("The model provider's stream broke off.") from exc
        raise UpstreamError("The model provider's stream ended before it was done.")

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
        part = json.loads(line)
    except ValueError:
        raise UpstreamError("The model provider sent a line that is not JSON.") from None
    if not isinstance(part, dict):
        raise UpstreamError("The model provider sent a line that is not a JSON object.")
    return part


def _raise_for_status(response: requests.Response, model: str) -> None:
    status = response.status_code
    if status < 400:
        return
    if status == 404:
        raise ModelNotFound(f"The model 'ollama/{model}' is not available on the Ollama server.")
    if status in (429, 503):
        error = UpstreamUnavailable()
        error.upstream_retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        raise error
    # Ollama's own words stay in the debug log: a proxy in front of it may quote
    # headers or URLs, and the contract's messages are Sluice's own.
    log.warning("ollama answered %s", status)
    log.debug("ollama's error body: %.200s", response.text)
    raise UpstreamError(f"The Ollama server answered {status}.", retryable=status == 502)

