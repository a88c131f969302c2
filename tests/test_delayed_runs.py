"""Issue 20 item 8: delayed runs (`start_at`) wait in the store, not in memory. An engine start
with thousands of them scheduled days ahead launches none of them (no task, writer or state per
run); each is launched when it nears its start_at, a page of pending runs being read at a time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest

from runengine import RunEngine, Status
from runengine.adapters.sqlite import SQLiteStore
from runengine.options import Durability
from runengine.testing.clock import VirtualClock

ANYIO_BACKENDS = ("asyncio",)  # aiosqlite


def make_engine(path: Path, **options: object) -> RunEngine:
    engine = RunEngine(SQLiteStore(str(path)), **options)  # type: ignore[arg-type]

    @engine.agent("echo")
    async def echo(ctx) -> str:  # type: ignore[no-untyped-def]
        return str(ctx.input)

    return engine


def now() -> datetime:
    return datetime.now(timezone.utc)


async def wait_status(engine: RunEngine, run_id: str, status: Status, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while (await engine.status(run_id)).status is not status:
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_far_delayed_runs_are_not_held_in_memory_at_start_or_when_created(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    later = now() + timedelta(days=29)
    async with make_engine(path) as engine:
        ids = [(await engine.execute("echo", i, mode="async", start_at=later)).run_id for i in range(450)]
        assert not engine.driver.active  # none launched when created
    async with make_engine(path) as engine:  # a restart: recovery pages through them, launches none
        assert not engine.driver.active
        assert (await engine.status(ids[0])).status is Status.PENDING
        assert (await engine.cancel(ids[1])).status is Status.CANCELLED  # still cancellable from the store
        assert len((await engine.list_runs(status="pending", limit=500)).runs) == 449


@pytest.mark.anyio
async def test_a_deferred_run_starts_when_it_comes_due(tmp_path: Path) -> None:
    path, clock = tmp_path / "runs.db", VirtualClock()
    async with make_engine(path, clock=clock) as engine:  # the default horizon: 60 s
        soon = await engine.execute("echo", "soon", mode="async", start_at=clock() + timedelta(hours=1))
        await clock.advance(3600 - 61)
        assert soon.run_id not in engine.driver.active
        await clock.advance(61)
        await wait_status(engine, soon.run_id, Status.COMPLETED)
        assert (await engine.status(soon.run_id)).started_at == soon.start_at
        across = await engine.execute("echo", "after restart", mode="async", start_at=clock() + timedelta(hours=1))
    async with make_engine(path, clock=clock) as engine:
        assert across.run_id not in engine.driver.active
        await clock.advance(3600)
        await wait_status(engine, across.run_id, Status.COMPLETED)
        assert (await engine.status(across.run_id)).output == "after restart"


@pytest.mark.anyio
async def test_a_run_due_within_the_horizon_is_launched_at_once(tmp_path: Path) -> None:
    async with make_engine(tmp_path / "runs.db") as engine:  # the default horizon: 60 s
        run = await engine.execute("echo", "x", mode="async", start_at=now() + timedelta(seconds=0.5))
        assert run.run_id in engine.driver.active
        await wait_status(engine, run.run_id, Status.COMPLETED)
