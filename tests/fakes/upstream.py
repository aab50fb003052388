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
import http
import json
import math
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Any, ClassVar
from urllib.parse import urlsplit

__all__ = ["ChatContext", "Exchange", "FakeUpstream", "Request", "Script"]

# Pause between the two halves of a split write (the only fixed sleep of the fakes).
_SPLIT_PAUSE_S = 0.02
# Longest a close() waits for one handler thread; they end within milliseconds.
_JOIN_TIMEOUT_S = 5.0


@dataclass
class Script:
    """What the fake does for one chat request.

    Token positions count content tokens: ``error_after=2`` sends two tokens,
    then the provider's mid-stream error. ``hang_after``/``drop_after``/
    ``error_after`` values larger than the number of tokens act after the last
    token (before the final "done" line/chunk).
    """

    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    delay_s: float = 0.0  # pause before every token after the first
    first_token_delay_s: float = 0.0  # pause before the first token (after the headers were sent)
    status: int | None = None  # answer this HTTP status with the provider's error body instead of streaming
    error_message: str = "boom"  # text used in error bodies / error lines
    error_after: int | None = None  # after N tokens, send the provider's mid-stream error and end cleanly
    hang_after: int | None = None  # after N tokens, send nothing more until the client goes away
    drop_after: int | None = None  # after N tokens, close the TCP connection abruptly
    split_utf8: bool = False  # write each line/event in two socket writes, split inside a UTF-8 character
    done_reason: str = "stop"  # "stop" or "length"
    prompt_tokens: int = 7  # reported prompt token count; completion tokens = tokens sent
    headers_delay_s: float = 0.0  # pause BEFORE sending response headers (a model loading)
    raw_after: int | None = None  # after N tokens, write ``raw`` verbatim as one chunk (garbage, a huge line)
    raw: bytes = b""


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


class _ClientGone(Exception):
    """The client closed the connection before the response was complete."""


class _Closing(Exception):
    """The fake is shutting down; the handler must end now."""


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
        headers = self.fake.response_headers(self, status, content_type, length)
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

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
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
            self.disconnects.clear()
            self._disconnects_returned = 0
            self.completed = 0
            self.default = Script()

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
            if not self._changed.wait_for(
                lambda: len(self.disconnects) > self._disconnects_returned, timeout
            ):
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
        raw = ex.read_body()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else None
        request = Request(path=ex.path, headers=dict(ex.headers), body=body or {})
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
                self.send_error(ex, script.status, script.error_message)
                self._mark_completed()
                return
            tokens = list(script.tokens)
            done_reason = script.done_reason
            limit = self.token_limit(body)
            if limit is not None and limit < len(tokens):
                tokens, done_reason = tokens[: max(limit, 0)], "length"
            ctx = ChatContext(
                request=request,
                script=script,
                model=str(body.get("model")),
                tokens=tokens,
                done_reason=done_reason,
                stream=self.wants_stream(body),
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
        """Play the script's token loop; return True when the response was fully sent."""
        script, n = ctx.script, len(ctx.tokens)
        split = script.split_utf8

        def hits(after: int | None, i: int) -> bool:
            return after is not None and i == min(max(after, 0), n)

        if ctx.stream:
            ex.start_stream(200, self.stream_content_type)
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
            ex.pause(script.first_token_delay_s if i == 0 else script.delay_s)
            if ctx.stream:
                for frame in self.token_frames(ctx, i, ctx.tokens[i]):
                    ex.write_chunk(frame, split)
            ctx.sent = i + 1
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

    def token_limit(self, body: dict[str, Any]) -> int | None:
        """The request's cap on generated tokens, if any."""
        raise NotImplementedError

    def wants_stream(self, body: dict[str, Any]) -> bool:
        """Whether the request asks for a streamed response."""
        raise NotImplementedError

    def token_frames(self, ctx: ChatContext, index: int, token: str) -> list[bytes]:
        """Frames (each one chunk) carrying token ``index``."""
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
