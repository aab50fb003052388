"""A load generator for streaming HTTP: C concurrent SSE (or NDJSON) streams on gevent.

Each stream is one raw socket and one greenlet: an HTTP/1.1 request with
``Connection: close``, a response head, a body that is chunked, sized or read
until close, and a counter that turns the body's bytes into events. Nothing else
runs per byte, so one core holds a few thousand streams; still, a Python client
is several times slower per event than the Go one in ``../shared/bench``, so its
own CPU is reported (``client_cpu_s``): when that approaches the wall time, the
client is the bottleneck, not the server.

Subcommands, each printing one JSON object on stdout:

  streams     C streams over a ramp: TTFE, lateness, events/s, server CPU and RSS (W1-W3)
  disconnect  C streams, then K closed at random moments: client close → upstream close (W4)
  replay      a durable generation replayed from its log, alone and under a background load (W5)
  crossworker C streams on one worker, K more followed live from another: delivery delay (X1)

An event is an SSE block that carries a ``data:`` line (``: ping`` comments and
``retry:`` blocks are not events), or in ``--mode ndjson`` a non-empty line.
Only 127.0.0.1 is reached, and every run stops at its deadline.
"""

from __future__ import annotations

import argparse
import errno
import json
import random
import resource
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import gevent
from gevent import GreenletExit, monkey
from proctree import sample_tree

__all__ = ["Endpoint", "Load", "Stream", "build_request", "fetch", "percentile"]

CONNECT_TIMEOUT_S = 15.0
RECV_BYTES = 65536
MAX_HEAD_BYTES = 64 * 1024
# A partial event or line longer than this is a broken server, not a token.
MAX_PENDING_BYTES = 1024 * 1024
MAX_STREAMS = 50_000
MAX_DEADLINE_S = 1800.0


class ProtocolError(Exception):
    """The response broke HTTP or framing; ``kind`` is its error label."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True)
class Endpoint:
    """A loopback HTTP server."""

    host: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> tuple[Endpoint, str]:
        """The endpoint and the path (with query) of ``url``.

        :raise SystemExit: ``url`` is not plain HTTP on 127.0.0.1 (the bench never leaves the host).
        """
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost") or not parts.port:
            raise SystemExit(f"loadgen: only http://127.0.0.1:PORT/... is allowed, not {url!r}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls("127.0.0.1", parts.port), path


def build_request(endpoint: Endpoint, method: str, path: str, body: bytes | None, accept: str) -> bytes:
    """The bytes of one HTTP/1.1 request that asks the server to close after the response."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {endpoint.host}:{endpoint.port}",
        "User-Agent: sluice-bench/1",
        f"Accept: {accept}",
        "Connection: close",
    ]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


# ---- body decoders: turn the bytes after the head into the payload ----


class _Chunked:
    """``Transfer-Encoding: chunked``, decoded incrementally (trailers are ignored)."""

    __slots__ = ("_left", "_pending", "_skip", "done")
    until_close = False

    def __init__(self) -> None:
        self._pending = b""
        self._left = 0  # data bytes left in the current chunk
        self._skip = 0  # bytes of the CRLF after a chunk still to skip
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buf = self._pending + data if self._pending else data
        out: list[bytes] = []
        pos, end = 0, len(buf)
        while pos < end and not self.done:
            if self._left:
                take = min(self._left, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._skip = 2
            elif self._skip:
                take = min(self._skip, end - pos)
                pos += take
                self._skip -= take
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > 1024:
                        raise ProtocolError("bad_chunk")
                    break
                size = _chunk_size(buf[pos:eol])
                pos = eol + 2
                if size == 0:
                    self.done = True
                elif pos + size + 2 <= end:  # the whole chunk is here (the usual case): one step
                    out.append(buf[pos : pos + size])
                    pos += size + 2
                else:
                    self._left = size
        self._pending = buf[pos:] if not self.done else b""
        return out[0] if len(out) == 1 else b"".join(out)


def _chunk_size(line: bytes) -> int:
    """The size in a chunk-size line, ignoring chunk extensions."""
    try:
        return int(line, 16)
    except ValueError:
        pass
    try:
        return int(line.split(b";", 1)[0], 16)
    except ValueError:
        raise ProtocolError("bad_chunk") from None


class _Sized:
    """A body with ``Content-Length``."""

    __slots__ = ("_left", "done")
    until_close = False

    def __init__(self, length: int) -> None:
        self._left = length
        self.done = length == 0

    def feed(self, data: bytes) -> bytes:
        data = data[: self._left]
        self._left -= len(data)
        self.done = self._left == 0
        return data


class _UntilClose:
    """A body that ends when the server closes the connection (HTTP/1.0 style)."""

    __slots__ = ()
    until_close = True
    done = False

    def feed(self, data: bytes) -> bytes:
        return data


def _decoder_for(head: bytes) -> tuple[int, _Chunked | _Sized | _UntilClose]:
    """The status code and the body decoder that the response head calls for."""
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split(None, 2)[1])
    except (IndexError, ValueError):
        raise ProtocolError("bad_status_line") from None
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise ProtocolError("bad_content_length") from None
    if chunked:
        return status, _Chunked()
    if length is not None:
        return status, _Sized(length)
    return status, _UntilClose()


# ---- counters: turn the payload into events ----


def _records(buf: bytes, separator: bytes, error: str) -> tuple[list[bytes], bytes]:
    """Split ``buf`` into the records ended by ``separator`` and the unfinished rest.

    :raise ProtocolError: the unfinished rest grew past ``MAX_PENDING_BYTES``.
    """
    if separator not in buf:
        if len(buf) > MAX_PENDING_BYTES:
            raise ProtocolError(error)
        return [], buf
    records = buf.split(separator)
    rest = records.pop()
    return records, rest


class _SSECounter:
    """Counts SSE events that carry a ``data:`` line, across any split of the bytes."""

    __slots__ = ("_cr", "_pending")

    def __init__(self) -> None:
        self._pending = b""
        self._cr = False  # the last chunk ended in CR: it may be the first half of a CRLF

    def feed(self, data: bytes) -> int:
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if b"\r" in data:
            if data.endswith(b"\r"):
                data, self._cr = data[:-1], True
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        blocks, self._pending = _records(self._pending + data, b"\n\n", "oversized_event")
        return sum(1 for b in blocks if b.startswith(b"data:") or b"\ndata:" in b)

    def finish(self) -> int:
        return 0  # an event not ended by a blank line is dropped, as EventSource does


class _NDJSONCounter:
    """Counts non-empty lines."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> int:
        lines, self._pending = _records(self._pending + data, b"\n", "oversized_line")
        return sum(1 for line in lines if line.strip())

    def finish(self) -> int:
        return 1 if self._pending.strip() else 0


class _Collector:
    """Keeps the body (bounded) instead of counting events: for plain API calls."""

    __slots__ = ("body",)

    def __init__(self) -> None:
        self.body = bytearray()

    def feed(self, data: bytes) -> int:
        if len(self.body) + len(data) > MAX_PENDING_BYTES:
            raise ProtocolError("oversized_body")
        self.body += data
        return 0

    def finish(self) -> int:
        return 0


_COUNTERS: dict[str, Callable[[], _SSECounter | _NDJSONCounter | _Collector]] = {
    "sse": _SSECounter,
    "ndjson": _NDJSONCounter,
    "body": _Collector,
}
_ACCEPT = {"sse": "text/event-stream", "ndjson": "application/x-ndjson", "body": "application/json"}


def _classify(exc: OSError) -> str:
    """A short label for a socket error, comparable with the Go loadgen's."""
    if isinstance(exc, socket.timeout):
        return "net_timeout"
    return {
        errno.ECONNREFUSED: "refused",
        errno.ECONNRESET: "reset",
        errno.EPIPE: "broken_pipe",
        errno.EMFILE: "emfile",
        errno.ENFILE: "enfile",
        errno.EADDRNOTAVAIL: "addr_not_avail",
    }.get(exc.errno or 0, f"os_{exc.errno}")


class _Gauge:
    """Streams open now (200 received, body not finished), and the most at once."""

    __slots__ = ("connected", "open", "peak")

    def __init__(self) -> None:
        self.open = self.peak = self.connected = 0

    def up(self) -> None:
        self.open += 1
        self.connected += 1
        self.peak = max(self.peak, self.open)

    def down(self) -> None:
        self.open -= 1


class Stream:
    """One request and its response, read to the end of the body or until closed.

    ``times`` holds the monotonic time (ns) at which each event arrived; events
    that arrive in the same read share it. ``kind`` is None for a clean end,
    ``"closed"`` when :meth:`close` ended it, else an error label.
    """

    __slots__ = (
        "closed_ns",
        "closing",
        "completed",
        "counter",
        "finished",
        "index",
        "kind",
        "mode",
        "request",
        "sock",
        "start_ns",
        "status",
        "times",
    )

    def __init__(self, index: int, request: bytes, mode: str) -> None:
        self.index = index
        self.request = request
        self.mode = mode
        self.counter = _COUNTERS[mode]()
        self.start_ns = 0
        self.times: list[int] = []
        self.status = 0
        self.kind: str | None = None
        self.completed = False
        self.sock: socket.socket | None = None
        self.closing = False
        self.closed_ns = 0
        self.finished = False

    @property
    def streaming(self) -> bool:
        """Open and has delivered at least one event."""
        return bool(self.times) and not self.finished

    def close(self) -> None:
        """Close the socket now, as a client that goes away does; the time is kept in ``closed_ns``."""
        if self.finished or self.sock is None:
            return
        self.closing = True
        self.closed_ns = time.monotonic_ns()
        self.sock.close()  # gevent wakes the reading greenlet with EBADF

    def run(self, endpoint: Endpoint, gauge: _Gauge, expect: int) -> None:
        """Send the request and read the response; never raises."""
        self.start_ns = time.monotonic_ns()
        opened = False
        try:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=CONNECT_TIMEOUT_S)
            sock.settimeout(None)  # the run's deadline bounds the reads, not a timer per read
            self.sock = sock
            sock.sendall(self.request)
            head, rest = _read_head(sock)
            arrived = time.monotonic_ns()
            self.status, decoder = _decoder_for(head)
            if self.status != 200 and self.mode != "body":
                self.kind = f"http_{self.status}"
                return
            gauge.up()
            opened = True
            self._read_body(sock, decoder, rest, arrived)
            if expect and len(self.times) < expect:
                self.kind = "short"
            else:
                self.completed = True
        except GreenletExit:
            self.kind = "closed" if self.closing else "timeout"
        except ProtocolError as exc:
            self.kind = exc.kind
        except OSError as exc:
            self.kind = "closed" if self.closing else _classify(exc)
        finally:
            self.finished = True
            if opened:
                gauge.down()
            if self.sock is not None and not self.closing:
                self.sock.close()

    def _read_body(
        self, sock: socket.socket, decoder: _Chunked | _Sized | _UntilClose, data: bytes, arrived: int
    ) -> None:
        """Feed the body to the counter; each event is stamped with the time its bytes were read."""
        counter, times = self.counter, self.times
        while True:
            if data:
                payload = decoder.feed(data)
                if payload and (found := counter.feed(payload)):
                    if found == 1:
                        times.append(arrived)
                    else:
                        times.extend([arrived] * found)
                if decoder.done:
                    break
            data = sock.recv(RECV_BYTES)
            arrived = time.monotonic_ns()
            if not data:
                if not decoder.until_close:
                    raise ProtocolError("unexpected_eof")
                break
        if found := counter.finish():
            times.extend([time.monotonic_ns()] * found)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The response head (without the blank line) and whatever body bytes came with it."""
    buf = b""
    while True:
        data = sock.recv(RECV_BYTES)
        if not data:
            raise ProtocolError("eof_before_head")
        buf += data
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if sep:
            return head, rest
        if len(buf) > MAX_HEAD_BYTES:
            raise ProtocolError("oversized_head")


def fetch(
    endpoint: Endpoint, method: str, path: str, body: bytes | None = None, timeout_s: float = 10.0
) -> tuple[int, bytes]:
    """One plain request: ``(status, body)``; status 0 if it failed or timed out."""
    stream = Stream(0, build_request(endpoint, method, path, body, _ACCEPT["body"]), "body")
    worker = gevent.spawn(stream.run, endpoint, _Gauge(), 0)
    worker.join(timeout_s)
    if not worker.dead:
        worker.kill()
        return 0, b""
    if stream.kind is not None:
        return 0, b""
    assert isinstance(stream.counter, _Collector)
    return stream.status, bytes(stream.counter.body)


# ---- statistics ----


def percentile(sorted_xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of sorted values (-1 when empty), the Go loadgen's rule."""
    if not sorted_xs:
        return -1.0
    return sorted_xs[int(p / 100 * (len(sorted_xs) - 1) + 0.5)]


def _lateness(streams: Sequence[Stream], interval_ms: float, window: tuple[int, int] | None = None) -> list[float]:
    """``max(0, gap - interval)`` in ms for each gap between two events of a stream, sorted.

    With ``window`` (monotonic ns), only the gaps that overlap it.
    """
    late: list[float] = []
    for s in streams:
        times = s.times
        for i in range(1, len(times)):
            a, b = times[i - 1], times[i]
            if window is not None and (b < window[0] or a > window[1]):
                continue
            late.append(max(0.0, (b - a) / 1e6 - interval_ms))
    late.sort()
    return late


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Load:
    """C streams started over a ramp and stopped by one deadline, with the server sampled meanwhile.

    :param make_request: the request bytes for stream ``i``
    :param expect: events a stream must deliver to count as completed (0: a clean end)
    """

    def __init__(
        self,
        endpoint: Endpoint,
        make_request: Callable[[int], bytes],
        mode: str,
        c: int,
        ramp_s: float,
        expect: int,
        interval_ms: float,
        timeout_s: float,
        pid: int = 0,
        sample_s: float = 0.2,
    ) -> None:
        if not 1 <= c <= MAX_STREAMS or not 0 < timeout_s <= MAX_DEADLINE_S:
            raise SystemExit(f"loadgen: need 1 <= c <= {MAX_STREAMS} and 0 < timeout <= {MAX_DEADLINE_S:.0f} s")
        self.endpoint, self.make_request, self.mode = endpoint, make_request, mode
        self.c, self.ramp_s, self.expect, self.interval_ms = c, ramp_s, expect, interval_ms
        self.timeout_s, self.pid, self.sample_s = timeout_s, pid, sample_s
        self.streams: list[Stream] = []
        self.workers: list[gevent.Greenlet] = []
        self.gauge = _Gauge()
        self.t0_ns = 0
        self.deadline = 0.0
        self.timed_out = False
        self._launcher: gevent.Greenlet | None = None
        self._sampler: gevent.Greenlet | None = None
        self._sampling = False
        self._before = sample_tree(0)
        self._peak_rss_kb = 0
        self._cpu0 = self._cpu1 = 0.0

    def start(self) -> None:
        """Sample the server, then start launching streams (returns at once)."""
        self._before = sample_tree(self.pid)
        self._peak_rss_kb = self._before.rss_kb
        self._cpu0 = _cpu_s()
        self.t0_ns = time.monotonic_ns()
        self.deadline = time.monotonic() + self.timeout_s
        self._sampling = True
        self._sampler = gevent.spawn(self._sample)
        self._launcher = gevent.spawn(self._launch)

    def _launch(self) -> None:
        t0 = time.monotonic()
        for i in range(self.c):
            delay = t0 + self.ramp_s * i / self.c - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            if time.monotonic() >= self.deadline:
                break
            stream = Stream(i, self.make_request(i), self.mode)
            self.streams.append(stream)
            self.workers.append(gevent.spawn(stream.run, self.endpoint, self.gauge, self.expect))

    def _sample(self) -> None:
        while self._sampling and time.monotonic() < self.deadline + 5:
            self._peak_rss_kb = max(self._peak_rss_kb, sample_tree(self.pid).rss_kb)
            gevent.sleep(self.sample_s)

    def remaining_s(self) -> float:
        """Seconds left before the deadline."""
        return max(0.0, self.deadline - time.monotonic())

    def wait_first_events(self, timeout_s: float) -> bool:
        """Wait until every stream has been launched and has an event or has ended."""
        until = time.monotonic() + min(timeout_s, self.remaining_s())
        while time.monotonic() < until:
            if self._launcher is not None and self._launcher.dead and all(s.times or s.finished for s in self.streams):
                return True
            gevent.sleep(0.05)
        return False

    def join(self) -> None:
        """Wait for every stream to end, or the deadline; streams still open then are ``timeout``."""
        if self._launcher is not None:
            self._launcher.join(self.remaining_s())
            self._launcher.kill()
        gevent.joinall(self.workers, timeout=self.remaining_s())
        alive = [w for w in self.workers if not w.dead]
        if alive:
            self.timed_out = True
            gevent.killall(alive, block=True, timeout=5)
        self._sampling = False
        if self._sampler is not None:
            self._sampler.join(1)
            self._sampler.kill()
        self._cpu1 = _cpu_s()  # before the statistics: they are not load

    def result(self, label: str, url: str, window: tuple[int, int] | None = None) -> dict:
        """The run's statistics, in the Go loadgen's JSON shape (plus ``window`` when given)."""
        gevent.sleep(0.3)  # let the server settle (close sockets, free buffers) before the after-sample
        after = sample_tree(self.pid)
        streams = self.streams
        ttfes = sorted((s.times[0] - s.start_ns) / 1e6 for s in streams if s.times)
        late = _lateness(streams, self.interval_ms)
        events = sum(len(s.times) for s in streams)
        last = max((s.times[-1] for s in streams if s.times), default=0)
        wall_s = (last - self.t0_ns) / 1e9 if last else 0.0
        kinds = Counter(s.kind for s in streams if s.kind not in (None, "closed"))
        out = {
            "label": label,
            "url": url,
            "c": self.c,
            "launched": len(streams),
            "connected": self.gauge.connected,
            "completed": sum(s.completed for s in streams),
            "closed": sum(s.kind == "closed" for s in streams),
            "peak_open": self.gauge.peak,
            "errors": dict(sorted(kinds.items())),
            "events": events,
            "wall_s": wall_s,
            "events_per_s": events / wall_s if wall_s > 0 else 0.0,
            "ttfe_p50_ms": percentile(ttfes, 50),
            "ttfe_p99_ms": percentile(ttfes, 99),
            "ttfe_max_ms": percentile(ttfes, 100),
            "late_p50_ms": percentile(late, 50),
            "late_p99_ms": percentile(late, 99),
            "late_max_ms": percentile(late, 100),
            "gaps": len(late),
            "server_before": self._before.as_dict(),
            "server_after": after.as_dict(),
            "server_peak_rss_kb": max(self._peak_rss_kb, after.rss_kb),
            "server_cpu_s": after.cpu_s - self._before.cpu_s,
            "client_cpu_s": self._cpu1 - self._cpu0,
            "interval_ms": self.interval_ms,
            "expect": self.expect,
            "timed_out": self.timed_out,
        }
        if window is not None:
            wl = _lateness(streams, self.interval_ms, window)
            out["window"] = {
                "gaps": len(wl),
                "late_p50_ms": percentile(wl, 50),
                "late_p99_ms": percentile(wl, 99),
                "late_max_ms": percentile(wl, 100),
            }
        return out


# ---- scenarios ----

# Unique per run, so the fake upstream's close log of an earlier run cannot match.
_KEY_PREFIX = f"bench-{time.monotonic_ns()}-"


def _request_maker(endpoint: Endpoint, method: str, path: str, body: str, mode: str) -> Callable[[int], bytes]:
    """Request bytes per stream index: built once, or per stream when ``body`` holds ``{key}``."""
    accept = _ACCEPT[mode]
    if "{key}" not in body:
        fixed = build_request(endpoint, method, path, body.encode() if body else None, accept)
        return lambda _i: fixed
    return lambda i: build_request(endpoint, method, path, body.replace("{key}", f"{_KEY_PREFIX}{i}").encode(), accept)


def run_streams(args: argparse.Namespace) -> dict:
    """W1-W3: C streams; the statistics of all of them."""
    endpoint, path = Endpoint.from_url(args.url)
    load = Load(
        endpoint,
        _request_maker(endpoint, args.method, path, args.body, args.mode),
        args.mode,
        args.c,
        args.ramp,
        args.expect,
        args.interval_ms,
        args.timeout,
        args.pid,
    )
    load.start()
    load.join()
    return load.result(args.label, args.url)


def _close_latencies(streams: Sequence[Stream], upstream: Endpoint, wait_s: float) -> dict:
    """For streams the client closed: ms from the client's close to the upstream seeing its request closed."""
    wanted = {f"{_KEY_PREFIX}{s.index}": s for s in streams if s.closed_ns}
    seen: dict[str, int] = {}
    until = time.monotonic() + wait_s
    while wanted and time.monotonic() < until:
        status, body = fetch(upstream, "GET", f"/closes?prefix={quote(_KEY_PREFIX)}")
        if status == 200:
            seen = {k: v for k, v in json.loads(body)["closes"].items() if k in wanted}
            if len(seen) == len(wanted):
                break
        gevent.sleep(0.1)
    ms = sorted((ns - wanted[k].closed_ns) / 1e6 for k, ns in seen.items())
    return {
        "closed": len(wanted),
        "seen": len(seen),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": percentile(ms, 100),
        "min_ms": ms[0] if ms else -1.0,
    }


def run_disconnect(args: argparse.Namespace) -> dict:
    """W4: open C streams, close K at random moments, then the rest at once; time until the upstream sees each."""
    endpoint, path = Endpoint.from_url(args.url)
    upstream, _ = Endpoint.from_url(args.upstream)
    if "{key}" not in args.body:
        raise SystemExit("loadgen disconnect: --body must hold {key}, the message the upstream keys its closes by")
    load = Load(
        endpoint,
        _request_maker(endpoint, "POST", path, args.body, "sse"),
        "sse",
        args.c,
        args.ramp,
        0,
        args.interval_ms,
        args.timeout,
        args.pid,
    )
    load.start()
    all_first = load.wait_first_events(args.first_event_timeout)
    live = [s for s in load.streams if s.streaming]
    rng = random.Random(args.seed)
    chosen = rng.sample(live, min(args.k, len(live)))
    closers = [gevent.spawn_later(rng.uniform(0, args.spread), s.close) for s in chosen]
    gevent.joinall(closers, timeout=min(args.spread + 5, load.remaining_s()))
    picked = _close_latencies(chosen, upstream, min(args.close_wait, load.remaining_s()))
    picked_ids = {s.index for s in chosen}
    rest = [s for s in load.streams if s.index not in picked_ids and s.streaming]
    for s in rest:
        s.close()
    bulk = _close_latencies(rest, upstream, min(args.close_wait, load.remaining_s()))
    for s in load.streams:
        s.close()  # anything that had not had its first event yet
    load.join()
    out = load.result(args.label, args.url)
    # For W4 a stream is "done" when it streamed until the client closed it.
    out["completed"] = sum(1 for s in load.streams if s.kind == "closed" and s.times)
    out["disconnect"] = {"all_first_events": all_first, "live": len(live), "random": picked, "bulk": bulk}
    return out


def _replay_once(endpoint: Endpoint, body: bytes, expect: int, timeout_s: float) -> dict:
    """Start a generation, wait until it is done, then read all its events back; timings."""
    until = time.monotonic() + timeout_s
    status, raw = fetch(endpoint, "POST", "/api/generations", body)
    if status != 202:
        return {"error": f"start answered {status or 'nothing'}"}
    created = json.loads(raw)
    t_start = time.monotonic()
    state: dict = {}
    while time.monotonic() < until:
        status, raw = fetch(endpoint, "GET", f"/api/generations/{created['id']}")
        state = json.loads(raw) if status == 200 else {}
        if state.get("status") not in (None, "running"):
            break
        gevent.sleep(0.02)
    if state.get("status") != "done":
        return {"error": f"generation status {state.get('status')!r}"}
    generate_s = time.monotonic() - t_start
    stream = Stream(0, build_request(endpoint, "GET", created["events_url"], None, _ACCEPT["sse"]), "sse")
    worker = gevent.spawn(stream.run, endpoint, _Gauge(), expect)
    worker.join(max(0.0, until - time.monotonic()))
    worker.kill()
    if not stream.times:
        return {"error": stream.kind or "no events"}
    replay_s = (stream.times[-1] - stream.start_ns) / 1e9
    return {
        "events": len(stream.times),
        "expect": expect,
        "completed": stream.completed,
        "kind": stream.kind,
        "log_events": state.get("events"),
        "generate_s": generate_s,
        "replay_s": replay_s,
        "events_per_s": len(stream.times) / replay_s if replay_s > 0 else 0.0,
        "ttfe_ms": (stream.times[0] - stream.start_ns) / 1e6,
        "start_ns": stream.start_ns,
        "end_ns": stream.times[-1],
    }


def _echo_body(words: int) -> bytes:
    """A demo/echo chat of ``words`` words, capped at as many pieces."""
    text = " ".join(["w"] * words)
    chat = {"model": "demo/echo", "messages": [{"role": "user", "content": text}], "options": {"max_tokens": words}}
    return json.dumps(chat).encode()


def run_replay(args: argparse.Namespace) -> dict:
    """W5: replay a finished generation's log alone, then again while a background load streams."""
    endpoint, _ = Endpoint.from_url(args.url)
    bg_endpoint, bg_path = Endpoint.from_url(args.bg_url)
    body = _echo_body(args.words)
    alone = _replay_once(endpoint, body, args.expect, min(60.0, args.timeout / 3))
    load = Load(
        bg_endpoint,
        _request_maker(bg_endpoint, "POST", bg_path, args.bg_body, "sse"),
        "sse",
        args.c,
        args.ramp,
        args.bg_expect,
        args.interval_ms,
        args.timeout,
        args.pid,
    )
    load.start()
    all_first = load.wait_first_events(args.first_event_timeout)
    loaded = _replay_once(endpoint, body, args.expect, min(60.0, load.remaining_s()))
    load.join()
    window = (loaded["start_ns"], loaded["end_ns"]) if "start_ns" in loaded else None
    out = load.result(args.label, args.bg_url, window)
    out["replay"] = {"alone": alone, "under_load": loaded, "bg_all_first_events": all_first}
    return out


class _Timed:
    """One SSE response read to its end, with the arrival time (ns) of each event by its ``id``."""

    __slots__ = ("arrived", "connected_ns", "first_data", "kind", "on_first")

    def __init__(self, on_first: Callable[[dict], None] | None = None) -> None:
        self.arrived: dict[int, int] = {}
        self.connected_ns = 0
        self.first_data: dict | None = None
        self.kind: str | None = None
        self.on_first = on_first

    def run(self, endpoint: Endpoint, request: bytes) -> None:
        """Send ``request``, stamp every event that has an id; never raises."""
        try:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=CONNECT_TIMEOUT_S)
            sock.settimeout(None)
            try:
                sock.sendall(request)
                head, data = _read_head(sock)
                self.connected_ns = arrived = time.monotonic_ns()
                status, decoder = _decoder_for(head)
                if status != 200:
                    self.kind = f"http_{status}"
                    return
                pending = b""
                while True:
                    if data:
                        blocks, pending = _records(pending + decoder.feed(data), b"\n\n", "oversized_event")
                        for block in blocks:
                            self._event(block, arrived)
                        if decoder.done:
                            return
                    data = sock.recv(RECV_BYTES)
                    arrived = time.monotonic_ns()
                    if not data:
                        return
            finally:
                sock.close()
        except GreenletExit:
            self.kind = "timeout"
        except ProtocolError as exc:
            self.kind = exc.kind
        except OSError as exc:
            self.kind = _classify(exc)

    def _event(self, block: bytes, arrived: int) -> None:
        seq = None
        data = None
        for line in block.split(b"\n"):
            if line.startswith(b"id:"):
                seq = int(line[3:].strip())
            elif line.startswith(b"data:"):
                data = line[5:].strip()
        if seq is None:
            return
        self.arrived.setdefault(seq, arrived)
        if self.first_data is None and data:
            self.first_data = json.loads(data)
            if self.on_first is not None:
                self.on_first(self.first_data)


def run_crossworker(args: argparse.Namespace) -> dict:
    """Cross-worker delivery: C background streams on the owner, K more followed by id on another worker.

    Each of the K probes is a ``POST /api/chat`` on the owner (its client gets
    each event straight from the runner) and, as soon as its ``start`` names the
    generation, a listener on the other worker (``GET /api/generations/<id>/events``,
    which reads from the broker). For every event that the owner's client got
    after the listener was connected, the delay is the listener's arrival time
    minus the owner client's: how late a listener elsewhere sees it.
    """
    endpoint, path = Endpoint.from_url(args.url)
    other, _ = Endpoint.from_url(args.follow_url)
    load = Load(
        endpoint,
        _request_maker(endpoint, "GET", path, "", "sse"),
        "sse",
        args.c,
        args.ramp,
        args.expect,
        args.interval_ms,
        args.timeout,
        args.pid,
    )
    load.start()
    body = _echo_body(args.probe_n)
    owners: list[_Timed] = []
    followers: list[_Timed] = []
    workers: list[gevent.Greenlet] = []

    def probe() -> None:
        follower = _Timed()

        def follow(start: dict) -> None:
            request = build_request(other, "GET", f"/api/generations/{start['id']}/events", None, _ACCEPT["sse"])
            workers.append(gevent.spawn(follower.run, other, request))

        owner = _Timed(follow)
        owners.append(owner)
        followers.append(follower)
        owner.run(endpoint, build_request(endpoint, "POST", "/api/chat", body, _ACCEPT["sse"]))

    gevent.sleep(min(args.ramp, load.remaining_s()))  # the background load is up
    for _ in range(args.k):
        workers.append(gevent.spawn(probe))
        gevent.sleep(args.probe_ramp / max(1, args.k))
    gevent.joinall(workers, timeout=load.remaining_s())
    gevent.joinall(workers, timeout=load.remaining_s())  # followers spawned by the first join's probes
    gevent.killall([w for w in workers if not w.dead], block=True, timeout=5)
    load.join()
    delays: list[float] = []
    missing = 0
    for owner, follower in zip(owners, followers, strict=True):
        for seq, at in owner.arrived.items():
            if seq == 0 or not follower.connected_ns or at < follower.connected_ns:
                continue  # before the listener was there: a replay, not a delivery
            seen = follower.arrived.get(seq)
            if seen is None:
                missing += 1
            else:
                delays.append(max(0, seen - at) / 1e6)
    delays.sort()
    out = load.result(args.label, args.url)
    out["crossworker"] = {
        "probes": args.k,
        "probe_events": args.probe_n + 2,
        "delivered": len(delays),
        "missing": missing,
        "probe_errors": dict(Counter(t.kind for t in owners + followers if t.kind)),
        "complete_followers": sum(
            1
            for o, f in zip(owners, followers, strict=True)
            if o.arrived and f.arrived and max(f.arrived) == max(o.arrived)
        ),
        "p50_ms": percentile(delays, 50),
        "p99_ms": percentile(delays, 99),
        "max_ms": percentile(delays, 100),
    }
    return out


# ---- command line ----


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--label", default="")
    common.add_argument("--pid", type=int, default=0, help="server root pid: its process tree is sampled")
    common.add_argument("-c", type=int, default=10, help="concurrent streams")
    common.add_argument("--ramp", type=float, default=1.0, help="seconds over which the streams start")
    common.add_argument("--interval-ms", type=float, default=0.0, help="the server's interval (lateness = gap - this)")
    common.add_argument("--timeout", type=float, default=60.0, help="hard deadline of the whole run, seconds")

    streams = sub.add_parser("streams", parents=[common], help="C streams (W1-W3)")
    streams.add_argument("--url", required=True)
    streams.add_argument("--method", default="GET")
    streams.add_argument("--body", default="", help="JSON body; {key} is replaced per stream")
    streams.add_argument("--mode", choices=["sse", "ndjson"], default="sse")
    streams.add_argument("--expect", type=int, default=0, help="events for a complete stream (0: a clean end)")

    disconnect = sub.add_parser("disconnect", parents=[common], help="close streams, time the upstream's view (W4)")
    disconnect.add_argument("--url", required=True, help="the streaming endpoint (POST)")
    disconnect.add_argument("--body", required=True, help="JSON body with {key} as the last user message")
    disconnect.add_argument("--upstream", required=True, help="the fake upstream's base URL (GET /closes)")
    disconnect.add_argument("-k", type=int, default=200, help="streams closed at random moments")
    disconnect.add_argument("--spread", type=float, default=5.0, help="seconds over which the K closes fall")
    disconnect.add_argument("--seed", type=int, default=1)
    disconnect.add_argument("--first-event-timeout", type=float, default=20.0)
    disconnect.add_argument("--close-wait", type=float, default=10.0, help="how long to wait for the upstream's closes")

    cross = sub.add_parser("crossworker", parents=[common], help="delivery to a listener on another worker (X1)")
    cross.add_argument("--url", required=True, help="the owner's background stream URL (GET)")
    cross.add_argument("--expect", type=int, default=0)
    cross.add_argument("--follow-url", required=True, help="the other worker's base URL")
    cross.add_argument("-k", type=int, default=50, help="generations followed from the other worker")
    cross.add_argument("--probe-n", type=int, default=20, help="tokens per followed generation")
    cross.add_argument("--probe-ramp", type=float, default=5.0, help="seconds over which the K probes start")

    replay = sub.add_parser("replay", parents=[common], help="replay a generation's log (W5)")
    replay.add_argument("--url", required=True, help="Sluice's base URL")
    replay.add_argument("--words", type=int, default=10_000, help="prompt words = max_tokens")
    replay.add_argument("--expect", type=int, default=10_002, help="events of the replay (start + deltas + done)")
    replay.add_argument("--bg-url", required=True, help="background streams: POST endpoint")
    replay.add_argument("--bg-body", required=True)
    replay.add_argument("--bg-expect", type=int, default=0)
    replay.add_argument("--first-event-timeout", type=float, default=20.0)
    return ap


def main(argv: list[str] | None = None) -> None:
    """Run one subcommand and print its JSON result on one line."""
    # Before any socket exists: every socket and sleep below is then cooperative.
    monkey.patch_all()
    args = _parser().parse_args(argv)
    run = {"streams": run_streams, "disconnect": run_disconnect, "replay": run_replay, "crossworker": run_crossworker}[
        args.command
    ]
    result = run(args)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    r = result
    print(
        f"[{r['label']}] c={r['c']} completed={r['completed']} peak_open={r['peak_open']} errors={r['errors']} "
        f"events={r['events']} ev/s={r['events_per_s']:.0f} "
        f"ttfe p50/p99={r['ttfe_p50_ms']:.1f}/{r['ttfe_p99_ms']:.1f} ms "
        f"late p50/p99={r['late_p50_ms']:.2f}/{r['late_p99_ms']:.2f} ms srv cpu={r['server_cpu_s']:.2f}s "
        f"client cpu={r['client_cpu_s']:.2f}s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
