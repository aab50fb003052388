"""The team's Go yardstick on Sluice twice in one run: in-memory broker, then Redis.

``make bench-shared-redis BENCH_HOME=/some/dir`` runs ``../shared/bench``'s
driver (imported, not copied: its workloads, loadgen and table) with two
servers registered, ``sluice`` (the deployed command, no Redis) and
``sluice-redis`` (the same command with ``SLUICE_REDIS_URL`` pointing at a
``redis-server`` this script starts on a unix socket, fresh and empty, with
no persistence), so their rows come from the same run and compare as ratios.

Redis is pinned with the load generator (``--client-cpus``): the server's
core is Sluice's alone, as with the in-memory row, and Redis's own CPU is not
in ``srv CPU s`` (it would be another machine's in a deployment). Other
arguments go to the harness (``--workloads w1:2000/5000,w2,w3``, ``--w1-c``,
``--no-pin``); ``--redis-cpus`` overrides Redis's pinning (``''``: unpinned).

``--workers 2`` adds ``sluice-redis-2w``: the same with ``WEB_CONCURRENCY=2``
(two gevent workers sharing generations through the one Redis). Pinned, both
its workers share the server's one core, so that row shows what splitting
costs, not what a second core gives; with ``--no-pin --server-cpus 0,1`` every
process floats over both cores, load generator and Redis included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("SHARED_BENCH", ROOT.parent / "shared" / "bench")).resolve()
VENV = Path(os.environ.get("VENV", ROOT / ".venv")).resolve()


def _option(argv: list[str], name: str, default: str) -> tuple[str, list[str]]:
    """Take ``--name value`` (or ``--name=value``) out of ``argv``."""
    rest, value, i = [], default, 0
    while i < len(argv):
        if argv[i] == name and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
            continue
        if argv[i].startswith(name + "="):
            value = argv[i].split("=", 1)[1]
        else:
            rest.append(argv[i])
        i += 1
    return value, rest


def _build_tools(work: Path) -> None:
    loadgen = work / "bin" / "loadgen"
    sources = list((SHARED / "go").rglob("*.go"))
    if loadgen.exists() and all(s.stat().st_mtime <= loadgen.stat().st_mtime for s in sources):
        return
    (work / "bin").mkdir(parents=True, exist_ok=True)
    subprocess.run(["go", "build", "-o", str(work / "bin") + "/", "./cmd/..."], cwd=SHARED / "go", check=True)


def redis_argv(server: str, sock: Path, directory: Path) -> list[str]:
    """A redis-server on a unix socket only, saving nothing, with room for many clients."""
    return [
        server,
        "--port",
        "0",
        "--unixsocket",
        str(sock),
        "--unixsocketperm",
        "700",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--maxclients",
        "10000",
    ]


def _start_redis(directory: Path, cpus: str) -> subprocess.Popen:
    sock = directory / "redis.sock"
    pin = ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []
    process = subprocess.Popen(
        [*pin, *redis_argv(shutil.which("redis-server") or "/usr/bin/redis-server", sock, directory)],
        stdout=open(directory / "redis.log", "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"redis-server did not start; see {directory / 'redis.log'}")
        time.sleep(0.05)
    return process


def main(argv: list[str]) -> None:
    work = Path(os.environ.get("BENCH_HOME") or "").resolve()
    if not os.environ.get("BENCH_HOME"):
        raise SystemExit("set BENCH_HOME=/some/dir (the harness's builds and results)")
    redis_cpus, argv = _option(argv, "--redis-cpus", "1")
    port, argv = _option(argv, "--port", "8000")
    workers, argv = _option(argv, "--workers", "1")
    _build_tools(work)
    sys.path.insert(0, str(SHARED))
    import run_peers

    directory = Path(tempfile.mkdtemp(prefix="sluice-redis-", dir=work))
    redis_process = _start_redis(directory, "" if "--no-pin" in argv else redis_cpus)
    command = "exec {pin} " + str(VENV / "bin" / "gunicorn") + " -c gunicorn.conf.py -b 127.0.0.1:{port} wsgi:app"
    common = {
        "cwd": str(ROOT),
        "cmd": command,
        "base_url": "http://127.0.0.1:{port}",
        "stream_path": "/stream?prompt={words}&max_tokens={n}&model=demo/echo",
        "method": "GET",
        "body": "",
        "proxy_path": "/api/chat",
        "proxy_method": "POST",
        "proxy_body": '{"model":"ollama/fake","messages":[{"role":"user","content":"hi"}],"options":{"max_tokens":49}}',
        "expect_extra": 1,
        "headers": [],
    }
    env = {
        "SLUICE_DEMO_DELAY_MS": "{interval_ms}",
        "OLLAMA_BASE_URL": "{upstream}",
        "SLUICE_RATE_LIMIT": "",
        "SLUICE_MAX_STREAMS": "100000",
        "SLUICE_MAX_GENERATIONS": "100000",
        "SLUICE_LOCAL_MODEL": "off",  # the workloads use demo/echo and Ollama's fake
    }
    run_peers.SERVERS["sluice"] = dict(common, port=int(port), env=dict(env), default=False)
    run_peers.SERVERS["sluice-redis"] = dict(
        common,
        port=int(port) + 1,
        env=dict(env, SLUICE_REDIS_URL=f"unix://{directory / 'redis.sock'}"),
        default=False,
    )
    only = "sluice,sluice-redis"
    if int(workers) > 1:
        name = f"sluice-redis-{workers}w"
        run_peers.SERVERS[name] = dict(
            run_peers.SERVERS["sluice-redis"],
            port=int(port) + 2,
            env=dict(run_peers.SERVERS["sluice-redis"]["env"], WEB_CONCURRENCY=workers),
        )
        only += "," + name
    sys.argv = ["run_peers.py", "--only", only, *argv]
    try:
        run_peers.main()
    finally:
        os.killpg(redis_process.pid, 15)
        redis_process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
