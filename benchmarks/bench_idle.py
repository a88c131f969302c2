"""Idle runs benchmark: what 100,000 runs waiting for input or in a durable sleep cost a restarted engine.

    .venv/bin/python benchmarks/bench_idle.py                  # 100,000 runs (a few minutes here)
    .venv/bin/python benchmarks/bench_idle.py --runs 10000     # fewer
    .venv/bin/python benchmarks/bench_idle.py --quick          # 2,000 runs, to check the harness

A SQLite file (synchronous=FULL) holds --runs runs: half of them asked for input (`ctx.ask`, no
deadline), half are in a durable sleep (`ctx.sleep_until`) whose timer comes due --due seconds
after the engine starts. (Their logs, what an engine writes for such runs, are appended straight
to the store to save preparation time.) A fresh process then opens the file and measures:

- start-up: from `RunEngine(...)` entering (`async with engine`) until it returned, and until it
  had settled: every run it took up was back in its wait (an engine that holds nothing has
  nothing to settle);
- RSS once settled (VmRSS), and the process's peak (VmHWM), against the same interpreter with
  runengine imported and an empty engine started on an empty file (the reference, measured in
  the same run);
- runs held in memory (the driver's active set) once settled;
- that every run goes on: the time until every timer has fired and its run completed (all of
  them come due at once: a mass wake), then the time to give every waiting run its input (64 at a
  time through `engine.resume`) until all of them completed; the peak RSS after each, and the
  most runs held at once (looked at every 50 ms).

Old code is measured by running this file with the old package first on PYTHONPATH (the figures
in docs/benchmarks.md say which).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from runengine import RunContext, RunEngine
from runengine.adapters.sqlite import SQLiteStore
from runengine.events import RunCreated, RunStarted, RunWaitingForInput, TimerStarted
from runengine.options import Durability
from runengine.wire import format_time

#: The question every waiting run asked (its replay asks it again).
QUESTION = "approve?"
#: Runs appended per batch of concurrent appends while preparing.
PREPARE_BATCH = 2_000
#: Inputs given at once.
RESUME_CONCURRENCY = 64
#: Seconds a phase may take before the benchmark gives up on it.
PHASE_CAP = 900.0


def memory_kb() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process, in kB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def make_engine(path: Path, horizon: float) -> RunEngine:
    engine = RunEngine(SQLiteStore(str(path)), durability=Durability(delay_horizon=horizon))

    @engine.agent("asker")
    async def asker(ctx: RunContext) -> Any:
        return await ctx.ask(QUESTION)

    @engine.agent("sleeper")
    async def sleeper(ctx: RunContext) -> str:
        await ctx.sleep_until(datetime.fromisoformat(ctx.input))
        return "rested"

    return engine


# -- the child processes ---------------------------------------------------------------------------


async def prepare(path: Path, runs: int, wake: datetime) -> None:
    """Append the logs of `runs` idle runs: even ones wait for input, odd ones sleep until `wake`."""
    at = datetime.now(timezone.utc)
    async with SQLiteStore(str(path), synchronous="NORMAL") as store:
        for start in range(0, runs, PREPARE_BATCH):
            appends = []
            for i in range(start, min(start + PREPARE_BATCH, runs)):
                run_id = f"run-{i:07d}"
                if i % 2 == 0:
                    events = [RunCreated(run_id=run_id, seq=1, at=at, agent="asker", mode="async"),
                              RunStarted(run_id=run_id, seq=2, at=at, worker="bench"),
                              RunWaitingForInput(run_id=run_id, seq=3, at=at, request=QUESTION)]
                else:
                    events = [RunCreated(run_id=run_id, seq=1, at=at, agent="sleeper", input=wake.isoformat(), mode="async"),
                              RunStarted(run_id=run_id, seq=2, at=at, worker="bench"),
                              TimerStarted(run_id=run_id, seq=3, at=at, timer_id=f"timer_{i}", until=wake)]
                appends.append(store.append(run_id, events, expected_seq=0))
            await asyncio.gather(*appends)


def count(path: Path, status: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM runs WHERE status = ?", (status,)).fetchone()[0])


async def settled(engine: RunEngine) -> None:
    """Until every run the engine holds is back in its durable wait."""
    while True:
        busy = [a for a in engine.driver.active.values() if a.recorder is None or not a.recorder.waiting]
        if not busy:
            return
        await asyncio.sleep(0.05)


async def measure(path: Path, runs: int, horizon: float, wake_epoch: float | None) -> dict[str, Any]:
    """One engine start on the file: start-up, memory, then every run taken to its end."""
    result: dict[str, Any] = {}
    engine = make_engine(path, horizon)
    started = time.perf_counter()
    async with engine:
        result["start_s"] = time.perf_counter() - started
        await asyncio.wait_for(settled(engine), PHASE_CAP)
        result["settled_s"] = time.perf_counter() - started
        result["held"] = len(engine.driver.active)
        result["rss_kb"], result["hwm_kb"] = memory_kb()
        if wake_epoch is None:  # the reference: an empty file
            return result
        held = asyncio.create_task(most_held(engine))
        # Every timer: fired and its run completed.
        sleepers = runs // 2
        began = time.perf_counter()
        while count(path, "completed") < sleepers:
            if time.perf_counter() - began > PHASE_CAP:
                raise SystemExit(f"only {count(path, 'completed')} of {sleepers} timers fired within {PHASE_CAP} s")
            await asyncio.sleep(0.2)
        result["timers_s"] = time.time() - wake_epoch  # from when they came due
        result["timers_hwm_kb"] = memory_kb()[1]
        # Every waiting run: its input, then completed. RESUME_CONCURRENCY givers take the next run
        # in turn (tens of thousands of tasks made at once would weigh more than the runs).
        waiting = iter(range(0, runs, 2))

        async def give() -> None:
            for i in waiting:
                await engine.resume(f"run-{i:07d}", "yes")

        began = time.perf_counter()
        await asyncio.gather(*(give() for _ in range(RESUME_CONCURRENCY)))
        while count(path, "completed") < runs:
            if time.perf_counter() - began > PHASE_CAP:
                raise SystemExit(f"only {count(path, 'completed')} of {runs} runs completed within {PHASE_CAP} s")
            await asyncio.sleep(0.2)
        result["inputs_s"] = time.perf_counter() - began
        result["end_hwm_kb"] = memory_kb()[1]
        held.cancel()
        result["most_held"] = await held
    return result


async def most_held(engine: RunEngine) -> int:
    """The most runs the engine held at once (looked at every 50 ms), until cancelled."""
    most = 0
    try:
        while True:
            most = max(most, len(engine.driver.active))
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        return most


# -- the parent ------------------------------------------------------------------------------------


def child(*args: str) -> Any:
    out = subprocess.run([sys.executable, __file__, "--phase", *args], capture_output=True, text=True, timeout=3 * PHASE_CAP)
    if out.returncode != 0:
        raise SystemExit(f"phase {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else None


def run_benchmark(runs: int, due: float, directory: Path) -> dict[str, Any]:
    reference_db = directory / "empty.db"
    reference = child("measure", str(reference_db), "0", "1.0", "reference")
    path = directory / "idle.db"
    began = time.perf_counter()
    # The timers come due `due` seconds after the measured start (the preparation's time estimated).
    child("prepare", str(path), str(runs), "0")
    prepared = time.perf_counter() - began
    print(f"  {runs:,} idle runs written in {prepared:.1f} s", flush=True)
    measured = child("measure", str(path), str(runs), "1.0", str(due))
    return {"runs": runs, "reference": reference, "measured": measured}


def table(result: dict[str, Any]) -> str:
    ref, got, runs = result["reference"], result["measured"], result["runs"]
    mb = 1024.0
    lines = [
        f"{runs:,} idle runs on SQLite (half waiting for input, half in a durable sleep), a fresh process "
        "opening the file; the reference: the same process with an empty file:",
        "",
        "| | reference (no runs) | with the idle runs | per idle run |",
        "|---|---:|---:|---:|",
        f"| engine start returned | {ref['start_s']:.2f} s | {got['start_s']:.2f} s | - |",
        f"| settled (every run taken up is back in its wait) | {ref['settled_s']:.2f} s | {got['settled_s']:.2f} s | - |",
        f"| runs held in memory | {ref['held']} | {got['held']:,} | - |",
        f"| RSS once settled | {ref['rss_kb'] / mb:.0f} MB | {got['rss_kb'] / mb:.0f} MB "
        f"| {(got['rss_kb'] - ref['rss_kb']) * 1024 / runs:,.0f} bytes |",
        f"| peak RSS at start | {ref['hwm_kb'] / mb:.0f} MB | {got['hwm_kb'] / mb:.0f} MB | - |",
        "",
        f"Every run goes on: all {runs // 2:,} timers fired and their runs completed {got['timers_s']:.1f} s after "
        f"they came due (peak RSS by then {got['timers_hwm_kb'] / mb:.0f} MB); all {runs // 2:,} waiting runs given "
        f"their input ({RESUME_CONCURRENCY} at a time) and completed in {got['inputs_s']:.1f} s; peak RSS by then "
        f"{got['end_hwm_kb'] / mb:.0f} MB; at most {got['most_held']:,} runs held at once meanwhile.",
    ]
    return "\n".join(lines)


def machine() -> str:
    return (f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000, help="idle runs (half waiting for input, half asleep)")
    parser.add_argument("--due", type=float, default=20.0, help="seconds after the start when the timers come due")
    parser.add_argument("--quick", action="store_true", help="2,000 runs, to check the harness")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)  # the benchmark's own child processes
    args = parser.parse_args()

    if args.phase:
        name, path, runs = args.phase[0], Path(args.phase[1]), int(args.phase[2])
        if name == "prepare":
            # a placeholder wake time, rewritten by `measure` (it knows when the engine starts)
            asyncio.run(prepare(path, runs, datetime(2100, 1, 1, tzinfo=timezone.utc)))
        elif name == "measure":
            horizon, due = float(args.phase[3]), args.phase[4]
            wake_epoch = None if due == "reference" else float(due) + time.time()
            if wake_epoch is not None:
                reschedule(path, wake_epoch)
            print(json.dumps(asyncio.run(measure(path, runs, horizon, wake_epoch))))
        else:
            raise SystemExit(f"unknown phase {name!r}")
        return

    if args.quick:
        args.runs, args.due = 2_000, 5.0
    print(f"machine: {machine()}", flush=True)
    directory = Path(tempfile.mkdtemp(prefix="runengine-idle-"))
    try:
        result = run_benchmark(args.runs, args.due, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print()
    print(f"machine: {machine()}")
    print()
    print(table(result))


def reschedule(path: Path, wake_epoch: float) -> None:
    """Move every sleeper's timer (and its input, which its replay sleeps until) to `wake_epoch`,
    in the file, before the engine opens it: the timers come due a known time after the start."""
    wake = datetime.fromtimestamp(wake_epoch, timezone.utc)
    until_us = int(wake_epoch * 1_000_000)
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        conn.execute("UPDATE events SET data = json_set(data, '$.until', ?) WHERE type = 'timer.started'",
                     (format_time(wake),))
        conn.execute("UPDATE events SET data = json_set(data, '$.input', ?) WHERE type = 'run.created' "
                     "AND json_extract(data, '$.agent') = 'sleeper'", (wake.isoformat(),))
        if "wake_at" in columns:  # the timer index of this code (older code has none)
            conn.execute("UPDATE runs SET wake_at = ? WHERE agent = 'sleeper' AND status = 'running'", (until_us,))


if __name__ == "__main__":
    main()
