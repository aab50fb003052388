"""The chat page (``GET /``) end to end, in real headless Chromium.

Debian's ``chromium`` (``/usr/bin/chromium``) is driven by Playwright for
Python against Sluice under gunicorn + gevent, with the demo provider and the
fake upstreams. Nothing sleeps: every wait is Playwright's auto-waiting
``expect``/``wait_for_function`` or a fake's ``wait_*`` with a deadline.
Screenshots go to ``tests/artifacts/page/`` (git-ignored); two of them are
copied by hand to ``docs/screenshots/`` for the documentation.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright import sync_api as playwright_api
from playwright.sync_api import expect

from tests.conftest import BASE_SETTINGS, Server, launch_server, upstream_settings
from tests.fakes import FakeOllama, Script

pytestmark = pytest.mark.slow


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "page"
TIMEOUT_MS = 10_000
DEMO_DELAY_MS = "40"  # slow enough to watch the answer grow

ANSWER = "li.msg.assistant"


def closed_port() -> int:
    """A local port with nothing listening on it (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_answer(message: str) -> str:
    """What demo/echo streams back for ``message`` (docs/api.md, "Models")."""
    footer = f"echo · {len(message)} chars · {len(message.split())} words · ✓ 🙂"
    return f"{message}\n\n```text\n{footer}\n```"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def page_server(tmp_path_factory, ollama_upstream, openai_upstream) -> Iterator[Server]:
    """Sluice with a demo model slow enough to see tokens arrive, pointed at the fakes."""
    settings = {
        **BASE_SETTINGS,
        **upstream_settings(ollama_upstream, openai_upstream),
        "SLUICE_DEMO_DELAY_MS": DEMO_DELAY_MS,
    }
    server = launch_server(tmp_path_factory.mktemp("page-server"), settings)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` (system-deps) installs Debian's chromium")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


def phone_tab(browser, base_url: str) -> Tab:
    """A dark-theme phone: 375 px wide, touch, reduced motion."""
    return Tab(
        browser,
        base_url,
        color_scheme="dark",
        viewport={"width": 375, "height": 740},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
        reduced_motion="reduce",
    )


class Tab:
    """One browser context (its own localStorage) and page, recording what must not happen."""

    def __init__(self, browser, base_url: str, **context_options) -> None:
        self.context = browser.new_context(**{"viewport": {"width": 1100, "height": 760}, **context_options})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.base_url = base_url
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        self.page.on("console", self._console)
        self.page.on("dialog", self._dialog)
        self.page.on("request", lambda request: self.requests.append(request.url))

    def _console(self, message) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(f"console: {message.text}")

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self) -> None:
        self.page.goto(self.base_url + "/")
        expect(self.page.locator("#prompt")).to_be_focused()

    def send(self, text: str) -> None:
        """Type ``text`` as a person would: Shift+Enter between lines, Enter to send."""
        prompt = self.page.locator("#prompt")
        prompt.click()
        for i, line in enumerate(text.split("\n")):
            if i:
                prompt.press("Shift+Enter")
            self.page.keyboard.insert_text(line)
        prompt.press("Enter")

    def choose_model(self, model: str) -> None:
        select = self.page.locator("#model")
        expect(select.locator(f'option[value="{model}"]')).to_have_count(1)
        select.select_option(model)

    def answer(self, n: int = -1):
        answers = self.page.locator(ANSWER)
        return answers.nth(n) if n >= 0 else answers.last

    def wait_answer(self, state: str = "done", n: int = -1):
        answer = self.answer(n)
        expect(answer).to_have_attribute("data-state", state)
        return answer

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser, page_server) -> Iterator[Tab]:
    tab = Tab(browser, page_server.url)
    yield tab
    tab.close()
    assert tab.errors == [], tab.errors
    assert tab.dialogs == [], tab.dialogs


# ---------------------------------------------------------------- conversation


def test_answer_streams_token_by_token_and_renders_markdown(tab: Tab) -> None:
    tab.open()
    tab.screenshot("empty")
    message = (
        "Show me a loop, please:\n```python\nfor i in range(3):\n    print(i)\n```\n"
        "and then a short summary of what it does in plain words"
    )
    tab.send(message)

    body = tab.answer().locator(".md")
    # The answer is seen growing at least twice before its end, with the caret live.
    first = tab.page.wait_for_function(
        """() => { const a = [...document.querySelectorAll('li.msg.assistant')].pop();
                   return a && a.dataset.state === 'streaming' && a.querySelector('.caret')
                          && a.querySelector('.md').textContent.length > 0
                          && a.querySelector('.md').textContent.length; }"""
    ).json_value()
    tab.page.wait_for_function(
        """(before) => { const a = [...document.querySelectorAll('li.msg.assistant')].pop();
                         return a.dataset.state === 'streaming' && a.querySelector('.md').textContent.length > before; }""",
        arg=first,
    )
    expect(tab.page.locator("#stop")).to_be_visible()
    tab.screenshot("mid-stream")

    answer = tab.wait_answer("done")
    expect(answer.locator(".caret")).to_have_count(0)
    expect(body).to_have_attribute("aria-busy", "false")
    # Markdown: the fenced code is highlighted, with its language and a copy button.
    python = answer.locator(".code-block", has_text="python")
    expect(python.locator("code.language-python .hljs-keyword").first).to_have_text("for")
    expect(python.locator("button.copy-code")).to_be_visible()
    expect(answer.locator(".code-block code.language-text")).to_contain_text(
        demo_answer(message).split("```text\n")[1].split("\n")[0]
    )
    expect(answer.locator(".meta")).to_contain_text("demo/echo")
    expect(answer.locator(".meta")).to_contain_text("first token")
    expect(answer.locator(".meta")).to_contain_text("tokens/s")
    expect(tab.page.locator("#send")).to_be_visible()
    # The whole answer is kept in localStorage, byte for byte.
    stored = tab.page.evaluate(
        "() => JSON.parse(localStorage.getItem('sluice.v1.conv.' + JSON.parse(localStorage.getItem('sluice.v1.open'))))"
    )
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["messages"][0]["content"] == message
    assert stored["messages"][1]["content"] == demo_answer(message)
    tab.screenshot("finished-with-code")


def test_multi_turn_sends_the_whole_conversation(tab: Tab, fake_ollama: FakeOllama) -> None:
    tab.open()
    tab.choose_model("ollama/llama3:latest")
    tab.send("first question")
    expect(tab.wait_answer("done")).to_contain_text("Hello, world!")
    tab.send("second question")
    tab.wait_answer("done", 1)
    requests_seen = fake_ollama.wait_requests(2)
    assert [(m["role"], m["content"]) for m in requests_seen[1].body["messages"]] == [
        ("user", "first question"),
        ("assistant", "Hello, world!"),
        ("user", "second question"),
    ]
    # The conversation is named after its first message, and stays so.
    expect(tab.page.locator("#conversations .conv-open")).to_have_text(["first question"])


def test_regenerate_and_edit_and_resend(tab: Tab, fake_ollama: FakeOllama) -> None:
    tab.open()
    tab.choose_model("ollama/llama3:latest")
    tab.send("one")
    tab.wait_answer("done")

    fake_ollama.push(Script(tokens=["Another", " answer"]))
    tab.page.get_by_role("button", name="Regenerate this answer").click()
    expect(tab.wait_answer("done")).to_contain_text("Another answer")
    expect(tab.page.locator(ANSWER)).to_have_count(1)
    second = fake_ollama.wait_requests(2)[1]
    assert [m["content"] for m in second.body["messages"]] == ["one"]

    tab.page.get_by_role("button", name="Edit and resend this message").click()
    editor = tab.page.get_by_role("textbox", name="Edit your message")
    editor.fill("uno")
    editor.press("Enter")
    expect(tab.page.locator("li.msg.user .text")).to_have_text(["uno"])
    tab.wait_answer("done")
    third = fake_ollama.wait_requests(3)[2]
    assert [m["content"] for m in third.body["messages"]] == ["uno"]


# ---------------------------------------------------------------- control and durability


def test_stop_closes_the_upstream(tab: Tab, fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Script(tokens=[f"t{i} " for i in range(400)], delay_s=0.03))
    tab.open()
    tab.choose_model("ollama/llama3:latest")
    tab.send("talk for a long time")
    expect(tab.answer().locator(".md")).to_contain_text("t3")
    tab.page.locator("#stop").click()
    fake_ollama.wait_disconnect(5)
    answer = tab.wait_answer("stopped")
    expect(answer.locator(".meta")).to_contain_text("stopped")
    expect(tab.page.locator("#send")).to_be_visible()
    expect(tab.page.locator("#status")).to_have_text("Stopped.")


def test_reload_mid_answer_resumes_without_gap_or_repeat(tab: Tab, fake_ollama: FakeOllama) -> None:
    tokens = [f"w{i} " for i in range(100)]
    fake_ollama.push(Script(tokens=tokens, delay_s=0.04))
    tab.open()
    tab.choose_model("ollama/llama3:latest")
    tab.send("count for me")
    expect(tab.answer().locator(".md")).to_contain_text("w5 ")
    tab.requests.clear()

    tab.page.reload()
    # Restored from localStorage, then followed from where it was to the end.
    expect(tab.answer().locator(".md")).to_contain_text("w0 w1 w2")
    answer = tab.wait_answer("done")
    expect(answer.locator(".md")).to_have_text("".join(tokens).strip())
    stored = tab.page.evaluate(
        "() => JSON.parse(localStorage.getItem('sluice.v1.conv.' + JSON.parse(localStorage.getItem('sluice.v1.open'))))"
    )
    assert stored["messages"][1]["content"] == "".join(tokens)
    # One generation upstream, resumed (not restarted) from where the page was.
    assert len(fake_ollama.requests) == 1
    resumed = [url for url in tab.requests if "/events" in url]
    assert resumed and "?after=" in resumed[0], resumed


# ---------------------------------------------------------------- safety


def test_model_output_cannot_run_script_or_load_anything(tab: Tab, fake_ollama: FakeOllama) -> None:
    probe = tab.base_url + "/xss-probe"
    payload = [
        "<scr",
        "ipt>window.__pwned = 1; alert(1)</script>\n\n",
        f'<img src={probe}-img onerror="window.__pwned = 2; alert(2)">\n\n',
        "[click me](javascript:window.__pwned=3)\n\n",
        '<a href="javascript:window.__pwned=4">raw link</a>\n\n',
        f"![pixel]({probe}-pixel)\n\n",
        f'<iframe src="{probe}-frame"></iframe>\n\n',
        '<svg onload="window.__pwned=5"></svg> end',
    ]
    fake_ollama.push(Script(tokens=payload))
    tab.open()
    tab.choose_model("ollama/llama3:latest")
    tab.send('<img src=x onerror="window.__pwned=6"> say something dangerous')
    answer = tab.wait_answer("done")
    expect(answer.locator(".md")).to_contain_text("end")
    for link in answer.locator(".md a:not([href^='http'])").all():
        link.click()
    assert tab.page.evaluate("() => window.__pwned") is None
    unsafe = tab.page.evaluate(
        """() => [...document.querySelectorAll('#messages *')].filter((el) =>
                 ['SCRIPT', 'IMG', 'IFRAME', 'SVG', 'svg'].includes(el.tagName)
                 || [...el.attributes].some((a) => a.name.startsWith('on') || /^\\s*javascript:/i.test(a.value))
               ).map((el) => el.outerHTML)"""
    )
    assert unsafe == []
    assert not [url for url in tab.requests if "xss-probe" in url]
    # The text is shown, inert.
    expect(answer.locator(".md")).to_contain_text("<script>window.__pwned = 1; alert(1)</script>")
    expect(tab.page.locator("li.msg.user .text")).to_contain_text("<img src=x")


# ---------------------------------------------------------------- models, errors, keys


def test_default_settings_answer_with_the_real_local_model(browser, tmp_path, ollama_upstream, openai_upstream) -> None:
    # Nothing set but the fake upstreams: the local model is on and is the default, as after `make run`.
    server = launch_server(tmp_path, upstream_settings(ollama_upstream, openai_upstream))
    tab = Tab(browser, server.url)
    try:
        tab.open()
        expect(tab.page.locator("#model")).to_have_value("local/smollm2-135m")
        tab.send("Say hello.")
        answer = tab.answer()
        # The page sends no token limit and the model samples: most answers take a second, a few ramble on.
        expect(answer).to_have_attribute("data-state", "done", timeout=120_000)
        expect(answer.locator(".md")).not_to_be_empty()
        expect(answer.locator(".meta")).to_contain_text("local/smollm2-135m")
        expect(answer.locator(".meta")).to_contain_text("tokens/s")
        stored = tab.page.evaluate(
            "() => JSON.parse(localStorage.getItem('sluice.v1.conv.' + JSON.parse(localStorage.getItem('sluice.v1.open'))))"
        )
        reply = stored["messages"][1]["content"]
        assert reply.strip() and "echo ·" not in reply  # the model's words, not the demo's echo
        tab.screenshot("local-model")
        assert tab.errors == [], tab.errors
    finally:
        tab.close()
        server.stop()


def test_model_picker_lists_upstream_models_and_remembers_the_choice(tab: Tab) -> None:
    tab.open()
    options = tab.page.locator("#model option")
    expect(options.filter(has_text="ollama/mistral:latest")).to_have_count(1)
    values = options.evaluate_all("(els) => els.map((e) => e.value)")
    for model in ("demo/echo", "ollama/llama3:latest", "ollama/mistral:latest", "openai/gpt-4o-mini"):
        assert model in values, values
    assert tab.page.locator("#model").input_value() == "demo/echo"
    tab.choose_model("ollama/mistral:latest")
    tab.page.reload()
    expect(tab.page.locator("#model option").filter(has_text="ollama/mistral:latest")).to_have_count(1)
    expect(tab.page.locator("#model")).to_have_value("ollama/mistral:latest")


def test_unreachable_provider_is_shown_not_hidden(browser, start_server) -> None:
    server = start_server(OLLAMA_BASE_URL=f"http://127.0.0.1:{closed_port()}")
    tab = Tab(browser, server.url)
    try:
        tab.open()
        expect(tab.page.locator("#model optgroup[label='ollama (unavailable)']")).to_have_count(1)
        expect(tab.page.locator("#providers")).to_contain_text("ollama")
        expect(tab.page.locator("#model option[value='demo/echo']")).to_have_count(1)
        assert tab.errors == []
    finally:
        tab.close()


def test_upstream_failure_shows_the_error_and_retry_works(tab: Tab, fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Script(status=500, error_message="model exploded"))
    tab.open()
    tab.choose_model("ollama/llama3:latest")
    tab.send("hello?")
    answer = tab.wait_answer("error")
    alert = answer.get_by_role("alert")
    expect(alert).to_contain_text("The model's provider answered with an error.")
    expect(tab.page.locator("#status")).to_contain_text("Error")
    tab.screenshot("error")
    alert.get_by_role("button", name="Retry").click()
    answer = tab.wait_answer("done")
    expect(answer.locator(".md")).to_have_text("Hello, world!")
    expect(answer.get_by_role("alert")).to_have_count(0)
    assert len(fake_ollama.wait_requests(2)) == 2


def test_api_key_is_asked_for_and_sent(browser, start_server) -> None:
    server = start_server(SLUICE_API_KEYS="page-test-key", SLUICE_DEMO_DELAY_MS="5")
    probe = requests.post(
        server.url + "/api/generations", json={"messages": [{"role": "user", "content": "x"}]}, timeout=5
    )
    assert probe.status_code == 401
    tab = Tab(browser, server.url)
    try:
        tab.open()
        expect(tab.page.locator("#auth")).to_be_visible()  # /api/models said 401
        tab.send("secret hello")
        answer = tab.wait_answer("error")
        expect(answer.get_by_role("alert")).to_contain_text("needs an API key")
        answer.get_by_label("API key").fill("page-test-key")
        answer.get_by_role("button", name="Use key and retry").click()
        # The events now come through fetch() with the key (EventSource cannot send it).
        expect(tab.wait_answer("done").locator(".md")).to_contain_text("secret hello")
        assert tab.page.evaluate("() => sessionStorage.getItem('sluice.apiKey')") == "page-test-key"
        assert tab.page.evaluate("() => localStorage.getItem('sluice.apiKey')") is None
        tab.errors = [e for e in tab.errors if "401" not in e]
        assert tab.errors == []
    finally:
        tab.close()


# ---------------------------------------------------------------- comfort


def test_dark_theme_and_phone_width(browser, page_server) -> None:
    dark = Tab(browser, page_server.url, color_scheme="dark")
    phone = phone_tab(browser, page_server.url)
    try:
        for tab in (dark, phone):
            tab.open()
            background = tab.page.evaluate("() => getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(21, 23, 28)", background
            tab.send("A table:\n| a | b |\n|---|--:|\n| 1 | 2 |\n```js\nconst x = [1, 2, 3].map((n) => n * 2);\n```")
            tab.wait_answer("done")
        dark.screenshot("dark")
        phone.screenshot("phone")
        # Nothing wider than the phone; the sidebar is a drawer behind the menu button.
        assert phone.page.evaluate("() => document.documentElement.scrollWidth") <= 375
        expect(phone.page.locator("#sidebar")).not_to_be_visible()
        menu = phone.page.get_by_role("button", name="Conversations")
        menu.click()
        expect(phone.page.locator("#sidebar")).to_be_visible()
        expect(menu).to_have_attribute("aria-expanded", "true")
        phone.screenshot("phone-drawer")
        phone.page.keyboard.press("Escape")
        expect(phone.page.locator("#sidebar")).not_to_be_visible()
        assert dark.errors == [] and phone.errors == []
    finally:
        dark.close()
        phone.close()


def test_history_rename_delete_and_new_chat(tab: Tab) -> None:
    tab.open()
    tab.send("first chat")
    tab.wait_answer("done")
    tab.page.get_by_role("button", name="New chat").click()
    expect(tab.page.locator("#empty")).to_be_visible()
    tab.send("second chat")
    tab.wait_answer("done")
    items = tab.page.locator("#conversations .conv-open")
    expect(items).to_have_text(["second chat", "first chat"])

    tab.page.get_by_role("button", name="Rename “first chat”").click()
    name = tab.page.get_by_role("textbox", name="Conversation name")
    name.fill("Renamed")
    name.press("Enter")
    expect(items).to_have_text(["second chat", "Renamed"])

    tab.page.reload()
    expect(items).to_have_text(["second chat", "Renamed"])
    expect(tab.page.locator("li.msg.user .text")).to_have_text(["second chat"])
    items.filter(has_text="Renamed").click()
    expect(tab.page.locator("li.msg.user .text")).to_have_text(["first chat"])
    expect(tab.page.locator("#title")).to_have_text("Renamed")

    tab.page.get_by_role("button", name="Delete “Renamed”").click()
    tab.page.get_by_role("button", name="Delete “Renamed” for good").click()
    expect(items).to_have_text(["second chat"])
    expect(tab.page.locator("li.msg.user .text")).to_have_text(["second chat"])


def test_autoscroll_stops_when_reading_up_and_offers_jump(tab: Tab, fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Script(tokens=[f"line {i}\n\n" for i in range(150)], delay_s=0.02))
    tab.open()
    tab.choose_model("ollama/llama3:latest")
    tab.send("many lines")
    expect(tab.answer().locator(".md")).to_contain_text("line 30")
    log = tab.page.locator("#log")
    log.evaluate("(el) => el.scrollTo({top: 0})")
    jump = tab.page.get_by_role("button", name="Jump to latest")
    expect(jump).to_be_visible()
    tab.wait_answer("done")
    assert log.evaluate("(el) => el.scrollTop") < 50  # it did not pull the reader down
    jump.click()
    tab.page.wait_for_function(
        "() => { const el = document.getElementById('log'); return el.scrollHeight - el.scrollTop - el.clientHeight < 50; }"
    )
    expect(jump).to_be_hidden()


def test_classic_minimal_page_still_works(tab: Tab) -> None:
    minimal = (Path(__file__).resolve().parent.parent / "examples" / "minimal.html").read_text()
    url = tab.base_url + "/minimal.html"
    tab.page.route(url, lambda route: route.fulfill(body=minimal, content_type="text/html"))
    tab.page.goto(url)
    expect(tab.page.locator("#out")).to_have_text(demo_answer("Hello, Sluice"))


def test_keyboard_reaches_every_control(tab: Tab) -> None:
    tab.open()
    tab.send("hello")
    tab.wait_answer("done")
    tab.page.locator("body").focus()
    seen = []
    for _ in range(20):
        tab.page.keyboard.press("Tab")
        seen.append(
            tab.page.evaluate(
                "() => document.activeElement.id || document.activeElement.getAttribute('aria-label')"
                " || document.activeElement.textContent.trim()"
            )
        )
    for control in (
        "Skip to the message box",
        "new-chat",
        "hello",
        "Rename “hello”",
        "model",
        "Edit and resend this message",
        "Copy this answer",
        "Regenerate this answer",
        "prompt",
        "send",
    ):
        assert control in seen, (control, seen)
