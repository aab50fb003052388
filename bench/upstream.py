"""A fake Ollama for the benchmark: ``POST /api/chat`` streams NDJSON lines as Ollama does.

Each answer is N content lines ``{"model","created_at","message":{"role":"assistant","content":"w "},"done":false}``
then Ollama's final line (``"done":true,"done_reason":"stop"``, ``prompt_eval_count``,
``eval_count``…), as ``application/x-ndjson``, one line every ``interval_ms``.
N is ``?n=``, else the body's ``options.num_predict``, else ``--n``; the interval
is ``?interval_ms=``, else ``--interval-ms``.

For W4 it also tells when each request's client went away: a read watcher on
the socket sees the FIN the moment it arrives (not at the next write) and
records ``time.monotonic_ns()`` under the request's key, its last message's
content. CLOCK_MONOTONIC is system-wide on Linux, so the load
generator compares these with its own clock. ``GET /closes?prefix=P`` answers
``{"closes": {key: ns}}`` for the keys starting with P.

It runs on gevent's ``pywsgi``, one greenlet per request, so hundreds of slow
streams cost little; it listens on 127.0.0.1 only.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before anything else opens a socket

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from urllib.parse import parse_qs  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIHandler, WSGIServer  # noqa: E402

__all__ = ["FakeOllama", "main"]

MAX_BODY_BYTES = 1024 * 1024
MAX_LINES = 10_000_000
MAX_CLOSES = 200_000  # the close log is bounded: the oldest entries go first

StartResponse = Callable[[str, list[tuple[str, str]]], object]


class _SocketHandler(WSGIHandler):
    """pywsgi's handler, with the connection's socket in the environ (pywsgi does not expose it)."""

    def handle(self) -> None:
        # pywsgi sends the head and the first chunk in two writes; with Nagle on, the
        # first line would wait for the peer's (delayed) ACK of the head. Ollama's Go
        # server, like all of Go's net/http, sets TCP_NODELAY.
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle()

    def get_environ(self) -> dict:
        environ = super().get_environ()
        environ["bench.socket"] = self.socket
        return environ


def _created_at() -> str:
    """Now, as Ollama's ``created_at`` (RFC 3339, UTC, microseconds)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


class _CloseWatch:
    """Notes when the peer closes the connection, at no cost per line.

    One libev read watcher per response: it fires when the socket becomes
    readable, which during a response means the client's FIN (or RST). The time
    is taken right there; a short greenlet then peeks to tell EOF from stray bytes.
    """

    def __init__(self, sock: socket.socket | None, on_close: Callable[[int], None]) -> None:
        self.gone = False
        self._sock, self._on_close = sock, on_close
        self._watcher = None
        if sock is not None:
            self._watcher = gevent.get_hub().loop.io(sock.fileno(), 1)
            self._watcher.start(self._readable)

    def _readable(self) -> None:
        seen_ns = time.monotonic_ns()
        self.stop()  # level-triggered: once is enough
        gevent.spawn(self._confirm, seen_ns)

    def _confirm(self, seen_ns: int) -> None:
        try:
            eof = self._sock is not None and self._sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            eof = True
        if eof:
            self.gone = True
            self._on_close(seen_ns)

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None


class FakeOllama:
    """The WSGI app. ``default_n`` lines at ``default_interval_ms`` unless a request says otherwise."""

    def __init__(self, default_n: int = 50, default_interval_ms: float = 20.0) -> None:
        self.default_n = default_n
        self.default_interval_ms = default_interval_ms
        self.closes: dict[str, int] = {}

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterator[bytes] | list[bytes]:
        path, method = environ.get("PATH_INFO", "/"), environ["REQUEST_METHOD"]
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if path == "/api/chat" and method in ("POST", "GET"):
            return self._chat(environ, query, start_response)
        if path == "/api/tags":
            return self._json(start_response, {"models": [{"name": "fake:latest", "model": "fake:latest"}]})
        if path == "/closes":
            prefix = query.get("prefix", "")
            closes = {k: v for k, v in self.closes.items() if k.startswith(prefix)}
            return self._json(start_response, {"closes": closes})
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"Ollama is running"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"404 page not found"]

    @staticmethod
    def _json(start_response: StartResponse, obj: object) -> list[bytes]:
        body = json.dumps(obj, separators=(",", ":")).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(body)))]
        )
        return [body]

    def _record_close(self, key: str, ns: int) -> None:
        if key in self.closes:
            return
        if len(self.closes) >= MAX_CLOSES:
            del self.closes[next(iter(self.closes))]
        self.closes[key] = ns

    def _chat(self, environ: dict, query: dict[str, str], start_response: StartResponse) -> Iterator[bytes]:
        try:
            length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_BODY_BYTES)
        except ValueError:
            length = 0
        try:
            body = json.loads(environ["wsgi.input"].read(length) or b"{}")
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        n = self.default_n
        if isinstance(options.get("num_predict"), int) and options["num_predict"] > 0:
            n = options["num_predict"]
        if query.get("n", "").isdigit():
            n = int(query["n"])
        interval_s = self.default_interval_ms / 1000
        with contextlib.suppress(KeyError, ValueError):
            interval_s = max(0.0, float(query["interval_ms"]) / 1000)
        model = body.get("model") if isinstance(body.get("model"), str) else "fake"
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        key = str(messages[-1].get("content", ""))[:200] if messages else ""
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in messages)
        start_response("200 OK", [("Content-Type", "application/x-ndjson")])
        return self._lines(min(n, MAX_LINES), interval_s, model, key, prompt_words, environ.get("bench.socket"))

    def _lines(
        self, n: int, interval_s: float, model: str, key: str, prompt_words: int, sock: socket.socket | None
    ) -> Iterator[bytes]:
        head = b'{"model":' + json.dumps(model).encode() + b',"created_at":"'
        content = b'","message":{"role":"assistant","content":"w "},"done":false}\n'
        started = time.monotonic_ns()
        finished = False
        watch = _CloseWatch(sock, lambda ns: self._record_close(key, ns))
        try:
            for i in range(n):
                yield head + _created_at().encode() + content
                if interval_s:
                    gevent.sleep(interval_s)
                elif i % 64 == 63:
                    gevent.sleep(0)  # at interval 0, let the other streams run now and then
                if watch.gone:
                    return
            total = time.monotonic_ns() - started
            yield (
                head
                + _created_at().encode()
                + (
                    b'","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,'
                    b'"total_duration":%d,"load_duration":1000000,"prompt_eval_count":%d,'
                    b'"prompt_eval_duration":1000000,"eval_count":%d,"eval_duration":%d}\n'
                    % (total, prompt_words, n, total)
                )
            )
            finished = True
        finally:
            watch.stop()
            # A write that failed (pywsgi then closes this generator) is a close too.
            if not finished:
                self._record_close(key, time.monotonic_ns())


def main(argv: list[str] | None = None) -> None:
    """Serve the fake Ollama on 127.0.0.1 until terminated."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--n", type=int, default=50, help="content lines when the request does not say")
    ap.add_argument("--interval-ms", type=float, default=20.0, help="pause between lines when the request does not say")
    args = ap.parse_args(argv)
    sys.stderr.reconfigure(line_buffering=True)
    app = FakeOllama(args.n, args.interval_ms)
    server = WSGIServer(
        ("127.0.0.1", args.port), app, handler_class=_SocketHandler, backlog=4096, log=None, error_log=sys.stderr
    )
    print(f"fake ollama on 127.0.0.1:{args.port}: {args.n} lines, {args.interval_ms} ms apart", file=sys.stderr)
    server.serve_forever()


if __name__ == "__main__":
    main()
