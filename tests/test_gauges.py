"""``sluice_active_streams`` balances on every path a generation can take.

Each rejection (overloaded by ``SLUICE_MAX_STREAMS``, the broker full, a key's
stream cap, a draining worker, an unknown model) leaves the gauge where it
was, and each end (done, error, cancel, a client that goes away) brings it
back down: read from ``GET /metrics``, as a scrape would.
"""

from __future__ import annotations

from tests.conftest import wait_until
from tests.fakes import Script

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
HUNG = {**CHAT, "model": "ollama/llama3"}


def active(client) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith("sluice_active_streams "):
            return float(line.split()[1])
    raise AssertionError("no sluice_active_streams on /metrics")


def settles_at(client, value: float) -> None:
    wait_until(lambda: active(client) == value, 5, f"sluice_active_streams == {value}")


def background(client, headers: dict | None = None) -> str:
    r = client.post("/api/generations", json=HUNG, headers=headers or {})
    assert r.status_code == 202, r.get_data(as_text=True)
    return r.json["id"]


def cancel(client, generation_id: str, headers: dict | None = None) -> None:
    r = client.delete(f"/api/generations/{generation_id}", headers=headers or {})
    assert r.json["status"] == "cancelled"


def test_rejected_by_max_streams(make_client, fake_ollama):
    client = make_client(SLUICE_MAX_STREAMS="1")
    fake_ollama.push(Script(hang_after=0))
    running = background(client)
    settles_at(client, 1)
    for _ in range(3):
        r = client.post("/api/chat", json={**CHAT, "stream": False})
        assert r.status_code == 503 and r.json["error"]["code"] == "overloaded"
    assert active(client) == 1
    cancel(client, running)
    settles_at(client, 0)


def test_rejected_by_a_full_broker(make_client, fake_ollama):
    # The case: one background generation and three chats refused by the broker.
    client = make_client(SLUICE_MAX_GENERATIONS="1")
    fake_ollama.push(Script(hang_after=0))
    running = background(client)
    settles_at(client, 1)
    for _ in range(3):
        r = client.post("/api/chat", json=CHAT)
        assert r.status_code == 503 and r.json["error"]["code"] == "overloaded"
    assert active(client) == 1
    cancel(client, running)
    settles_at(client, 0)


def test_rejected_by_the_per_key_cap(make_client, fake_ollama):
    client = make_client(SLUICE_API_KEYS="a", SLUICE_MAX_STREAMS_PER_KEY="1")
    key = {"Authorization": "Bearer a"}
    fake_ollama.push(Script(hang_after=0))
    running = background(client, key)
    for _ in range(3):
        r = client.post("/api/generations", json=CHAT, headers=key)
        assert r.status_code == 429 and r.json["error"]["code"] == "rate_limited"
    assert active(client) == 1
    cancel(client, running, key)
    settles_at(client, 0)


def test_rejected_while_shutting_down_and_for_an_unknown_model(make_client):
    client = make_client()
    assert client.post("/api/chat", json={**CHAT, "model": "nowhere/x"}).status_code == 404
    client.application.extensions["sluice"].draining = True
    r = client.post("/api/chat", json=CHAT)
    assert r.status_code == 503 and r.json["error"]["code"] == "server_shutting_down"
    assert client.post("/api/generations", json=CHAT).status_code == 503
    assert active(client) == 0


def test_done_error_cancel_and_disconnect_each_come_back_to_zero(make_client, fake_ollama):
    client = make_client()
    # done: a whole answer, streamed and not.
    assert client.post("/api/chat", json={**CHAT, "stream": False}).json["finish_reason"] == "stop"
    assert client.post("/api/chat", json=CHAT).get_data(as_text=True).count('"type":"done"') == 1
    settles_at(client, 0)
    # error: before the first token (an HTTP status) and mid-stream (an error event).
    fake_ollama.push(Script(status=500), Script(tokens=["a", "b"], error_after=1))
    assert client.post("/api/chat", json=HUNG).status_code == 502
    assert '"type":"error"' in client.post("/api/chat", json=HUNG).get_data(as_text=True)
    settles_at(client, 0)
    # cancel: a background generation, by DELETE.
    fake_ollama.push(Script(hang_after=0))
    running = background(client)
    settles_at(client, 1)
    cancel(client, running)
    settles_at(client, 0)
    # disconnect: the client of a tied stream goes away mid-answer (the WSGI close).
    fake_ollama.push(Script(tokens=["a "] * 3, hang_after=2))
    response = client.post("/api/chat", json=HUNG, buffered=False)
    assert response.status_code == 200
    next(response.response)
    assert active(client) == 1
    response.close()
    settles_at(client, 0)
