"""The runner: numbering, one final event, failures, deadlines, cancel, bounds and backpressure."""

from __future__ import annotations

import threading
import time

from sluice import events, sse
from sluice.chat import ChatRequest, Message
from sluice.events import Event
from sluice.provider import Abort, Finish
from sluice.runner import Limits, run
from sluice.ticker import Ticker


def chat(text: str, max_tokens: int | None = None) -> ChatRequest:
    options = {"max_tokens": max_tokens} if max_tokens is not None else {}
    return ChatRequest("demo/echo", (Message("user", text),), options)


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
