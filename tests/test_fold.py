"""The one answer fold: an event list in, the whole message out, for every piece kind."""

from __future__ import annotations

from sluice.errors import UpstreamTimeout
from sluice.events import Event, Kind, Start
from sluice.fold import Answer, fold
from sluice.provider import Finish, Reasoning, Refusal, Text, ToolCallPart

LOGPROB_A = {"token": "He", "logprob": -0.1, "bytes": [72, 101], "top_logprobs": []}
LOGPROB_B = {"token": "llo", "logprob": -0.2, "bytes": [108, 108, 111], "top_logprobs": []}
USAGE = {
    "prompt_tokens": 9,
    "completion_tokens": 12,
    "total_tokens": 21,
    "completion_tokens_details": {"reasoning_tokens": 4},
    "prompt_tokens_details": {"cached_tokens": 2},
}


def script() -> list[Event]:
    """Reasoning, text with logprobs, two tool calls split across pieces, tool_calls, usage with details."""
    pieces = [
        Reasoning("Think "),
        Reasoning("hard.", [LOGPROB_A]),
        Text("He", {"content": [LOGPROB_A]}),  # OpenAI's shape
        Text("llo", [LOGPROB_B]),  # Ollama's shape
        ToolCallPart(0, '{"ci', "call_1", "get_weather"),
        ToolCallPart(1, "", "call_2", "get_time"),
        ToolCallPart(0, 'ty":"Paris"}'),
        ToolCallPart(1, '{"tz":"CET"}'),
    ]
    events = [Event(0, Kind.START, Start("gen_x", "ollama/llama3"))]
    events += [Event.of_piece(n, piece) for n, piece in enumerate(pieces, 1)]
    events.append(Event(len(events), Kind.DONE, Finish("tool_calls", USAGE, "fp_1")))
    return events


def test_the_fold_gathers_every_piece_kind():
    answer = fold(script())
    assert (answer.id, answer.model, answer.last_seq) == ("gen_x", "ollama/llama3", 9)
    assert answer.text == "Hello" and answer.reasoning_text == "Think hard."
    assert answer.logprobs == [LOGPROB_A, LOGPROB_B]
    assert answer.reasoning_logprobs == [LOGPROB_A]
    assert [(c.index, c.id, c.name, c.arguments) for c in answer.tool_calls] == [
        (0, "call_1", "get_weather", '{"city":"Paris"}'),
        (1, "call_2", "get_time", '{"tz":"CET"}'),
    ]
    assert answer.finish_reason == "tool_calls" and answer.usage == USAGE
    assert answer.ended and answer.error is None


def test_the_message_is_openais_shape():
    message = fold(script()).message(with_logprobs=True)
    assert message == {
        "role": "assistant",
        "content": "Hello",
        "reasoning": "Think hard.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": '{"tz":"CET"}'}},
        ],
        "logprobs": {"content": [LOGPROB_A, LOGPROB_B]},
    }
    assert "logprobs" not in fold(script()).message()  # only where asked for
    assert fold(script()).message("reasoning_content")["reasoning_content"] == "Think hard."


def test_only_tool_calls_or_a_refusal_leave_content_null():
    calls = fold([Event.of_piece(1, ToolCallPart(0, "{}", "c", "f")), Event(2, Kind.DONE, Finish("tool_calls"))])
    assert calls.message()["content"] is None
    refused = fold([Event.of_piece(1, Refusal("No.")), Event(2, Kind.DONE, Finish("stop"))])
    assert refused.message() == {"role": "assistant", "content": None, "refusal": "No."}
    empty = fold([Event(0, Kind.START, Start("g", "m")), Event(1, Kind.DONE, Finish("stop"))])
    assert empty.message() == {"role": "assistant", "content": ""} and empty.usage == {}


def test_an_error_is_the_end_and_nothing_is_invented():
    answer = fold([Event.of_piece(1, "par"), Event(2, Kind.ERROR, UpstreamTimeout())])
    assert answer.ended and answer.error is not None and answer.error.code == "upstream_timeout"
    assert answer.finish_reason == "error" and answer.usage == {} and answer.text == "par"
    assert not Answer().ended and Answer().finish_reason == "stop"


def test_the_fold_is_the_same_from_the_stored_json():
    """What a broker stored (JSON text) folds to the same answer as the live events."""
    live = script()
    stored = [Event.from_json(e.seq, e.json) for e in live]
    assert fold(stored).message(with_logprobs=True) == fold(live).message(with_logprobs=True)
    assert fold(stored).finish == fold(live).finish
