"""``flask --app app run --debug``: local development works, streams included."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import simple_websocket

from providers.demo import answer
from tests.conftest import ROOT, upstream_settings
from tests.fakes import Script
from tests.sse_client import open_events, read_events, text_of

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dev_server(tmp_path: Path, fake_ollama, fake_openai):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "OLLAMA_", "OPENAI_"))}
    env.update(upstream_settings(fake_ollama, fake_openai), SLUICE_DEMO_DELAY_MS="1", SLUICE_HOLD_S="0.2")
    env["SLUICE_LOCAL_MODEL"] = "off"  # the default model is then demo/echo
    log = open(tmp_path / "flask.log", "wb")
    flask = str(Path(sys.executable).with_name("flask"))
    process = subprocess.Popen(
        [flask, "--app", "app", "run", "--debug", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url + "/healthz", timeout=5)
            break
        except requests.ConnectionError:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "flask.log").read_text()
            time.sleep(0.05)  # wait-ok: retry step of a deadline-bound start
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(10)
    log.close()


def test_flask_run_serves_the_page_and_streams(dev_server):
    page = requests.get(dev_server + "/", timeout=5)
    assert page.status_code == 200 and "Sluice" in page.text
    events = read_events(dev_server + "/api/chat", {"messages": [{"role": "user", "content": "dev 🙂"}]})
    assert text_of(events) == answer("dev 🙂") and events[-1]["type"] == "done"


def test_flask_run_closes_upstream_when_client_leaves(dev_server, fake_ollama):
    fake_ollama.push(Script(hang_after=0))
    with open_events(
        dev_server + "/api/chat", {"model": "ollama/llama3", "messages": [{"role": "user", "content": "x"}]}
    ) as (response, events):
        assert response.status_code == 200
        assert json.loads(next(events).data)["type"] == "start"
        closed = time.monotonic()
    assert fake_ollama.wait_disconnect(3.0) - closed < 1.0


def test_flask_run_serves_the_websocket(dev_server):
    # The socket werkzeug hands over is wrapped for whole writes too (sluice.websocket).
    ws = simple_websocket.Client.connect(dev_server.replace("http://", "ws://") + "/ws")
    try:
        ws.send(json.dumps({"type": "chat", "messages": [{"role": "user", "content": "dev ws"}]}))
        frames = [json.loads(ws.receive(timeout=10))]
        while frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(ws.receive(timeout=10)))
    finally:
        ws.close()
    assert "".join(f["content"] for f in frames if f["type"] == "delta") == answer("dev ws")
