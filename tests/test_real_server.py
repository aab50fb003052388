"""Against a real OpenAI-compatible server (llama.cpp), when ``SLUICE_TEST_OPENAI_URL`` names one.

JSON-schema output, ``stop`` and ``seed`` through Sluice must behave as they do
straight to the server. Skipped cleanly without a server (CI downloads no
model); docs/testing.md ("Against a real model server") says how to run one.
"""

from __future__ import annotations

import json
import os

import openai
import pydantic
import pytest
import requests

URL = os.environ.get("SLUICE_TEST_OPENAI_URL", "")


def _reachable(url: str) -> bool:
    if not url:
        return False
    try:
        return requests.get(url.rstrip("/") + "/models", timeout=2).ok
    except requests.RequestException:
        return False


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _reachable(URL), reason="no real OpenAI-compatible server at SLUICE_TEST_OPENAI_URL"),
]


class Person(pydantic.BaseModel):
    name: str
    age: int


@pytest.fixture
def sdk(start_server):
    server = start_server(OPENAI_BASE_URL=URL, OPENAI_API_KEY="unused", SLUICE_FIRST_TOKEN_TIMEOUT_S="120")
    with openai.OpenAI(api_key="unused", base_url=server.url + "/v1", max_retries=0, timeout=120) as client:
        yield client


def test_json_schema_gives_valid_json(sdk):
    completion = sdk.chat.completions.parse(
        model="openai/smollm",
        messages=[{"role": "user", "content": "Mara is 25 years old. Give her name and age as JSON."}],
        response_format=Person,
        max_completion_tokens=60,
        temperature=0,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Person)


def test_stop_stops(sdk):
    chunks = sdk.chat.completions.create(
        model="openai/smollm",
        messages=[{"role": "user", "content": "Count from 1 to 12, separated by commas."}],
        stop=["5"],
        max_tokens=80,
        temperature=0,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "5" not in text and "12" not in text


def test_a_fixed_seed_repeats(sdk):
    def ask() -> str:
        reply = sdk.chat.completions.create(
            model="openai/smollm",
            messages=[{"role": "user", "content": "Invent a name for a cat."}],
            seed=1234,
            temperature=1.0,
            max_tokens=20,
        )
        return reply.choices[0].message.content or ""

    first = ask()
    assert first and ask() == first


def test_sluice_body_reaches_the_server_too(start_server):
    server = start_server(OPENAI_BASE_URL=URL, OPENAI_API_KEY="unused", SLUICE_FIRST_TOKEN_TIMEOUT_S="120")
    reply = requests.post(
        server.url + "/api/chat",
        json={
            "model": "openai/smollm",
            "stream": False,
            "messages": [{"role": "user", "content": "Mara is 25. Reply with her name and age as JSON."}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": Person.model_json_schema()},
            },
            "options": {"max_tokens": 100, "temperature": 0},
        },
        timeout=120,
    ).json()
    assert reply["finish_reason"] == "stop", reply
    Person.model_validate(json.loads(reply["message"]["content"]))
