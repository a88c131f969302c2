"""The live page in headless Chromium (Debian's, driven by Playwright): start runs, watch them
stream, answer the approval agent, and survive a connection cut mid-stream with no gap and no
duplicate (EventSource reconnects with Last-Event-ID)."""

from __future__ import annotations

import os
import shutil

import pytest

from httpkit import TcpProxy, add_test_agents, serve
from runengine import RunEngine
from runengine.adapters.asgi import engine_asgi_app
from runengine.demo import register_demo_agents

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


ANYIO_BACKENDS = ("asyncio",)  # uvicorn, playwright's async API


@pytest.fixture
async def browser():
    playwright_api = pytest.importorskip("playwright.async_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed (apt-get install -y chromium)")
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def site():
    """(page URL through a TCP proxy that can cut connections, the proxy)."""
    engine = register_demo_agents(RunEngine("memory://"), delay=0.015)
    add_test_agents(engine)
    async with serve(engine_asgi_app(engine)) as url:
        async with TcpProxy(int(url.rsplit(":", 1)[1])) as proxy:
            yield f"http://127.0.0.1:{proxy.port}/", proxy


@pytest.mark.anyio
async def test_a_cut_mid_stream_resumes_with_no_gap_and_no_duplicate(browser, site) -> None:
    url, proxy = site
    page = await browser.new_page()
    await page.goto(url)
    await page.wait_for_function("document.querySelectorAll('#agent option').length >= 3")
    await page.select_option("#agent", "echo")
    text = " ".join(f"token{i}" for i in range(300))
    await page.fill("#input", text)
    await page.click("#start")
    await page.wait_for_function("window.runengine.received.length >= 40", timeout=30_000)
    assert await page.evaluate("window.runengine.done") is False
    cut = proxy.drop()  # every connection, the EventSource's included, dies mid-stream
    assert cut > 0
    await page.wait_for_function("window.runengine.done", timeout=60_000)
    live = await page.evaluate("window.runengine")
    assert live["status"] == "completed"
    assert live["anomalies"] == []
    assert live["received"] == list(range(1, len(live["received"]) + 1))
    assert live["deltaText"] == text
    assert live["opens"] >= 2 and live["errors"] >= 1  # it really reconnected
    assert await page.inner_text("[data-message]") == text
    assert await page.inner_text("#status") == "completed"
    # The page saw exactly the server's log.
    run_id = live["runId"]
    log = await page.evaluate(f"fetch('runs/{run_id}/events?limit=1000').then(r => r.json())")
    assert [e["seq"] for e in log["events"]] == live["received"]


@pytest.mark.anyio
async def test_pizza_and_approval_in_the_page(browser, site) -> None:
    url, _ = site
    page = await browser.new_page()
    await page.goto(url)
    await page.wait_for_function("document.querySelectorAll('#agent option').length >= 3")
    options = await page.eval_on_selector_all("#agent option", "els => els.map(e => e.value)")
    assert {"echo", "pizza", "approval"} <= set(options) and "hidden" not in options

    await page.select_option("#agent", "pizza")
    await page.click("#start")
    await page.wait_for_function("window.runengine.done", timeout=30_000)
    assert await page.inner_text("#status") == "completed"
    thoughts = await page.eval_on_selector_all(".thought", "els => els.map(e => e.textContent)")
    assert len(thoughts) == 3
    tools = await page.eval_on_selector_all(".tool", "els => els.map(e => e.textContent)")
    assert tools[0].startswith("→ get_menu(") and tools[1].startswith("← {")
    assert "diavola" in await page.inner_text("[data-message]")

    await page.select_option("#agent", "approval")
    await page.click("#start")
    await page.wait_for_selector("#ask", state="visible", timeout=30_000)
    assert await page.inner_text("#status") == "waiting_for_input"
    assert "Approve" in await page.inner_text("#ask-question")
    await page.fill("#ask-input", "yes")
    await page.click("#ask-send")
    await page.wait_for_function("window.runengine.done", timeout=30_000)
    assert await page.inner_text("#status") == "completed"
    messages = await page.eval_on_selector_all("[data-message]", "els => els.map(e => e.textContent)")
    assert messages[-1] == "Approved: done."
    assert (await page.evaluate("window.runengine.anomalies")) == []
