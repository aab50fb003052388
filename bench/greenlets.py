"""Greenlets and memory per open stream, by kind of stream: ``python bench/greenlets.py [N]``.

Starts Sluice under gunicorn (one gevent worker, ``gunicorn.conf.py`` and a
hook that writes the worker's live greenlets and RSS, after a GC, to a file
twice a second), opens N streams of one kind that stay open (``demo/echo``
with a long prompt and a slow delay), and reads the counts before and after.
Prints greenlets and KB per stream for a tied SSE stream, a background
generation with one listener, and a WebSocket chat.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = " ".join(["w"] * 400)
CHAT = {"model": "demo/echo", "messages": [{"role": "user", "content": PROMPT}]}

HOOK = r"""
exec(open("gunicorn.conf.py").read())
_post_worker_init = post_worker_init


def post_worker_init(worker):
    _post_worker_init(worker)
    import gc, os, greenlet, gevent

    def report():
        while True:
            gc.collect()
            alive = sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)
            rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(os.environ["BENCH_COUNTS"] + ".tmp", "w") as out:
                out.write(f"{alive} {rss}")
            os.replace(os.environ["BENCH_COUNTS"] + ".tmp", os.environ["BENCH_COUNTS"])
            gevent.sleep(0.5)

    gevent.spawn(report)
"""


def _post(port: int, path: str, body: dict, accept: str = "text/event-stream") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    payload = json.dumps(body).encode()
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: {accept}\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(seen[-200:])
        seen += chunk
    return seen


def tied(port: int) -> socket.socket:
    sock = _post(port, "/api/chat", CHAT)
    _read_until(sock, b'"delta"')
    return sock


def background(port: int) -> socket.socket:
    start = _post(port, "/api/generations", CHAT, "application/json")
    head = _read_until(start, b"}")
    start.close()
    generation = head[head.index(b'"id":"') + 6 :].split(b'"')[0].decode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET /api/generations/{generation}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    _read_until(sock, b'"delta"')
    return sock


def websocket(port: int) -> socket.socket:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request, TextMessage

    sock = socket.create_connection(("127.0.0.1", port))
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host="x", target="/ws")))
    while True:
        ws.receive_data(sock.recv(65536))
        if any(isinstance(e, AcceptConnection) for e in ws.events()):
            break
    sock.sendall(ws.send(TextMessage(json.dumps({"type": "chat", **CHAT}))))
    deltas = 0
    while deltas == 0:
        ws.receive_data(sock.recv(65536))
        deltas += sum(isinstance(e, TextMessage) and '"delta"' in e.data for e in ws.events())
    return sock


def measure(kind, n: int) -> tuple[float, float]:
    """Greenlets and KB per stream of ``kind``, with ``n`` of them open at once."""
    work = Path(tempfile.mkdtemp(prefix="sluice-greenlets-"))
    conf, counts = work / "conf.py", work / "counts"
    conf.write_text(HOOK)
    port = 18000 + os.getpid() % 1000
    env = {
        **os.environ,
        "BENCH_COUNTS": str(counts),
        "SLUICE_DEMO_DELAY_MS": "1000",
        "SLUICE_HEARTBEAT_S": "60",
        "SLUICE_LOG_LEVEL": "warning",
        "SLUICE_LOCAL_MODEL": "off",
    }
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    child = subprocess.Popen(
        [gunicorn, "-c", str(conf), "-b", f"127.0.0.1:{port}", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def snapshot() -> tuple[int, int]:
        time.sleep(1.2)  # two reports: the latest is after the streams opened
        greenlets, rss = counts.read_text().split()
        return int(greenlets), int(rss)

    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        kind(port).close()  # warm up (imports, first allocations)
        before = snapshot()
        socks = [kind(port) for _ in range(n)]
        after = snapshot()
        for sock in socks:
            sock.close()
        return (after[0] - before[0]) / n, (after[1] - before[1]) / n / 1024
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(15)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    for name, kind in (("tied SSE", tied), ("background + listener", background), ("WebSocket chat", websocket)):
        greenlets, kb = measure(kind, count)
        print(f"{name:24s} {greenlets:5.2f} greenlets/stream  {kb:6.1f} KB/stream")
