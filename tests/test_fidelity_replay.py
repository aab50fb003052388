"""Reasoning, tool-call and refusal events are stored, replayed and resumed like the others.

Through ``/api/generations`` (in-process broker and a real ``redis-server``
with two workers) and over the WebSocket, against the fake upstreams.
"""

from __future__ import annotations

import json

import pytest
import requests

from tests.fakes import Script
from tests.sse_client import read_events
from tests.test_generations import receive_json, ws_connect

pytestmark = pytest.mark.slow

RICH = {
    "reasoning": ["First, ", "the city."],
    "tokens": ["Checking ", "now."],
    "refusal": ["Not that."],
    "tool_calls": [{"id": "call_r1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}],
}
KINDS = ["start", "reasoning", "reasoning", "delta", "delta", "refusal"]  # then the tool call's pieces, then done


def start(url: str) -> str:
    reply = requests.post(
        url + "/api/generations",
        json={"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "weather?"}]},
        timeout=10,
    )
    assert reply.status_code == 202, reply.text
    return reply.json()["id"]


def check_rich(events: list[dict]) -> None:
    assert [e["type"] for e in events[: len(KINDS)]] == KINDS
    calls = [e for e in events if e["type"] == "tool_call"]
    assert calls[0]["id"] == "call_r1" and calls[0]["name"] == "get_weather"
    assert "".join(c["arguments"] for c in calls) == '{"city": "Oslo"}'
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "tool_calls"


def replay_and_resume(listen_url: str, generation_id: str) -> None:
    whole = read_events(f"{listen_url}/api/generations/{generation_id}/events")
    check_rich(whole)
    for after in range(len(whole) - 1):  # resumed at every position: exactly the rest
        rest = read_events(
            f"{listen_url}/api/generations/{generation_id}/events", headers={"Last-Event-ID": str(after)}
        )
        assert rest == whole[after + 1 :]


def test_rich_events_replay_and_resume_in_memory(server, fake_openai):
    fake_openai.push(Script(**RICH))
    replay_and_resume(server.url, start(server.url))


def test_rich_events_replay_and_resume_through_redis_on_another_worker(start_server, redis_server, fake_openai):
    first = start_server(SLUICE_REDIS_URL=redis_server.url)
    second = start_server(SLUICE_REDIS_URL=redis_server.url)
    fake_openai.push(Script(**RICH, delay_s=0.01))
    generation_id = start(first.url)
    replay_and_resume(second.url, generation_id)


def test_rich_events_over_the_websocket(server, fake_openai):
    fake_openai.push(Script(**RICH))
    ws = ws_connect(server.url)
    try:
        ws.send(
            json.dumps({"type": "chat", "model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "?"}]})
        )
        frames = [receive_json(ws)]
        while frames[-1]["type"] not in ("done", "error"):
            frames.append(receive_json(ws))
        check_rich(frames)
        ws.send(json.dumps({"type": "resume", "id": frames[0]["id"], "after": 2}))
        resumed = [receive_json(ws) for _ in range(len(frames) - 3)]
        assert resumed == frames[3:]
    finally:
        ws.close()
    server.wait_idle()
