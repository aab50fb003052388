"""The ``local`` provider against the real model: SmolLM2-135M in llama.cpp's server, started by Sluice.

Every test talks to the real model (the wheels are in requirements, so CI has
them): a streamed answer on ``/api/chat`` and through the ``openai`` SDK, JSON
schemas, ``stop``, ``seed``, ``length`` with llama.cpp's usage, context
overflow, cancel and disconnect freeing the slot, one model process per host
whatever the workers, restarts, and nothing left behind after any way of
stopping. The tests that count processes run a copy of the GGUF file under a
name of their own, so each counts only its own model server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import requests

from providers.llama_server import LlamaHost, LlamaSpec, local_spec
from providers.openai import map_openai_error
from sluice.config import load_config
from sluice.errors import ContextLengthExceeded
from tests.conftest import BASE_SETTINGS, GUNICORN, ROOT, Server, launch_server, upstream_settings, wait_until
from tests.sse_client import open_events, read_events, text_of

MODEL = "local/smollm2-135m"
# The shipped model, on: what `make run` serves. Deadlines leave room for a slow, busy CI machine.
LOCAL = {"SLUICE_LOCAL_MODEL": "", "SLUICE_FIRST_TOKEN_TIMEOUT_S": "120"}
# SmolLM2-135M answers this one right, and briefly, at temperature 0.
ASK = [{"role": "user", "content": "Which city is the capital of France?"}]


def spec_of(settings: dict[str, str]) -> LlamaSpec:
    """The model server Sluice runs with ``settings`` (as the tests' servers get them)."""
    spec = local_spec(load_config({**BASE_SETTINGS, **settings}))
    assert spec is not None
    return spec


def model_copy(directory: Path, name: str) -> Path:
    """The shipped GGUF under another name: a model server of the test's own."""
    copy = directory / f"{name}.gguf"
    shutil.copyfile(spec_of(LOCAL).model, copy)
    return copy


def mapping(path: Path) -> set[int]:
    """The processes that have ``path`` mapped (a running llama.cpp holds its model so)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path) in (entry / "maps").read_text():
                    found.add(int(entry.name))
            except OSError:  # gone meanwhile, or not ours to read
                continue
    return found


def running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def slots(spec: LlamaSpec) -> list[dict[str, Any]]:
    """llama.cpp's own view of its slots (``GET /slots``, with the key the keeper published)."""
    endpoint = LlamaHost(spec).endpoint()
    assert endpoint is not None, "the model server is not ready"
    headers = {"Authorization": f"Bearer {endpoint.api_key}"}
    return requests.get(endpoint.url + "/slots", headers=headers, timeout=10).json()


def chat(url: str, **body: Any) -> requests.Response:
    return requests.post(
        url + "/api/chat", json={"model": MODEL, "messages": ASK, "stream": False, **body}, timeout=120
    )


@pytest.fixture(scope="module")
def local(tmp_path_factory, ollama_upstream, openai_upstream) -> Iterator[Server]:
    """Sluice with the shipped model on (one worker), shared by the tests that only ask it things."""
    settings = {**BASE_SETTINGS, **upstream_settings(ollama_upstream, openai_upstream), **LOCAL}
    server = launch_server(tmp_path_factory.mktemp("local"), settings)
    yield server
    server.stop()


@pytest.fixture
def sdk(local: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="unused", base_url=local.url + "/v1", max_retries=0, timeout=120) as client:
        yield client


# ---------------------------------------------------------------- answers


@pytest.mark.slow
def test_a_real_answer_streams_on_api_chat(local: Server) -> None:
    events = read_events(
        local.url + "/api/chat",
        {"model": MODEL, "messages": ASK, "options": {"temperature": 0, "max_tokens": 40}},
        timeout=120,
    )
    assert events[0]["type"] == "start" and events[0]["model"] == MODEL
    deltas = [e for e in events if e["type"] == "delta"]
    assert len(deltas) > 1, "one piece per token, not the answer at once"
    assert "Paris" in text_of(events)
    done = events[-1]
    assert done["type"] == "done" and done["finish_reason"] == "stop"
    # llama.cpp counts the end-of-turn token too.
    assert done["usage"]["prompt_tokens"] > 0 and done["usage"]["completion_tokens"] >= len(deltas)


@pytest.mark.slow
def test_a_real_answer_streams_through_the_openai_sdk(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model=MODEL,
            messages=ASK,
            stream=True,
            temperature=0,
            max_tokens=40,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text and sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1
    assert {c.model for c in chunks} == {MODEL}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert MODEL in {m.id for m in sdk.models.list()}


@pytest.mark.slow
def test_a_json_schema_gives_valid_json(local: Server) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    reply = chat(
        local.url,
        messages=[{"role": "user", "content": "Mara is 25 years old. Give her name and age as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
        options={"max_tokens": 60, "temperature": 0},
    ).json()
    person = json.loads(reply["message"]["content"])
    assert isinstance(person["name"], str) and isinstance(person["age"], int), person


@pytest.mark.slow
def test_stop_ends_the_answer_before_the_stop_text(sdk: openai.OpenAI) -> None:
    chunks = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from 1 to 12, separated by commas."}],
        stop=["5"],
        max_tokens=80,
        temperature=0,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "4" in text and "5" not in text and "12" not in text


@pytest.mark.slow
def test_a_seed_with_temperature_zero_repeats(sdk: openai.OpenAI) -> None:
    def ask() -> str:
        reply = sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Invent a name for a cat."}],
            seed=1234,
            temperature=0,
            max_tokens=20,
        )
        return reply.choices[0].message.content or ""

    first = ask()
    assert first and ask() == first


@pytest.mark.slow
def test_max_tokens_gives_length_with_llamacpp_usage(local: Server) -> None:
    reply = chat(local.url, options={"max_tokens": 5}, extra={"ignore_eos": True}).json()
    assert reply["finish_reason"] == "length"
    usage = reply["usage"]
    assert usage["completion_tokens"] == 5 and usage["prompt_tokens"] > 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + 5


@pytest.mark.slow
def test_a_prompt_over_the_context_is_400_context_length_exceeded(local: Server, sdk: openai.OpenAI) -> None:
    too_long = [{"role": "user", "content": "word " * 3000}]  # over SLUICE_LOCAL_CTX's 2048 tokens
    response = requests.post(local.url + "/api/chat", json={"model": MODEL, "messages": too_long}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and "context size" in error["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=too_long, max_tokens=5)
    assert caught.value.code == "context_length_exceeded"


def test_llamacpp_context_error_maps_to_context_length_exceeded() -> None:
    # llama.cpp's server's own body (b9xxx), as the openai SDK hands it over.
    body = {
        "code": 400,
        "message": "request (5031 tokens) exceeds the available context size (2048 tokens), try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 5031,
        "n_ctx": 2048,
    }
    response = httpx2.Response(400, request=httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))
    error = map_openai_error(openai.BadRequestError("Error code: 400", response=response, body=body))
    assert isinstance(error, ContextLengthExceeded) and "5031 tokens" in error.message


@pytest.mark.slow
def test_an_unknown_local_model_is_404(local: Server) -> None:
    response = chat(local.url, model="local/llama-70b")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


# ---------------------------------------------------------------- cancel and disconnect


@pytest.mark.slow
@pytest.mark.parametrize("how", ["cancel", "disconnect"])
def test_cancel_and_disconnect_free_the_slot(start_server, how: str) -> None:
    """One slot: the second request can only run if the first one's generation stopped."""
    settings = {**LOCAL, "SLUICE_LOCAL_PARALLEL": "1"}
    server = start_server(**settings)
    spec = spec_of(settings)
    asked = 1500  # tokens the first request asks for: many seconds of generation on two cores
    body = {"model": MODEL, "messages": ASK, "options": {"max_tokens": asked}, "extra": {"ignore_eos": True}}
    if how == "cancel":
        started = requests.post(server.url + "/api/generations", json=body, timeout=10).json()
        with open_events(server.url + started["events_url"], timeout=120) as (_, events):
            next(e for e in events if json.loads(e.data)["type"] == "delta")
            assert requests.delete(server.url + f"/api/generations/{started['id']}", timeout=10).status_code == 200
    else:
        with open_events(server.url + "/api/chat", body, timeout=120) as (_, events):
            next(e for e in events if json.loads(e.data)["type"] == "delta")
        # Leaving the block closes the connection: the client has gone.

    # llama.cpp itself says the slot stopped generating, long before the tokens asked for.
    wait_until(lambda: not slots(spec)[0]["is_processing"], 15, "the slot to be free")
    assert slots(spec)[0]["next_token"][0]["n_decoded"] < asked
    reply = chat(server.url, options={"max_tokens": 8}, extra={"ignore_eos": True})
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 8
    server.wait_idle()


# ---------------------------------------------------------------- one model process per host


@pytest.mark.slow
def test_workers_and_instances_share_one_model_process(start_server, redis_server, tmp_path: Path) -> None:
    gguf = model_copy(tmp_path, "shared-model")
    settings = {"SLUICE_LOCAL_MODEL": str(gguf), "SLUICE_REDIS_URL": redis_server.url}
    first = start_server(workers=2, **settings)
    second = start_server(**settings)  # another Sluice on the same host
    model = "local/shared-model"
    # Several at once, so that both workers of the first server take some.
    replies = [chat(url, model=model, options={"max_tokens": 4}) for url in (first.url, second.url) * 3]
    assert all(reply.status_code == 200 for reply in replies), [reply.text for reply in replies]
    holders = mapping(gguf)
    assert len(holders) == 1, holders
    (pid,) = holders
    assert "providers.llama_server serve" in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")


# ---------------------------------------------------------------- lifecycle


def _children(pid: int) -> set[int]:
    try:
        return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_nothing_is_left_after_sluice_stops(start_server, tmp_path: Path, stop: signal.Signals) -> None:
    gguf = model_copy(tmp_path, f"stopped-{stop.name}")
    settings = {"SLUICE_LOCAL_MODEL": str(gguf)}
    server = start_server(**settings)
    assert chat(server.url, model=f"local/stopped-{stop.name}", options={"max_tokens": 4}).status_code == 200
    state = LlamaHost(spec_of(settings)).state()
    assert state is not None and state["status"] == "ready"
    ours = {server.process.pid, *_children(server.process.pid), state["keeper"], *mapping(gguf)}
    assert state["pid"] in ours and len(ours) >= 4  # master, worker, keeper, model server

    server.process.send_signal(stop)
    server.process.wait(30)
    # After SIGKILL the worker notices its master is gone and leaves; the keeper follows the last user.
    wait_until(lambda: not any(running(pid) for pid in ours), 30, "every process of this Sluice to end")
    assert mapping(gguf) == set()


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["model server", "keeper"])
def test_a_killed_model_server_is_restarted_and_its_streams_end_with_an_error(
    start_server, tmp_path: Path, victim: str
) -> None:
    """Model server killed: its keeper restarts it. Keeper killed: the server dies with it; Sluice starts both."""
    gguf = model_copy(tmp_path, "crashing")
    settings = {"SLUICE_LOCAL_MODEL": str(gguf)}
    server = start_server(**settings)
    host = LlamaHost(spec_of(settings))
    state = host.state()
    assert state is not None and state["status"] == "ready"
    body = {
        "model": "local/crashing",
        "messages": ASK,
        "options": {"max_tokens": 1500},
        "extra": {"ignore_eos": True},
    }
    with open_events(server.url + "/api/chat", body, timeout=120) as (_, stream):
        events = []
        for event in stream:
            events.append(json.loads(event.data))
            if events[-1]["type"] == "delta" and len(events) == 2:
                os.kill(state["pid"] if victim == "model server" else state["keeper"], signal.SIGKILL)
    assert events[-1]["type"] == "error", events[-3:]
    error = events[-1]["error"]
    assert error["code"] == "upstream_error" and "local model server stopped" in error["message"]
    # The next request waits for the new server instead of failing.
    reply = chat(server.url, model="local/crashing", options={"max_tokens": 4})
    assert reply.status_code == 200, reply.text
    again = host.state()
    assert again is not None and again["pid"] != state["pid"] and mapping(gguf) == {again["pid"]}
    assert (again["keeper"] == state["keeper"]) == (victim == "model server")


def _open_port() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return listener


def _first_request(url: str, model: str) -> requests.Response:
    """``POST /api/chat`` as soon as the port accepts a connection, with no health check before it."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return chat(url, model=model, options={"max_tokens": 4})
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the port never opened"
            time.sleep(0.01)  # wait-ok: retry step of a deadline-bound connect


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["gunicorn", "flask run"])
def test_a_request_sent_the_moment_the_port_opens_gets_its_answer(tmp_path: Path, runner: str) -> None:
    """The model is loaded while the request waits: under gunicorn by the master, under flask run on first use."""
    gguf = model_copy(tmp_path, "cold-start")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "OLLAMA_", "OPENAI_"))}
    env.update(BASE_SETTINGS, SLUICE_LOCAL_MODEL=str(gguf))
    listener = _open_port() if runner == "gunicorn" else None
    if listener is not None:
        # The port is open before gunicorn starts: the request waits in the kernel's queue.
        bind = f"fd://{listener.fileno()}"
        argv = [GUNICORN, "-c", "gunicorn.conf.py", "--bind", bind, "--graceful-timeout", "1", "wsgi:app"]
        port, fds = listener.getsockname()[1], (listener.fileno(),)
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        argv = [str(Path(sys.executable).with_name("flask")), "--app", "app", "run", "--port", str(port)]
        fds = ()
    assert mapping(gguf) == set()
    with open(tmp_path / "server.log", "wb") as log:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=fds, start_new_session=True
        )
    if listener is not None:
        listener.close()
    try:
        reply = _first_request(f"http://127.0.0.1:{port}", "local/cold-start")
        assert reply.status_code == 200, reply.text + (tmp_path / "server.log").read_text()
        assert reply.json()["message"]["content"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    wait_until(lambda: not mapping(gguf), 30, "the model server to stop with Sluice")


@pytest.mark.slow
def test_a_file_that_is_not_a_model_stops_gunicorn_with_the_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "OLLAMA_", "OPENAI_"))}
    env.update(BASE_SETTINGS, SLUICE_LOCAL_MODEL=str(broken), SLUICE_BIND="127.0.0.1:0")
    result = subprocess.run(
        [GUNICORN, "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert f"the local model {broken} did not start" in result.stderr and "SLUICE_LOCAL_MODEL=off" in result.stderr
