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

The second agent (`chaos_open`) keeps one message open across its tool calls, a step and a timer:
a kill in its tail keeps what was streamed before its last recorded call, carried on in a new
message, and every word of each message is kept exactly once (issue 20).
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
# The open-message shape (issue 20): 125 runs under 10 kills failed 27 of them before the fix.
OPEN_RUNS = 125
OPEN_KILLS = 10


def sigkill_storm(tmp_path: Path, agent: str, runs: int, kills: int, seed: int) -> Tally:
    """`runs` runs of `agent` driven over HTTP while `serve` is SIGKILLed `kills` times; the checks of
    chaoskit.check_run on every run afterwards."""
    rng = random.Random(seed)
    counters = tmp_path / "effects.db"
    create_counters(counters)
    server = ServeProcess(
        ["--app", "durable_apps:chaos_engine", "--log-level", "warning"],
        tmp_path / "serve.log",
        env={"RUNENGINE_DURABLE_STORE": f"sqlite:///{tmp_path / 'runs.db'}", "RUNENGINE_DURABLE_COUNTERS": str(counters)},
        cwd=TESTS,
    )
    progress = Progress()
    done_kills = 0
    began = time.monotonic()

    async def kill_at_random_points() -> None:
        nonlocal done_kills
        for k in range(kills):
            # Spread the kills over the whole workload, each at a random instant.
            target = (k + 1) * runs // (kills + 1)
            while progress.done < target:
                await anyio.sleep(0.01)
            await anyio.sleep(rng.uniform(0.0, 0.3))
            await anyio.to_thread.run_sync(server.kill, signal.SIGKILL)
            done_kills += 1
            await anyio.to_thread.run_sync(server.start)

    async def storm() -> None:
        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_at_random_points)
                await drive_all(server.base, runs, CONCURRENCY, progress, agent)

    server.start()
    try:
        anyio.run(storm)
        tally = Tally()
        check_all(server.base, progress.runs, counters, tally)
    finally:
        server.kill(signal.SIGKILL)
    assert done_kills == kills and tally.runs == runs
    assert tally.resumed_runs > 0  # the kills did land in runs
    print(f"\nSQLite chaos ({agent}): {kills} SIGKILLs in {time.monotonic() - began:.1f} s; {tally.line()}")
    return tally


def test_sigkill_serve_fifty_times_every_run_completes_once(tmp_path: Path) -> None:
    sigkill_storm(tmp_path, "chaos", RUNS, KILLS, seed=12)


def test_a_message_open_across_tool_calls_a_step_and_a_timer_survives_sigkills(tmp_path: Path) -> None:
    """Issue 20: the agent streams one message across its tool calls, a step and a timer (the most
    common agent shape); every run completes with each word of each message kept exactly once."""
    tally = sigkill_storm(tmp_path, "chaos_open", OPEN_RUNS, OPEN_KILLS, seed=20)
    assert tally.discarded_messages > 0  # kills did cut a message in its unrecorded tail
