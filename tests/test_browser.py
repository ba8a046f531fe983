"""The demo page in a real headless Chromium: send, stream, stop, reload, partial kept.

Runs the one-command demo (``python -m examples.demo --framework NAME``) on a free port of
127.0.0.1 with a fresh SQLite file, and drives Debian's Chromium through Playwright.
Skips, with the reason, where Chromium or Playwright is missing; under ``CI=true`` that
fails the run instead, unless ``CHATKIT_TEST_NO_BROWSER=1`` says to go without a browser
(``tests.needs``).
"""

from __future__ import annotations

import shutil
import struct
import sys
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.needs import installed, missing, opted_out
from tests.realserver import free_port, serving

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FRAMEWORKS = ["starlette", "flask"]  # one async and one sync framework

SAVED_POLL = """async () => {
    const threadId = localStorage.getItem("chatkit-demo-thread");
    for (let poll = 0; poll < 60; poll++) {
        const response = await fetch("/chatkit", {
            method: "POST",
            headers: {"Content-Type": "application/json"},
            body: JSON.stringify({type: "threads.get_by_id", params: {thread_id: threadId}}),
        });
        const thread = await response.json();
        if (thread.items.data.some(item => item.type === "assistant_message")) return poll;
        await new Promise(resolve => setTimeout(resolve, 50));
    }
    return -1;
}"""


@pytest.fixture
def demo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    framework = request.param
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
        "ATTACHMENTS_URL": str(tmp_path / "files"),
        "DEMO_WORD_DELAY": "0.1",
        "OPENAI_API_KEY": None,  # the embedded default model, whatever the machine has
    }
    argv = [sys.executable, "-m", "examples.demo", "--framework", framework, "--port", str(port)]

    def page_loads() -> bool:
        return bool(urllib.request.urlopen(url, timeout=1).read())

    with serving(argv, tmp_path / "demo.log", page_loads, env, timeout=30):
        yield url


@pytest.mark.parametrize("demo", FRAMEWORKS, indirect=True)
def test_send_stream_stop_reload_keeps_partial_answer(demo: str) -> None:
    if opted_out("CHATKIT_TEST_NO_BROWSER"):
        missing("no browser wanted", "CHATKIT_TEST_NO_BROWSER")
    if CHROMIUM is None:
        missing("Chromium is not installed (Debian package 'chromium')", "CHATKIT_TEST_NO_BROWSER")
    if not installed("playwright"):
        missing("playwright is not installed", "CHATKIT_TEST_NO_BROWSER")
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page()
            page.goto(demo)
            page.fill("#input", "Tell me about streaming")
            page.click("#send")
            assistant = page.locator(".assistant_message").last
            # streaming: the text grows while the request is still open
            page.wait_for_function(
                "document.querySelector('.assistant_message')?.textContent.split(' ').length >= 8"
            )
            first = assistant.text_content() or ""
            page.wait_for_function(
                f"document.querySelector('.assistant_message').textContent.length > {len(first)}"
            )
            assert not page.is_disabled("#stop")
            page.click("#stop")
            page.wait_for_function(
                "document.querySelector('#status').textContent.startsWith('Stopped')"
            )
            seen = (assistant.text_content() or "").strip()
            assert len(seen.split()) >= 8
            assert "OPENAI_API_KEY" not in seen  # stopped before the end of the answer

            # The server notices the abort within its disconnect bound (WSGI: under 300 ms
            # while streaming), then saves: a reload sooner than that may race the save.
            # Wait for it through the API (each poll is one threads.get_by_id), then reload.
            polls = page.evaluate(SAVED_POLL)
            assert polls >= 0, "the partial answer was not saved within 3 s of the stop"
            page.reload()
            page.wait_for_selector(".assistant_message")
            page.wait_for_function(
                "document.querySelector('#status').textContent.includes('items')"
            )
            kept = (page.locator(".assistant_message").last.text_content() or "").strip()
            assert kept.startswith(seen), (kept, seen)
            assert "OPENAI_API_KEY" not in kept  # the partial answer, not a completed one
            users = page.locator(".user_message").all_text_contents()
            assert users == ["Tell me about streaming"]
        finally:
            browser.close()


def png(width: int = 24, height: int = 16) -> bytes:
    """A real PNG (solid red) that a browser decodes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PREVIEW_SHOWN = """() => {
    const img = document.querySelector('.user_message img.preview');
    return img !== null && img.complete && img.naturalWidth === 24;
}"""

THREAD_GONE = """async (threadId) => {
    const response = await fetch("/chatkit", {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({type: "threads.get_by_id", params: {thread_id: threadId}}),
    });
    return response.status;
}"""


@pytest.mark.parametrize("demo", FRAMEWORKS, indirect=True)
def test_attach_image_preview_reload_delete(demo: str) -> None:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium')")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.goto(demo)
            image = {"name": "red.png", "mimeType": "image/png", "buffer": png()}
            page.set_input_files("#file", files=[image])
            page.wait_for_function(
                "document.querySelector('#status').textContent.startsWith('Attached')"
            )
            page.fill("#input", "What is in this picture?")
            page.click("#send")
            page.wait_for_function(PREVIEW_SHOWN)  # the signed preview URL, loaded by <img>
            page.wait_for_function(
                "document.querySelector('#status').textContent.startsWith('Done')"
            )
            thread_id = page.evaluate("localStorage.getItem('chatkit-demo-thread')")
            page.reload()
            page.wait_for_function(
                "document.querySelector('#status').textContent.includes('items')"
            )
            page.wait_for_function(PREVIEW_SHOWN)  # still there, from the store
            assert page.locator(".user_message").all_text_contents() == ["What is in this picture?"]
            page.click("#delete")
            page.wait_for_function(
                "document.querySelector('#status').textContent.startsWith('Deleted')"
            )
            assert page.evaluate(THREAD_GONE, thread_id) == 404
        finally:
            browser.close()
