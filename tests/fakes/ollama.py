"""A fake Ollama server speaking the wire format of ``ollama serve``.

Mirrors Ollama's Go/gin server: ``POST /api/chat`` streams NDJSON
(``application/x-ndjson``, one ``json.Marshal`` line per flushed chunk),
errors are ``{"error":"..."}`` (``application/json; charset=utf-8``), JSON is
compact with Go's HTML-safe escaping, and headers come in Go's order.
See ``docs/api.md`` of github.com/ollama/ollama.

Thinking comes as ``message.thinking`` lines before the content (Ollama
0.9+); tool calls as one ``message.tool_calls`` line (arguments JSON objects)
before the done line, whose ``done_reason`` stays "stop". The top-level field
order (``done_reason`` before ``done``) and :attr:`FakeOllama.version` are
those of 0.6.8; newer servers put ``done`` first, which no JSON client sees.

``POST /api/embed`` embeds with any model it has (its chat models and the
unlisted ``embedding_models``): one ``embedding_of`` vector per input,
``dimensions`` long when asked; ``prompt_eval_count`` counts the inputs' words.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any, ClassVar

from .upstream import EMBED_DIMENSIONS, ChatContext, Exchange, FakeUpstream, Request, Script, embedding_of

__all__ = ["FakeOllama", "go_json"]

# Ollama's words for an input over the context window. /api/chat truncates the history to fit
# by default; this 400 is what it answers when it may not (``"truncate": false``), and what
# /api/embed answers. A script asks for it with error_code="context_length_exceeded".
_CONTEXT_MESSAGE = "the input length exceeds the context length"
_DEFAULT_ERROR_MESSAGE = Script.__dataclass_fields__["error_message"].default

_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029\ud800-\udfff]")


def go_json(obj: Any) -> bytes:
    """Encode like Go's ``encoding/json.Marshal``: compact, raw UTF-8, HTML-safe escapes.

    The escaped characters can only occur inside JSON strings, so replacing
    them in the encoded text is safe. Lone surrogates (invalid UTF-8) become
    U+FFFD, as in Go.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES.get(m.group(), "\ufffd"), text).encode("utf-8")


def go_time(ns: int | None = None) -> str:
    """Format a UTC time like Go's ``time.Time`` JSON (RFC 3339, nanoseconds, zeros trimmed)."""
    ns = time.time_ns() if ns is None else ns
    seconds, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f"{frac:09d}".rstrip("0")
    return f"{base}.{fraction}Z" if fraction else f"{base}Z"


def _full_name(name: str) -> str:
    """Ollama's canonical model name: a missing tag means ``latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class FakeOllama(FakeUpstream):
    """Fake ``ollama serve``; :attr:`url` is ``http://127.0.0.1:PORT``."""

    chat_path: ClassVar[str] = "/api/chat"
    url_suffix: ClassVar[str] = ""
    default_models: ClassVar[list[str]] = ["llama3", "mistral"]
    stream_content_type: ClassVar[str] = "application/x-ndjson"
    version: ClassVar[str] = "0.6.8"
    embedding_models: ClassVar[list[str]] = ["nomic-embed-text"]

    _JSON = "application/json; charset=utf-8"

    # -- plumbing ----------------------------------------------------------------

    def _send_json(self, ex: Exchange, status: int, obj: Any) -> None:
        ex.send(status, self._JSON, go_json(obj))

    def send_error(self, ex: Exchange, status: int, message: str) -> None:
        """gin's ``c.JSON(status, gin.H{"error": message})``."""
        self._send_json(ex, status, {"error": message})

    def send_scripted_error(self, ex: Exchange, script: Script) -> None:
        assert script.status is not None
        message = script.error_message
        if script.error_code == "context_length_exceeded" and message == _DEFAULT_ERROR_MESSAGE:
            message = _CONTEXT_MESSAGE
        self.send_error(ex, script.status, message)  # Ollama's errors carry no code

    def _known(self, model: str) -> bool:
        wanted = _full_name(model)
        return any(_full_name(m) == wanted for m in self.models)

    # -- chat hooks --------------------------------------------------------------

    def reject(self, ex: Exchange, request: Request, raw: bytes, body: dict[str, Any] | None) -> bool:
        if body is None:
            self.send_error(ex, 400, "missing request body" if not raw.strip() else "invalid request body")
            return True
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self.send_error(ex, 400, "model is required")
            return True
        if not self._known(model):
            # Go's %q quoting, as in Ollama's ChatHandler.
            self.send_error(ex, 404, f"model {json.dumps(model, ensure_ascii=False)} not found, try pulling it first")
            return True
        return False

    def token_limit(self, body: dict[str, Any]) -> int | None:
        options = body.get("options")
        limit = options.get("num_predict") if isinstance(options, dict) else None
        # -1 (infinite) and -2 (fill context) are not limits.
        if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
            return limit
        return None

    def wants_stream(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is not False  # Ollama streams unless told otherwise

    def _message_line(self, ctx: ChatContext, content: str, **message: Any) -> dict[str, Any]:
        """A ChatResponse line; ``message`` adds Message fields after role and content (Go's order)."""
        return {
            "model": ctx.model,
            "created_at": go_time(),
            "message": {"role": "assistant", "content": content, **message},
            "done": False,
        }

    def _done_fields(self, ctx: ChatContext) -> dict[str, Any]:
        """``done_reason``, ``done`` and the Metrics fields (omitempty, like Go)."""
        elapsed_ns = max(int((time.monotonic() - ctx.started) * 1e9), 1)
        load_ns = max(int(ctx.script.headers_delay_s * 1e9), 1)
        usage = ctx.script.usage or {}
        metrics = {
            "total_duration": elapsed_ns + load_ns,
            "load_duration": load_ns,
            "prompt_eval_count": usage.get("prompt_tokens", ctx.script.prompt_tokens),
            "prompt_eval_duration": 1_000_000,
            # Thinking is generated text too: eval_count counts it.
            "eval_count": usage.get("completion_tokens", ctx.sent + ctx.reasoning_sent),
            "eval_duration": elapsed_ns,
        }
        if not ctx.script.report_usage:
            del metrics["prompt_eval_count"], metrics["eval_count"]
        return {
            "done_reason": ctx.done_reason,
            "done": True,
            **{k: v for k, v in metrics.items() if v},
        }

    def _tool_calls(self, ctx: ChatContext) -> list[dict[str, Any]]:
        """``message.tool_calls`` as Ollama sends them: arguments a JSON object.

        A call with an ``id`` comes as Ollama 0.12.10+ sends it (``id``, ``function.index``
        always, arguments in the model's order); one without, as earlier versions did (no id,
        ``index`` omitted when 0, arguments a Go map: keys sorted).
        """
        calls = []
        for i, call in enumerate(ctx.tool_calls):
            args = call.get("arguments", {})
            if isinstance(args, str):
                args = json.loads(args) if args.strip() else {}
            if call.get("id"):
                calls.append({"id": call["id"], "function": {"index": i, "name": call["name"], "arguments": args}})
            else:
                function: dict[str, Any] = {"index": i} if i else {}
                function.update(name=call["name"], arguments=json.loads(json.dumps(args, sort_keys=True)))
                calls.append({"function": function})
        return calls

    def reasoning_frames(self, ctx: ChatContext, index: int, piece: str) -> list[bytes]:
        return [go_json(self._message_line(ctx, "", thinking=piece)) + b"\n"]

    def token_frames(self, ctx: ChatContext, index: int, token: str) -> list[bytes]:
        line = self._message_line(ctx, token)
        if ctx.request.body.get("logprobs") is True:
            # Ollama 0.12.11+: the line's tokens with their log probabilities, top level.
            line["logprobs"] = [self._logprob(ctx, token)]
        return [go_json(line) + b"\n"]

    @staticmethod
    def _logprob(ctx: ChatContext, token: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"token": token, "logprob": -0.1, "bytes": list(token.encode())}
        top = ctx.request.body.get("top_logprobs")
        if isinstance(top, int) and top > 0:
            entry["top_logprobs"] = [
                {"token": token if i == 0 else f"{token}~{i}", "logprob": -0.1 * (i + 1)} for i in range(top)
            ]
        return entry

    def tool_call_frames(self, ctx: ChatContext) -> list[bytes]:
        # All calls in one line before the done line (done_reason stays "stop"), as Ollama streams them.
        return [go_json(self._message_line(ctx, "", tool_calls=self._tool_calls(ctx))) + b"\n"]

    def final_frames(self, ctx: ChatContext) -> list[bytes]:
        line = self._message_line(ctx, "")
        del line["done"]  # re-added after done_reason, in ChatResponse's field order
        return [go_json({**line, **self._done_fields(ctx)}) + b"\n"]

    def error_frame(self, ctx: ChatContext, message: str) -> bytes:
        return go_json({"error": message}) + b"\n"

    def send_complete(self, ex: Exchange, ctx: ChatContext) -> None:
        message: dict[str, Any] = {}
        if ctx.reasoning_sent:
            message["thinking"] = "".join(ctx.script.reasoning)
        if ctx.tool_calls_sent:
            message["tool_calls"] = self._tool_calls(ctx)
        line = self._message_line(ctx, "".join(ctx.tokens), **message)
        del line["done"]
        self._send_json(ex, 200, {**line, **self._done_fields(ctx)})

    # -- other endpoints -----------------------------------------------------------

    def _tags(self) -> dict[str, Any]:
        models = []
        for name in self.models:
            full = _full_name(name)
            family = re.match(r"[a-z]*", full).group() or "llama"  # type: ignore[union-attr]
            models.append(
                {
                    "name": full,
                    "model": full,
                    "modified_at": "2024-05-01T12:00:00.123456789Z",
                    "size": 4_661_224_676,
                    "digest": hashlib.sha256(full.encode()).hexdigest(),
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": family,
                        "families": [family],
                        "parameter_size": "8.0B",
                        "quantization_level": "Q4_0",
                    },
                }
            )
        return {"models": models}

    def _embed(self, ex: Exchange) -> None:
        started = time.monotonic()
        _, body, script = self._embed_request(ex)
        if script.status is not None:
            self.send_scripted_error(ex, script)
            return
        if body is None:
            self.send_error(ex, 400, "invalid request body")
            return
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self.send_error(ex, 400, "model is required")
            return
        if not self._known(model) and _full_name(model) not in map(_full_name, self.embedding_models):
            self.send_error(ex, 404, f"model {json.dumps(model, ensure_ascii=False)} not found, try pulling it first")
            return
        given = body.get("input")
        texts = [given] if isinstance(given, str) else list(given or [])
        if not all(isinstance(text, str) for text in texts):
            self.send_error(ex, 400, "invalid input type")
            return
        dimensions = body.get("dimensions") or EMBED_DIMENSIONS
        elapsed = max(int((time.monotonic() - started) * 1e9), 1)
        self._send_json(
            ex,
            200,
            {
                "model": model,
                "embeddings": [embedding_of(text, dimensions) for text in texts],
                "total_duration": elapsed,
                "load_duration": 1,
                "prompt_eval_count": sum(len(text.split()) for text in texts),
            },
        )

    def handle_other(self, ex: Exchange) -> None:
        if ex.method == "POST" and ex.path == "/api/embed":
            self._embed(ex)
        elif ex.method in ("GET", "HEAD") and ex.path == "/":
            ex.send(200, "text/plain; charset=utf-8", b"Ollama is running")
        elif ex.method in ("GET", "HEAD") and ex.path == "/api/tags":
            self._send_json(ex, 200, self._tags())
        elif ex.method in ("GET", "HEAD") and ex.path == "/api/version":
            self._send_json(ex, 200, {"version": self.version})
        else:
            ex.read_body()  # keep the connection usable
            # gin's default 404 (also for a wrong method: HandleMethodNotAllowed is off).
            ex.send(404, "text/plain", b"404 page not found")
