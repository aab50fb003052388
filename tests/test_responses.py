"""OpenAI's Responses API through Sluice, on every provider, with the official ``openai`` SDK and the
``openai-agents`` SDK as clients of a real gunicorn + gevent server in front of the fake upstreams:
streamed and whole answers, the SDK's stream helpers and structured output, a function-call loop,
``previous_response_id``, background responses resumed by sequence number (on another host through
Redis), cancel and disconnect closing the upstream, keys, and bad input named by ``param``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import openai
import pydantic
import pytest
import requests

from providers.demo import answer, pieces, reasoning
from tests.conftest import wait_until
from tests.fakes import Script

pytestmark = pytest.mark.slow

PROMPT = "Stream me, 世界 🙂\nsecond line"
TOKENS = ["Grü", "ße", " aus", " 東京", " 🙂", "\n", "done"]
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = {"id": "call_w1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
PROVIDERS = ["demo/echo", "ollama/llama3", "openai/gpt-4o-mini"]


def client_for(url: str, key: str = "anything") -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=url + "/v1", max_retries=0, timeout=15)


@pytest.fixture
def sdk(server) -> Iterator[openai.OpenAI]:
    with client_for(server.url) as client:
        yield client
    server.wait_idle()


def script_for(model: str, fake_ollama, fake_openai, *scripts: Script) -> Any:
    """Queue ``scripts`` on the fake behind ``model``; return that fake (None for demo)."""
    if model.startswith("demo/"):
        return None
    fake = fake_ollama if model.startswith("ollama/") else fake_openai
    fake.push(*scripts)
    return fake


def expected_text(model: str) -> str:
    return answer(PROMPT) if model.startswith("demo/") else "".join(TOKENS)


def deltas(events: list[Any]) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


def check_numbering(events: list[Any], first: int = 0) -> None:
    """Sequence numbers count up from ``first`` without a gap; exactly one terminal event, last."""
    assert [e.sequence_number for e in events] == list(range(first, first + len(events)))
    assert [e.type for e in events if e.type in TERMINAL] == [events[-1].type]


# -- create: streamed and whole, every provider -------------------------------------------------


@pytest.mark.parametrize("model", PROVIDERS)
def test_streamed_create_on_every_provider(sdk, fake_ollama, fake_openai, model):
    script_for(model, fake_ollama, fake_openai, Script(tokens=TOKENS, prompt_tokens=5))
    events = list(sdk.responses.create(model=model, input=PROMPT, stream=True))
    check_numbering(events)
    assert [e.type for e in events[:4]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert [e.type for e in events[-4:]] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    text = expected_text(model)
    assert deltas(events) == text
    final = events[-1].response
    assert final.status == "completed" and final.output_text == text and final.model == model
    assert final.id.startswith("resp_") and {e.response.id for e in events if hasattr(e, "response")} == {final.id}
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens


@pytest.mark.parametrize("model", PROVIDERS)
def test_whole_create_on_every_provider(sdk, fake_ollama, fake_openai, model):
    fake = script_for(model, fake_ollama, fake_openai, Script(tokens=TOKENS, prompt_tokens=5))
    response = sdk.responses.create(model=model, input=PROMPT, instructions="Be brief.", temperature=0.3)
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == expected_text(model)
    assert response.instructions == "Be brief." and response.temperature == 0.3
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    if fake is not None:
        sent = fake.last_body()
        assert sent["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": PROMPT},
        ]
        assert (sent.get("options") or sent)["temperature"] == 0.3
    # The whole object is the same as a retrieve of it.
    assert sdk.responses.retrieve(response.id).model_dump() == response.model_dump()


def test_usage_is_absent_when_the_upstream_reported_none(sdk, fake_openai):
    fake_openai.push(Script(tokens=TOKENS, report_usage=False), Script(tokens=TOKENS, report_usage=False))
    events = list(sdk.responses.create(model="openai/gpt-4o-mini", input="hi", stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.usage is None
    assert sdk.responses.create(model="openai/gpt-4o-mini", input="hi").usage is None


def test_stream_helpers_and_reasoning(sdk):
    with sdk.responses.stream(model="demo/think", input=PROMPT) as stream:
        events = list(stream)
        final = stream.get_final_response()
    check_numbering(events)
    text_deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert text_deltas[-1].snapshot == answer(PROMPT)  # the helper's own accumulation
    done = [e for e in events if e.type == "response.output_text.done"]
    assert len(done) == 1 and done[0].text == answer(PROMPT)
    thinking = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert thinking == reasoning(PROMPT)
    assert final.output_text == answer(PROMPT)
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == reasoning(PROMPT)


def test_max_output_tokens_is_incomplete(sdk):
    events = list(sdk.responses.create(model="demo/echo", input=PROMPT, max_output_tokens=3, stream=True))
    check_numbering(events)
    final = events[-1]
    assert final.type == "response.incomplete"
    assert final.response.status == "incomplete" and final.response.incomplete_details.reason == "max_output_tokens"
    assert deltas(events) == "".join(pieces(PROMPT)[:3]) == final.response.output_text
    whole = sdk.responses.create(model="demo/echo", input=PROMPT, max_output_tokens=3)
    assert whole.status == "incomplete" and whole.output_text == "".join(pieces(PROMPT)[:3])


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_a_failure_after_the_start_is_response_failed(start_server, fake_ollama, fake_openai, model):
    srv = start_server(SLUICE_HOLD_S="0.1")
    script_for(model, fake_ollama, fake_openai, Script(tokens=["a", "b", "c"], error_after=2, first_token_delay_s=0.3))
    with client_for(srv.url) as client:
        events = list(client.responses.create(model=model, input="hi", stream=True))
    check_numbering(events)
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error.code == "upstream_error" and "sk-" not in failed.response.error.message
    assert deltas(events) == "ab"


# -- structured output and a function-call loop ------------------------------------------------


class Person(pydantic.BaseModel):
    name: str
    age: int


@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_parse_with_text_format(sdk, fake_ollama, fake_openai, model):
    fake = script_for(model, fake_ollama, fake_openai, Script(tokens=['{"name": ', '"Mara", ', '"age": 25}']))
    response = sdk.responses.parse(model=model, input="Mara is 25.", text_format=Person)
    assert response.output_parsed == Person(name="Mara", age=25)
    sent = fake.last_body()
    if model.startswith("openai/"):
        assert sent["response_format"]["type"] == "json_schema"
        assert sent["response_format"]["json_schema"]["name"] == "Person"
        assert sent["response_format"]["json_schema"]["schema"]["properties"].keys() == {"name", "age"}
    else:
        assert sent["format"]["properties"].keys() == {"name", "age"}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["ollama/llama3", "openai/gpt-4o-mini"])
def test_function_call_loop(sdk, fake_ollama, fake_openai, model, stream):
    fake = script_for(model, fake_ollama, fake_openai, Script(tokens=[], tool_calls=[CALL]), Script(tokens=["21 °C."]))
    question = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with sdk.responses.stream(model=model, input=question, tools=[WEATHER]) as events:
            seen = list(events)
            first = events.get_final_response()
        arguments = "".join(e.delta for e in seen if e.type == "response.function_call_arguments.delta")
        assert json.loads(arguments) == {"city": "Paris"}
        check_numbering(seen)
    else:
        first = sdk.responses.create(model=model, input=question, tools=[WEATHER])
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id == "call_w1" or model.startswith("ollama/")
    # Turn one reached the upstream with the tool in chat's shape.
    tool = fake.requests[0].body["tools"][0]
    assert tool["function"]["name"] == "get_weather" and tool["function"]["parameters"] == WEATHER["parameters"]
    # Turn two: the call and its output go back as items.
    second_input = [
        *question,
        *(item.model_dump(exclude_none=True) for item in first.output),
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'},
    ]
    second = sdk.responses.create(model=model, input=second_input, tools=[WEATHER])
    assert second.output_text == "21 °C."
    sent = fake.requests[1].body["messages"]
    assert sent[0] == {"role": "user", "content": "Weather in Paris?"}
    if model.startswith("openai/"):
        assert sent[1]["role"] == "assistant" and sent[1]["content"] is None
        assert sent[1]["tool_calls"] == [
            {"id": call.call_id, "type": "function", "function": {"name": "get_weather", "arguments": call.arguments}}
        ]
        assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": '{"temp": 21}'}
    else:
        assert sent[1]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
        assert sent[2] == {"role": "tool", "content": '{"temp": 21}', "tool_name": "get_weather"}


def test_a_function_call_output_after_previous_response_id(sdk, fake_ollama):
    fake_ollama.push(Script(tokens=[], tool_calls=[CALL]), Script(tokens=["Mild."]))
    first = sdk.responses.create(model="ollama/llama3", input="Weather in Paris?", tools=[WEATHER])
    call = first.output[0]
    final = sdk.responses.create(
        model="ollama/llama3",
        tools=[WEATHER],
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}],
    )
    assert final.output_text == "Mild."
    assert fake_ollama.requests[1].body["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": '{"temp": 21}', "tool_name": "get_weather"},
    ]


def test_previous_response_id_prepends_input_and_output(sdk, fake_openai):
    fake_openai.push(Script(tokens=["Hello", " Ada"]), Script(tokens=["You are Ada."]))
    first = sdk.responses.create(
        model="openai/gpt-4o-mini", input="I am Ada.", instructions="Be kind.", metadata={"turn": "1"}
    )
    assert first.metadata == {"turn": "1"}
    second = sdk.responses.create(model="openai/gpt-4o-mini", input="Who am I?", previous_response_id=first.id)
    assert second.output_text == "You are Ada." and second.previous_response_id == first.id
    # The earlier input and output come first; its instructions do not carry over.
    assert fake_openai.requests[1].body["messages"] == [
        {"role": "user", "content": "I am Ada."},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello Ada"}]},
        {"role": "user", "content": "Who am I?"},
    ]
    # A chain of three: the whole conversation.
    fake_openai.push(Script(tokens=["Yes."]))
    sdk.responses.create(model="openai/gpt-4o-mini", input="Sure?", previous_response_id=second.id)
    assert [m["role"] for m in fake_openai.requests[2].body["messages"]] == ["user", "assistant"] * 2 + ["user"]
    # Metadata and store stay with Sluice.
    assert "metadata" not in fake_openai.requests[0].body and "store" not in fake_openai.requests[0].body


# -- durable: background, retrieve, resume by sequence number, cancel, delete ----------------------


def resumed(client: openai.OpenAI, response_id: str, after: int) -> list[Any]:
    return list(client.responses.retrieve(response_id, stream=True, starting_after=after))


def test_background_retrieve_and_resume_at_several_points(sdk, fake_ollama):
    tokens = [f"t{i} " for i in range(30)]
    fake_ollama.push(Script(tokens=tokens, delay_s=0.03))
    started = sdk.responses.create(model="ollama/llama3", input="count", background=True)
    assert started.status in ("queued", "in_progress") and started.background is True
    assert started.output == []
    # Resume live, while it runs, from a few points; each continues exactly after its point.
    live = resumed(sdk, started.id, 5)
    assert live[0].sequence_number == 6
    check_numbering(live, 6)
    whole = resumed(sdk, started.id, -1)
    check_numbering(whole)
    text = "".join(tokens)
    assert deltas(whole) == text
    for after in (0, 1, 3, 7, len(whole) // 2, len(whole) - 2, len(whole) - 1):
        rest = resumed(sdk, started.id, after)
        assert [e.sequence_number for e in rest] == list(range(after + 1, len(whole)))
        assert deltas(whole[: after + 1]) + deltas(rest) == text
    # The SDK's own resume helper (it filters by starting_after itself, from a replay from the start).
    with sdk.responses.stream(response_id=started.id, starting_after=10) as stream:
        helper = list(stream)
    assert helper[0].sequence_number == 11 and deltas(whole[:11]) + deltas(helper) == text
    done = sdk.responses.retrieve(started.id)
    assert done.status == "completed" and done.output_text == text and done.background is True


def test_background_runs_to_its_end_with_nobody_listening(start_server, fake_ollama):
    srv = start_server(SLUICE_DETACH_GRACE_S="0.2")
    fake_ollama.push(Script(tokens=[f"{i} " for i in range(25)], delay_s=0.04))
    with client_for(srv.url) as client:
        started = client.responses.create(model="ollama/llama3", input="go", background=True)
        # Poll: retrieving is not listening, and the grace does not apply.
        final = wait_until(
            lambda: (r := client.responses.retrieve(started.id)).status not in ("queued", "in_progress") and r,
            10,
            "the end",
        )
    assert final.status == "completed" and final.output_text == "".join(f"{i} " for i in range(25))
    srv.wait_idle()


def test_background_streamed_survives_its_listener(sdk, fake_ollama):
    fake_ollama.push(Script(tokens=[f"{i} " for i in range(20)], delay_s=0.03))
    stream = sdk.responses.create(model="ollama/llama3", input="go", background=True, stream=True)
    first = [next(stream) for _ in range(5)]
    stream.close()  # the listener leaves; the response runs on
    rest = resumed(sdk, first[0].response.id, first[-1].sequence_number)
    assert deltas(first) + deltas(rest) == "".join(f"{i} " for i in range(20))
    assert rest[-1].type == "response.completed"


def test_cancel_closes_the_upstream_within_a_second(sdk, fake_ollama):
    fake_ollama.push(Script(tokens=["x "] * 1000, delay_s=0.02))
    started = sdk.responses.create(model="ollama/llama3", input="go", background=True)
    fake_ollama.wait_requests(1)
    asked = time.monotonic()
    cancelled = sdk.responses.cancel(started.id)
    assert fake_ollama.wait_disconnect(2.0) - asked < 1.0
    assert cancelled.status == "cancelled"
    events = resumed(sdk, started.id, -1)
    assert events[-1].type == "response.incomplete" and events[-1].response.status == "cancelled"
    check_numbering(events)
    # Cancelling again changes nothing.
    assert sdk.responses.cancel(started.id).status == "cancelled"


def test_delete_forgets_and_store_false_keeps_nothing_readable(sdk):
    response = sdk.responses.create(model="demo/echo", input="hi")
    sdk.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)
    unstored = sdk.responses.create(model="demo/echo", input="hi", store=False)
    assert unstored.output_text == answer("hi") and unstored.store is False
    for call in (
        lambda: sdk.responses.retrieve(unstored.id),
        lambda: sdk.responses.cancel(unstored.id),
        lambda: sdk.responses.create(model="demo/echo", input="again", previous_response_id=unstored.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()


def test_disconnect_mid_stream_closes_the_upstream_within_a_second(server, fake_ollama):
    fake_ollama.push(Script(tokens=["x "] * 1000, delay_s=0.02))
    host, port = server.url.removeprefix("http://").split(":")
    payload = json.dumps({"model": "ollama/llama3", "input": "go", "stream": True}).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    received = b""
    while b"response.output_text.delta" not in received:
        received += sock.recv(65536)
    closed = time.monotonic()
    sock.close()
    assert fake_ollama.wait_disconnect(2.0) - closed < 1.0
    server.wait_idle()


def test_two_hosts_with_redis_start_on_one_retrieve_and_resume_on_the_other(redis_server, start_server, fake_ollama):
    tokens = [f"w{i} " for i in range(40)]
    fake_ollama.push(Script(tokens=tokens, delay_s=0.03))
    host_a = start_server(workers=2, SLUICE_REDIS_URL=redis_server.url)
    host_b = start_server(SLUICE_REDIS_URL=redis_server.url)
    with client_for(host_a.url) as a, client_for(host_b.url) as b:
        started = a.responses.create(model="ollama/llama3", input="go", background=True, metadata={"from": "a"})
        live = resumed(b, started.id, 4)  # on host B, from after 4, live to the end
        check_numbering(live, 5)
        whole = resumed(a, started.id, -1)
        assert deltas(whole[:5]) + deltas(live) == "".join(tokens) == deltas(whole)
        done = b.responses.retrieve(started.id)
        assert done.status == "completed" and done.output_text == "".join(tokens) and done.metadata == {"from": "a"}
        # A chain across hosts, and a cancel across hosts.
        fake_ollama.push(Script(tokens=["ok"]), Script(tokens=["y "] * 1000, delay_s=0.02))
        assert b.responses.create(model="ollama/llama3", input="next", previous_response_id=started.id).output_text
        assert fake_ollama.requests[1].body["messages"][1] == {"role": "assistant", "content": "".join(tokens)}
        long = a.responses.create(model="ollama/llama3", input="long", background=True)
        fake_ollama.wait_requests(3)
        asked = time.monotonic()
        assert b.responses.cancel(long.id).status == "cancelled"
        assert fake_ollama.wait_disconnect(2.0) - asked < 1.0


# -- keys and bad input --------------------------------------------------------------------------


def test_one_key_cannot_touch_another_keys_responses(start_server):
    srv = start_server(SLUICE_API_KEYS="key-a,key-b")
    with client_for(srv.url, "key-a") as a, client_for(srv.url, "key-b") as b:
        mine = a.responses.create(model="demo/echo", input="hi")
        assert a.responses.retrieve(mine.id).output_text == answer("hi")
        for call in (
            lambda: b.responses.retrieve(mine.id),
            lambda: b.responses.retrieve(mine.id, stream=True),
            lambda: b.responses.cancel(mine.id),
            lambda: b.responses.delete(mine.id),
            lambda: b.responses.create(model="demo/echo", input="x", previous_response_id=mine.id),
        ):
            with pytest.raises(openai.NotFoundError):
                call()
        assert a.responses.retrieve(mine.id).status == "completed"
    with client_for(srv.url, "wrong") as nobody, pytest.raises(openai.AuthenticationError):
        nobody.responses.create(model="demo/echo", input="hi")


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "demo/echo"}, 400, "input"),
        ({"input": [{"type": "image_generation_call"}]}, 400, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, 400, "input[0].content[0].type"),
        ({"input": "x", "previous_response_id": "resp_unknown"}, 404, "previous_response_id"),
        ({"input": "x", "previous_response_id": "gen_not_a_response"}, 404, "previous_response_id"),
        ({"input": "x", "tools": [{"type": "function", "name": "f"}]}, 400, "tools"),
        ({"input": "x", "model": "demo/echo", "text": {"format": {"type": "json_object"}}}, 400, "text.format"),
        ({"input": "x", "reasoning": {"effort": "high"}}, 400, "reasoning.effort"),
        ({"input": "x", "top_k": 5}, 400, "top_k"),
        ({"input": "x", "model": "nowhere/x"}, 404, None),
        ({"input": "x", "background": True, "store": False}, 400, "store"),
    ],
)
def test_bad_input_is_a_400_or_404_naming_the_field(server, body, status, param):
    r = requests.post(server.url + "/v1/responses", json=body, timeout=10)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


def test_bad_input_through_the_sdk_and_other_routes(sdk, server):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="demo/echo", input=[{"type": "item_reference", "id": "msg_1"}])
    assert caught.value.param == "input[0].type"
    for method, path in (("GET", "/v1/responses/resp_x"), ("POST", "/v1/responses/nope/cancel")):
        r = requests.request(method, server.url + path, timeout=10)
        assert r.status_code == 404 and r.json()["error"]["code"] == "generation_not_found"
    done = sdk.responses.create(model="demo/echo", input="hi")
    r = requests.get(server.url + f"/v1/responses/{done.id}?stream=true&starting_after=x", timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "starting_after"
    r = requests.post(server.url + "/v1/responses", data=b"{", headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


# -- the openai-agents SDK -----------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
def test_an_agent_with_a_function_tool_completes_its_round_trip(server, fake_openai, streamed):
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"21 °C in {city}"

    fake_openai.push(
        Script(tokens=[], tool_calls=[{"id": "call_a1", "name": "get_weather", "arguments": '{"city":"Paris"}'}]),
        Script(tokens=["It is ", "21 °C."]),
    )
    client = openai.AsyncOpenAI(api_key="anything", base_url=server.url + "/v1", max_retries=0, timeout=15)
    agent = Agent(
        name="weather",
        instructions="Answer with the weather.",
        model=OpenAIResponsesModel(model="openai/gpt-4o-mini", openai_client=client),
        tools=[get_weather],
    )
    if streamed:

        async def run() -> Any:
            result = Runner.run_streamed(agent, "Weather in Paris?")
            async for _ in result.stream_events():
                pass
            return result

        result = asyncio.run(run())
    else:
        result = Runner.run_sync(agent, "Weather in Paris?")
    assert result.final_output == "It is 21 °C."
    assert calls == ["Paris"]
    first, second = (r.body for r in fake_openai.requests[-2:])
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert first["messages"][0] == {"role": "system", "content": "Answer with the weather."}
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_a1"
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_a1", "content": "21 °C in Paris"}
    server.wait_idle()
