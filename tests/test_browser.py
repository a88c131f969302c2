"""The console page in headless Chromium (Debian's, driven by Playwright): start runs and watch
them stream, the live list of runs, a run opened by id (a reload mid-stream resumes after the
last seq it rendered: no gap, no duplicate), a forced disconnect (the reconnecting indicator, then
recovery), cancel and input (typed, or a button per option the agent offers), an API key sent as
`Authorization: Bearer`, and a Pydantic AI run whose long step results fold and wrap: nothing
wider than its column. Writes the screenshot docs/console.png."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import json
from typing import Any

import attrs
import httpx
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaThinkingPart, DeltaToolCall, FunctionModel

from httpkit import TcpProxy, add_test_agents, full_log, serve, wait_status
from runengine import RunEngine
from runengine.adapters.asgi import engine_asgi_app
from runengine.demo import register_demo_agents
from runengine.events import (
    MessageCompleted, MessageDelta, MessageDiscarded, RunCompleted, RunCreated, RunStarted,
)
from runengine.integrations.pydantic_ai import MESSAGES_STEP, MODEL_STEP, agent_from_pydantic_ai
from runengine.logfile import import_run
from runengine.http.auth import AuthHook

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "console.png"
WAIT = 30_000  # ms: an upper bound for a condition, never a pause
RENDERED_SEQS = "Array.from(document.querySelectorAll('#log [data-seq]'), e => Number(e.dataset.seq))"
#: What sticks out sideways: the page wider than the window, or an element of the run's rendered
#: view, event log or question past its column's edges (or a column scrolling sideways). [] when
#: nothing does.
OVERFLOWS = """() => {
  const out = [];
  const page = document.documentElement;
  if (page.scrollWidth > page.clientWidth) out.push(`page: ${page.scrollWidth} > ${page.clientWidth}`);
  for (const column of document.querySelectorAll('#transcript, #log, #ask')) {
    const edge = column.getBoundingClientRect();
    if (edge.right > page.clientWidth) out.push(`#${column.id} ends at ${edge.right} > ${page.clientWidth}`);
    if (column.scrollWidth > column.clientWidth) out.push(`#${column.id} scrolls: ${column.scrollWidth} > ${column.clientWidth}`);
    for (const element of column.querySelectorAll('*')) {
      const box = element.getBoundingClientRect();
      if (box.width && (box.left < edge.left - 1 || box.right > edge.right + 1)) {
        out.push(`${element.tagName}.${element.className} in #${column.id}: ${box.left}..${box.right} outside ${edge.left}..${edge.right}`);
      }
    }
  }
  return out;
}"""


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


@attrs.frozen
class Site:
    url: str  # the console, through the proxy
    proxy: TcpProxy  # cuts the browser's connections
    api: httpx.AsyncClient  # the test's own client, straight to the server
    engine: RunEngine


@contextlib.asynccontextmanager
async def running_site(auth: AuthHook | None = None, headers: Mapping[str, str] | None = None) -> AsyncIterator[Site]:
    engine = register_demo_agents(RunEngine("memory://"), delay=0.015)
    add_test_agents(engine)
    async with serve(engine_asgi_app(engine, auth=auth)) as base:
        async with TcpProxy(int(base.rsplit(":", 1)[1])) as proxy:
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30.0) as api:
                yield Site(f"http://127.0.0.1:{proxy.port}/", proxy, api, engine)


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with running_site() as running:
        yield running


async def start_run(api: httpx.AsyncClient, agent: str, input: object = None) -> str:
    response = await api.post("/runs", json={"agent": agent, "input": input, "mode": "async"})
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


async def assert_page_shows_the_store_log(page, api: httpx.AsyncClient, run_id: str) -> None:
    """The raw log the page rendered is the store's log, seq for seq: no gap, no duplicate."""
    store_seqs = [e["seq"] for e in await full_log(api, run_id)]
    assert store_seqs == list(range(1, len(store_seqs) + 1))
    assert await page.evaluate(RENDERED_SEQS) == store_seqs
    assert await page.evaluate("window.runengine.received") == store_seqs
    assert await page.evaluate("window.runengine.anomalies") == []


@pytest.mark.anyio
async def test_a_cut_mid_stream_resumes_with_no_gap_and_no_duplicate(browser, site: Site) -> None:
    page = await browser.new_page()
    await page.goto(site.url)
    await page.wait_for_function("document.querySelectorAll('#agent option').length >= 3")
    await page.select_option("#agent", "approval")  # its stream stays open until it gets input
    text = " ".join(f"token{i}" for i in range(150))
    await page.fill("#input", text)
    await page.click("#start")
    await page.wait_for_function("window.runengine.received.length >= 40", timeout=WAIT)
    cut = site.proxy.drop()  # every connection, the stream's included, dies mid-stream
    assert cut > 0
    await page.wait_for_selector("#ask", state="visible", timeout=WAIT)
    await page.fill("#ask-input", "yes")
    await page.click("#ask-send")
    await page.wait_for_function("window.runengine.done", timeout=WAIT)
    live = await page.evaluate("window.runengine")
    assert live["status"] == "completed"
    assert live["opens"] >= 2 and live["errors"] >= 1  # it really reconnected
    messages = await page.eval_on_selector_all("[data-message]", "els => els.map(e => e.textContent)")
    assert messages == [f"I am about to {text}.", "Approved: done."]
    assert await page.inner_text("#status") == "completed"
    assert page.url.endswith("#/runs/" + live["runId"])  # the open run is in the URL
    await assert_page_shows_the_store_log(page, site.api, live["runId"])


@pytest.mark.anyio
async def test_pizza_and_approval_in_the_page(browser, site: Site) -> None:
    page = await browser.new_page(viewport={"width": 1360, "height": 820})
    await page.goto(site.url)
    await page.wait_for_function("document.querySelectorAll('#agent option').length >= 3")
    options = await page.eval_on_selector_all("#agent option", "els => els.map(e => e.value)")
    assert {"echo", "pizza", "approval"} <= set(options) and "hidden" not in options

    await page.select_option("#agent", "approval")
    await page.click("#start")
    await page.wait_for_selector("#ask", state="visible", timeout=WAIT)
    assert await page.inner_text("#status") == "waiting_for_input"
    assert "Approve" in await page.inner_text("#ask-question")
    await page.fill("#ask-input", "yes")
    await page.click("#ask-send")
    await page.wait_for_function("window.runengine.done", timeout=WAIT)
    assert await page.inner_text("#status") == "completed"
    messages = await page.eval_on_selector_all("[data-message]", "els => els.map(e => e.textContent)")
    assert messages[-1] == "Approved: done."
    assert await page.evaluate("window.runengine.anomalies") == []

    approval = await page.evaluate("window.runengine.runId")
    await page.select_option("#agent", "pizza")
    await page.click("#start")
    await page.wait_for_function(
        "previous => window.runengine.runId !== previous && window.runengine.done", arg=approval, timeout=WAIT
    )
    assert await page.inner_text("#status") == "completed"
    thoughts = await page.eval_on_selector_all(".thought", "els => els.map(e => e.textContent)")
    assert len(thoughts) == 3
    tools = await page.eval_on_selector_all(".tool", "els => els.map(e => e.textContent)")
    assert tools[0].startswith("→ get_menu(") and tools[1].startswith("← {")
    assert "diavola" in await page.inner_text("[data-message]")
    # Every event beside the rendered view, with its seq and type.
    rows = await page.eval_on_selector_all("#log [data-seq]", "els => els.map(e => e.children[1].textContent)")
    assert rows[0] == "run.created" and rows[-1] == "run.completed" and "tool.call" in rows
    await assert_page_shows_the_store_log(page, site.api, await page.evaluate("window.runengine.runId"))

    # The list shows both runs, newest first: the console as the README shows it.
    await page.wait_for_function(
        "document.querySelectorAll('#runs tbody tr .status.completed').length >= 2", timeout=WAIT
    )
    SCREENSHOT.parent.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000


#: Long values with no place to break a line, as real runs record them (a signed URL, a digest).
LONG_URL = "https://files.example.com/report?sig=" + "a1B2c3D4e5" * 40
DIGEST = "sha256:" + "f00dcafe" * 40


def pydantic_ai_reader() -> Agent[None, str]:
    """A Pydantic AI agent on FunctionModel (offline): thinks, fetches LONG_URL with a tool whose
    result is DIGEST, then answers with both; each model response is a recorded step."""

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        returns = [p for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
        if not returns:
            yield {0: DeltaThinkingPart(content="I should fetch the report first.")}
            yield {1: DeltaToolCall(name="fetch", json_args=json.dumps({"url": LONG_URL}), tool_call_id="call_fetch")}
        else:
            for piece in ["Fetched ", LONG_URL, ": its digest is ", str(returns[-1].content), "."]:
                yield piece

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool_plain
    def fetch(url: str) -> str:
        return DIGEST

    return agent


@pytest.mark.anyio
async def test_a_pydantic_ai_run_folds_its_steps_and_nothing_overflows(browser, site: Site) -> None:
    site.engine.agents.add(agent_from_pydantic_ai(pydantic_ai_reader(), name="reader"))
    run_id = await start_run(site.api, "reader", "Summarise the report")
    page = await browser.new_page(viewport={"width": 1360, "height": 820})
    await page.goto(f"{site.url}#/runs/{run_id}")
    await page.wait_for_function("window.runengine.done", timeout=WAIT)
    assert await page.inner_text("#status") == "completed"
    messages = await page.eval_on_selector_all("[data-message]", "els => els.map(e => e.textContent)")
    assert messages == [f"Fetched {LONG_URL}: its digest is {DIGEST}."]
    await assert_page_shows_the_store_log(page, site.api, run_id)
    assert await page.evaluate(OVERFLOWS) == []

    # Each model response is a step, folded: one line naming it, its recorded result behind it;
    # so is the turn's message history the integration keeps for the session's next turns.
    steps = await page.eval_on_selector_all(
        "#transcript details.step, #transcript .step details", "els => els.map(e => [e.open, e.querySelector('summary').textContent])"
    )
    assert steps == [[False, f"step {MODEL_STEP}"]] * 2 + [[False, f"step {MESSAGES_STEP}"]]
    # The long JSON payloads in the event log are folded too; the short ones are plain text.
    assert await page.eval_on_selector_all("#log .data details", "els => els.length") >= 2

    # Opened, a step's result wraps in its column; so does every folded value, at any window width.
    await page.click("#transcript .step summary")
    assert LONG_URL in await page.inner_text("#transcript .step pre")
    for summary in await page.query_selector_all("#log .data summary"):
        await summary.click()
    assert await page.evaluate(OVERFLOWS) == []
    for width in (1024, 800, 1600):
        await page.set_viewport_size({"width": width, "height": 820})
        assert await page.evaluate(OVERFLOWS) == [], width
    # Wider columns than the old 170 px: the data of an event has most of the log's width.
    data_width = await page.eval_on_selector("#log [data-seq='1'] .data", "e => e.getBoundingClientRect().width")
    log_width = await page.eval_on_selector("#log", "e => e.clientWidth")
    assert data_width >= 0.8 * log_width


@pytest.mark.anyio
async def test_an_option_the_agent_offers_is_a_button_that_answers(browser, site: Site) -> None:
    run_id = await start_run(site.api, "approval", "release 4")
    page = await browser.new_page()
    await page.goto(f"{site.url}#/runs/{run_id}")
    await page.wait_for_selector("#ask", state="visible", timeout=WAIT)
    assert await page.inner_text("#ask-question") == "Approve: release 4?"
    buttons = await page.eval_on_selector_all("#ask-options button", "els => els.map(e => e.textContent)")
    assert buttons == ["yes", "no"]  # the request's options, in order
    assert await page.evaluate(OVERFLOWS) == []
    await page.click("#ask-options button:text-is('no')")
    await page.wait_for_function("window.runengine.done", timeout=WAIT)
    run = (await site.api.get(f"/runs/{run_id}")).json()
    assert run["status"] == "completed" and run["output"] == {"approved": False, "answer": "no"}
    assert not await page.is_visible("#ask")
    await assert_page_shows_the_store_log(page, site.api, run_id)

    # A request that is plain text is the question itself; no options: no buttons but Send.
    @site.engine.agent("asker")
    async def asker(ctx: Any) -> Any:
        return await ctx.ask("Which colour?")

    run_id = await start_run(site.api, "asker")
    await page.goto(f"{site.url}#/runs/{run_id}")
    await page.wait_for_selector("#ask", state="visible", timeout=WAIT)
    assert await page.inner_text("#ask-question") == "Which colour?"
    assert await page.eval_on_selector_all("#ask button", "els => els.map(e => e.textContent)") == ["Send input"]
    await page.fill("#ask-input", "teal")
    await page.click("#ask-send")
    await page.wait_for_function("window.runengine.done", timeout=WAIT)
    assert (await site.api.get(f"/runs/{run_id}")).json()["output"] == "teal"


@pytest.mark.anyio
async def test_the_list_shows_runs_pages_and_updates_live(browser, site: Site) -> None:
    waiting = await start_run(site.api, "approval", "ship it")
    await wait_status(site.api, waiting, "waiting_for_input")
    page = await browser.new_page()
    await page.goto(site.url)
    row = f"#runs tbody tr[data-run-id='{waiting}']"
    await page.wait_for_selector(row, timeout=WAIT)
    cells = await page.eval_on_selector(row, "tr => Array.from(tr.cells, c => c.textContent)")
    assert cells[0] == "waiting_for_input" and cells[1] == "approval" and cells[2] == "–"
    assert cells[4].endswith(" s")

    # Changes made elsewhere appear without a reload: a new run, then a status change.
    in_session = (await site.api.post("/runs", json={"agent": "echo", "input": "hi", "session_id": "s-42"})).json()
    await page.wait_for_selector(f"#runs tbody tr[data-run-id='{in_session['run_id']}']", timeout=WAIT)
    assert await page.inner_text(f"#runs tbody tr[data-run-id='{in_session['run_id']}'] td:nth-child(3)") == "s-42"
    await site.api.post(f"/runs/{waiting}/input", json={"content": "yes"})
    await page.wait_for_selector(f"{row} .status.completed", timeout=WAIT)

    # Paged, newest first: 10 a page, Older and Newer walk the cursor.
    for i in range(10):
        await site.api.post("/runs", json={"agent": "echo", "input": f"run {i}"})
    listed = await site.api.get("/runs", params={"limit": 12})
    newest_first = [r["run_id"] for r in listed.json()["runs"]]
    page_ids = "Array.from(document.querySelectorAll('#runs tbody tr'), r => r.dataset.runId)"
    shows = f"expected => JSON.stringify({page_ids}) === JSON.stringify(expected)"
    await page.wait_for_function(shows, arg=newest_first[:10], timeout=WAIT)
    await page.click("#older")
    await page.wait_for_function(shows, arg=newest_first[10:], timeout=WAIT)
    assert await page.is_disabled("#older")
    await page.click("#newer")
    await page.wait_for_function(f"{page_ids}.length === 10", timeout=WAIT)
    assert await page.is_disabled("#newer")

    # A click on a row opens that run (now on the second page).
    await page.click("#older")
    await page.click(f"{row} td:nth-child(2)")
    await page.wait_for_function("window.runengine.done", timeout=WAIT)
    assert page.url.endswith(f"#/runs/{waiting}")
    await assert_page_shows_the_store_log(page, site.api, waiting)


WORDS = " ".join(f"step{i}" for i in range(80))


async def waiting_run(site: Site) -> str:
    """A run whose stream stays open whatever the timing: it streams 80 words, then waits for input."""
    return await start_run(site.api, "approval", WORDS)


@pytest.mark.anyio
async def test_a_run_opened_by_id_survives_a_reload_mid_stream(browser, site: Site) -> None:
    run_id = await waiting_run(site)
    page = await browser.new_page()
    await page.goto(f"{site.url}#/runs/{run_id}")  # a shared link
    await page.wait_for_function("window.runengine.received.length >= 30", timeout=WAIT)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await page.reload()
    await page.wait_for_selector("#ask", state="visible", timeout=WAIT)
    resumed = await page.evaluate("window.runengine.resumedAfter")
    assert resumed[0] >= 30  # the reloaded page went on after what it had rendered, not from seq 1
    assert any(f"/runs/{run_id}/events?after_seq={resumed[0]}" in url for url in requests)
    await site.api.post(f"/runs/{run_id}/input", json={"content": "yes"})
    await page.wait_for_function("window.runengine.done", timeout=WAIT)
    assert await page.inner_text("#status") == "completed"
    messages = await page.eval_on_selector_all("[data-message]", "els => els.map(e => e.textContent)")
    assert messages == [f"I am about to {WORDS}.", "Approved: done."]
    await assert_page_shows_the_store_log(page, site.api, run_id)

    # The same link in a new tab (nothing stored there) replays the whole log.
    other = await browser.new_page()
    await other.goto(f"{site.url}#/runs/{run_id}")
    await other.wait_for_function("window.runengine.done", timeout=WAIT)
    assert await other.evaluate("window.runengine.resumedAfter") == [0]
    await assert_page_shows_the_store_log(other, site.api, run_id)


@pytest.mark.anyio
async def test_a_forced_disconnect_shows_reconnecting_then_recovers(browser, site: Site) -> None:
    run_id = await waiting_run(site)
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{site.url}#/runs/{run_id}")
    await page.wait_for_selector("#ask", state="visible", timeout=WAIT)
    assert await page.is_visible("#connection.live")
    await context.set_offline(True)
    site.proxy.drop()  # the open stream dies; offline, every new attempt fails
    await page.wait_for_selector("#connection.reconnecting", timeout=WAIT)
    assert "reconnecting" in await page.inner_text("#connection")
    await site.api.post(f"/runs/{run_id}/input", json={"content": "yes"})
    await wait_status(site.api, run_id, "completed")  # the run went on without the page
    await context.set_offline(False)
    await page.wait_for_function("window.runengine.done", timeout=WAIT)
    assert not await page.is_visible("#connection.reconnecting")
    assert await page.evaluate("window.runengine.errors") >= 1
    assert await page.inner_text("#status") == "completed"
    await assert_page_shows_the_store_log(page, site.api, run_id)
    await context.close()


@pytest.mark.anyio
async def test_cancel_and_input_buttons(browser, site: Site) -> None:
    page = await browser.new_page()
    sleeper = await start_run(site.api, "sleeper", 60)
    await page.goto(f"{site.url}#/runs/{sleeper}")
    await page.wait_for_function("window.runengine.status === 'running'", timeout=WAIT)
    await page.click("#cancel")
    await page.wait_for_function("window.runengine.done", timeout=WAIT)
    assert await page.inner_text("#status") == "cancelled"
    assert (await site.api.get(f"/runs/{sleeper}")).json()["status"] == "cancelled"
    assert await page.is_disabled("#cancel")

    approval = await start_run(site.api, "approval", "release 3")
    await page.goto(f"{site.url}#/runs/{approval}")
    await page.wait_for_selector("#ask", state="visible", timeout=WAIT)
    await page.fill("#ask-input", "no")
    await page.click("#ask-send")
    await page.wait_for_function("window.runengine.done", timeout=WAIT)
    run = (await site.api.get(f"/runs/{approval}")).json()
    assert run["status"] == "completed" and run["output"]["approved"] is False
    await assert_page_shows_the_store_log(page, site.api, approval)


@pytest.mark.anyio
async def test_an_api_key_is_sent_as_a_bearer_token(browser) -> None:
    def auth(headers: Mapping[str, str]) -> str | None:
        return "ops" if headers.get("authorization") == "Bearer s3cret" else None

    async with running_site(auth=auth, headers={"authorization": "Bearer s3cret"}) as site:
        page = await browser.new_page()
        await page.goto(site.url)
        await page.wait_for_function("document.getElementById('notice').textContent.includes('401')", timeout=WAIT)
        await page.fill("#api-key", "s3cret")
        await page.click("#key-form button")
        await page.wait_for_function("document.querySelectorAll('#agent option').length >= 3", timeout=WAIT)
        assert await page.evaluate("sessionStorage.getItem('runengine.console.key')") == "s3cret"
        await page.select_option("#agent", "echo")
        await page.fill("#input", "with a key")
        await page.click("#start")
        await page.wait_for_function("window.runengine.done", timeout=WAIT)
        run_id = await page.evaluate("window.runengine.runId")
        assert (await site.api.get(f"/runs/{run_id}")).json()["output"] == "with a key"
        await page.wait_for_selector(f"#runs tbody tr[data-run-id='{run_id}']", timeout=WAIT)
        await assert_page_shows_the_store_log(page, site.api, run_id)


@pytest.mark.anyio
async def test_a_discarded_message_leaves_no_text(browser, site: Site) -> None:
    # The log a lost process leaves: a half-streamed message, discarded, then streamed afresh.
    at = datetime.now(UTC)
    run_id = "run-cut-mid-message"
    events = [
        RunCreated(run_id=run_id, seq=1, at=at, agent="echo", input="The answer is 42."),
        RunStarted(run_id=run_id, seq=2, at=at),
        MessageDelta(run_id=run_id, seq=3, at=at, message_id="m1", content="The answer "),
        MessageDiscarded(run_id=run_id, seq=4, at=at, message_id="m1"),
        MessageDelta(run_id=run_id, seq=5, at=at, message_id="m2", content="The answer is 42."),
        MessageCompleted(run_id=run_id, seq=6, at=at, message_id="m2", content="The answer is 42."),
        RunCompleted(run_id=run_id, seq=7, at=at, output="The answer is 42."),
    ]
    await import_run(site.engine.store, events, now=datetime.now(UTC))
    page = await browser.new_page()
    await page.goto(f"{site.url}#/runs/{run_id}")
    await page.wait_for_function("window.runengine.done", timeout=WAIT)
    messages = await page.eval_on_selector_all("[data-message]", "els => els.map(e => e.textContent)")
    assert messages == ["The answer is 42."]
    assert "discarded" in await page.inner_text("#transcript")
    await assert_page_shows_the_store_log(page, site.api, run_id)


@pytest.mark.anyio
async def test_the_console_links_a_parent_and_its_children(browser, site: Site) -> None:
    """A run's page links its children (the family line and each child.spawned / child.ended of
    the transcript); a child's page links back to its parent."""
    parent = (await site.api.post("/runs", json={"agent": "fanout", "input": "left right"})).json()
    assert parent["status"] == "completed", parent
    children = [c["run_id"] for c in parent["children"]]
    page = await browser.new_page()
    await page.goto(site.url + f"#/runs/{parent['run_id']}")
    await page.wait_for_function("window.runengine.done", timeout=WAIT)
    family = "Array.from(document.querySelectorAll('#family a'), a => a.dataset.run)"
    assert await page.evaluate(family) == children
    linked = "Array.from(document.querySelectorAll('#transcript a'), a => a.dataset.run)"
    assert await page.evaluate(linked) == children + children  # spawned, then ended
    await page.click(f"#family a[data-run='{children[1]}']")
    await page.wait_for_function(f"document.querySelector('#run-id').textContent === {json.dumps(children[1])}", timeout=WAIT)
    await page.wait_for_function("document.querySelectorAll('#family a').length === 1", timeout=WAIT)
    assert await page.evaluate(family) == [parent["run_id"]]
    assert await page.evaluate("location.hash") == f"#/runs/{children[1]}"
