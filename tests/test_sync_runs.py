"""Sync runs: what one costs the store, and the request path's answers (issue 22, part 3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from runengine import observe
from runengine.adapters.sqlite import SQLiteStore
from runengine.context import RunContext
from runengine.engine import RunEngine
from runengine.status import Status
from tests.kit import full_log

ANYIO_BACKENDS = ("asyncio",)  # the SQLite store needs asyncio


class Commits(observe.Observer):
    """Counts the store's commits (each one transaction, so one fsync on SQLite FULL)."""

    def __init__(self) -> None:
        self.count = 0

    def store_commit(self, *, store: str, seconds: float) -> None:
        self.count += 1


@pytest.fixture
def commits() -> Iterator[Commits]:
    counter = observe.add(Commits())
    try:
        yield counter
    finally:
        observe.remove(counter)


@pytest.mark.anyio
async def test_a_sync_run_that_says_one_message_costs_two_commits(tmp_path: Path, commits: Commits) -> None:
    engine = RunEngine(SQLiteStore(tmp_path / "runs.db"))

    @engine.agent("echo")
    async def echo(ctx: RunContext) -> None:
        await ctx.say(str(ctx.input))

    async with engine:
        await engine.execute("echo", "warm-up", mode="sync")
        before = commits.count
        state = await engine.execute("echo", "hello", mode="sync")
        assert state.status is Status.COMPLETED and state.output == "hello"
        # run.created (durable before anything runs), then started + the message + the end in one.
        assert commits.count - before == 2
        log = await full_log(engine, state.run_id)
        assert [e.type for e in log] == ["run.created", "run.started", "message.completed", "run.completed"]


@pytest.mark.anyio
async def test_a_said_message_commits_within_the_flush_window_while_the_agent_goes_on(tmp_path: Path) -> None:
    engine = RunEngine(SQLiteStore(tmp_path / "runs.db"))
    said, go_on = anyio.Event(), anyio.Event()

    @engine.agent("talker")
    async def talker(ctx: RunContext) -> None:
        await ctx.say("working on it")
        said.set()
        await go_on.wait()  # no further event: only the flush window commits the message

    async with engine:
        run = await engine.execute("talker", None, mode="async")
        await said.wait()
        with anyio.fail_after(5):
            while not any(e.type == "message.completed" for e in await full_log(engine, run.run_id)):
                await anyio.sleep(0.005)
        go_on.set()
        assert (await engine.wait(run.run_id)).status is Status.COMPLETED
