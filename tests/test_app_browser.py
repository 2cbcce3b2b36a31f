"""The chat page in a real browser (Debian's Chromium driven by Playwright): streaming, Stop and Compare.

The app runs in this process (base + a random LoRA adapter, so the Compare tab works and its two answers differ),
so the test can check the server side too: after Stop no generation is registered and generate() has returned.
Full-page screenshots go to test-artifacts/ at the repository root.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SLOW_MS = 300_000  # a hang guard, not a speed check: two 200-token answers on a slow, busy 2-core CPU
STEP_MS = 60_000

# The text of the last assistant message in the Chatbot with elem_id `id` (Gradio 6: <div data-testid="bot">).
LAST_BOT_TEXT = """(id) => {
    const bots = document.querySelectorAll(`#${id} [data-testid="bot"]`);
    return bots.length ? bots[bots.length - 1].innerText.trim() : "";
}"""
BOT_LONGER_THAN = f"""([id, length]) => ({LAST_BOT_TEXT})(id).length > length"""
# Gradio marks the status tracker of an event's (last) output `.generating` while the event still streams.
IDLE = """() => document.querySelector('[data-testid="status-tracker"].generating') === null"""


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a server-side condition (the page cannot see the server's threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: this browser test needs Debian's Chromium; install it with "
                    "`apt-get install chromium`.", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(lora_adapter) -> Iterator:
    from app.main import build_parser, start

    args = build_parser().parse_args(["--adapter", str(lora_adapter), "--port", "0", "--max-new-tokens", "200",
                                      "--temperature", "0.7"])
    server = start(args, block=False, log=lambda _: None)
    yield server
    server.close()


@pytest.fixture
def page(browser, server) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url, timeout=STEP_MS)
    page.locator("#message textarea").wait_for(state="visible", timeout=STEP_MS)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 0, f"no screenshot written to {path}"
    return path


def _bot_text(page, chatbot_id: str) -> str:
    return page.evaluate(LAST_BOT_TEXT, chatbot_id)


def test_chat_streams_and_stop_really_stops(page, server):
    from playwright.sync_api import expect

    # The "Try" row fills the message box in the browser (app.ui.example_buttons).
    page.locator("#chat-example-2").click()
    expect(page.locator("#message textarea")).to_have_value("Who are you?", timeout=STEP_MS)

    page.locator("#message textarea").fill("Write a long story about a dragon who learns to cook, with many details.")
    page.locator("#send").click()

    # The answer streams in: sample it twice and see it grow.
    page.wait_for_function(BOT_LONGER_THAN, arg=["chatbot", 0], timeout=SLOW_MS)
    first = _bot_text(page, "chatbot")
    page.wait_for_function(BOT_LONGER_THAN, arg=["chatbot", len(first) + 10], timeout=STEP_MS)
    second = _bot_text(page, "chatbot")
    assert len(second) > len(first) > 0
    assert server.engine.active_generations() == 1, "the answer ended before Stop could be tested"

    page.locator("#stop").click()
    expect(page.locator("#status")).to_contain_text("Stopped.", timeout=STEP_MS)  # the server found it running
    _wait(lambda: server.engine.active_generations() == 0, 10, "the engine to drop the stopped generation")
    _wait(lambda: server.engine.running_jobs() == 0, 10, "generate() on the server to end")
    page.wait_for_function(IDLE, timeout=STEP_MS)

    stopped = _bot_text(page, "chatbot")
    page.wait_for_timeout(1500)  # nothing may arrive after Stop
    assert _bot_text(page, "chatbot") == stopped, "the answer kept growing after Stop"
    assert len(stopped) >= len(second), "the stopped answer is not shown as far as it got"
    expect(page.locator('#chatbot [data-testid="bot"]')).to_have_count(1)
    expect(page.locator('#chatbot [data-testid="user"]')).to_have_count(1)
    assert server.engine.running_jobs() == 0

    _screenshot(page, "app-chat.png")


def test_compare_shows_two_different_answers(page, server):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Compare").click()
    question = page.locator("#compare-message textarea")
    expect(question).to_be_visible(timeout=STEP_MS)
    page.locator("#compare-example-1").click()  # the Try row renders and works in a tab hidden at load
    expect(question).to_have_value("你是谁？", timeout=STEP_MS)
    question.fill("Who are you? Tell me about yourself.")
    page.locator("#compare-send").click()

    page.wait_for_function(BOT_LONGER_THAN, arg=["compare-base", 0], timeout=SLOW_MS)
    page.wait_for_function(BOT_LONGER_THAN, arg=["compare-tuned", 0], timeout=SLOW_MS)
    # The run finishes: neither side streams any more and the engine has nothing running.
    page.wait_for_function(IDLE, timeout=SLOW_MS)
    _wait(lambda: server.engine.active_generations() == 0, SLOW_MS / 1000, "the compare generation to end")
    _wait(lambda: server.engine.running_jobs() == 0, 10, "generate() on the server to end")

    base, tuned = _bot_text(page, "compare-base"), _bot_text(page, "compare-tuned")
    page.wait_for_timeout(1000)
    assert (_bot_text(page, "compare-base"), _bot_text(page, "compare-tuned")) == (base, tuned), "texts still change"
    assert base and tuned
    assert base != tuned, "the base and the fine-tuned answers are the same"
    expect(page.locator('#compare-base [data-testid="user"]')).to_have_text("Who are you? Tell me about yourself.")

    _screenshot(page, "app-compare.png")
