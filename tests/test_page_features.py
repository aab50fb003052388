"""The chat page's richer answers and inputs, end to end in real headless Chromium.

Thinking blocks, pictures in, per-chat settings, answers cut off at the token
limit (and Continue), content filters and refusals, tool-call cards, export
and import. Same rules as ``tests/test_page.py`` (whose fixtures and ``Tab``
this module reuses): Sluice under gunicorn with the demo models and the fake
upstreams, no sleeps, every wait an auto-waiting ``expect``,
``wait_for_function`` or a fake's wait with a deadline. Screenshots go to
``tests/artifacts/page/``; ``docs/screenshots/`` holds copies for the documentation.
"""

from __future__ import annotations

import base64
import json
import random
import re
import struct
import zlib
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from providers.demo import reasoning as demo_reasoning
from tests.fakes import FakeOllama, FakeOpenAI, Script
from tests.test_page import ANSWER, Tab, browser, demo_answer, page_server, phone_tab, tab  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

OLLAMA = "ollama/llama3:latest"
OPENAI = "openai/gpt-4o-mini"

STORED_OPEN = (
    "() => JSON.parse(localStorage.getItem('sluice.v1.conv.' + JSON.parse(localStorage.getItem('sluice.v1.open'))))"
)
OPEN_ID = "() => JSON.parse(localStorage.getItem('sluice.v1.open'))"

# How many pictures IndexedDB holds for a conversation (the page's store: "sluice" / "images").
IDB_COUNT = """(id) => new Promise((resolve, reject) => {
  const open = indexedDB.open('sluice');
  open.onerror = () => reject(open.error);
  open.onsuccess = () => {
    const db = open.result;
    if (!db.objectStoreNames.contains('images')) { db.close(); resolve(0); return; }
    const request = db.transaction('images').objectStore('images').index('conversation').count(id);
    request.onsuccess = () => { db.close(); resolve(request.result); };
    request.onerror = () => reject(request.error);
  };
})"""

# A small picture made in the page with a canvas, handed to the page as a paste or a drop.
MAKE_FILE = """async ({name, width, height}) => {
  const canvas = document.createElement('canvas');
  canvas.width = width; canvas.height = height;
  const ctx = canvas.getContext('2d');
  const gradient = ctx.createLinearGradient(0, 0, width, height);
  gradient.addColorStop(0, '#2563eb'); gradient.addColorStop(1, '#f59e0b');
  ctx.fillStyle = gradient; ctx.fillRect(0, 0, width, height);
  ctx.fillStyle = '#fff'; ctx.font = `${Math.round(height / 4)}px sans-serif`; ctx.fillText('Sluice', width / 10, height / 1.8);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
  return new File([blob], name, {type: 'image/png'});
}"""

PASTE = f"""async (spec) => {{
  const file = await ({MAKE_FILE})(spec);
  const data = new DataTransfer();
  data.items.add(file);
  const event = new ClipboardEvent('paste', {{clipboardData: data, bubbles: true, cancelable: true}});
  document.getElementById('prompt').dispatchEvent(event);
  return event.defaultPrevented;
}}"""

DROP = f"""async (spec) => {{
  const file = await ({MAKE_FILE})(spec);
  const data = new DataTransfer();
  data.items.add(file);
  const target = document.getElementById('log');
  target.dispatchEvent(new DragEvent('dragover', {{dataTransfer: data, bubbles: true, cancelable: true}}));
  const event = new DragEvent('drop', {{dataTransfer: data, bubbles: true, cancelable: true}});
  target.dispatchEvent(event);
  return event.defaultPrevented;
}}"""


def noise_png(path: Path, width: int, height: int) -> Path:
    """An RGB PNG of random pixels (incompressible: about width × height × 3 bytes)."""
    rng = random.Random(14)
    rows = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b"")
    )
    return path


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame marker."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    at = 2
    while at < len(data):
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        at += 2 + length
    raise AssertionError("no start-of-frame marker")


def data_url_bytes(url: str) -> tuple[str, bytes]:
    head, _, payload = url.partition(",")
    return head, base64.b64decode(payload)


def open_settings(tab: Tab):
    toggle = tab.page.get_by_role("button", name="Settings", exact=True)
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    return tab.page.locator("#settings")


# ---------------------------------------------------------------- thinking


def test_thinking_streams_live_then_collapses(tab: Tab) -> None:
    tab.open()
    tab.choose_model("demo/think")
    message = "Why is the sky blue?"
    tab.send(message)
    block = tab.answer().locator("details.thinking")
    # Live: open, "Thinking… N s", growing, above the (still empty) answer.
    expect(block).to_have_attribute("data-phase", "live")
    expect(block).to_have_attribute("open", "")
    expect(block.locator("summary")).to_contain_text("Thinking…")
    expect(block.locator(".thinking-text")).to_contain_text("The user wrote")
    assert tab.answer().locator(".md").inner_text() == ""
    # Then the answer begins and the thoughts fold away: "Thought for N s", a click opens them.
    answer = tab.wait_answer("done")
    expect(block).to_have_attribute("data-phase", "done")
    expect(block.locator("summary")).to_have_text(re.compile(r"^Thought for \d+ s$"))
    expect(block).not_to_have_attribute("open", "")
    expect(block.locator(".thinking-text")).to_be_hidden()
    block.locator("summary").click()
    expect(block.locator(".thinking-text")).to_have_text(demo_reasoning(message))
    expect(answer.locator(".md")).to_contain_text(message)
    stored = tab.page.evaluate(STORED_OPEN)["messages"][1]
    assert stored["reasoning"] == demo_reasoning(message)
    assert stored["content"] == demo_answer(message)
    assert stored["thinking"]["endedAt"] >= stored["thinking"]["startedAt"]


def test_thinking_survives_a_reload_and_is_not_sent_back(tab: Tab, fake_ollama: FakeOllama) -> None:
    thoughts = [f"Step {i}: weigh it. " for i in range(40)]
    fake_ollama.push(Script(reasoning=thoughts, tokens=["Four", "."], delay_s=0.05))
    tab.open()
    tab.choose_model(OLLAMA)
    tab.send("What is 2 + 2?")
    block = tab.answer().locator("details.thinking")
    expect(block.locator(".thinking-text")).to_contain_text("Step 3:")
    tab.screenshot("thinking-live")
    tab.page.reload()
    # Restored mid-thought, still live, and followed on from where it was: no gap, no repeat.
    expect(block).to_have_attribute("data-phase", "live")
    expect(block.locator("summary")).to_contain_text("Thinking…")
    expect(block.locator(".thinking-text")).to_contain_text("Step 0: weigh it. Step 1:")
    answer = tab.wait_answer("done")
    expect(answer.locator(".md")).to_have_text("Four.")
    expect(block).to_have_attribute("data-phase", "done")
    expect(block.locator("summary")).to_contain_text("Thought for")
    tab.screenshot("thinking-collapsed")
    block.locator("summary").click()
    expect(block.locator(".thinking-text")).to_have_text("".join(thoughts).rstrip())
    assert tab.page.evaluate(STORED_OPEN)["messages"][1]["reasoning"] == "".join(thoughts)
    assert len(fake_ollama.requests) == 1

    # The next turn sends the answer's text, never its thoughts.
    fake_ollama.push(Script(reasoning=["Six, surely. "], tokens=["Six."]))
    tab.send("And 3 + 3?")
    expect(tab.wait_answer("done", 1).locator(".md")).to_have_text("Six.")
    body = fake_ollama.wait_requests(2)[1].body
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "What is 2 + 2?"),
        ("assistant", "Four."),
        ("user", "And 3 + 3?"),
    ]
    assert "Step" not in json.dumps(body) and "thinking" not in json.dumps(body["messages"])


# ---------------------------------------------------------------- settings, length, Continue


def test_settings_reach_the_upstream_and_show_under_the_answer(tab: Tab, fake_ollama: FakeOllama) -> None:
    tab.open()
    tab.choose_model(OLLAMA)
    panel = open_settings(tab)
    expect(panel.get_by_label("System prompt")).to_be_focused()
    panel.get_by_label("System prompt").fill("You answer in French.")
    panel.get_by_label("Temperature").fill("0.3")
    panel.get_by_label("Max tokens").fill("64")
    extra = panel.get_by_label("Extra")
    extra.fill('[{"options": 1}]')
    panel.get_by_role("button", name="Save settings").click()
    # Checked before use: a JSON array is not an object.
    expect(panel.get_by_role("alert")).to_contain_text("must be a JSON object")
    expect(extra).to_have_attribute("aria-invalid", "true")
    extra.fill('{"options": {"num_ctx": 8192}')
    panel.get_by_role("button", name="Save settings").click()
    expect(panel.get_by_role("alert")).to_contain_text("not valid JSON")
    extra.fill('{"options": {"num_ctx": 8192}, "keep_alive": "5m"}')
    expect(extra).not_to_have_attribute("aria-invalid", "true")
    expect(panel.get_by_role("alert")).to_be_hidden()
    tab.screenshot("settings")
    panel.get_by_role("button", name="Save settings").click()
    expect(panel).to_be_hidden()

    tab.send("Bonjour?")
    answer = tab.wait_answer("done")
    body = fake_ollama.last_body()
    assert body["messages"][0] == {"role": "system", "content": "You answer in French."}
    assert body["messages"][1]["content"] == "Bonjour?"
    assert body["options"]["temperature"] == 0.3
    assert body["options"]["num_predict"] == 64
    assert body["options"]["num_ctx"] == 8192
    assert body["keep_alive"] == "5m"
    expect(answer.locator(".settings-used")).to_have_text(
        'Settings: temperature 0.3 · max 64 tokens · system prompt · extra {"options":{"num_ctx":8192},"keep_alive":"5m"}'
    )
    # Kept with the conversation: reopened after a reload, the panel shows them.
    tab.page.reload()
    panel = open_settings(tab)
    expect(panel.get_by_label("Temperature")).to_have_value("0.3")
    expect(panel.get_by_label("System prompt")).to_have_value("You answer in French.")
    assert tab.page.evaluate(STORED_OPEN)["settings"]["extra"] == {"options": {"num_ctx": 8192}, "keep_alive": "5m"}


def test_cut_off_at_the_token_limit_then_continue_gives_one_answer(tab: Tab) -> None:
    message = "alpha beta gamma"  # 3 pieces, then the footer's 13
    tab.open()
    panel = open_settings(tab)
    panel.get_by_label("Max tokens").fill("10")
    panel.get_by_role("button", name="Save settings").click()
    tab.send(message)
    answer = tab.wait_answer("done")
    note = answer.locator(".finish-note")
    expect(note).to_contain_text("Cut off at the token limit")
    expect(tab.page.locator("#status")).to_contain_text("Cut off at the token limit")
    partial = tab.page.evaluate(STORED_OPEN)["messages"][1]["content"]
    assert demo_answer(message).startswith(partial) and partial != demo_answer(message)

    note.get_by_role("button", name="Continue this answer").click()
    answer = tab.wait_answer("done")
    expect(answer.locator(".finish-note")).to_have_count(0)
    expect(answer.locator(".code-block code.language-text")).to_contain_text("echo · 16 chars · 3 words")
    expect(tab.page.locator(ANSWER)).to_have_count(1)
    stored = tab.page.evaluate(STORED_OPEN)["messages"]
    assert len(stored) == 2
    assert stored[1]["content"] == demo_answer(message)
    assert stored[1]["finishReason"] == "stop"
    # The count is the whole answer's: 10 pieces, then 6.
    expect(answer.locator(".meta").first).to_contain_text("· 16 tokens")


def test_cut_off_while_thinking_then_continue_until_whole(tab: Tab) -> None:
    message = "alpha beta gamma"
    thoughts = demo_reasoning(message)
    tab.open()
    tab.choose_model("demo/think")
    panel = open_settings(tab)
    panel.get_by_label("Max tokens").fill("12")  # fewer than the thoughts' pieces
    panel.get_by_role("button", name="Save settings").click()
    tab.send(message)
    answer = tab.wait_answer("done")
    expect(answer.locator(".finish-note")).to_contain_text("Cut off at the token limit")
    expect(answer.locator("details.thinking summary")).to_contain_text("Thought for")
    stored = tab.page.evaluate(STORED_OPEN)["messages"][1]
    assert stored["content"] == "" and thoughts.startswith(stored["reasoning"]) and stored["reasoning"] != thoughts
    # Continue (no thoughts this time) as often as it is cut: 12 pieces, then the last 4.
    for _ in range(2):
        answer.get_by_role("button", name="Continue this answer").click()
        answer = tab.wait_answer("done")
    expect(answer.locator(".finish-note")).to_have_count(0)
    stored = tab.page.evaluate(STORED_OPEN)["messages"]
    assert len(stored) == 2 and stored[1]["content"] == demo_answer(message)
    assert thoughts.startswith(stored[1]["reasoning"])


def test_content_filter_and_refusal_are_shown_as_such(tab: Tab, fake_openai: FakeOpenAI) -> None:
    fake_openai.push(
        Script(tokens=["Here is how ", "to"], done_reason="content_filter"),
        Script(tokens=[], refusal=["I can't help ", "with that."]),
    )
    tab.open()
    tab.choose_model(OPENAI)
    tab.send("something borderline")
    answer = tab.wait_answer("done")
    expect(answer.locator(".md")).to_have_text("Here is how to")
    expect(answer.locator(".finish-note")).to_contain_text("Stopped by the provider's content filter.")
    expect(answer.get_by_role("button", name="Continue this answer")).to_have_count(0)
    expect(tab.page.locator("#status")).to_contain_text("content filter")

    tab.send("something worse")
    refused = tab.wait_answer("done", 1)
    box = refused.locator(".refusal-box")
    expect(box).to_contain_text("The model refused to answer.")
    expect(box.locator(".refusal-text")).to_have_text("I can't help with that.")
    expect(refused.locator(".md")).to_have_text("")
    stored = tab.page.evaluate(STORED_OPEN)["messages"]
    assert stored[1]["finishReason"] == "content_filter"
    assert stored[3]["refusal"] == "I can't help with that." and stored[3]["content"] == ""


def test_tool_call_is_a_card(tab: Tab, fake_openai: FakeOpenAI) -> None:
    fake_openai.push(
        Script(
            tokens=[],
            tool_calls=[{"id": "call_w1", "name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'}],
        )
    )
    tab.open()
    tab.choose_model(OPENAI)
    tab.send("Weather in Paris?")
    answer = tab.wait_answer("done")
    card = answer.get_by_role("region", name="Tool call: get_weather")
    expect(card.locator(".tool-name")).to_have_text("get_weather")
    expect(card.locator(".tool-id")).to_have_text("call_w1")
    expect(card.locator(".tool-args")).to_have_text('{\n  "city": "Paris",\n  "unit": "celsius"\n}')
    tab.screenshot("tool-call")
    stored = tab.page.evaluate(STORED_OPEN)["messages"][1]
    assert stored["finishReason"] == "tool_calls"
    assert stored["toolCalls"] == [
        {"index": 0, "id": "call_w1", "name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'}
    ]


def test_generation_started_through_the_api_is_followed_by_id(tab: Tab, fake_openai: FakeOpenAI) -> None:
    fake_openai.push(
        Script(
            tokens=["Let me look that up."],
            tool_calls=[
                {"id": "call_a", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
                {"id": "call_b", "name": "get_time", "arguments": '{"tz":"Europe/Oslo"}'},
            ],
            tool_args_chunk=3,
        )
    )
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    started = requests.post(
        tab.base_url + "/api/generations",
        json={"model": OPENAI, "messages": [{"role": "user", "content": "Oslo?"}], "tools": [tool]},
        timeout=5,
    )
    assert started.status_code == 202, started.text
    generation = started.json()["id"]
    tab.page.goto(f"{tab.base_url}/#{generation}")
    answer = tab.wait_answer("done")
    expect(answer.locator(".md")).to_have_text("Let me look that up.")
    cards = answer.locator(".tool-call")
    expect(cards).to_have_count(2)
    expect(cards.nth(0).locator(".tool-args")).to_have_text('{\n  "city": "Oslo"\n}')
    expect(cards.nth(1).locator(".tool-name")).to_have_text("get_time")
    expect(cards.nth(1).locator(".tool-args")).to_have_text('{\n  "tz": "Europe/Oslo"\n}')
    # Nothing here can send its request again; the hash is consumed, and following it twice opens the same chat.
    expect(answer.get_by_role("button", name="Regenerate this answer")).to_have_count(0)
    assert tab.page.evaluate("() => location.hash") == ""
    tab.page.evaluate("(id) => { location.hash = id; }", generation)
    tab.page.wait_for_function("() => location.hash === ''")
    expect(tab.page.locator("#conversations .conv")).to_have_count(1)
    assert len(fake_openai.requests) == 1


def test_thoughts_tool_calls_and_refusals_stay_inert(tab: Tab, fake_openai: FakeOpenAI) -> None:
    probe = tab.base_url + "/xss-probe"
    html = f'<img src="{probe}" onerror="window.__pwned = 1"><script>window.__pwned = 2</script>'
    fake_openai.push(
        Script(
            reasoning=[html],
            tokens=[],
            refusal=[html],
            tool_calls=[{"id": "call_x", "name": f"<b>{html}</b>", "arguments": json.dumps({"html": html})}],
        )
    )
    tab.open()
    tab.choose_model(OPENAI)
    tab.send("be dangerous")
    answer = tab.wait_answer("done")
    answer.locator("details.thinking summary").click()
    expect(answer.locator(".thinking-text")).to_have_text(html)
    expect(answer.locator(".refusal-text")).to_have_text(html)
    expect(answer.locator(".tool-name")).to_have_text(f"<b>{html}</b>")
    assert tab.page.evaluate("() => window.__pwned") is None
    assert (
        tab.page.evaluate(
            "() => document.querySelectorAll('#messages script, #messages .bubble img, #messages b').length"
        )
        == 0
    )
    assert not [url for url in tab.requests if "xss-probe" in url]


# ---------------------------------------------------------------- pictures


def test_pasted_picture_reaches_openai_as_an_image_url_part(tab: Tab, fake_openai: FakeOpenAI) -> None:
    tab.open()
    tab.choose_model(OPENAI)
    assert tab.page.evaluate(PASTE, {"name": "chart.png", "width": 640, "height": 400}) is True
    chips = tab.page.locator("#attachments .chip")
    expect(chips).to_have_count(1)
    expect(chips.locator("img")).to_have_attribute("alt", "chart.png")
    # Removable before sending.
    tab.page.get_by_role("button", name="Remove chart.png").click()
    expect(chips).to_have_count(0)
    tab.page.evaluate(PASTE, {"name": "chart.png", "width": 640, "height": 400})
    expect(chips).to_have_count(1)
    tab.send("What does this chart show?")
    answer = tab.wait_answer("done")
    expect(chips).to_have_count(0)
    sent = tab.page.locator("li.msg.user .attachments img")
    expect(sent).to_have_attribute("alt", "Attached image: chart.png")
    tab.page.wait_for_function("() => document.querySelector('li.msg.user .attachments img').naturalWidth > 0")
    # The thumbnail is a data: URL made in the page: the CSP allows that and no other image source.
    expect(sent).to_have_attribute("src", re.compile(r"^data:image/jpeg;base64,"))
    csp = requests.get(tab.base_url + "/", timeout=5).headers["Content-Security-Policy"]
    assert "img-src 'self' data:;" in csp and "blob:" not in csp
    tab.screenshot("image-message")
    expect(answer.locator(".md")).to_have_text("Hello, world!")

    content = fake_openai.last_body()["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "What does this chart show?"}
    assert content[1]["type"] == "image_url"
    head, data = data_url_bytes(content[1]["image_url"]["url"])
    assert head == "data:image/png;base64" and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (640, 400)
    # The message keeps a reference; the pixels are in IndexedDB, not localStorage.
    stored = tab.page.evaluate(STORED_OPEN)["messages"][0]
    assert [image["name"] for image in stored["images"]] == ["chart.png"] and "url" not in stored["images"][0]
    assert tab.page.evaluate(IDB_COUNT, tab.page.evaluate(OPEN_ID)) == 1


def test_dropped_picture_reaches_ollama_as_base64_images(tab: Tab, fake_ollama: FakeOllama) -> None:
    tab.open()
    tab.choose_model(OLLAMA)
    assert tab.page.evaluate(DROP, {"name": "photo.png", "width": 300, "height": 200}) is True
    expect(tab.page.locator("#attachments .chip")).to_have_count(1)
    tab.send("Describe it")
    tab.wait_answer("done")
    message = fake_ollama.last_body()["messages"][0]
    assert message["content"] == "Describe it"
    [image] = message["images"]
    data = base64.b64decode(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (300, 200)


def test_large_photo_is_scaled_down_before_sending(tab: Tab, fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    photo = noise_png(tmp_path / "holiday.png", 2400, 1500)
    assert photo.stat().st_size > 10_000_000
    tab.open()
    tab.choose_model(OPENAI)
    tab.page.locator("#attach-input").set_input_files(str(photo))
    chip = tab.page.locator("#attachments .chip")
    expect(chip).to_contain_text("2048×1280", timeout=20_000)
    expect(chip).to_contain_text("scaled from 10.")
    tab.send("Where was this?")
    tab.wait_answer("done")
    url = fake_openai.last_body()["messages"][0]["content"][1]["image_url"]["url"]
    head, data = data_url_bytes(url)
    assert head == "data:image/jpeg;base64"
    assert jpeg_size(data) == (2048, 1280)
    assert len(data) < photo.stat().st_size / 2


def test_refused_pictures_are_explained_in_place(tab: Tab, tmp_path: Path) -> None:
    tab.open()
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    tab.page.locator("#attach-input").set_input_files(str(text))
    expect(tab.page.locator("#attach-error")).to_contain_text("“notes.txt” is not a picture that can be attached")
    # demo/echo cannot see images: the server's refusal is shown in the answer.
    tab.page.evaluate(PASTE, {"name": "cat.png", "width": 64, "height": 64})
    expect(tab.page.locator("#attachments .chip")).to_have_count(1)
    expect(tab.page.locator("#attach-error")).to_be_hidden()
    tab.send("What is this?")
    alert = tab.wait_answer("error").get_by_role("alert")
    expect(alert).to_contain_text("This picture was refused.")
    expect(alert).to_contain_text("demo/echo cannot see images")
    tab.errors = [e for e in tab.errors if "400" not in e]


def test_deleting_a_conversation_frees_its_pictures(tab: Tab, fake_openai: FakeOpenAI) -> None:
    tab.open()
    tab.choose_model(OPENAI)
    tab.page.evaluate(PASTE, {"name": "one.png", "width": 120, "height": 90})
    tab.page.evaluate(PASTE, {"name": "two.png", "width": 90, "height": 120})
    expect(tab.page.locator("#attachments .chip")).to_have_count(2)
    tab.send("Two pictures")
    tab.wait_answer("done")
    assert len(fake_openai.last_body()["messages"][0]["content"]) == 3
    conversation = tab.page.evaluate(OPEN_ID)
    assert tab.page.evaluate(IDB_COUNT, conversation) == 2
    tab.page.get_by_role("button", name="Delete “Two pictures”").click()
    tab.page.get_by_role("button", name="Delete “Two pictures” for good").click()
    expect(tab.page.locator("#conversations .conv")).to_have_count(0)
    tab.page.wait_for_function(f"async (id) => (await ({IDB_COUNT})(id)) === 0", arg=conversation)


# ---------------------------------------------------------------- export, import


def test_export_then_import_gives_back_the_same_conversation(tab: Tab, fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    tab.open()
    tab.choose_model("demo/think")
    tab.send("Think first")
    tab.wait_answer("done")
    tab.choose_model(OPENAI)
    tab.page.evaluate(PASTE, {"name": "plot.png", "width": 200, "height": 100})
    expect(tab.page.locator("#attachments .chip")).to_have_count(1)
    tab.send("And this picture?")
    tab.wait_answer("done", 1)
    original = tab.page.evaluate(STORED_OPEN)
    sent_image = fake_openai.last_body()["messages"][2]["content"][1]["image_url"]["url"]

    with tab.page.expect_download() as markdown_download:
        tab.page.get_by_role("button", name="Export this chat as Markdown").click()
    assert markdown_download.value.suggested_filename == "think-first.md"
    markdown = Path(markdown_download.value.path()).read_text()
    assert markdown.startswith("# Think first\n")
    assert "## You\n\nThink first" in markdown and "> **Thinking**" in markdown
    assert "*[image: plot.png, 200×100]*" in markdown and "## Assistant (openai/gpt-4o-mini)" in markdown

    with tab.page.expect_download() as json_download:
        tab.page.get_by_role("button", name="Export this chat as JSON").click()
    exported = tmp_path / "chat.json"
    json_download.value.save_as(exported)
    data = json.loads(exported.read_text())
    assert data["format"] == "sluice.conversation"
    assert data["conversation"]["messages"][2]["images"][0]["url"] == sent_image

    # Gone from this browser, then imported back.
    tab.page.get_by_role("button", name="Delete “Think first”").click()
    tab.page.get_by_role("button", name="Delete “Think first” for good").click()
    expect(tab.page.locator("#conversations .conv")).to_have_count(0)
    tab.page.locator("#import-input").set_input_files(str(exported))
    expect(tab.page.locator("#conversations .conv-open")).to_have_text(["Think first"])
    expect(tab.page.locator("#title")).to_have_text("Think first")
    expect(tab.page.locator(ANSWER)).to_have_count(2)
    expect(tab.answer(0).locator("details.thinking summary")).to_contain_text("Thought for")
    expect(tab.page.locator("li.msg.user .attachments img")).to_have_attribute("alt", "Attached image: plot.png")

    imported = tab.page.evaluate(STORED_OPEN)
    assert imported["id"] != original["id"] and imported["title"] == original["title"]

    def comparable(message: dict) -> dict:
        keep = {k: v for k, v in message.items() if k not in ("generation", "continuing", "images")}
        keep["images"] = [{k: v for k, v in image.items() if k != "id"} for image in message.get("images", [])]
        return keep

    assert [comparable(m) for m in imported["messages"]] == [comparable(m) for m in original["messages"]]
    # The picture came back into IndexedDB: asking again sends the same bytes.
    assert tab.page.evaluate(IDB_COUNT, imported["id"]) == 1
    tab.page.get_by_role("button", name="Regenerate this answer").click()
    tab.wait_answer("done", 1)
    assert fake_openai.wait_requests(2)[1].body["messages"][2]["content"][1]["image_url"]["url"] == sent_image


# ---------------------------------------------------------------- comfort


def test_phone_width_dark_theme_and_keyboard(browser, page_server, fake_openai: FakeOpenAI) -> None:
    phone = phone_tab(browser, page_server.url)
    try:
        phone.open()
        phone.choose_model(OPENAI)
        fake_openai.push(
            Script(reasoning=["Looking at the picture. ", "It is a gradient."], tokens=["A gradient."], delay_s=0.02)
        )
        phone.page.evaluate(PASTE, {"name": "gradient.png", "width": 800, "height": 500})
        expect(phone.page.locator("#attachments .chip")).to_have_count(1)
        phone.send("What is it?")
        answer = phone.wait_answer("done")
        expect(answer.locator("details.thinking summary")).to_contain_text("Thought for")
        # The thoughts open and close from the keyboard (a native <details>).
        summary = answer.locator("details.thinking summary")
        summary.focus()
        phone.page.keyboard.press("Enter")
        expect(answer.locator(".thinking-text")).to_have_text("Looking at the picture. It is a gradient.")
        # Settings: opened from the keyboard, closed with Escape, focus back on the button.
        toggle = phone.page.get_by_role("button", name="Settings", exact=True)
        toggle.focus()
        phone.page.keyboard.press("Enter")
        expect(phone.page.get_by_label("System prompt")).to_be_focused()
        phone.screenshot("phone-settings-dark")
        assert phone.page.evaluate("() => document.documentElement.scrollWidth") <= 375
        phone.page.keyboard.press("Escape")
        expect(phone.page.locator("#settings")).to_be_hidden()
        expect(toggle).to_be_focused()
        phone.screenshot("phone-image-thinking-dark")
        assert phone.page.evaluate("() => document.documentElement.scrollWidth") <= 375
        assert phone.errors == [] and phone.dialogs == []
    finally:
        phone.close()
