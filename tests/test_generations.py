"""Durable generations on one gevent worker with the in-process broker.

Resume at every position, the 204 rule, many listeners, cancel from another
connection, the detach grace, slow listeners, memory bounds and the WebSocket.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests
import simple_websocket

from providers.demo import answer, pieces
from tests.conftest import wait_until
from tests.fakes import Script
from tests.sse_client import open_events, read_events, text_of

pytestmark = pytest.mark.slow


def body(model: str = "demo/echo", content: str = "one two three") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def start(url: str, payload: dict | None = None) -> dict:
    r = requests.post(url + "/api/generations", json=payload or body(), timeout=10)
    assert r.status_code == 202, r.text
    assert r.json()["events_url"] == f"/api/generations/{r.json()['id']}/events"
    return r.json()


def wait_status(url: str, gid: str, status: str, timeout: float = 5.0) -> dict:
    return wait_until(
        lambda: (s := requests.get(f"{url}/api/generations/{gid}", timeout=5).json())["status"] == status and s,
        timeout,
        f"{gid} to be {status}",
    )


def test_resume_at_every_position_gives_exactly_the_rest(server):
    started = start(server.url)
    state = wait_status(server.url, started["id"], "done")
    events_url = server.url + started["events_url"]
    whole = read_events(events_url)
    assert [e["seq"] for e in whole] == list(range(state["events"]))
    assert text_of(whole) == answer("one two three") and whole[-1]["type"] == "done"
    for after in range(-1, len(whole) - 1):
        by_header = read_events(events_url, headers={"Last-Event-ID": str(after)})
        by_query = read_events(f"{events_url}?after={after}")
        assert by_header == by_query == whole[after + 1 :]
    # Everything seen: 204, so EventSource stops reconnecting.
    last = str(len(whole) - 1)
    assert requests.get(events_url, headers={"Last-Event-ID": last}, timeout=5).status_code == 204
    assert requests.get(f"{events_url}?after={last}", timeout=5).status_code == 204


def test_listener_attaching_late_and_live_listeners_see_everything(start_server):
    srv = start_server(SLUICE_DEMO_DELAY_MS="20")
    started = start(srv.url, body(content="w " * 20))
    url = srv.url + started["events_url"]
    results: list[list[dict]] = [[], []]

    def listen(index: int) -> None:
        results[index] = read_events(url)

    threads = [threading.Thread(target=listen, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    late = read_events(url)
    assert results[0] == results[1] == late
    assert text_of(late) == answer("w " * 20) and [e["seq"] for e in late] == list(range(len(late)))


def test_bad_positions_and_unknown_ids(server):
    started = start(server.url)
    url = server.url + started["events_url"]
    for bad in ("x", "-2", "1.5"):
        r = requests.get(url, headers={"Last-Event-ID": bad}, timeout=5)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    for method, path in [("GET", ""), ("GET", "/events"), ("DELETE", "")]:
        r = requests.request(method, f"{server.url}/api/generations/gen_unknown{path}", timeout=5)
        assert r.status_code == 404 and r.json()["error"]["code"] == "generation_not_found"


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_cancel_from_another_connection_closes_upstream_and_ends_every_listener(
    server, fake_ollama, fake_openai, model
):
    fake = fake_ollama if model.startswith("ollama") else fake_openai
    fake.push(Script(tokens=["t "] * 1000, delay_s=0.05))
    started = start(server.url, body(model))
    url = server.url + started["events_url"]
    ends: list[dict] = []

    def listen() -> None:
        ends.append(read_events(url)[-1])

    listeners = [threading.Thread(target=listen) for _ in range(2)]
    for thread in listeners:
        thread.start()
    fake.wait_requests(1)
    wait_until(lambda: requests.get(f"{server.url}/api/generations/{started['id']}", timeout=5).json()["events"] > 2)
    cancelled = time.monotonic()
    r = requests.delete(f"{server.url}/api/generations/{started['id']}", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert fake.wait_disconnect(2.0) - cancelled < 1.0
    for thread in listeners:
        thread.join(10)
    assert [e["type"] for e in ends] == ["done", "done"]
    assert all(e["finish_reason"] == "cancelled" for e in ends)
    # Cancelling again changes nothing.
    assert requests.delete(f"{server.url}/api/generations/{started['id']}", timeout=5).json()["status"] == "cancelled"
    server.wait_idle()


def test_detach_grace_cancels_an_abandoned_generation_not_a_watched_one(start_server, fake_ollama):
    srv = start_server(SLUICE_DETACH_GRACE_S="0.4")
    fake_ollama.push(Script(tokens=["a "] * 1000, delay_s=0.05))  # abandoned: nobody ever listens
    abandoned = start(srv.url, body("ollama/llama3"))
    fake_ollama.wait_disconnect(3.0)
    assert wait_status(srv.url, abandoned["id"], "cancelled")["status"] == "cancelled"

    fake_ollama.push(Script(tokens=["b "] * 30, delay_s=0.05))  # watched for 1.5 s, well past the grace
    watched = start(srv.url, body("ollama/llama3"))
    events = read_events(srv.url + watched["events_url"])
    assert events[-1]["finish_reason"] == "stop" and text_of(events) == "b " * 30


def test_detached_generation_survives_a_reconnect_within_the_grace(start_server, fake_ollama):
    srv = start_server(SLUICE_DETACH_GRACE_S="2")
    fake_ollama.push(Script(tokens=[f"{i} " for i in range(40)], delay_s=0.03))
    started = start(srv.url, body("ollama/llama3"))
    url = srv.url + started["events_url"]
    with open_events(url) as (_, events):
        first = [json.loads(next(events).data) | {"seq": 0}]
        for _ in range(3):
            e = next(events)
            first.append(json.loads(e.data) | {"seq": int(e.id)})
    rest = read_events(url, headers={"Last-Event-ID": str(first[-1]["seq"])})
    assert text_of(first + rest) == "".join(f"{i} " for i in range(40))
    assert [e["seq"] for e in first + rest] == list(range(len(first) + len(rest)))


def test_a_listener_that_stops_reading_is_dropped_and_costs_nobody_else(start_server, fake_ollama):
    srv = start_server(SLUICE_SEND_TIMEOUT_S="0.5")
    big = "x" * 20_000
    fake_ollama.push(Script(tokens=[big] * 2000))  # 40 MB: far more than socket buffers hold
    started = start(srv.url, body("ollama/llama3"))
    host, port = srv.url.removeprefix("http://").split(":")
    stuck = socket.create_connection((host, int(port)), timeout=10)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(f"GET {started['events_url']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    # A healthy listener on the same generation gets everything while the other reads nothing.
    events = read_events(srv.url + started["events_url"], timeout=60)
    assert events[-1]["type"] == "done" and len(events) == 2002
    # The stuck one was cut off once its writes stalled: draining it reaches EOF, short of the end.
    received = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        chunk = stuck.recv(1 << 20)
        if not chunk:
            break
        received += len(chunk)
    stuck.close()
    assert 0 < received < 40_000_000


def test_memory_bounds_refuse_with_503_then_drop_the_oldest_finished(start_server, fake_ollama):
    srv = start_server(SLUICE_MAX_GENERATIONS="2", SLUICE_DEMO_DELAY_MS="0")
    fake_ollama.push(Script(hang_after=0), Script(hang_after=0))
    hung = [start(srv.url, body("ollama/llama3")) for _ in range(2)]
    r = requests.post(srv.url + "/api/generations", json=body(), timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded" and r.headers["Retry-After"]
    for generation in hung:
        requests.delete(f"{srv.url}/api/generations/{generation['id']}", timeout=5)
    done = [start(srv.url) for _ in range(2)]  # each pushes out the oldest finished one
    for generation in done:
        wait_status(srv.url, generation["id"], "done")
    for generation in hung:
        assert requests.get(f"{srv.url}/api/generations/{generation['id']}", timeout=5).status_code == 404


def test_events_per_generation_are_bounded(start_server):
    srv = start_server(SLUICE_MAX_EVENTS="6")
    events = read_events(srv.url + start(srv.url, body(content="a b c d e f g h"))["events_url"])
    assert len(events) == 6 and events[-1]["finish_reason"] == "length"
    assert text_of(events) == "".join(pieces("a b c d e f g h")[:4])


# -- WebSocket -------------------------------------------------------------------


def ws_connect(url: str) -> simple_websocket.Client:
    return simple_websocket.Client.connect(url.replace("http://", "ws://") + "/ws")


def receive_json(ws: simple_websocket.Client) -> dict:
    raw = ws.receive(timeout=10)
    assert raw is not None, "no frame within 10 s"
    return json.loads(raw)


def test_websocket_chat_streams_the_same_events(server):
    ws = ws_connect(server.url)
    try:
        ws.send(json.dumps({"type": "chat", **body(content="web socket 🙂")}))
        frames = [receive_json(ws)]
        while frames[-1]["type"] not in ("done", "error"):
            frames.append(receive_json(ws))
        assert frames[0]["type"] == "start" and text_of(frames) == answer("web socket 🙂")
        sse = read_events(f"{server.url}/api/generations/{frames[0]['id']}/events")
        assert [{k: v for k, v in e.items() if k != "seq"} for e in sse] == frames
    finally:
        ws.close()


def test_websocket_invalid_messages_get_error_frames_and_the_socket_stays_usable(server):
    ws = ws_connect(server.url)
    try:
        for bad in [
            "not json",
            "[]",
            json.dumps({"type": "dance"}),
            json.dumps({"type": "chat", "messages": []}),
            json.dumps({"type": "resume", "id": "gen_nope"}),
            json.dumps({"type": "cancel"}),
        ]:
            ws.send(bad)
            frame = receive_json(ws)
            assert frame["type"] == "error", bad
            assert frame["error"]["code"] in ("invalid_request", "generation_not_found")
        ws.send(json.dumps({"type": "chat", **body(content="still here")}))
        frames = [receive_json(ws)]
        while frames[-1]["type"] != "done":
            frames.append(receive_json(ws))
        assert text_of(frames) == answer("still here")
    finally:
        ws.close()


def test_websocket_cancel_closes_upstream_and_resume_after_reconnect(server, fake_ollama):
    fake_ollama.push(Script(tokens=[f"{i} " for i in range(1000)], delay_s=0.02))
    ws = ws_connect(server.url)
    frames = []
    try:
        ws.send(json.dumps({"type": "chat", **body("ollama/llama3")}))
        frames = [receive_json(ws) for _ in range(4)]
    finally:
        ws.close()  # a dropped connection: the generation runs on within the grace
    gid = frames[0]["id"]
    ws = ws_connect(server.url)
    try:
        ws.send(json.dumps({"type": "resume", "id": gid, "after": 3}))
        resumed = [receive_json(ws) for _ in range(3)]
        assert [f["type"] for f in resumed] == ["delta"] * 3
        assert text_of(frames + resumed) == "".join(f"{i} " for i in range(6))
        cancelled = time.monotonic()
        ws.send(json.dumps({"type": "cancel"}))
        frame = receive_json(ws)
        while frame["type"] == "delta":
            frame = receive_json(ws)
        assert frame == {"type": "done", "finish_reason": "cancelled", "usage": frame["usage"]}
        assert fake_ollama.wait_disconnect(2.0) - cancelled < 1.0
    finally:
        ws.close()
    server.wait_idle()
