"""The in-process broker: replay from any position, live batches, bounds and expiry."""

from __future__ import annotations

import threading

import pytest

from sluice import events
from sluice.broker import one_by_one
from sluice.broker.memory import MemoryBroker
from sluice.errors import GenerationNotFound
from sluice.events import Event
from sluice.provider import Finish

# -- broker ---------------------------------------------------------------------


def _publish_all(broker: MemoryBroker, gid: str, datas: list[dict]) -> None:
    for seq, data in enumerate(datas):
        broker.publish(gid, Event.make(seq, data))


def test_memory_broker_replays_from_any_position_then_ends():
    broker = MemoryBroker()
    broker.create("g", "demo/echo")
    datas = [events.start("g", "demo/echo"), events.delta("a"), events.delta("b"), events.done(Finish())]
    _publish_all(broker, "g", datas)
    for after in range(-1, 4):
        got = [e.seq for e in one_by_one(broker.listen("g", after, 1.0))]
        assert got == list(range(after + 1, 4))
    assert broker.state("g") == {"id": "g", "model": "demo/echo", "status": "done", "events": 4}
    with pytest.raises(GenerationNotFound):
        broker.state("nope")


def test_memory_broker_live_listener_and_idle_gaps():
    broker = MemoryBroker()
    broker.create("g", "m")
    received: list = []
    listener = one_by_one(broker.listen("g", -1, 0.05))
    assert next(listener) is None  # nothing yet: an idle gap
    ready = threading.Event()

    def consume():
        ready.set()
        received.extend(e for e in listener if e is not None)

    thread = threading.Thread(target=consume)
    thread.start()
    ready.wait(2)
    _publish_all(broker, "g", [events.start("g", "m"), events.delta("x"), events.done(Finish("cancelled"))])
    thread.join(5)
    assert [e.type for e in received] == ["start", "delta", "done"]
    assert broker.state("g")["status"] == "cancelled"


def test_memory_broker_expires_old_generations_and_bounds_their_number():
    from sluice.errors import Overloaded

    broker = MemoryBroker(ttl_s=0, max_generations=2)
    broker.create("a", "m")
    _publish_all(broker, "a", [events.start("a", "m"), events.done(Finish())])
    broker.create("b", "m")  # "a" ended more than 0 s ago: dropped
    with pytest.raises(GenerationNotFound):
        broker.state("a")
    broker.create("c", "m")
    with pytest.raises(Overloaded):
        broker.create("d", "m")
