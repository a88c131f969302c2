"""Chaos on SQLite (issue 12): `runengine serve` SIGKILLed at random points while HTTP clients drive
runs of a multi-step agent, then restarted on the same file; every run must complete from its log.

The agent (tests/durable_apps.py, `chaos`) thinks, calls three tools whose side effects are
counted in a separate SQLite file, asks for input, and streams its answer as deltas. The clients
create runs (async, with an idempotency key), follow them over SSE from the last seq they saw,
reconnect across restarts, and POST input whenever a run waits. Afterwards, for every run:

- it completed, its log is gapless and folds, and every event a client was sent is in it unchanged;
- each tool's side effect happened exactly once, except for a call in flight at a kill (its
  tool.call recorded, its tool.result not yet, when the run was resumed: the at-least-once
  window), which may have run once more for each such resume; the test counts those;
- the answer is in the run's messages and output exactly once (a partial message cut by a kill
  is dropped with message.discarded and streamed afresh).
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from chaoskit import Progress, Tally, check_all, drive_all
from durable_apps import create_counters
from faultkit import ServeProcess

pytestmark = [pytest.mark.slow]

TESTS = Path(__file__).parent
# The issue asks for 200 runs and 50 kills; both fit in the time budget on 2 cores.
RUNS = 200
KILLS = 50
CONCURRENCY = 8


def test_sigkill_serve_fifty_times_every_run_completes_once(tmp_path: Path) -> None:
    rng = random.Random(12)
    counters = tmp_path / "effects.db"
    create_counters(counters)
    server = ServeProcess(
        ["--app", "durable_apps:chaos_engine", "--log-level", "warning"],
        tmp_path / "serve.log",
        env={"RUNENGINE_DURABLE_STORE": f"sqlite:///{tmp_path / 'runs.db'}", "RUNENGINE_DURABLE_COUNTERS": str(counters)},
        cwd=TESTS,
    )
    progress = Progress()
    kills = 0
    began = time.monotonic()

    async def kill_at_random_points() -> None:
        nonlocal kills
        for k in range(KILLS):
            # Spread the kills over the whole workload, each at a random instant.
            target = (k + 1) * RUNS // (KILLS + 1)
            while progress.done < target:
                await anyio.sleep(0.01)
            await anyio.sleep(rng.uniform(0.0, 0.3))
            await anyio.to_thread.run_sync(server.kill, signal.SIGKILL)
            kills += 1
            await anyio.to_thread.run_sync(server.start)

    async def storm() -> None:
        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_at_random_points)
                await drive_all(server.base, RUNS, CONCURRENCY, progress)

    server.start()
    try:
        anyio.run(storm)
        tally = Tally()
        check_all(server.base, progress.runs, counters, tally)
    finally:
        server.kill(signal.SIGKILL)
    assert kills == KILLS and tally.runs == RUNS
    assert tally.resumed_runs > 0  # the kills did land in runs
    print(f"\nSQLite chaos: {KILLS} SIGKILLs in {time.monotonic() - began:.1f} s; {tally.line()}")
