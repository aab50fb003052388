"""The Anthropic and Ollama dialects against a real llama.cpp server with SmolLM2.

One stream through each official client, relayed by Sluice to a real model:
the SDKs must accept what a real server's answer becomes. The server is the
``real_upstream`` fixture's (tests/conftest.py): the local model Sluice runs,
or ``SLUICE_TEST_OPENAI_URL``.
"""

from __future__ import annotations

import anthropic
import ollama
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def real(start_server, real_upstream):
    return start_server(**real_upstream)


def test_anthropic_stream(real):
    with anthropic.Anthropic(api_key="unused", base_url=real.url, max_retries=0, timeout=120) as client:
        with client.messages.stream(
            model="openai/smollm",
            max_tokens=40,
            system="You answer in one short sentence.",
            messages=[{"role": "user", "content": "Name a colour."}],
            extra_body={"temperature": 0, "top_k": 1},
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
    assert text.strip()
    assert final.content[-1].type == "text" and final.content[-1].text == text
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0


def test_ollama_client_stream(real):
    client = ollama.Client(host=real.url + "/ollama", timeout=120)
    try:
        parts = list(
            client.chat(
                model="openai/smollm",
                messages=[{"role": "user", "content": "Count from 1 to 5."}],
                options={"num_predict": 30, "temperature": 0, "top_k": 1},
                stream=True,
            )
        )
    finally:
        client.close()
    assert "".join(p.message.content or "" for p in parts).strip()
    final = parts[-1]
    assert final.done is True and final.done_reason in ("stop", "length")
    assert final.eval_count and final.prompt_eval_count
