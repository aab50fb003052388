"""The naive baseline: a Flask generator ``Response``, written the way tutorials write it.

Served as ``gunicorn -k gevent -w 1 --worker-connections 10000 baseline:app``,
the same server shape as Sluice, so the rows compare the two apps, not two servers.
Nothing here is tuned on purpose: no heartbeat, no disconnect watch, no
escaping of newlines in the text, a new upstream connection per request.

``GET /stream?n=N&interval_ms=MS``  N events ``data: token i``, MS apart, then ``event: done``.
``GET /proxy?n=N&interval_ms=MS``   POSTs to ``$BENCH_UPSTREAM/api/chat`` (Ollama NDJSON)
                                    and relays each line's ``message.content``, then ``event: done``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import requests
from flask import Flask, Response, request

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:11434")

app = Flask(__name__)


@app.get("/stream")
def stream() -> Response:
    """N token events at the interval, then ``done``."""
    n = request.args.get("n", 20, type=int)
    interval_s = request.args.get("interval_ms", 0, type=float) / 1000

    def generate() -> Iterator[str]:
        for i in range(n):
            if i:
                time.sleep(interval_s)  # gevent's sleep once the worker has patched time
            yield f"data: token {i}\n\n"
        yield "event: done\ndata:\n\n"

    return Response(generate(), mimetype="text/event-stream")


@app.get("/proxy")
def proxy() -> Response:
    """Relay the fake Ollama's answer as SSE, one event per line's content."""
    upstream = requests.post(
        f"{UPSTREAM}/api/chat",
        params=request.args,
        json={"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        stream=True,
        timeout=(5, 60),
    )

    def generate() -> Iterator[str]:
        with upstream:
            for line in upstream.iter_lines():
                if not line:
                    continue
                content = json.loads(line).get("message", {}).get("content", "")
                if content:
                    yield f"data: {content}\n\n"
        yield "event: done\ndata:\n\n"

    return Response(generate(), mimetype="text/event-stream")
