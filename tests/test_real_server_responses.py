"""The Responses API through Sluice to a real llama.cpp server with SmolLM2: a streamed
response, and ``text.format`` with a JSON schema.

The server is the ``real_upstream`` fixture's (tests/conftest.py): the local
model Sluice runs, or ``SLUICE_TEST_OPENAI_URL``.
"""

from __future__ import annotations

import pytest

from tests.test_real_server import Person, sdk  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow


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
