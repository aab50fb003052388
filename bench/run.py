"""``make bench``: Sluice against a naive Flask baseline under five workloads.

Starts each server in its own session on a free port (pinned to one CPU, the
load generator and the fake upstream to another), runs the workloads with
``loadgen.py``, stops it, and prints one markdown table; writes the table, the
raw rows (JSON lines) and a lateness chart under ``bench-results/``.

  W1 capacity    C streams (--w1-c) x 20 events @ 500 ms
  W2 throughput  200 streams x 500 events @ 0 ms, started within 50 ms
  W3 proxy       100 streams x 50 events @ 20 ms through a fake Ollama, and the same load straight at it
  W4 disconnect  1,000 streams through the fake Ollama; 200 closed at random: until the upstream sees it (Sluice)
  W5 replay      a finished 10,002-event generation read back, alone and under 1,000 streams (Sluice)
  X1 cross-worker  W1's 2,000 streams on one worker, 50 generations followed from a second worker
                 (sluice-redis only): how late a listener elsewhere sees each event

``sluice-redis`` is Sluice with ``SLUICE_REDIS_URL`` (a fresh redis-server on a
unix socket, pinned beside the load generator); it runs W1-W3 and X1.

Every request goes to 127.0.0.1; every run has a hard deadline. See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import report
from shared_redis import redis_argv

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).parent / "gunicorn")
SERVERS = ("sluice", "sluice-redis", "baseline")
WORKLOADS = ("w1", "w2", "w3", "w4", "w5", "x1")
# Inherited settings that would change what is measured (keys, Redis, limits, workers).
_SCRUBBED_PREFIXES = ("SLUICE_", "OLLAMA_", "OPENAI_", "GUNICORN_", "PROMETHEUS_", "WEB_CONCURRENCY", "BENCH_")


def log(*parts: object) -> None:
    """Progress on stderr; stdout is kept for the table."""
    print(*parts, file=sys.stderr, flush=True)


def free_port() -> int:
    """A port nobody listens on now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def words(n: int) -> str:
    """``n`` words "w", URL-encoded: Sluice's demo/echo streams one piece per word."""
    return urllib.parse.quote(" ".join(["w"] * max(1, n)))


@dataclass(frozen=True)
class Profile:
    """The sizes of every workload; ``--quick`` shrinks them for a smoke run."""

    w1_c: tuple[int, ...] = (500, 1000, 2000)
    w1_n: int = 20
    w2_c: int = 200
    w2_n: int = 500
    w3_c: int = 100
    w4_c: int = 1000
    w4_k: int = 200
    w4_spread_s: float = 5.0
    w5_words: int = 10_000
    w5_bg_c: int = 1000
    w5_bg_n: int = 20
    x1_c: int = 2000
    x1_k: int = 50


QUICK = Profile(
    w1_c=(100, 200),
    w1_n=6,
    w2_c=50,
    w2_n=200,
    w3_c=50,
    w4_c=200,
    w4_k=40,
    w4_spread_s=2.0,
    w5_words=2000,
    w5_bg_c=200,
    w5_bg_n=6,
    x1_c=200,
    x1_k=10,
)


@dataclass(frozen=True)
class Pins:
    """``taskset`` prefixes: the server gets one CPU, the client side (loadgen, fake upstream) another."""

    server: tuple[str, ...] = ()
    client: tuple[str, ...] = ()

    @classmethod
    def choose(cls, enabled: bool) -> Pins:
        cpus = sorted(os.sched_getaffinity(0))
        if not enabled or len(cpus) < 2 or not shutil.which("taskset"):
            return cls()
        return cls(("taskset", "-c", str(cpus[0])), ("taskset", "-c", str(cpus[1])))


class Process:
    """A child in its own session (so its whole group can be signalled), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.name, self.argv, self.env, self.cwd, self.log_path = name, argv, env, cwd, log_path
        self.proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def alive(self) -> bool:
        """Started and not exited."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start it; returns at once (see :func:`wait_ready`)."""
        self._log = open(self.log_path, "ab")
        log(f"  start {self.name}: {' '.join(self.argv)}")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after 10 s; only the group this object started."""
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def wait_ready(process: Process, url: str, method: str = "GET", body: str = "", limit_s: float = 30.0) -> bool:
    """Poll ``url`` until it answers 200 with its whole body, the process dies, or ``limit_s`` passes."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not process.alive():
            log(f"  {process.name} exited early; see {process.log_path}")
            return False
        request = urllib.request.Request(url, data=body.encode() or None, method=method)
        if body:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=3) as response:
                response.read()
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)  # one poll interval, bounded by the deadline above
    log(f"  {process.name} not ready after {limit_s:.0f} s; see {process.log_path}")
    return False


@dataclass(frozen=True)
class Req:
    """One workload's request to a server and the events a complete stream carries."""

    path: str
    expect: int
    method: str = "GET"
    body: str = ""


@dataclass(frozen=True)
class Setting:
    """What a server is started with: the demo model's delay and the Ollama it talks to."""

    delay_ms: int
    upstream: str


@dataclass
class App:
    """How to start one server under test and what to ask it."""

    name: str
    argv: Callable[[int], list[str]]
    env: Callable[[Setting], dict[str, str]]
    stream: Callable[[int, int], Req]
    proxy: Callable[[int], Req]
    chat_path: str | None = None  # POST endpoint relaying Ollama (W4, W5); None: not supported
    # Where it starts: gunicorn reads ./gunicorn.conf.py by default, which is Sluice's alone.
    cwd: Path = ROOT


def _sluice(name: str = "sluice", redis_url: Callable[[], str] | None = None) -> App:
    chat_body = json.dumps({"model": "ollama/fake", "messages": [{"role": "user", "content": "hi"}]})
    return App(
        name=name,
        argv=lambda _port: [GUNICORN, "-c", "gunicorn.conf.py", "wsgi:app"],
        env=lambda s: (
            {
                "SLUICE_DEMO_DELAY_MS": str(s.delay_ms),
                "OLLAMA_BASE_URL": s.upstream,
                "SLUICE_RATE_LIMIT": "",
                "SLUICE_MAX_STREAMS": "100000",
                "SLUICE_MAX_GENERATIONS": "100000",
                "SLUICE_LOCAL_MODEL": "off",  # the workloads use demo/echo and Ollama's fake
            }
            | ({"SLUICE_REDIS_URL": redis_url()} if redis_url else {})
        ),
        # demo/echo sends one piece per word; max_tokens stops it after n: n data events + `event: done`.
        stream=lambda n, _iv: Req(f"/stream?prompt={words(n)}&max_tokens={n}&model=demo/echo", n + 1),
        # start, a delta per line of the fake Ollama, done. The body names no length, so
        # n is the fast fake's default (50 lines), as W3 asks for.
        proxy=lambda n: Req("/api/chat", n + 2, "POST", chat_body),
        chat_path="/api/chat",
    )


def _baseline() -> App:
    return App(
        name="baseline",
        argv=lambda port: [
            GUNICORN,
            "-k",
            "gevent",
            "-w",
            "1",
            "--worker-connections",
            "10000",
            "--no-control-socket",
            "-b",
            f"127.0.0.1:{port}",
            "--chdir",
            str(BENCH),
            "baseline:app",
        ],
        env=lambda s: {"BENCH_UPSTREAM": s.upstream},
        cwd=BENCH,
        stream=lambda n, iv: Req(f"/stream?n={n}&interval_ms={iv}", n + 1),
        proxy=lambda n: Req(f"/proxy?n={n}&interval_ms=20", n + 1),
    )


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}


@dataclass
class Bench:
    """One run: where things go, the pins, the upstreams, and the rows so far."""

    args: argparse.Namespace
    profile: Profile
    pins: Pins
    out_dir: Path
    log_dir: Path
    jsonl: IO[str]
    rows: list[dict] = field(default_factory=list)
    upstreams: dict[str, tuple[Process, str]] = field(default_factory=dict)
    redis_process: Process | None = None

    def record(self, row: dict) -> dict:
        self.rows.append(row)
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        return row

    def loadgen(self, command: str, options: dict[str, object], budget_s: float) -> dict:
        """Run ``loadgen.py command`` pinned to the client CPU; its JSON, or ``{"error"}``."""
        argv = [*self.pins.client, PYTHON, str(BENCH / "loadgen.py"), command]
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}" if len(key) > 1 else f"-{key}", str(value)]
        argv += ["--timeout", f"{budget_s:.1f}"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=budget_s + 60, cwd=BENCH)
        except subprocess.TimeoutExpired:
            return {"error": "loadgen overran its deadline"}
        if done.stderr.strip():
            log("  " + done.stderr.strip()[-800:])
        try:
            return json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return {"error": f"loadgen failed: {done.stderr.strip()[-200:]}"}

    def upstream(self, name: str, n: int, interval_ms: int) -> str:
        """Start (once) a fake Ollama with these defaults; its base URL."""
        if name not in self.upstreams:
            port = free_port()
            argv = [
                *self.pins.client,
                PYTHON,
                str(BENCH / "upstream.py"),
                "--port",
                str(port),
                "--n",
                str(n),
                "--interval-ms",
                str(interval_ms),
            ]
            process = Process(f"upstream-{name}", argv, _clean_env(), BENCH, self.log_dir / f"upstream-{name}.log")
            process.start()
            url = f"http://127.0.0.1:{port}"
            if not wait_ready(process, url + "/", limit_s=15):
                process.stop()
                raise SystemExit(f"the fake upstream did not start; see {process.log_path}")
            self.upstreams[name] = (process, url)
        return self.upstreams[name][1]

    def stop_upstreams(self) -> None:
        for process, _url in self.upstreams.values():
            process.stop()
        if self.redis_process is not None:
            self.redis_process.stop()

    def redis_url(self) -> str:
        """Start (once) a fresh redis-server on a unix socket, pinned with the client; its URL.

        Its CPU is not the server's (in a deployment it is another machine's), so it
        runs beside the load generator, as the fake upstream does.
        """
        sock = self.log_dir / "redis.sock"
        if self.redis_process is None:
            server = shutil.which("redis-server")
            if server is None:
                raise SystemExit("the Redis rows need redis-server (make system-deps, or apt-get install redis-server)")
            argv = [*self.pins.client, *redis_argv(server, sock, self.log_dir)]
            self.redis_process = Process("redis", argv, _clean_env(), BENCH, self.log_dir / "redis.log")
            self.redis_process.start()
            deadline = time.monotonic() + 10
            while not sock.exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"redis-server did not start; see {self.log_dir / 'redis.log'}")
                time.sleep(0.05)
        return f"unix://{sock}"


class Server:
    """One server under test, restarted whenever its setting changes."""

    def __init__(self, bench: Bench, app: App) -> None:
        self.bench, self.app = bench, app
        self.process: Process | None = None
        self.env: dict[str, str] = {}
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ensure(self, setting: Setting) -> bool:
        """Running with ``setting``: reuse the process, else (re)start it and wait until it streams."""
        # Compare what the server is given, not the setting: the baseline reads its
        # interval from each request, so it need not restart when the delay changes.
        wanted = self.app.env(setting)
        if self.process is not None and self.process.alive() and wanted == self.env:
            return True
        self.stop()
        self.port, self.env = free_port(), wanted
        env = _clean_env() | wanted | {"SLUICE_BIND": f"127.0.0.1:{self.port}"}
        argv = [*self.bench.pins.server, *self.app.argv(self.port)]
        self.process = Process(self.app.name, argv, env, self.app.cwd, self.bench.log_dir / f"{self.app.name}.log")
        self.process.start()
        probe = self.app.stream(1, 0)
        return wait_ready(self.process, self.base + probe.path, probe.method, probe.body)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        self.process = None

    def streams(
        self,
        work: str,
        setting: Setting,
        c: int,
        n: int,
        interval_ms: int,
        req: Req,
        ramp_s: float | None = None,
        slack_s: float | None = None,
    ) -> dict:
        """One ``loadgen streams`` row against this server."""
        if not self.ensure(setting):
            return self.bench.record({"server": self.app.name, "work": work, "c": c, "error": "server did not start"})
        ramp_s = min(5.0, max(0.5, c / 1000)) if ramp_s is None else ramp_s
        nominal_s = n * interval_ms / 1000
        slack_s = max(10.0, nominal_s) if slack_s is None else slack_s
        row = self.bench.loadgen(
            "streams",
            {
                "url": self.base + req.path,
                "method": req.method,
                "body": req.body,
                "mode": "sse",
                "c": c,
                "ramp": ramp_s,
                "expect": req.expect,
                "interval_ms": interval_ms,
                "pid": self.process.pid if self.process else 0,
                "label": f"{self.app.name} {work} c={c}",
            },
            ramp_s + nominal_s + slack_s,
        )
        return self.bench.record(row | {"server": self.app.name, "work": work, "c": c, "n": n})


# ---- workloads ----


def w1(server: Server, bench: Bench) -> None:
    """Capacity: many slow streams; stops at the first C where fewer than half complete."""
    p = bench.profile
    for c in p.w1_c:
        row = server.streams(
            "W1", Setting(500, bench.upstream("fast", 50, 20)), c, p.w1_n, 500, server.app.stream(p.w1_n, 500)
        )
        if row.get("completed", 0) < 0.5 * c:  # the report marks such a row from the same rule
            log(f"  {server.app.name} broke at W1 C={c}: larger C skipped, server restarted")
            server.stop()  # a collapsed server must not taint the next workloads
            break


def w2(server: Server, bench: Bench) -> None:
    """Throughput: streams at interval 0, all started within 50 ms."""
    p = bench.profile
    server.streams(
        "W2",
        Setting(0, bench.upstream("fast", 50, 20)),
        p.w2_c,
        p.w2_n,
        0,
        server.app.stream(p.w2_n, 0),
        ramp_s=0.05,
        slack_s=60,
    )


def w3(server: Server, bench: Bench) -> None:
    """Proxy: the fake Ollama's 50 lines at 20 ms relayed as SSE."""
    c = bench.profile.w3_c
    server.streams(
        "W3", Setting(0, bench.upstream("fast", 50, 20)), c, 50, 20, server.app.proxy(50), ramp_s=0.5, slack_s=25
    )


def w3_direct(bench: Bench) -> None:
    """The W3 load straight at the fake Ollama (NDJSON lines): what the proxy rows add to."""
    c = bench.profile.w3_c
    url = bench.upstream("fast", 50, 20)
    process = bench.upstreams["fast"][0]
    row = bench.loadgen(
        "streams",
        {
            "url": url + "/api/chat?n=50&interval_ms=20",
            "method": "POST",
            "mode": "ndjson",
            "body": json.dumps({"model": "fake", "messages": [{"role": "user", "content": "hi"}]}),
            "c": c,
            "ramp": 0.5,
            "expect": 51,
            "interval_ms": 20,
            "pid": process.pid,
            "label": f"upstream-direct W3 c={c}",
        },
        0.5 + 1 + 25,
    )
    bench.record(row | {"server": "upstream-direct", "work": "W3", "c": c, "n": 50})


def _slow_ramp_s(c: int) -> float:
    """The ramp for streams through the fake Ollama: 200 starts a second, at most 5 s.

    Each start costs Sluice a few ms of CPU (the request, a generation, a new
    upstream connection): 1,000 starts within 1 s would queue for seconds.
    """
    return min(5.0, max(0.5, c / 200))


def _slow_chat_body(key: str, max_tokens: int | None = None) -> str:
    body: dict = {"model": "ollama/fake", "messages": [{"role": "user", "content": key}]}
    if max_tokens is not None:
        body["options"] = {"max_tokens": max_tokens}
    return json.dumps(body)


def w4(server: Server, bench: Bench) -> None:
    """Disconnect: how soon a client's close reaches the upstream, through Sluice."""
    p = bench.profile
    # A long, slow answer: nothing ends by itself while the closes are measured.
    upstream = bench.upstream("slow", 100_000, 500)
    setting = Setting(0, upstream)
    if not server.ensure(setting):
        bench.record({"server": server.app.name, "work": "W4", "c": p.w4_c, "error": "server did not start"})
        return
    ramp_s = _slow_ramp_s(p.w4_c)
    row = bench.loadgen(
        "disconnect",
        {
            "url": server.base + str(server.app.chat_path),
            "body": _slow_chat_body("{key}"),
            "upstream": upstream,
            "c": p.w4_c,
            "ramp": ramp_s,
            "k": p.w4_k,
            "spread": p.w4_spread_s,
            "interval_ms": 500,
            "pid": server.process.pid if server.process else 0,
            "label": f"{server.app.name} W4 c={p.w4_c}",
        },
        ramp_s + 20 + p.w4_spread_s + 25,
    )
    bench.record(row | {"server": server.app.name, "work": "W4", "c": p.w4_c, "n": 0})


def w5(server: Server, bench: Bench) -> None:
    """Replay: a finished generation's log read back, alone and under a background load at 500 ms."""
    p = bench.profile
    # The background streams go through the slow fake Ollama (500 ms), so this
    # server can keep the demo delay at 0 for the generation that is replayed.
    setting = Setting(0, bench.upstream("slow", 100_000, 500))
    if not server.ensure(setting):
        bench.record({"server": server.app.name, "work": "W5", "c": p.w5_bg_c, "error": "server did not start"})
        return
    ramp_s = _slow_ramp_s(p.w5_bg_c)
    row = bench.loadgen(
        "replay",
        {
            "url": server.base,
            "words": p.w5_words,
            "expect": p.w5_words + 2,
            "bg_url": server.base + str(server.app.chat_path),
            "bg_body": _slow_chat_body("hi", p.w5_bg_n),
            "bg_expect": p.w5_bg_n + 2,
            "c": p.w5_bg_c,
            "ramp": ramp_s,
            "interval_ms": 500,
            "pid": server.process.pid if server.process else 0,
            "label": f"{server.app.name} W5 bg c={p.w5_bg_c}",
        },
        ramp_s + p.w5_bg_n * 0.5 + 60,
    )
    bench.record(row | {"server": server.app.name, "work": "W5", "c": p.w5_bg_c, "n": p.w5_bg_n})


def x1(server: Server, bench: Bench) -> None:
    """Cross-worker delivery: W1's load on one worker, K generations followed from another worker."""
    p = bench.profile
    setting = Setting(500, bench.upstream("fast", 50, 20))
    listener = Server(bench, _sluice("sluice-redis-listener", bench.redis_url))
    try:
        if not server.ensure(setting) or not listener.ensure(setting):
            bench.record({"server": server.app.name, "work": "X1", "c": p.x1_c, "error": "server did not start"})
            return
        ramp_s = min(5.0, max(0.5, p.x1_c / 1000))
        req = server.app.stream(p.w1_n, 500)
        row = bench.loadgen(
            "crossworker",
            {
                "url": server.base + req.path,
                "expect": req.expect,
                "follow_url": listener.base,
                "c": p.x1_c,
                "ramp": ramp_s,
                "k": p.x1_k,
                "probe_n": p.w1_n,
                "probe_ramp": 5.0,
                "interval_ms": 500,
                "pid": server.process.pid if server.process else 0,
                "label": f"{server.app.name} X1 c={p.x1_c}",
            },
            ramp_s + 5.0 + p.w1_n * 0.5 + 20,
        )
        bench.record(row | {"server": server.app.name, "work": "X1", "c": p.x1_c, "n": p.w1_n})
    finally:
        listener.stop()


_RUNNERS: dict[str, Callable[[Server, Bench], None]] = {
    "w1": w1,
    "w2": w2,
    "w3": w3,
    "w4": w4,
    "w5": w5,
    "x1": x1,
}
# What each server runs beyond the common rows: the Redis broker's rows are W1-W3 and X1.
_ONLY_FOR = {"w4": {"sluice"}, "w5": {"sluice"}, "x1": {"sluice-redis"}}


# ---- the run ----


def _csv(value: str, allowed: Iterable[str]) -> list[str]:
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    unknown = sorted(set(items) - set(allowed))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown: {', '.join(unknown)} (known: {', '.join(allowed)})")
    return items


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--only",
        type=lambda v: _csv(v, SERVERS),
        default=list(SERVERS),
        help="servers, comma-separated (default: sluice,baseline)",
    )
    ap.add_argument(
        "--workloads",
        type=lambda v: _csv(v, WORKLOADS),
        default=list(WORKLOADS),
        help="comma-separated, from w1,w2,w3,w4,w5 (default: all)",
    )
    ap.add_argument(
        "--w1-c",
        type=lambda v: tuple(int(x) for x in v.split(",") if x.strip()),
        help="W1's concurrent streams, comma-separated (default 500,1000,2000; --quick: 100,200)",
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run of a minute or two")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and client to separate CPUs")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench-results")
    ap.add_argument("--table", type=Path, metavar="RUN.jsonl", help="only re-render the table and chart of a saved run")
    return ap


def _raise_nofile() -> None:
    """Soft open-file limit to the hard one; the servers and the load generator inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _finish(rows: list[dict], table_path: Path | None, chart_path: Path, header: str) -> None:
    """Print the table, save it (unless re-rendering) and draw the chart."""
    table = report.format_table(rows)
    print(header + "\n\n" + table)
    if table_path is not None:
        table_path.write_text(f"{header}\n\n{table}\n")
        log(f"table: {table_path}")
    chart = report.plot_lateness(rows, chart_path)
    log(f"chart: {chart}" if chart else "chart: none (no W1 rows, or matplotlib is not installed)")


def main(argv: list[str] | None = None) -> None:
    """Run the selected workloads against the selected servers and report."""
    args = _parser().parse_args(argv)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.table:
        rows = [json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]
        _finish(rows, None, out_dir / "lateness.png", f"Re-rendered from {args.table}")
        return
    profile = QUICK if args.quick else Profile()
    if args.w1_c:
        profile = dataclasses.replace(profile, w1_c=args.w1_c)
    _raise_nofile()
    # SIGTERM unwinds like Ctrl-C, so the finally below stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pins = Pins.choose(not args.no_pin)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = out_dir / f"logs-{stamp}"
    log_dir.mkdir()
    header = (
        f"Sluice bench {stamp}{' (--quick)' if args.quick else ''}: Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, "
        + (
            f"server on CPU {pins.server[-1]}, loadgen + fake upstream on CPU {pins.client[-1]}"
            if pins.server
            else "not pinned"
        )
        + f", open-file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"
    )
    log(header)
    with open(out_dir / f"run-{stamp}.jsonl", "w") as jsonl:
        bench = Bench(args, profile, pins, out_dir, log_dir, jsonl)
        try:
            if "w3" in args.workloads:
                log("== upstream-direct")
                w3_direct(bench)
            apps = (_sluice(), _sluice("sluice-redis", bench.redis_url), _baseline())
            for app in (a for a in apps if a.name in args.only):
                log(f"== {app.name}")
                started = time.monotonic()
                server = Server(bench, app)
                try:
                    for work in args.workloads:
                        if work in _ONLY_FOR and app.name not in _ONLY_FOR[work]:
                            log(f"  {work}: {', '.join(sorted(_ONLY_FOR[work]))} only, skipped for {app.name}")
                            continue
                        _RUNNERS[work](server, bench)
                finally:
                    server.stop()
                log(f"  {app.name} took {time.monotonic() - started:.0f} s")
        finally:
            bench.stop_upstreams()
    _finish(bench.rows, out_dir / f"table-{stamp}.md", out_dir / "lateness.png", header)
    log(f"rows: {out_dir / f'run-{stamp}.jsonl'}; server logs: {log_dir}")


if __name__ == "__main__":
    main()
