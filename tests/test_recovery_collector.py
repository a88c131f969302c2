"""Recovery pauses the cyclic garbage collector through its burst (issue 22, runengine.collector).

Taking up many runs at once allocates objects that live on while the runs wait; collections
during that burst walk them for nothing (~25% of recovery's CPU). The pause is bounded, pauses
overlap, and a collector someone else turned off stays off.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import anyio
import pytest

import runengine.engine as engine_module
from kit import until
from runengine import RunEngine
from runengine.adapters.sqlite import SQLiteStore
from runengine.collector import CollectorPause
from runengine.context import RunContext
from runengine.options import Durability

SLEEP = 3600.0
RUNS = 150


def test_pauses_overlap_and_leave_a_collector_that_was_off_off() -> None:
    assert gc.isenabled()
    first, second = CollectorPause(), CollectorPause()
    try:
        first.start()
        second.start()
        assert not gc.isenabled()
        first.end()
        first.end()  # once only
        assert not gc.isenabled()  # the other pause still holds
        second.end()
        assert gc.isenabled()
        gc.disable()  # someone else's choice
        third = CollectorPause()
        third.start()
        third.end()
        assert not gc.isenabled()
    finally:
        gc.enable()


def _engine(path: Path, passed: list[str]) -> RunEngine:
    engine = RunEngine(SQLiteStore(path), durability=Durability(delay_horizon=2 * SLEEP, park_after=None))

    @engine.agent("sleeper")
    async def sleeper(ctx: RunContext) -> None:
        await ctx.step("first", lambda: "done")
        passed.append(ctx.run_id)
        await ctx.sleep(SLEEP)

    return engine


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
async def test_recovery_of_many_runs_runs_no_collection_and_turns_the_collector_back_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.db"
    passed: list[str] = []
    async with _engine(path, passed) as engine:
        for _ in range(RUNS):
            await engine.execute("sleeper", None, mode="async")
        await until(lambda: len(passed) == RUNS, timeout=60)

    monkeypatch.setattr(engine_module, "RECOVERY_GC_PAUSE", 0.5, raising=False)
    collections: list[int] = []

    def collected(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    passed.clear()
    gc.callbacks.append(collected)
    try:
        async with _engine(path, passed):
            await until(lambda: len(passed) == RUNS, timeout=60)
            during = list(collections)
            with anyio.fail_after(10):
                while not gc.isenabled():
                    await anyio.sleep(0.05)
    finally:
        gc.callbacks.remove(collected)
        gc.enable()
    assert during == []  # before: the burst ran young and older-generation collections
