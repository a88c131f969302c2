"""A writer process killed with SIGKILL mid-stream loses nothing it acknowledged.

The child process runs the engine on a SQLite file (synchronous=FULL, the default)
and prints every acknowledged seq: an `engine` run streams deltas and prints the
run's committed seq after each `ctx.flush()`; a `direct` run appends straight to
the store and prints each seq whose `append` returned. The parent kills the child
at a random point, then reopens the file and checks that each log is a gapless
prefix 1..n holding every acknowledged event, unchanged, and that on restart the engine
resumes both runs right after that prefix, their half-streamed messages discarded.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from faultkit import sigkill_when
from runengine.adapters.sqlite import SQLiteStore
from runengine.engine import RunEngine
from runengine.events import MessageDelta
from runengine.status import Status
from runengine.testing.conformance import read_all

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

CHILD = r"""
import sys
import anyio
from runengine.adapters.sqlite import SQLiteStore
from runengine.engine import RunEngine
from runengine.options import Durability
from runengine.events import MessageDelta, RunCreated, RunStarted
from datetime import datetime, timezone

path = sys.argv[1]

def say(*parts):
    print(*parts, flush=True)

async def main():
    store = SQLiteStore(path, flush_window=0.002)
    engine = RunEngine(store, durability=Durability(flush_window=0.002))

    @engine.agent("stream")
    async def stream(ctx):
        i = 0
        while True:
            for _ in range(7):
                i += 1
                await ctx.delta(f"e{i} ")
            await ctx.flush()  # durable when it returns
            say("engine", ctx.run_id, ctx.state.last_seq)

    async def direct():
        now = datetime.now(timezone.utc)
        await store.append("direct", [RunCreated(run_id="direct", seq=1, at=now, agent="stream"),
                                      RunStarted(run_id="direct", seq=2, at=now, worker="child")], expected_seq=0)
        say("direct", "direct", 2)
        seq = 2
        while True:
            batch = [MessageDelta(run_id="direct", seq=seq + k, at=now, message_id="m", content=f"d{seq + k}")
                     for k in range(1, 1 + (seq % 5) + 1)]
            await store.append("direct", batch, expected_seq=seq)
            seq = batch[-1].seq
            say("direct", "direct", seq)

    async with engine:
        await engine.execute("stream", mode="async", run_id="engine")
        async with anyio.create_task_group() as tg:
            tg.start_soon(direct)

anyio.run(main)
"""


ANYIO_BACKENDS = ("asyncio",)  # the SQLite store needs asyncio


def run_child_until_killed(path: Path, script: Path, kill_after: int) -> dict[str, int]:
    """Start the writer, read acknowledgements until `kill_after` of them, SIGKILL it."""
    acked: dict[str, int] = {"engine": 0, "direct": 0}
    seen = 0

    def enough(line: str) -> bool:
        nonlocal seen
        parts = line.split()
        if len(parts) != 3 or parts[0] not in acked:
            return False  # a log line, not an acknowledgement
        kind, _run_id, seq = parts
        acked[kind] = max(acked[kind], int(seq))
        seen += 1
        return seen >= kill_after and bool(acked["engine"] and acked["direct"])

    sigkill_when(script, str(path), killed_after=enough)
    return acked


@pytest.mark.anyio
@pytest.mark.parametrize("seed", [1, 2])
async def test_sigkill_mid_stream_keeps_every_acknowledged_event(tmp_path: Path, seed: int) -> None:
    script = tmp_path / "writer.py"
    script.write_text(CHILD)
    path = tmp_path / "crash.db"
    acked = run_child_until_killed(path, script, kill_after=random.Random(seed).randint(60, 400))

    async with SQLiteStore(path) as store:
        direct = await read_all(store, "direct", page=333)
        engine_log = await read_all(store, "engine", page=333)
    # gapless prefixes holding every acknowledged event
    assert [e.seq for e in direct] == list(range(1, len(direct) + 1))
    assert [e.seq for e in engine_log] == list(range(1, len(engine_log) + 1))
    assert len(direct) >= acked["direct"] and len(engine_log) >= acked["engine"]
    # unchanged: the content each writer gave each seq
    assert all(e.content == f"d{e.seq}" for e in direct[2:] if isinstance(e, MessageDelta))
    engine_deltas = [e for e in engine_log if isinstance(e, MessageDelta)]
    assert [e.content for e in engine_deltas] == [f"e{i} " for i in range(1, len(engine_deltas) + 1)]

    # restart: both runs resume right after their prefixes, the half-streamed message dropped
    engine = RunEngine(SQLiteStore(path))

    @engine.agent("stream")
    async def stream(ctx):
        return "resumed"

    async with engine:
        for run_id, log in (("engine", engine_log), ("direct", direct)):
            tail = [e async for e in engine.events(run_id, after_seq=len(log))]
            assert [e.type for e in tail] == ["run.resumed", "message.discarded", "run.completed"]
            assert tail[0].reason == "worker_lost" and tail[-1].output == "resumed"
            state = await engine.status(run_id)
            assert state.status is Status.COMPLETED and state.messages == ()


STEPS_CHILD = r"""
import os, signal, sys
import anyio
from runengine.adapters.sqlite import SQLiteStore
from runengine.engine import RunEngine

path, kill_at, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

async def main():
    engine = RunEngine(SQLiteStore(path))  # synchronous=FULL, the default

    @engine.agent("steps")
    async def steps(ctx):
        i = 0
        while True:
            i += 1
            output = await ctx.step("count", lambda: f"{ctx.run_id}:{i}")
            print("ack", ctx.run_id, i, output, flush=True)
            if ctx.run_id == "r0" and i == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # the instant the step returned

    async with engine:
        for r in range(runs):
            await engine.execute("steps", mode="async", run_id=f"r{r}")
        await anyio.sleep_forever()

anyio.run(main)
"""


@pytest.mark.anyio
@pytest.mark.parametrize("seed", [1, 2])
async def test_a_step_is_recorded_when_the_process_dies_the_instant_it_returned(tmp_path: Path, seed: int) -> None:
    """`ctx.step` returns only once its result is durable: the process SIGKILLs itself right after
    one returns (other runs' steps committing in the same batches), and every step any run
    acknowledged, that one included, is in the file with its output."""
    script = tmp_path / "steps.py"
    script.write_text(STEPS_CHILD)
    path = tmp_path / "steps.db"
    kill_at = random.Random(seed).randint(20, 200)
    done = subprocess.run(
        [sys.executable, str(script), str(path), str(kill_at), "8"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    acked: dict[str, dict[int, str]] = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "ack":
            acked.setdefault(parts[1], {})[int(parts[2])] = parts[3]
    assert max(acked["r0"]) == kill_at

    async with SQLiteStore(path) as store:
        for run_id, steps in acked.items():
            recorded = [e for e in await read_all(store, run_id) if e.type == "step.completed"]
            outputs = {i + 1: event.output for i, event in enumerate(recorded)}
            assert all(outputs.get(i) == output for i, output in steps.items()), (run_id, steps, outputs)
