"""The Redis broker's writer and reader, in-process against a real redis-server.

- Write-behind keeps the contract's promises: once a stream's client has its
  ``done``, the state says so and a resume from that event is ``204``;
- many listeners of one generation in one worker share its reader and each
  sees every event once, in order, from wherever it started;
- a listener past the end of a finished generation ends (as in memory);
- a generation that a listener declared lost (the owner's lease ran out)
  refuses the owner's later events, and the owner's next publish fails.
"""

from __future__ import annotations

import json
import threading

import pytest

from app import create_app
from sluice import events
from sluice.broker.redis_broker import RedisBroker
from sluice.config import load_config
from sluice.errors import BrokerUnavailable
from sluice.events import Event
from sluice.provider import Finish
from tests.conftest import BASE_SETTINGS, upstream_settings, wait_until

pytestmark = pytest.mark.slow


def sse_events(body: str) -> list[tuple[int, str]]:
    """``(id, data)`` of each SSE event that has an id."""
    out = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "id" in fields:
            out.append((int(fields["id"]), fields["data"]))
    return out


def test_after_done_reaches_the_client_the_state_agrees_and_a_resume_is_204(redis_server, fake_ollama, fake_openai):
    settings = {
        **BASE_SETTINGS,
        **upstream_settings(fake_ollama, fake_openai),
        "SLUICE_REDIS_URL": redis_server.url,
        "SLUICE_REDIS_FLUSH_MS": "200",
    }  # a long linger: only the end's own flush can explain a pass
    client = create_app(load_config(settings)).test_client()
    chat = {"model": "demo/echo", "messages": [{"role": "user", "content": "one two three four"}]}
    for _ in range(5):
        body = client.post("/api/chat", json=chat).get_data(as_text=True)
        seen = sse_events(body)
        assert '"type":"done"' in seen[-1][1]
        generation = json.loads(seen[0][1])["id"]  # the start event names it
        state = client.get(f"/api/generations/{generation}").json
        assert state["status"] == "done" and state["events"] == len(seen)
        r = client.get(f"/api/generations/{generation}/events", headers={"Last-Event-ID": str(seen[-1][0])})
        assert r.status_code == 204
        replay = sse_events(client.get(f"/api/generations/{generation}/events").get_data(as_text=True))
        assert replay == seen


def test_many_listeners_of_one_generation_share_the_reader_and_each_sees_every_event(redis_server):
    broker = RedisBroker(redis_server.url, flush_ms=2)
    broker.create("gen_shared", "demo/echo")
    broker.publish("gen_shared", Event.make(0, events.start("gen_shared", "demo/echo")))
    seen: dict[int, list[int]] = {}

    def listen(index: int, after: int) -> None:
        got = seen.setdefault(index, [])
        for batch in broker.listen("gen_shared", after, 5.0):
            got.extend(event.seq for event in batch or ())

    starts = [-1, -1, 0, 3, 10, 40]
    listeners = [threading.Thread(target=listen, args=(i, after), daemon=True) for i, after in enumerate(starts)]
    joining = {1: listeners[:3], 5: listeners[3:4], 12: listeners[4:5], 41: listeners[5:]}  # while it runs
    for number in range(1, 60):
        for thread in joining.get(number, ()):
            thread.start()
        broker.publish("gen_shared", Event.make(number, events.delta(f"{number} ")))
    broker.publish("gen_shared", Event.make(60, events.done(Finish("stop"))))
    for thread in listeners:
        thread.join(10)
        assert not thread.is_alive()
    for index, after in enumerate(starts):
        assert seen[index] == list(range(after + 1, 61)), (index, after)
    assert not broker.reader.follows  # every listener said goodbye


def test_a_listener_past_the_end_ends(redis_server):
    broker = RedisBroker(redis_server.url)
    broker.create("gen_over", "demo/echo")
    broker.publish("gen_over", Event.make(0, events.start("gen_over", "demo/echo")))
    broker.publish("gen_over", Event.make(1, events.done(Finish("stop"))))
    assert [batch for batch in broker.listen("gen_over", 7, 0.2) if batch] == []


def test_events_after_a_takeover_are_refused_and_the_owner_hears_of_it(redis_server):
    owner = RedisBroker(redis_server.url, lease_s=0.2)
    watcher = RedisBroker(redis_server.url, lease_s=0.2)
    owner.create("gen_taken", "demo/echo")
    owner.publish("gen_taken", Event.make(0, events.start("gen_taken", "demo/echo")))
    owner.publish("gen_taken", Event.make(1, events.delta("a ")))
    # The owner stalls (no renewal): a listener elsewhere finds the lease gone and ends it.
    seen = [event for batch in watcher.listen("gen_taken", -1, 0.2) for event in batch or ()]
    assert [e.type for e in seen] == ["start", "delta", "error"] and seen[-1].data["error"]["code"] == "generation_lost"
    assert seen[-1].seq == 2
    owner.publish("gen_taken", Event.make(2, events.delta("late ")))  # queued; refused at the flush

    def refused() -> bool:
        try:
            owner.publish("gen_taken", Event.make(3, events.delta("later ")))
        except BrokerUnavailable:
            return True
        return False

    wait_until(refused, 5, "the owner to hear that its generation was taken over")
    assert watcher.state("gen_taken") == {"id": "gen_taken", "model": "demo/echo", "status": "error", "events": 3}
