"""A process killed with SIGKILL while its run packs its rows at rest leaves a log whose packed
chunks (adapters.log_packs) are each exactly its rows, and a resume that gets every step back.

The snapshot commit at a rest now carries the run's packed rows too: one transaction, so a kill
leaves both or neither. The child runs steps and short sleeps (a rest each, packing the rows since
the last one) and is killed at a random point; the parent checks every chunk against the log
row for row and resumes the run in a fresh engine: every recorded step replayed, not called again.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from faultkit import sigkill_when
from kit import until
from runengine import RunEngine
from runengine.adapters.sqlite import SQLiteStore
from runengine.context import RunContext
from runengine.options import Durability

pytestmark = pytest.mark.server  # it starts processes

ROUND = 300  # steps between two rests (packs of 200 rows or more: the child lowers PACK_MIN)

CHILD = r"""
import sys
import anyio
import runengine.adapters.log_packs as log_packs
from runengine.adapters.sqlite import SQLiteStore
from runengine.engine import RunEngine
from runengine.options import Durability

log_packs.PACK_MIN = 200
path, rounds = sys.argv[1], int(sys.argv[2])

async def main():
    engine = RunEngine(SQLiteStore(path), durability=Durability(park_after=None))

    @engine.agent("resting")
    async def resting(ctx):
        for r in range(rounds):
            for i in range(%(round)d):
                await ctx.step("s", lambda r=r, i=i: [r, i, "ünï"])
            await ctx.sleep(0.001)  # a rest: its snapshot, and the rows packed with it
            print("rested", r, flush=True)
        await ctx.sleep(3600)

    async with engine:
        await engine.execute("resting", mode="async", run_id="resting")
        await anyio.sleep_forever()

anyio.run(main)
""" % {"round": ROUND}


def _engine(path: Path, seen: dict[str, Any], rounds: int) -> RunEngine:
    engine = RunEngine(SQLiteStore(path), durability=Durability(delay_horizon=7200.0, park_after=None))

    def called() -> None:
        seen["calls"] = seen.get("calls", 0) + 1

    @engine.agent("resting")
    async def resting(ctx: RunContext) -> None:
        outputs = []
        for r in range(rounds):
            for i in range(ROUND):
                outputs.append(await ctx.step("s", lambda r=r, i=i: (called(), [r, i, "ünï"])[1]))
            await ctx.sleep(0.001)
        seen["outputs"] = outputs
        await ctx.sleep(3600)

    return engine


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
async def test_a_kill_at_rest_leaves_chunks_that_are_the_log_and_a_run_that_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runengine.replay as replay

    monkeypatch.setattr(replay, "PACKED_FROM", 200)
    rounds = 6
    path = tmp_path / "runs.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    kill_after = random.Random().randint(2, rounds - 1)
    sigkill_when(script, str(path), str(rounds), killed_after=lambda line: line.split()[:2] == ["rested", str(kill_after)])

    with sqlite3.connect(path) as conn:
        chunks = conn.execute("SELECT first_seq, last_seq, packed FROM log_packs ORDER BY first_seq").fetchall()
        rows = conn.execute("SELECT seq, type, at_us, data FROM events WHERE run_id = 'resting' ORDER BY seq").fetchall()
    assert len(chunks) >= 2 and chunks[0][0] == 1
    for (first, last, packed), following in zip(chunks, chunks[1:] + [(None,)]):
        assert following[0] in (None, last + 1)
        assert [tuple(row) for row in msgspec.msgpack.decode(packed)] == rows[first - 1 : last]

    recorded = sum(1 for row in rows if row[1] == "step.completed")
    assert recorded >= (kill_after + 1) * ROUND
    seen: dict[str, Any] = {}
    async with _engine(path, seen, rounds):
        await until(lambda: "outputs" in seen, timeout=60)
    assert seen.get("calls", 0) == rounds * ROUND - recorded  # only the steps the log lacked
    assert seen["outputs"] == [[r, i, "ünï"] for r in range(rounds) for i in range(ROUND)]
