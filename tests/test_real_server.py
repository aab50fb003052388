"""Against a real OpenAI-compatible server: llama.cpp's, with SmolLM2-135M, through the ``openai`` provider.

JSON-schema output, ``stop`` and ``seed`` through Sluice must behave as they do
straight to the server. The server is the ``real_upstream`` fixture's
(tests/conftest.py): by default the one Sluice itself runs for the ``local``
provider (the model ships in requirements, so CI runs these);
``SLUICE_TEST_OPENAI_URL`` names another one instead (docs/testing.md,
"Against a real model server").
"""

from __future__ import annotations

import json

import openai
import pydantic
import pytest
import requests

pytestmark = pytest.mark.slow


class Person(pydantic.BaseModel):
    name: str
    age: int


@pytest.fixture
def sdk(start_server, real_upstream):
    server = start_server(**real_upstream)
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


def test_sluice_body_reaches_the_server_too(start_server, real_upstream):
    server = start_server(**real_upstream)
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
