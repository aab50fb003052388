"""The built-in demo models: the documented answer, its pieces, usage, limits, stop and continue."""

from __future__ import annotations

import pytest

from providers.demo import DemoProvider, answer, pieces
from sluice.chat import ChatRequest, Message
from sluice.errors import ModelNotFound
from sluice.provider import Abort, Finish


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
