"""Settled waits (ports.SettledWait): a waiter for a run's end or its wait for input is woken by
the commits that settle the run, not by each of its steps; a wake-up of unknown status (a
PostgreSQL NOTIFY, notify_all) still wakes it, to look for itself."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from runengine import RunContext
from runengine.adapters.memory import MemoryStore
from runengine.adapters.postgres import PostgresStore
from runengine.adapters.sqlite import SQLiteStore
from runengine.adapters.wakeup import RunWakeups
from runengine.engine import RunEngine
from runengine.options import Durability
from runengine.ports import RunSummary
from runengine.status import Status
from runengine.worker import WorkerOptions

ANYIO_BACKENDS = ("asyncio",)  # the SQLite store needs asyncio

STEPS = 200


class Counting:
    """A real store, counting the run-row reads of one run (each wake-up of a waiter reads it)."""

    watched: str | None = None
    reads = 0

    async def get_run(self, run_id: str) -> RunSummary | None:
        if run_id == self.watched:
            self.reads += 1
        return await super().get_run(run_id)  # type: ignore[misc]


class CountingSQLiteStore(Counting, SQLiteStore):
    pass


class CountingMemoryStore(Counting, MemoryStore):
    pass


def add_steps_agent(engine: RunEngine) -> anyio.Event:
    """Agent `steps`: STEPS durable steps once the returned event is set."""
    go = anyio.Event()

    @engine.agent("steps")
    async def steps(ctx: RunContext) -> int:
        await go.wait()
        for i in range(STEPS):
            await ctx.step("identity", lambda i=i: i)
        return STEPS

    return go


async def wait_while_it_steps(engine: RunEngine, run_id: str, go: anyio.Event, *, asleep_after: float) -> Any:
    """`engine.wait` for the run, started `asleep_after` seconds before the run's steps begin."""
    ended: list[Any] = []

    async def wait() -> None:
        ended.append(await engine.wait(run_id))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.sleep(asleep_after)
        go.set()
    return ended[0]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_a_sync_waiter_is_not_woken_by_each_step(tmp_path: Path, kind: str) -> None:
    store: Any = CountingSQLiteStore(tmp_path / "runs.db") if kind == "sqlite" else CountingMemoryStore()
    engine = RunEngine(store, durability=Durability(park_after=None))
    go = add_steps_agent(engine)

    async with engine:
        run = await engine.execute("steps", mode="async")
        store.watched = run.run_id
        ended = await wait_while_it_steps(engine, run.run_id, go, asleep_after=0.05)
        assert ended.status is Status.COMPLETED and ended.steps == STEPS
        # Woken by the run's end (and perhaps its start), not once per step: a handful of reads.
        assert store.reads < 10, store.reads


@pytest.mark.anyio
async def test_a_waiter_for_input_wakes_when_the_run_asks(tmp_path: Path) -> None:
    engine = RunEngine(SQLiteStore(tmp_path / "runs.db"), durability=Durability(park_after=None))

    @engine.agent("asks")
    async def asks(ctx: RunContext) -> Any:
        for i in range(20):
            await ctx.step("identity", lambda i=i: i)
        answer = await ctx.ask("name?")
        return f"hello {answer}"

    async with engine:
        run = await engine.execute("asks", mode="async")
        with anyio.fail_after(10):
            waiting = await engine.wait(run.run_id)
        assert waiting.status is Status.WAITING_FOR_INPUT
        await engine.resume(run.run_id, "Ada")
        with anyio.fail_after(10):
            done = await engine.wait(run.run_id, after_seq=waiting.last_seq)
        assert done.status is Status.COMPLETED and done.output == "hello Ada"


@pytest.mark.anyio
async def test_settled_wakeups_sleep_through_a_running_commit() -> None:
    wakeups = RunWakeups()
    checks = 0

    async def has_news() -> bool:
        nonlocal checks
        checks += 1
        return False

    async def waiter(results: list[bool]) -> None:
        results.append(await wakeups.wait("r", after_seq=1, timeout=5, has_news=has_news, settled=True))

    results: list[bool] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, results)
        await anyio.sleep(0.01)
        assert checks == 1
        wakeups.notify("r", 2, status=Status.RUNNING)
        await anyio.sleep(0.01)
        assert checks == 1 and not results  # a step: slept through
        wakeups.notify("r", 3)  # status unknown (a NOTIFY): it looks for itself
        await anyio.sleep(0.01)
        assert checks == 2 and not results
        wakeups.notify("r", 4, status=Status.WAITING_FOR_INPUT)
    assert results == [True]


@pytest.mark.anyio
async def test_any_news_waiters_still_wake_on_every_commit() -> None:
    wakeups = RunWakeups()

    async def has_news() -> bool:
        return False

    results: list[bool] = []

    async def waiter() -> None:
        results.append(await wakeups.wait("r", after_seq=1, timeout=5, has_news=has_news))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.01)
        wakeups.notify("r", 2, status=Status.RUNNING)
    assert results == [True]


class CountingPostgresStore(Counting, PostgresStore):
    pass


@pytest.mark.postgres
@pytest.mark.anyio
async def test_a_waiter_in_another_process_sleeps_through_the_steps_on_postgresql(pg_dsn: str) -> None:
    """The NOTIFY of each commit carries the status it left the run at: a second store on the same
    database (its own listener, as another process has) wakes its settled waiter at the end only."""
    schema = f"settled_{uuid.uuid4().hex[:8]}"
    running = RunEngine(
        PostgresStore(pg_dsn, schema=schema), durability=Durability(park_after=None), worker=WorkerOptions(poll=0.05)
    )
    watching = CountingPostgresStore(pg_dsn, schema=schema)
    go = add_steps_agent(running)

    async with running, watching:
        waiter = RunEngine(watching)  # no worker: it only waits
        run = await running.execute("steps", mode="async")
        watching.watched = run.run_id
        # the waiter is asleep (and listening) before the first step
        ended = await wait_while_it_steps(waiter, run.run_id, go, asleep_after=0.2)
        assert ended.status is Status.COMPLETED and ended.steps == STEPS
        assert watching.reads < 10, watching.reads
