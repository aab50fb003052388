"""Shared machinery for the fake upstream LLM servers.

A fake is a real HTTP/1.1 server on ``127.0.0.1`` (an ephemeral port) served
from a background thread of the test process. Each chat request takes the
next pushed :class:`Script` (or :attr:`FakeUpstream.default`), which decides
what tokens are streamed, how fast, and which failure is simulated.

The wire format of a provider lives in a subclass (see ``ollama.py`` and
``openai.py``); this module owns everything else: the socket server, request
parsing, chunked framing, the token loop, the failure modes, and the record of
requests and early client disconnects.

Client disconnects are detected promptly in every phase: instead of sleeping,
the handler waits on the client socket with a selector (readable + a peeked
``b""`` means the peer closed), and a failed write counts as well. A shared
wake-up pipe lets :meth:`FakeUpstream.close` end handlers stuck in a pause or
a hang at once.
"""

from __future__ import annotations

import collections
import email.utils
import functools
import hashlib
import http
import json
import math
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Any, ClassVar
from urllib.parse import urlsplit

__all__ = ["EMBED_DIMENSIONS", "ChatContext", "Exchange", "FakeUpstream", "Request", "Script", "embedding_of"]

# How long the fakes' embeddings are unless a request asks for ``dimensions``.
EMBED_DIMENSIONS = 8
# Pause between the two halves of a split write (the only fixed sleep of the fakes).
_SPLIT_PAUSE_S = 0.02
# Longest a close() waits for one handler thread; they end within milliseconds.
_JOIN_TIMEOUT_S = 5.0


@dataclass
class Script:
    """What the fake does for one chat request.

    A response plays, in order: the ``reasoning`` pieces, the content
    ``tokens``, the ``refusal`` pieces (OpenAI only), the ``tool_calls``, then
    the provider's final frames. ``first_token_delay_s`` comes before the first
    of these pieces (whichever kind it is) and ``delay_s`` before each later
    one (all the frames of the tool calls are one piece).

    Token positions count content tokens: ``error_after=2`` sends two tokens,
    then the provider's mid-stream error. ``hang_after``/``drop_after``/
    ``error_after`` values larger than the number of tokens act after the last
    token (before the refusal, the tool calls and the final "done" line/chunk);
    ``hang_after=0`` with ``reasoning`` hangs after the reasoning, before the
    first content token. A request's token limit (``max_tokens``,
    ``num_predict``) cuts the content tokens only; when it cuts, the finish
    reason is "length" and the tool calls are not sent (the model ran out).
    """

    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    delay_s: float = 0.0  # pause before every piece after the first
    first_token_delay_s: float = 0.0  # pause before the first piece (after the headers were sent)
    status: int | None = None  # answer this HTTP status with the provider's error body instead of streaming
    error_message: str = "boom"  # text used in error bodies / error lines
    error_after: int | None = None  # after N tokens, send the provider's mid-stream error and end cleanly
    hang_after: int | None = None  # after N tokens, send nothing more until the client goes away
    drop_after: int | None = None  # after N tokens, close the TCP connection abruptly
    split_utf8: bool = False  # write each line/event in two socket writes, split inside a UTF-8 character
    # "stop", "length", or anything else the provider may say ("content_filter" for OpenAI), passed as is.
    done_reason: str = "stop"
    # Reported prompt token count; completion tokens = content tokens + reasoning and refusal pieces sent.
    prompt_tokens: int = 7
    headers_delay_s: float = 0.0  # pause BEFORE sending response headers (a model loading)
    raw_after: int | None = None  # after N tokens, write ``raw`` verbatim as one chunk (garbage, a huge line)
    raw: bytes = b""

    # -- richer answers --------------------------------------------------------------
    # Reasoning pieces, streamed before the content tokens. OpenAI: chunks with
    # ``delta: {reasoning_field: piece}`` (vLLM, llama.cpp, DeepSeek), non-streaming
    # ``message[reasoning_field]``; Ollama: ``message.thinking``.
    reasoning: list[str] = field(default_factory=list)
    # OpenAI only: "reasoning_content" (vLLM, llama.cpp, DeepSeek) or "reasoning" (OpenRouter, newer vLLM).
    reasoning_field: str = "reasoning_content"
    # Tool calls, sent after the content tokens: ``{"id": "call_abc", "name": "get_weather",
    # "arguments": "{\"city\":\"Paris\"}"}`` ("name" required, arguments a JSON string or a dict). Without an
    # "id", OpenAI makes one up (``call_`` + 24 characters) and Ollama sends none (as before 0.12.10).
    # OpenAI streams the arguments in pieces of ``tool_args_chunk`` characters and finishes with
    # "tool_calls" (unless ``done_reason`` is not "stop"); Ollama sends all calls in one line,
    # arguments as a JSON object, and finishes with "stop", as it does.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_args_chunk: int = 4
    # OpenAI only: refusal pieces, after the role chunk (content stays null when there are no
    # tokens); non-streaming ``message.refusal`` joined.
    refusal: list[str] = field(default_factory=list)
    # OpenAI: report exactly this usage object (details included) instead of the computed one.
    # Ollama: its prompt_tokens / completion_tokens become prompt_eval_count / eval_count.
    usage: dict[str, Any] | None = None
    # False: OpenAI sends no usage chunk (and no ``usage: null`` per chunk) even when
    # stream_options.include_usage was asked, and no ``usage`` key when not streaming;
    # Ollama omits prompt_eval_count and eval_count from the done line.
    report_usage: bool = True
    # OpenAI only: the stop string that ended the answer, as vLLM names it in the finishing
    # chunk's ``choices[].stop_reason``; api.openai.com sends no such field.
    stop_sequence: str | None = None

    # -- errors (with ``status``) --------------------------------------------------------
    # The provider's error code: OpenAI's ``error.code``; "context_length_exceeded" (with
    # status 400) gives the provider's real context-overflow body (its real message unless
    # ``error_message`` was changed from the default).
    error_code: str | None = None
    retry_after: str | None = None  # a ``Retry-After`` header on the error response (e.g. "7")


@dataclass(frozen=True)
class Request:
    """A chat request as the fake received it."""

    path: str
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any]  # parsed JSON body ({} when it was not a JSON object)


@dataclass
class ChatContext:
    """State of one chat response, handed to the provider's frame builders."""

    request: Request
    script: Script
    model: str
    tokens: list[str]  # tokens to send, already cut to the request's token limit
    done_reason: str  # "length" when the limit cut the tokens, else the script's
    stream: bool
    started: float = field(default_factory=time.monotonic)
    sent: int = 0  # content tokens sent so far (or "generated" when not streaming)
    extra: dict[str, Any] = field(default_factory=dict)  # provider-specific per-response values
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # calls to send ([] when the limit cut)
    reasoning_sent: int = 0  # reasoning pieces sent so far
    refusal_sent: int = 0  # refusal pieces sent so far
    tool_calls_sent: bool = False  # whether the tool calls went out

    @property
    def generated(self) -> int:
        """Completion tokens so far: content tokens plus reasoning and refusal pieces."""
        return self.sent + self.reasoning_sent + self.refusal_sent


class _ClientGone(Exception):
    """The client closed the connection before the response was complete."""


class _Closing(Exception):
    """The fake is shutting down; the handler must end now."""


def embedding_of(text: str, dimensions: int = EMBED_DIMENSIONS) -> list[float]:
    """The fakes' embedding of ``text``: fixed per text, each value k/128, so exact in float32 (and base64)."""
    digest = b""
    block = 0
    while len(digest) < dimensions:
        digest += hashlib.sha256(f"{block}:{text}".encode()).digest()
        block += 1
    return [(byte - 128) / 128 for byte in digest[:dimensions]]


def _split_point(data: bytes) -> int:
    """Return where to cut ``data``: inside its first multi-byte UTF-8 character, else the middle."""
    for i, byte in enumerate(data):
        if byte >= 0xC0:  # lead byte of a multi-byte sequence; cut right after it
            return i + 1
    return len(data) // 2


def http_date() -> str:
    """An RFC 7231 ``Date`` header value for now."""
    return email.utils.formatdate(usegmt=True)


class Exchange:
    """One HTTP request/response on a connection, with disconnect-aware I/O.

    Providers build responses through :meth:`send`, :meth:`start_stream`,
    :meth:`write_chunk` and :meth:`end_stream`; the headers come from
    :meth:`FakeUpstream.response_headers` so each provider controls their order.
    """

    def __init__(self, handler: _Handler, fake: FakeUpstream) -> None:
        self.handler = handler
        self.fake = fake
        self.method: str = handler.command
        self.path: str = urlsplit(handler.path).path
        self.headers: dict[str, str] = {k.lower(): v for k, v in handler.headers.items()}
        self.sock: socket.socket = handler.connection
        self.track_disconnects = False  # only chat responses feed the disconnect record
        self.extra_headers: list[tuple[str, str]] = []  # appended to the provider's headers (Retry-After)
        self.finished = False
        self._gone = False
        self._selector: selectors.BaseSelector | None = None

    # -- request -----------------------------------------------------------

    def read_body(self) -> bytes:
        """Read the request body (Content-Length or chunked)."""
        rfile = self.handler.rfile
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # skip trailers
                    return b"".join(parts)
                parts.append(rfile.read(size))
                rfile.readline()  # CRLF after the chunk data
        length = int(self.headers.get("content-length") or 0)
        return rfile.read(length) if length > 0 else b""

    # -- response ----------------------------------------------------------

    def _head(self, status: int, content_type: str, length: int | None) -> bytes:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        headers = self.fake.response_headers(self, status, content_type, length) + self.extra_headers
        if self.handler.close_connection and not any(k.lower() == "connection" for k, _ in headers):
            headers.append(("Connection", "close"))
        lines = [f"HTTP/1.1 {status} {phrase}"] + [f"{k}: {v}" for k, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            if self.fake._closing.is_set():
                raise _Closing from None
            self._client_gone()

    def send(self, status: int, content_type: str, body: bytes) -> None:
        """Send a complete response with a ``Content-Length``."""
        head = self._head(status, content_type, len(body))
        self._sendall(head + (b"" if self.method == "HEAD" else body))
        self.finished = True

    def start_stream(self, status: int, content_type: str) -> None:
        """Send the headers of a chunked response."""
        self._sendall(self._head(status, content_type, None))

    def write_chunk(self, data: bytes, split: bool = False) -> None:
        """Send ``data`` as one HTTP chunk, or as two chunks cut inside a UTF-8 character."""
        if split and len(data) > 1:
            cut = _split_point(data)
            self._sendall(b"%x\r\n%s\r\n" % (cut, data[:cut]))
            self.pause(_SPLIT_PAUSE_S)
            data = data[cut:]
        self._sendall(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self) -> None:
        """Send the terminating zero-length chunk."""
        self._sendall(b"0\r\n\r\n")
        self.finished = True

    # -- waiting and failure modes -------------------------------------------

    def _client_gone(self) -> None:
        """Record the disconnect (once per request) and abort the handler."""
        self.handler.close_connection = True
        if not self._gone:
            self._gone = True
            if self.track_disconnects and not self.finished:
                self.fake._record_disconnect(time.monotonic())
        raise _ClientGone

    def _peer_closed(self) -> bool | None:
        """Peek at the socket: True if the peer closed, False if it sent data, None if nothing."""
        try:
            data = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:  # ECONNRESET: the client closed with unread data (RST)
            return True
        return data == b""

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` (``math.inf`` = forever) unless the client leaves or the fake closes.

        Raises ``_ClientGone`` or ``_Closing`` instead of returning in those cases.
        """
        if self.fake._closing.is_set():
            raise _Closing
        if seconds <= 0:
            return
        if self._selector is None:
            self._selector = selectors.DefaultSelector()
            self._selector.register(self.fake._wake_r, selectors.EVENT_READ)
            self._selector.register(self.sock, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            events = self._selector.select(None if math.isinf(remaining) else remaining)
            for key, _ in events:
                if key.fileobj == self.fake._wake_r:
                    raise _Closing
                closed = self._peer_closed()
                if closed:
                    self._client_gone()
                elif closed is False:
                    # The client sent more bytes (pipelining): the socket stays readable, so
                    # stop watching it; a later failed write still reveals a disconnect.
                    self._selector.unregister(self.sock)

    def hang(self) -> None:
        """Send nothing more until the client goes away (or the fake closes)."""
        self.pause(math.inf)

    def drop(self) -> None:
        """Close the TCP connection now, mid-response (FIN, so already-sent bytes still arrive)."""
        self.handler.close_connection = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Release the selector."""
        if self._selector is not None:
            self._selector.close()
            self._selector = None


class _Handler(BaseHTTPRequestHandler):
    """Parses HTTP/1.1 requests and hands each one to the owning fake."""

    protocol_version = "HTTP/1.1"  # keep-alive and chunked responses
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Go (Ollama) and most servers disable Nagle; small token chunks must leave at once.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:
            pass  # a client resetting an idle keep-alive connection is normal, not a test failure

    def _dispatch(self) -> None:
        self.server.fake._dispatch(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


class _Server(ThreadingMixIn, HTTPServer):
    """A threading HTTP server that lets its fake track connections and handler threads."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, fake: FakeUpstream, host: str) -> None:
        self.fake = fake
        super().__init__((host, 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a handler thread, registered with the fake so close() can end and join it."""
        thread = threading.Thread(
            target=self._run, args=(request, client_address), daemon=True, name="fake-upstream-conn"
        )
        with self.fake._lock:
            self.fake._threads.add(thread)
            self.fake._connections.add(request)
        thread.start()

    def _run(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.fake._lock:
                self.fake._threads.discard(threading.current_thread())
                self.fake._connections.discard(request)


class FakeUpstream:
    """Base of the fake LLM servers: socket server, scripts, and the request/disconnect record.

    Subclasses set the class attributes and implement the provider hooks
    (``reject``, ``send_error``, ``token_limit``, ``wants_stream``,
    ``token_frames``, ``final_frames``, ``error_frame``, ``send_complete``,
    ``handle_other``, ``response_headers``).
    """

    chat_path: ClassVar[str]
    url_suffix: ClassVar[str] = ""
    default_models: ClassVar[list[str]] = []
    stream_content_type: ClassVar[str]

    def __init__(
        self,
        models: list[str] | None = None,
        default: Script | None = None,
        *,
        host: str = "127.0.0.1",
    ) -> None:
        self.default: Script = default if default is not None else Script()
        self.models: list[str] = list(models if models is not None else self.default_models)
        self.requests: list[Request] = []
        #: Embedding requests as received (each also takes the next pushed script: its ``status`` fails it).
        self.embed_requests: list[Request] = []
        self.disconnects: list[float] = []
        self.completed = 0
        self.active = 0

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified on every record update
        self._scripts: collections.deque[Script] = collections.deque()
        self._disconnects_returned = 0
        self._threads: set[threading.Thread] = set()
        self._connections: set[socket.socket] = set()
        self._closing = threading.Event()
        self._closed = False
        # Written once by close(); never drained, so every selector watching it wakes up.
        self._wake_r, self._wake_w = os.pipe()

        self._server = _Server(self, host)
        self.host: str = host
        self.port: int = self._server.server_address[1]
        self.url: str = f"http://{host}:{self.port}{self.url_suffix}"
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # bounds how long close() waits for the accept loop
            daemon=True,
            name=f"{type(self).__name__}-serve",
        )
        self._serve_thread.start()

    # -- public API ----------------------------------------------------------

    def push(self, *scripts: Script) -> None:
        """Queue scripts; each chat request takes the next one (FIFO), then ``default``."""
        with self._lock:
            self._scripts.extend(scripts)

    def reset(self) -> None:
        """Forget pushed scripts and every record, so a shared fake starts each test clean."""
        with self._changed:
            self._scripts.clear()
            self.requests.clear()
            self.embed_requests.clear()
            self.disconnects.clear()
            self._disconnects_returned = 0
            self.completed = 0
            self.default = Script()

    def last_body(self) -> dict[str, Any]:
        """The parsed JSON body of the most recent chat request (``{}`` if it was not a JSON object).

        :raise LookupError: no chat request arrived yet.
        """
        with self._lock:
            if not self.requests:
                raise LookupError("no chat request arrived yet")
            return self.requests[-1].body

    def wait_requests(self, n: int, timeout: float = 5.0) -> list[Request]:
        """Block until at least ``n`` chat requests arrived; return a copy of all of them."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= n, timeout):
                raise TimeoutError(f"{len(self.requests)} of {n} chat requests after {timeout}s")
            return list(self.requests)

    def wait_disconnect(self, timeout: float = 5.0) -> float:
        """Block until a chat response's client left before the response was complete.

        Returns the ``time.monotonic()`` at which the fake noticed. Each call
        returns the next disconnect not returned by an earlier call.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.disconnects) > self._disconnects_returned, timeout):
                raise TimeoutError(f"no early client disconnect within {timeout}s")
            when = self.disconnects[self._disconnects_returned]
            self._disconnects_returned += 1
            return when

    def wait_completed(self, n: int, timeout: float = 5.0) -> int:
        """Block until at least ``n`` chat responses were fully sent; return ``completed``."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.completed >= n, timeout):
                raise TimeoutError(f"{self.completed} of {n} chat responses completed after {timeout}s")
            return self.completed

    def close(self) -> None:
        """Stop the server, end every handler (also hanging ones) and join all threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._closing.set()
        os.write(self._wake_w, b"x")  # wakes handlers pausing or hanging in a selector
        self._server.shutdown()  # no more accepts once this returns
        with self._lock:
            connections = list(self._connections)
            threads = list(self._threads)
        for conn in connections:
            # Ends handlers blocked reading the next keep-alive request (or writing).
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(_JOIN_TIMEOUT_S)
        self._server.server_close()
        self._serve_thread.join(_JOIN_TIMEOUT_S)
        if not any(t.is_alive() for t in threads):
            # A straggler could still select() on the pipe; leak it rather than reuse a closed fd.
            os.close(self._wake_r)
            os.close(self._wake_w)

    def __enter__(self) -> FakeUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"

    # -- bookkeeping -----------------------------------------------------------

    def _record_disconnect(self, when: float) -> None:
        with self._changed:
            self.disconnects.append(when)
            self._changed.notify_all()

    def _take_script(self) -> Script:
        with self._lock:
            return self._scripts.popleft() if self._scripts else self.default

    @staticmethod
    def _read_request(ex: Exchange) -> tuple[Request, bytes, dict[str, Any] | None]:
        """The request as recorded, its raw body, and that body when it is a JSON object."""
        raw = ex.read_body()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else None
        return Request(path=ex.path, headers=dict(ex.headers), body=body or {}), raw, body

    def _embed_request(self, ex: Exchange) -> tuple[Request, dict[str, Any] | None, Script]:
        """Read and record an embeddings request; take its script."""
        request, _, body = self._read_request(ex)
        with self._changed:
            self.embed_requests.append(request)
            self._changed.notify_all()
        script = self._take_script()
        if script.retry_after is not None and script.status is not None:
            ex.extra_headers.append(("Retry-After", script.retry_after))
        return request, body, script

    # -- request handling --------------------------------------------------------

    def _dispatch(self, handler: _Handler) -> None:
        ex = Exchange(handler, self)
        try:
            if ex.method == "POST" and ex.path == self.chat_path:
                self._handle_chat(ex)
            else:
                self.handle_other(ex)
        except (_ClientGone, _Closing):
            handler.close_connection = True
        finally:
            ex.close()

    def _handle_chat(self, ex: Exchange) -> None:
        request, raw, body = self._read_request(ex)
        with self._changed:
            self.requests.append(request)
            self.active += 1
            self._changed.notify_all()
        script = self._take_script()
        ex.track_disconnects = True
        try:
            if self.reject(ex, request, raw, body):
                self._mark_completed()
                return
            assert body is not None  # reject() answers every unusable body
            ex.pause(script.headers_delay_s)
            if script.status is not None:
                if script.retry_after is not None:
                    ex.extra_headers.append(("Retry-After", script.retry_after))
                self.send_scripted_error(ex, script)
                self._mark_completed()
                return
            tokens = list(script.tokens)
            done_reason = script.done_reason
            tool_calls = list(script.tool_calls)
            limit = self.token_limit(body)
            if limit is not None and limit < len(tokens):
                tokens, done_reason, tool_calls = tokens[: max(limit, 0)], "length", []
            ctx = ChatContext(
                request=request,
                script=script,
                model=str(body.get("model")),
                tokens=tokens,
                done_reason=done_reason,
                stream=self.wants_stream(body),
                tool_calls=tool_calls,
            )
            if self._run_tokens(ex, ctx):
                self._mark_completed()
        finally:
            with self._changed:
                self.active -= 1
                self._changed.notify_all()

    def _mark_completed(self) -> None:
        with self._changed:
            self.completed += 1
            self._changed.notify_all()

    def _run_tokens(self, ex: Exchange, ctx: ChatContext) -> bool:
        """Play the script's pieces; return True when the response was fully sent."""
        script, n = ctx.script, len(ctx.tokens)
        split = script.split_utf8
        first = True

        def piece(frames: Callable[[], list[bytes]]) -> None:
            """Pause before a piece, then write its frames (built after the pause: fresh timestamps)."""
            nonlocal first
            ex.pause(script.first_token_delay_s if first else script.delay_s)
            first = False
            if ctx.stream:
                for frame in frames():
                    ex.write_chunk(frame, split)

        def hits(after: int | None, i: int) -> bool:
            return after is not None and i == min(max(after, 0), n)

        if ctx.stream:
            ex.start_stream(200, self.stream_content_type)
        for j, text in enumerate(script.reasoning):
            piece(functools.partial(self.reasoning_frames, ctx, j, text))
            ctx.reasoning_sent = j + 1
        for i in range(n + 1):
            if hits(script.error_after, i):
                if ctx.stream:
                    ex.write_chunk(self.error_frame(ctx, script.error_message), split)
                    ex.end_stream()
                else:
                    self.send_error(ex, 500, script.error_message)
                return True
            if hits(script.hang_after, i):
                ex.hang()  # only ends by raising (client gone or fake closing)
                return False
            if hits(script.drop_after, i):
                ex.drop()
                return False
            if hits(script.raw_after, i) and ctx.stream:
                ex.write_chunk(script.raw)
            if i == n:
                break
            piece(functools.partial(self.token_frames, ctx, i, ctx.tokens[i]))
            ctx.sent = i + 1
        for j, text in enumerate(script.refusal):
            piece(functools.partial(self.refusal_frames, ctx, j, text))
            ctx.refusal_sent = j + 1
        if ctx.tool_calls:
            piece(functools.partial(self.tool_call_frames, ctx))
            ctx.tool_calls_sent = True
        if ctx.stream:
            for frame in self.final_frames(ctx):
                ex.write_chunk(frame, split)
            ex.end_stream()
        else:
            self.send_complete(ex, ctx)
        return True

    # -- provider hooks --------------------------------------------------------

    def response_headers(
        self, ex: Exchange, status: int, content_type: str, length: int | None
    ) -> list[tuple[str, str]]:
        """Headers of a response, in wire order (``length`` None = chunked).

        The default is Go's ``net/http`` order: handler headers, then Date,
        Content-Length, Connection, Transfer-Encoding.
        """
        headers = [("Content-Type", content_type), ("Date", http_date())]
        if length is not None:
            headers.append(("Content-Length", str(length)))
        if ex.handler.close_connection:
            headers.append(("Connection", "close"))
        if length is None:
            headers.append(("Transfer-Encoding", "chunked"))
        return headers

    def reject(self, ex: Exchange, request: Request, raw: bytes, body: dict[str, Any] | None) -> bool:
        """Answer requests the provider refuses (bad body, auth, unknown model); True if answered."""
        raise NotImplementedError

    def send_error(self, ex: Exchange, status: int, message: str) -> None:
        """Send the provider's error response for ``status``."""
        raise NotImplementedError

    def send_scripted_error(self, ex: Exchange, script: Script) -> None:
        """Send the error a script's ``status`` asks for (providers add ``error_code``)."""
        assert script.status is not None
        self.send_error(ex, script.status, script.error_message)

    def token_limit(self, body: dict[str, Any]) -> int | None:
        """The request's cap on generated tokens, if any."""
        raise NotImplementedError

    def wants_stream(self, body: dict[str, Any]) -> bool:
        """Whether the request asks for a streamed response."""
        raise NotImplementedError

    def token_frames(self, ctx: ChatContext, index: int, token: str) -> list[bytes]:
        """Frames (each one chunk) carrying token ``index``."""
        raise NotImplementedError

    def reasoning_frames(self, ctx: ChatContext, index: int, piece: str) -> list[bytes]:
        """Frames carrying reasoning piece ``index``."""
        raise NotImplementedError

    def refusal_frames(self, ctx: ChatContext, index: int, piece: str) -> list[bytes]:
        """Frames carrying refusal piece ``index`` (none where the provider has no refusals)."""
        return []

    def tool_call_frames(self, ctx: ChatContext) -> list[bytes]:
        """Frames carrying all of ``ctx.tool_calls``."""
        raise NotImplementedError

    def final_frames(self, ctx: ChatContext) -> list[bytes]:
        """Frames that end a successful stream."""
        raise NotImplementedError

    def error_frame(self, ctx: ChatContext, message: str) -> bytes:
        """The provider's mid-stream error frame."""
        raise NotImplementedError

    def send_complete(self, ex: Exchange, ctx: ChatContext) -> None:
        """Send the non-streaming response with all of ``ctx.tokens``."""
        raise NotImplementedError

    def handle_other(self, ex: Exchange) -> None:
        """Answer every request that is not a chat POST."""
        raise NotImplementedError
