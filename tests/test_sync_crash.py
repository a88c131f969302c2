"""A sync run answered is durable: a process killed with SIGKILL right after answering keeps it.

A sync run commits its run.created with its first batch (here: with its end), not alone
before it starts, so its answer is the only acknowledgement there is. The child process runs
sync runs on a SQLite file (synchronous=FULL) and prints each run's id the moment `execute`
returned; the parent kills it mid-way and finds every printed run completed, its whole log
there, and any run of the file whole (created, started, its message, its end) or absent.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from faultkit import sigkill_when
from runengine.adapters.sqlite import SQLiteStore
from runengine.status import Status
from runengine.testing.conformance import read_all

pytestmark = pytest.mark.server  # it starts processes

ANYIO_BACKENDS = ("asyncio",)  # the SQLite store needs asyncio

CHILD = r"""
import sys
import anyio
from runengine.adapters.sqlite import SQLiteStore
from runengine.engine import RunEngine

async def main():
    engine = RunEngine(SQLiteStore(sys.argv[1]))

    @engine.agent("echo")
    async def echo(ctx):
        await ctx.say(str(ctx.input))

    async with engine:
        i = 0
        while True:
            i += 1
            state = await engine.execute("echo", f"n{i}", mode="sync")
            print("answered", state.run_id, state.status.value, flush=True)

anyio.run(main)
"""


def answered_until_killed(path: Path, script: Path, kill_after: int) -> list[str]:
    answered: list[str] = []

    def enough(line: str) -> bool:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "answered":
            assert parts[2] == "completed"
            answered.append(parts[1])
        return len(answered) >= kill_after

    sigkill_when(script, str(path), killed_after=enough)
    return answered


@pytest.mark.anyio
@pytest.mark.parametrize("kill_after", [1, 37])
async def test_every_answered_sync_run_survives_a_sigkill(tmp_path: Path, kill_after: int) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    path = tmp_path / "runs.db"
    answered = await anyio.to_thread.run_sync(answered_until_killed, path, script, kill_after)
    store = SQLiteStore(path)
    await store.open()
    try:
        for run_id in answered:
            summary = await store.get_run(run_id)
            assert summary is not None and summary.status is Status.COMPLETED, run_id
        page = await store.list_runs(limit=1000)
        assert {r.run_id for r in page.runs} >= set(answered)
        for row in page.runs:  # a run is there whole (the answered ones, maybe one more) or not at all
            types = [e.type for e in await read_all(store, row.run_id)]
            assert types == ["run.created", "run.started", "message.completed", "run.completed"], (row.run_id, types)
    finally:
        await store.close()
