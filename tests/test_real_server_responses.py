"""The Responses API through Sluice to a real OpenAI-compatible server (llama.cpp), when
``SLUICE_TEST_OPENAI_URL`` names one: a streamed response, and ``text.format`` with a JSON schema.

Skipped cleanly without a server, as ``tests/test_real_server.py`` is; docs/testing.md ("Against a
real model server") says how to run one.
"""

from __future__ import annotations

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


def test_a_streamed_response(sdk):
    with sdk.responses.stream(
        model="openai/smollm",
        input="Name three colours.",
        instructions="Answer in one short sentence.",
        max_output_tokens=40,
        temperature=0,
    ) as stream:
        events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.strip() and events[-1].response.output_text == text
    usage = events[-1].response.usage
    assert usage is not None and usage.output_tokens > 0


def test_text_format_json_schema(sdk):
    response = sdk.responses.parse(
        model="openai/smollm",
        input="Mara is 25 years old. Give her name and age as JSON.",
        text_format=Person,
        max_output_tokens=60,
        temperature=0,
    )
    assert response.status == "completed", response
    assert isinstance(response.output_parsed, Person)
