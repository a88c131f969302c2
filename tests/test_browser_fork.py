"""Issue 25 in the console: "fork here" on an event of a run's log starts a fork at that event
(another answer at a run.input, asked for in a prompt) and opens it."""

from __future__ import annotations

import pytest

from httpkit import wait_status
from test_browser import WAIT, Site, assert_page_shows_the_store_log, browser, site, start_run  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser
ANYIO_BACKENDS = ("asyncio",)  # uvicorn, playwright's async API


@pytest.mark.anyio
async def test_fork_here_with_another_answer(browser, site: Site) -> None:  # noqa: F811
    approval = await start_run(site.api, "approval", "release 3")
    await wait_status(site.api, approval, "waiting_for_input")
    assert (await site.api.post(f"/runs/{approval}/input", json={"content": "yes"})).status_code == 200
    page = await browser.new_page()
    await page.goto(f"{site.url}#/runs/{approval}")
    await page.wait_for_function("window.runengine.done", timeout=WAIT)
    events = (await site.api.get(f"/runs/{approval}/events")).json()["events"]
    input_seq = next(e["seq"] for e in events if e["type"] == "run.input")
    assert await page.locator("#log .fork").count() == len(events) - 1  # not on the event that ended it

    page.once("dialog", lambda dialog: dialog.accept('"no"'))
    await page.click(f"#log [data-seq='{input_seq}'] .fork")
    await page.wait_for_function(f"window.runengine.runId && window.runengine.runId !== '{approval}'", timeout=WAIT)
    fork = await page.evaluate("window.runengine.runId")
    await page.wait_for_function("window.runengine.done", timeout=WAIT)
    run = (await site.api.get(f"/runs/{fork}")).json()
    assert run["forked_from"] == {"run_id": approval, "seq": input_seq}
    assert run["status"] == "completed" and run["output"] == {"approved": False, "answer": "no"}
    assert "forked from run" in await page.inner_text("#transcript")
    await assert_page_shows_the_store_log(page, site.api, fork)
