"""Small, fast checks of single modules: demo, NDJSON lines, config, Abort, broker, runner."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from providers import Abort, Finish, Registry
from providers.demo import DemoProvider, answer, pieces
from providers.ollama import iter_lines
from sluice import events, sse
from sluice.broker import one_by_one
from sluice.broker.memory import MemoryBroker
from sluice.chat import ChatRequest, Message
from sluice.config import ConfigError, load_config
from sluice.errors import GenerationNotFound, ModelNotFound, UpstreamError
from sluice.events import Event
from sluice.runner import Limits, run
from sluice.ticker import Deadline, Ticker


def chat(text: str, max_tokens: int | None = None) -> ChatRequest:
    options = {"max_tokens": max_tokens} if max_tokens is not None else {}
    return ChatRequest("demo/echo", (Message("user", text),), options)


# -- demo/echo ------------------------------------------------------------------


@pytest.mark.parametrize("message", ["", "hi", "  lead and trail  ", "a\nb\r\nc", "日本語 🙂 é", "```py\nx\n```"])
def test_demo_pieces_join_to_the_documented_answer(message):
    assert "".join(pieces(message)) == answer(message)
    assert answer(message).startswith(message)
    assert answer(message).endswith("✓ 🙂\n```")


def test_demo_footer_is_thirteen_pieces_and_one_piece_per_word():
    assert len(pieces("one two three")) == 3 + 13
    assert answer("one two") == "one two\n\n```text\necho · 7 chars · 2 words · ✓ 🙂\n```"


def test_demo_streams_with_usage_and_max_tokens():
    provider = DemoProvider(delay_ms=0)
    stream = provider.stream(chat("a b c"), "echo", Abort())
    out = []
    with pytest.raises(StopIteration) as stop:
        while True:
            out.append(next(stream))
    assert "".join(out) == answer("a b c")
    assert stop.value.value == Finish("stop", {"prompt_tokens": 3, "completion_tokens": len(out)})
    limited = list(_drain(provider.stream(chat("a b c", max_tokens=2), "echo", Abort())))
    assert limited[:-1] == ["a ", "b "] and limited[-1] == Finish(
        "length", {"prompt_tokens": 3, "completion_tokens": 2}
    )


def test_demo_unknown_model_and_abort_stops_at_once():
    with pytest.raises(ModelNotFound):
        next(DemoProvider(0).stream(chat("x"), "other", Abort()))
    abort = Abort()
    stream = DemoProvider(delay_ms=60_000).stream(chat("a b c"), "echo", abort)
    assert next(stream) == "a "
    abort.abort("cancelled")
    assert list(_drain(stream))[-1].reason == "stop"  # ended without waiting a minute


def _drain(stream):
    try:
        while True:
            yield next(stream)
    except StopIteration as stop:
        yield stop.value


# -- NDJSON lines ---------------------------------------------------------------


def test_iter_lines_keeps_utf8_split_across_chunks_whole():
    data = '{"c":"é日🙂"}\n{"c":"x"}\n'.encode()
    for cut in range(1, len(data)):
        chunks = [data[:cut], data[cut:]]
        assert list(iter_lines(chunks)) == [b'{"c":"\xc3\xa9\xe6\x97\xa5\xf0\x9f\x99\x82"}', b'{"c":"x"}']


def test_iter_lines_splits_on_lf_only_and_refuses_oversized_lines():
    assert list(iter_lines([b'{"c":"a\\u2028\r"}\n\n', b"tail"])) == [b'{"c":"a\\u2028\r"}', b"tail"]
    with pytest.raises(UpstreamError):
        list(iter_lines([b"x" * 10, b"y" * 10], max_line=15))


# -- config ---------------------------------------------------------------------


def test_config_defaults_and_casts():
    config = load_config({})
    assert config["SLUICE_DEFAULT_MODEL"] == "demo/echo" and config["SLUICE_HOLD_S"] == 5.0
    assert load_config({"SLUICE_HEARTBEAT_S": "2.5"})["SLUICE_HEARTBEAT_S"] == 2.5


@pytest.mark.parametrize(
    ("key", "value"), [("SLUICE_HOLD_S", "soon"), ("SLUICE_MAX_STREAMS", "-1"), ("SLUICE_MAX_BODY_BYTES", "1.5")]
)
def test_config_error_names_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config({key: value})


# -- Abort, registry --------------------------------------------------------------


def test_abort_calls_each_closer_once_even_if_registered_late():
    calls = []
    abort = Abort()
    abort.on_abort(lambda: calls.append(1))
    abort.on_abort(lambda: 1 / 0)  # a failing closer does not stop the others
    abort.on_abort(lambda: calls.append(2))
    abort.abort("cancelled")
    abort.abort("timeout")
    abort.on_abort(lambda: calls.append(3))
    assert calls == [1, 2, 3] and abort.reason == "cancelled" and abort.wait(0)


def test_registry_resolves_prefixed_and_bare_names():
    demo = DemoProvider(0)
    registry = Registry([demo], "demo")
    assert registry.resolve("demo/echo") == (demo, "echo")
    assert registry.resolve("echo") == (demo, "echo")
    for name in ("x/echo", "demo/", "/echo"):
        with pytest.raises(ModelNotFound):
            registry.resolve(name)


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


# -- ticker ---------------------------------------------------------------------


def test_ticker_fires_a_deadline_moved_later_or_added_again_earlier_at_its_new_time_never_a_discarded_one():
    ticker = Ticker(0.01)
    fired: dict[str, float] = {}
    done = threading.Event()

    def note(name: str):
        def expire() -> None:
            fired[name] = time.monotonic()
            if name == "later":
                done.set()

        return expire

    now = time.monotonic()
    earlier = ticker.add(Deadline(now + 60, note("earlier")))
    later = ticker.add(Deadline(now + 0.02, note("later")))
    dropped = ticker.add(Deadline(now + 0.02, note("dropped")))
    earlier.at = now + 0.05
    ticker.add(earlier)  # moved earlier: queued again for its new time
    later.at = now + 0.3  # moved later: found moved when its old time comes
    ticker.discard(dropped)
    assert done.wait(5)
    assert fired["earlier"] < fired["later"]
    assert fired["earlier"] < now + 5  # not at its first time, a minute out
    assert fired["later"] >= now + 0.3
    assert "dropped" not in fired
    # Fired deadlines can be watched again (heartbeats re-arm theirs).
    again = threading.Event()
    later.at = time.monotonic() + 0.02
    later.on_expire = again.set
    ticker.add(later)
    assert again.wait(5)


def test_ticker_lets_go_of_a_discarded_deadline_callback_before_its_time():
    ticker = Ticker(0.01)

    class Stream:
        def expire(self) -> None:
            pass

    streams = [Stream() for _ in range(3000)]
    refs = [weakref.ref(stream) for stream in streams]
    deadlines = [ticker.add(Deadline(time.monotonic() + 3600, stream.expire)) for stream in streams]
    for deadline in deadlines:
        ticker.discard(deadline)
    del streams, deadlines
    gc.collect()
    assert all(ref() is None for ref in refs)


# -- runner ---------------------------------------------------------------------


class _Scripted:
    name = "scripted"

    def __init__(self, steps):
        self.steps = steps

    def models(self):
        return ["x"]

    def stream(self, request, model, abort):
        for step in self.steps:
            if isinstance(step, BaseException):
                raise step
            if step == "hang":
                abort.wait(30)
                return Finish()
            yield step
        return Finish("stop", {"prompt_tokens": 1, "completion_tokens": 2})


_LIMITS = Limits(5, 5)


def _run(steps, timeouts=_LIMITS) -> list[Event]:
    published: list[Event] = []
    run("gen_x", chat("q"), [(_Scripted(steps), "x")], Abort(), published.append, timeouts, Ticker(0.01))
    return published


def test_runner_numbers_events_and_ends_with_one_done():
    out = _run(["a", "", "b"])
    assert [e.seq for e in out] == [0, 1, 2, 3]
    assert [e.type for e in out] == ["start", "delta", "delta", "done"]  # empty pieces dropped
    assert out[-1].data == {
        "type": "done",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
    }


def test_runner_maps_failures_to_one_error_event_without_their_text():
    out = _run(["a", RuntimeError("sk-secret-key")])
    assert [e.type for e in out] == ["start", "delta", "error"]
    assert out[-1].data["error"]["code"] == "upstream_error" and "secret" not in out[-1].json


def test_runner_first_token_and_idle_timeouts():
    assert _run(["hang"], Limits(0.05, 5))[-1].data["error"]["code"] == "upstream_timeout"
    started = time.monotonic()
    out = _run(["a", "hang"], Limits(30, 0.05))  # the idle deadline is sooner than the first-token one
    assert [e.type for e in out] == ["start", "delta", "error"]
    assert out[-1].data["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 5  # at the idle deadline, not the first-token one


def test_runner_cancel_ends_with_done_cancelled_and_no_invented_usage():
    abort = Abort()
    published: list[Event] = []
    provider = _Scripted(["a", "hang"])
    thread = threading.Thread(
        target=run, args=("g", chat("q"), [(provider, "x")], abort, published.append, Limits(5, 5), Ticker())
    )
    thread.start()
    from tests.conftest import wait_until

    wait_until(lambda: len(published) >= 2)
    abort.abort("cancelled")
    thread.join(5)
    # The upstream reported no usage for an answer it never finished: none is made up.
    assert published[-1].data == {"type": "done", "finish_reason": "cancelled", "usage": {}}


def test_runner_bounds_events_per_generation():
    out = _run(["a"] * 50, Limits(5, 5, max_events=10))
    assert len(out) == 10 and out[-1].data["finish_reason"] == "length"


def test_runner_retries_retryable_failures_before_the_first_token_then_falls_back():
    from sluice.errors import UpstreamUnavailable

    flaky = _Scripted([UpstreamUnavailable()])
    published: list[Event] = []
    run(
        "g",
        chat("q"),
        [(flaky, "x"), (_Scripted(["ok"]), "y")],
        Abort(),
        published.append,
        Limits(5, 5, retries=1),
        Ticker(),
    )
    assert [e.type for e in published] == ["start", "delta", "done"] and published[1].data["content"] == "ok"
    # Never after a token: the failure ends the answer.
    out = _run(["a", UpstreamUnavailable()], Limits(5, 5, retries=3))
    assert [e.type for e in out] == ["start", "delta", "error"]


def test_runner_max_stream_duration_ends_with_length():
    out = _run(["a", "hang"], Limits(5, 5, max_stream_s=0.1))
    assert out[-1].data["finish_reason"] == "length"


def test_event_json_survives_a_lone_surrogate_from_a_provider():
    event = Event.make(1, events.delta("a\ud800b"))
    assert event.json == '{"type":"delta","content":"a\\ud800b"}'
    assert sse.frame(event).encode()  # writable as UTF-8


def test_ollama_reads_proxy_settings_once_as_requests_would(monkeypatch):
    from providers.ollama import OllamaProvider

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost")
    far = OllamaProvider("http://ollama.example:11434").session
    near = OllamaProvider("http://localhost:11434").session
    assert far.proxies.get("http") == "http://proxy.example:3128"
    assert "http" not in near.proxies
    assert not far.trust_env  # nothing more is looked up per request
