"""Durable runs benchmark: step cost, crash recovery, resume cost and group commit across runs,
beside DBOS Transact.

    .venv/bin/python benchmarks/bench_durability.py                # full run (about 30 minutes here)
    .venv/bin/python benchmarks/bench_durability.py --quick        # small sizes, to check the harness
    .venv/bin/python benchmarks/bench_durability.py --skip-dbos    # runengine only (no peer virtualenv)
    .venv/bin/python benchmarks/bench_durability.py --only steps concurrent --skip-postgres

Measured in the same run, on the same disk (SQLite files in one temporary directory):

1. cost per durable step: an agent of N `ctx.step` calls of a trivial function on SQLite
   with synchronous=FULL (each step is committed before the agent goes on), beside a DBOS
   workflow of N trivial `@DBOS.step` calls on its SQLite system database. Timed inside
   the agent / workflow around the loop; median of --repeat runs, and p50 / p99 of every
   step. Each runengine run is followed at once by the floor's n commits (plain sqlite3, one
   small row each), so a change of the machine's load hits both alike, then by floor 2: the
   same n commits run on one writer thread, each handed over from the asyncio loop and awaited
   (the least an asyncio library that keeps its loop free pays per durable step).
2. recovery: --runs runs (workflows), each past its first step and in a durable sleep of an
   hour, are SIGKILLed with their process; a fresh process opens the same file and the
   figure is the time from the engine's start (`async with engine` / `DBOS.launch()`) until
   every run's agent has been re-entered past its replayed first step (a counter in the
   agent). The first step's function must not run again.
3. resume cost against length: a run of N recorded steps, SIGKILLed while it sleeps; a
   fresh process opens the file; the time from the engine's start until the agent is past
   its last replayed step, beside `runengine.fold` of the same events (read from the file
   beforehand, decoding not timed), reading them with the store (`store.read`, decoded), and
   the floor of any resume that reads the log: plain sqlite3 fetching the rows, not decoded;
   and how the time grows with 10x the events.

4. group commit across runs: one run of --concurrent-steps durable steps alone, then
   --concurrent-runs such runs started at once, until every one has ended (each checked:
   completed with all its steps recorded): durable steps per second, beside DBOS running as
   many workflows at once, on SQLite (FULL; DBOS on its SQLite system database) and on one
   PostgreSQL server with fsync on (tests/pg.py starts it; DBOS's system database on the same
   server). On PostgreSQL the runs are queued and this engine is their worker.

DBOS runs in a virtualenv of its own (.bench-venvs/dbos, see benchmarks/peers/run.py),
one process per phase (benchmarks/peers/dbos_bench.py). The long runs of part 3 are
written with synchronous=NORMAL to save preparation time; every measured resume opens
the file with synchronous=FULL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import queue
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runengine import RunContext, RunEngine, fold
from runengine.adapters.sqlite import SQLiteStore
from runengine.options import Durability
from runengine.writer import TERMINAL_SNAPSHOT_MIN

HERE = Path(__file__).resolve().parent
DBOS_SCRIPT = HERE / "peers" / "dbos_bench.py"
RESULTS = HERE / "results"
#: How long a sleeping run sleeps: far longer than any benchmark, so it is always mid-sleep.
SLEEP_SECONDS = 3600.0
#: Seconds a phase may take before the benchmark gives up on it.
PHASE_CAP = 600.0


# -- the agents (the same code in the process that is killed and in the one that resumes) ----


class Counters:
    """What the agents of this process did: re-entries past the first step, real step calls."""

    def __init__(self) -> None:
        self.expected = 0
        self.past_first_step = 0
        self.first_step_calls = 0
        self.all_resumed: asyncio.Event | None = None

    def passed(self) -> None:
        self.past_first_step += 1
        if self.past_first_step == self.expected and self.all_resumed is not None:
            self.all_resumed.set()


counters = Counters()


def trivial(i: int) -> int:
    return i


def first_step() -> str:
    counters.first_step_calls += 1
    return "done"


def make_engine(path: Path | None, synchronous: str = "FULL", *, store: Any = None, worker: Any = None) -> RunEngine:
    """The benchmark's agents on a SQLite file, or on `store` (with `worker`: WorkerOptions for a queued store)."""
    # An idle run is taken up only when its timer nears (runengine.idle): a horizon past the
    # runs' hour of sleep makes every one due at the start, so recovery and resume take them all up.
    engine = RunEngine(store if store is not None else SQLiteStore(path, synchronous=synchronous), worker=worker,
                       durability=Durability(delay_horizon=2 * SLEEP_SECONDS, park_after=None))

    @engine.agent("steps")
    async def steps(ctx: RunContext) -> list[float]:
        """N trivial durable steps; returns the seconds each took."""
        took = []
        for i in range(int(ctx.input)):
            started = time.perf_counter()
            await ctx.step("trivial", trivial, i)
            took.append(time.perf_counter() - started)
        return took

    @engine.agent("sleeper")
    async def sleeper(ctx: RunContext) -> None:
        await ctx.step("first", first_step)
        counters.passed()
        await ctx.sleep(SLEEP_SECONDS)

    @engine.agent("long")
    async def long(ctx: RunContext) -> None:
        for i in range(int(ctx.input)):
            await ctx.step("trivial", trivial, i)
        counters.passed()
        await ctx.sleep(SLEEP_SECONDS)

    return engine


# -- the phases that run in processes of their own ----------------------------------------


async def last_event_type(store: SQLiteStore, run_id: str) -> str | None:
    last = await store.last_seq(run_id)
    events = await store.read(run_id, after_seq=last - 1, limit=1)
    return events[0].type if events else None


async def at_rest(store: SQLiteStore, run_id: str) -> bool:
    """The run sleeps durably, and what the engine writes where a run rests is written: a long
    run's snapshot there (and what is committed with it: SQLite packs its rows there), taken once
    its sleep's timer.started has committed (a process asleep for an hour has long written it)."""
    if await last_event_type(store, run_id) != "timer.started":
        return False
    last = await store.last_seq(run_id)
    snapshot = await store.load_snapshot(run_id)
    # The writer's rule: no snapshot where it rests if one is fewer than TERMINAL_SNAPSHOT_MIN
    # events behind (none at all for a short run), so there is nothing more to wait for.
    return last - (snapshot.last_seq if snapshot is not None else 0) < TERMINAL_SNAPSHOT_MIN


async def prepare(path: Path, agent: str, runs: int, input: Any, synchronous: str) -> None:
    """Start `runs` runs of `agent`; print "ready" once every one sleeps durably; wait for SIGKILL."""
    engine = make_engine(path, synchronous)
    counters.expected, counters.all_resumed = runs, asyncio.Event()
    async with engine:
        run_ids = [(await engine.execute(agent, input, mode="async")).run_id for _ in range(runs)]
        await counters.all_resumed.wait()
        store = engine.store
        assert isinstance(store, SQLiteStore)
        waiting = set(run_ids)
        while waiting:  # committed, as a fresh process will read it
            waiting = {run_id for run_id in waiting if not await at_rest(store, run_id)}
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        await asyncio.Event().wait()


async def resume(path: Path, runs: int) -> None:
    """Open the file with an engine; print JSON: seconds from its start until every run is back."""
    engine = make_engine(path)
    counters.expected, counters.all_resumed = runs, asyncio.Event()
    started = time.perf_counter()
    await engine.__aenter__()
    try:
        await asyncio.wait_for(counters.all_resumed.wait(), PHASE_CAP)
        seconds: float | None = time.perf_counter() - started
    except TimeoutError:
        seconds = None
    print(json.dumps({"seconds": seconds, "resumed": counters.past_first_step,
                      "first_step_calls": counters.first_step_calls}), flush=True)
    os._exit(0)  # the runs sleep on: leave them as a crash would, the file is thrown away


# -- driving the phases --------------------------------------------------------------------


def own_phase(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--phase", *args]


def run_until_ready_then_kill(command: list[str], log: Path) -> float:
    """Start `command` in a process group of its own, wait for its "ready" line, SIGKILL the group.
    Returns the seconds it took to get ready."""
    started = time.perf_counter()
    with open(log, "ab") as err:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    watchdog = threading.Timer(PHASE_CAP, os.killpg, (process.pid, signal.SIGKILL))
    watchdog.start()
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        if line != "ready":
            raise RuntimeError(f"{command[-4:]} did not get ready (said {line!r}); see {log}")
        return time.perf_counter() - started
    finally:
        watchdog.cancel()
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def run_for_json(command: list[str], log: Path) -> dict[str, Any]:
    """Run `command` to its end; its last stdout line is a JSON object."""
    with open(log, "ab") as err:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, timeout=PHASE_CAP + 60, check=False)
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{command[-4:]} failed (exit {done.returncode}); see {log}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def copy_db(source: Path, target: Path) -> Path:
    for suffix in ("", "-wal", "-shm", "-journal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")
    return target


# -- 1. cost per durable step ----------------------------------------------------------------


async def runengine_steps(path: Path, floor_path: Path, n: int, repeat: int) -> dict[str, list[float]]:
    """`repeat` runs of n steps, each checked to have n committed steps, each followed at once by
    n floor commits (so a change of the machine's load hits both alike): the seconds per step
    (mean of each run) and of every step, for runengine and the floor."""
    engine = make_engine(path)
    found: dict[str, list[float]] = {"runengine": [], "runengine_every": [], "floor": [], "floor_every": [],
                                     "thread": [], "thread_every": []}
    with floor_connection(floor_path) as floor, ThreadFloor(floor_path) as thread_floor:
        async with engine:
            await engine.execute("steps", 10)  # warm up
            raw_commits(floor, "warm-up", 10)
            await thread_floor.commits("warm-up", 10)
            for r in range(repeat):
                state = await engine.execute("steps", n)
                if state.status.value != "completed":
                    raise RuntimeError(f"the steps run ended {state.status.value}: {state.error}")
                steps = [e async for e in engine.events(state.run_id, follow=False) if e.type == "step.completed"]
                if len(steps) != n:
                    raise RuntimeError(f"{len(steps)} step.completed events for {n} steps")
                found["runengine"].append(statistics.mean(state.output))
                found["runengine_every"].extend(state.output)
                took = raw_commits(floor, str(r), n)
                found["floor"].append(statistics.mean(took))
                found["floor_every"].extend(took)
                took = await thread_floor.commits(str(r), n)
                found["thread"].append(statistics.mean(took))
                found["thread_every"].extend(took)
    return found


@contextlib.contextmanager
def floor_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """The floor's database: plain sqlite3, WAL, synchronous=FULL, one small table."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE steps (run_id TEXT, seq INTEGER, data TEXT, PRIMARY KEY (run_id, seq))")
        yield conn
    finally:
        conn.close()


def raw_commits(conn: sqlite3.Connection, tag: str, n: int) -> list[float]:
    """The floor: the seconds of each of n commits of one small row."""
    took = []
    for i in range(n):
        started = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute("INSERT INTO steps VALUES (?, ?, ?)", (tag, i, '{"name":"trivial","output":1}'))
        conn.execute("COMMIT")
        took.append(time.perf_counter() - started)
    return took


class ThreadFloor:
    """The second floor: the floor's commit of one row run on one writer thread, handed over from
    the event loop (a queue in, `call_soon_threadsafe` out) and awaited, the least an asyncio
    library that keeps its loop free can pay per durable step. Its own connection, on its thread,
    to the floor's file (made by floor_connection)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._jobs: queue.SimpleQueue[tuple[asyncio.Future[None], str, int] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="thread-floor", daemon=True)

    def __enter__(self) -> ThreadFloor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None)
        conn.execute("PRAGMA synchronous = FULL")
        try:
            while (job := self._jobs.get()) is not None:
                future, tag, i = job
                conn.execute("BEGIN")
                conn.execute("INSERT INTO steps VALUES (?, ?, ?)", (f"thread-{tag}", i, '{"name":"trivial","output":1}'))
                conn.execute("COMMIT")
                future.get_loop().call_soon_threadsafe(future.set_result, None)
        finally:
            conn.close()

    async def commits(self, tag: str, n: int) -> list[float]:
        """The seconds of each of n commits, each handed to the thread and awaited in turn."""
        loop = asyncio.get_running_loop()
        took = []
        for i in range(n):
            started = time.perf_counter()
            future: asyncio.Future[None] = loop.create_future()
            self._jobs.put((future, tag, i))
            await future
            took.append(time.perf_counter() - started)
        return took


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def dbos_steps(python: str, path: Path, n: int, repeat: int, log: Path) -> list[float]:
    result = run_for_json([python, str(DBOS_SCRIPT), "steps", str(path), str(n), str(repeat)], log)
    return [float(s) for s in result["per_step_s"]]


# -- 4. group commit across runs ---------------------------------------------------------------


async def runengine_concurrent(store: Any, runs: int, n: int, repeat: int) -> list[float]:
    """Seconds for `runs` runs of n durable steps started at once until every one has ended (each
    checked: completed, n steps recorded), one figure per repeat."""
    from runengine.adapters.postgres import PostgresStore
    from runengine.worker import WorkerOptions

    # On PostgreSQL runs are queued: this engine is also their worker, taking all of them at once.
    queued = isinstance(store, PostgresStore)
    engine = make_engine(None, store=store, worker=WorkerOptions(concurrency=runs, lease=60, poll=0.05) if queued else None)
    seconds = []
    async with engine:
        await engine.execute("steps", 10)  # warm up
        for _ in range(repeat):
            started = time.perf_counter()
            states = await asyncio.gather(*(engine.execute("steps", n) for _ in range(runs)))
            seconds.append(time.perf_counter() - started)
            for state in states:
                if state.status.value != "completed" or state.steps != n:
                    raise RuntimeError(f"a run ended {state.status.value} with {state.steps} of {n} steps")
    return seconds


def dbos_concurrent(python: str, database: str, runs: int, n: int, repeat: int, log: Path) -> list[float]:
    result = run_for_json([python, str(DBOS_SCRIPT), "concurrent", database, str(runs), str(n), str(repeat)], log)
    return [float(s) for s in result["seconds"]]


def concurrent_rows(directory: Path, runs: int, n: int, repeat: int, dbos_python: str | None, log: Path,
                    postgres: bool) -> list[dict[str, Any]]:
    """Steps per second of one run alone and of `runs` runs at once, runengine beside DBOS, on SQLite
    (FULL) and, with `postgres`, on one PostgreSQL server (fsync on) started for this."""
    rows = []

    def measure(store_name: str, make_store: Any, dbos_database: Any) -> None:
        for count in (1, runs):
            row: dict[str, Any] = {"store": store_name, "runs": count, "steps": n}
            row["runengine"] = [count * n / t for t in asyncio.run(runengine_concurrent(make_store(), count, n, repeat))]
            print(f"  runengine on {store_name}, {count} x {n} steps: {median(row['runengine']):,.0f} steps/s", flush=True)
            if dbos_python:
                row["dbos"] = [count * n / t for t in dbos_concurrent(dbos_python, dbos_database(count), count, n, repeat, log)]
                print(f"  DBOS on {store_name}, {count} x {n} steps: {median(row['dbos']):,.0f} steps/s", flush=True)
            rows.append(row)

    measure("SQLite FULL", lambda: SQLiteStore(directory / f"concurrent-{len(rows)}.db"),
            lambda count: str(directory / f"dbos-concurrent-{count}.sqlite"))
    if postgres:
        from throwaway_postgres import throwaway_postgres

        from runengine.adapters.postgres import PostgresStore

        with throwaway_postgres() as server:
            measure("PostgreSQL", lambda: PostgresStore(server.dsn_for(server.create_database("re"))),
                    lambda count: server.dsn_for(server.create_database("dbos")))
    return rows


def concurrent_table(rows: list[dict[str, Any]], repeat: int) -> str:
    dbos = any("dbos" in row for row in rows)
    lines = [f"Group commit across runs: durable steps per second (each step committed before its agent goes on), "
             f"one run alone and many at once (median of {repeat}):", ""]
    header = "| store | runs x steps | runengine steps/s | runengine / one run |"
    rule = "|---|---:|---:|---:|"
    if dbos:
        header += " DBOS steps/s | DBOS / one run | runengine / DBOS |"
        rule += "---:|---:|---:|"
    lines += [header, rule]
    alone: dict[tuple[str, str], float] = {}
    for row in rows:
        ours = median(row["runengine"])
        if row["runs"] == 1:
            alone[(row["store"], "runengine")] = ours
        line = f"| {row['store']} | {row['runs']} x {row['steps']} | {ours:,.0f} | {ours / alone[(row['store'], 'runengine')]:.1f}x |"
        if dbos:
            theirs = median(row["dbos"])
            if row["runs"] == 1:
                alone[(row["store"], "dbos")] = theirs
            line += f" {theirs:,.0f} | {theirs / alone[(row['store'], 'dbos')]:.1f}x | {ours / theirs:.1f}x |"
        lines.append(line)
    return "\n".join(lines)


# -- 2. recovery -------------------------------------------------------------------------------


def check_recovery(side: str, result: dict[str, Any], runs: int) -> float | None:
    if result["first_step_calls"]:
        raise RuntimeError(f"{side}: the first step ran again in {result['first_step_calls']} runs")
    if result["seconds"] is None:
        print(f"  {side}: only {result['resumed']} of {runs} runs resumed within {PHASE_CAP:.0f} s", flush=True)
        return None
    return float(result["seconds"])


def runengine_recovery(directory: Path, runs: int, log: Path) -> float | None:
    path = directory / "recovery.db"
    prepared = run_until_ready_then_kill(own_phase("prepare", str(path), "sleeper", str(runs)), log)
    print(f"  runengine: {runs} runs asleep past their first step in {prepared:.1f} s; SIGKILL", flush=True)
    return check_recovery("runengine", run_for_json(own_phase("resume", str(path), str(runs)), log), runs)


def dbos_recovery(python: str, directory: Path, runs: int, log: Path) -> float | None:
    path = directory / "dbos-recovery.sqlite"
    prepared = run_until_ready_then_kill([python, str(DBOS_SCRIPT), "prepare", str(path), str(runs)], log)
    print(f"  DBOS: {runs} workflows asleep past their first step in {prepared:.1f} s; SIGKILL", flush=True)
    result = run_for_json([python, str(DBOS_SCRIPT), "recover", str(path), str(runs)], log)
    return check_recovery("DBOS", result, runs)


# -- 3. resume cost against the run's length -------------------------------------------------


async def read_all(path: Path) -> list[Any]:
    """Every event of the file's one run, in order (a plain store: no engine, no recovery)."""
    async with SQLiteStore(path) as store:
        page = await store.list_runs(limit=2)
        if len(page.runs) != 1:
            raise RuntimeError(f"expected one run in {path}, found {len(page.runs)}")
        run_id = page.runs[0].run_id
        events: list[Any] = []
        while batch := await store.read(run_id, after_seq=events[-1].seq if events else 0, limit=1000):
            events.extend(batch)
        return events


def read_seconds(path: Path, repeat: int) -> float:
    """The median time to read and decode every event of the file's run (a fresh store each time)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        asyncio.run(read_all(path))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def raw_fetch_seconds(path: Path, repeat: int) -> float:
    """The floor of any resume that reads the log: the median time for plain sqlite3 to fetch the
    run's rows (seq, type, time, payload text), nothing decoded, on a fresh connection each time."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        with sqlite3.connect(path) as conn:
            (run_id,) = conn.execute("SELECT run_id FROM runs").fetchone()
            conn.execute("SELECT seq, type, at_us, data FROM events WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
        times.append(time.perf_counter() - started)
        conn.close()
    return statistics.median(times)


def fold_seconds(events: list[Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        fold(events)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def resume_against_length(directory: Path, steps: int, repeat: int, log: Path) -> dict[str, Any]:
    prepared_path = directory / f"long-{steps}.db"
    prepared = run_until_ready_then_kill(
        own_phase("prepare", str(prepared_path), "long", "1", "--input", str(steps), "--synchronous", "NORMAL"), log
    )
    print(f"  runengine: a run of {steps:,} steps asleep in {prepared:.1f} s; SIGKILL", flush=True)
    events = asyncio.run(read_all(prepared_path))
    folded = fold_seconds(events, repeat)
    read = read_seconds(prepared_path, repeat)
    raw = raw_fetch_seconds(prepared_path, repeat)
    resumes = []
    for i in range(repeat):  # each resume on a fresh copy of the killed file
        path = copy_db(prepared_path, directory / f"long-{steps}-resume{i}.db")
        result = check_recovery("runengine", run_for_json(own_phase("resume", str(path), "1"), log), 1)
        if result is not None:
            resumes.append(result)
    return {"steps": steps, "events": len(events), "fold_s": folded, "read_s": read, "raw_s": raw,
            "resume_s": statistics.median(resumes) if resumes else None}


# -- the report ------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(results: dict[str, Any], dbos: bool) -> str:
    """The tables of the parts that ran."""
    parts = []
    if results["steps"]:
        parts.append(steps_table(results, dbos))
    if results["recovery"]["runengine"]:
        parts.append(recovery_table(results, dbos))
    if results["resume"]:
        parts.append(resume_table(results))
    if results["concurrent"]:
        parts.append(concurrent_table(results["concurrent"], results["concurrent_repeat"]))
    return "\n\n".join(parts)


def steps_table(results: dict[str, Any], dbos: bool) -> str:
    lines = [f"Durable steps on SQLite (synchronous=FULL), µs per step (mean per run, median of {results['repeat']} runs; "
             "p50 and p99 of every step of those runs); the floor: one plain sqlite3 commit of one row per step "
             "(WAL, synchronous=FULL):", ""]
    # DBOS / floor is the most any design that commits once per step can be cheaper than DBOS here.
    head = ("| steps per run | floor: sqlite3 commit | floor p50 / p99 | runengine `ctx.step` | runengine p50 / p99 "
            "| runengine / floor (mean) | runengine / floor (p50) | floor 2: commit on a thread, awaited | floor 2 p50 / p99 "
            "| runengine / floor 2 (mean) | runengine / floor 2 (p50) |")
    rule = "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if dbos:
        head += " DBOS `@DBOS.step` | DBOS / runengine | DBOS / floor (the ceiling) |"
        rule += "---:|---:|---:|"
    lines += [head, rule]
    for row in results["steps"]:
        floor, ours = median(row["floor"]) * 1e6, median(row["runengine"]) * 1e6
        f50, f99 = percentile(row["floor_every"], 0.5) * 1e6, percentile(row["floor_every"], 0.99) * 1e6
        o50, o99 = percentile(row["runengine_every"], 0.5) * 1e6, percentile(row["runengine_every"], 0.99) * 1e6
        line = (f"| {row['n']:,} | {floor:,.0f} | {f50:,.0f} / {f99:,.0f} | {ours:,.0f} | {o50:,.0f} / {o99:,.0f} "
                f"| {ours / floor:.2f}x | {o50 / f50:.2f}x |")
        if row.get("thread"):  # results of a run before the second floor existed have none
            hop = median(row["thread"]) * 1e6
            h50, h99 = percentile(row["thread_every"], 0.5) * 1e6, percentile(row["thread_every"], 0.99) * 1e6
            line += f" {hop:,.0f} | {h50:,.0f} / {h99:,.0f} | {ours / hop:.2f}x | {o50 / h50:.2f}x |"
        else:
            line += " - | - | - | - |"
        if dbos:
            theirs = median(row["dbos"]) * 1e6
            line += f" {theirs:,.0f} | {theirs / ours:.1f}x | {theirs / floor:.1f}x |"
        lines.append(line)
    return "\n".join(lines)


def recovery_table(results: dict[str, Any], dbos: bool) -> str:

    def cell(values: list[float | None]) -> str:
        done = [v for v in values if v is not None]
        if len(done) < len(values):
            return f"{len(values) - len(done)} of {len(values)} did not finish"
        return f"{median(done):.2f} s"

    runs = results["runs"]
    lines = [f"Recovery: {runs:,} runs SIGKILLed in a durable sleep past their first step; engine start until "
              f"every run is executing again (median of {len(results['recovery']['runengine'])}):", ""]
    if dbos:
        ours, theirs = results["recovery"]["runengine"], results["recovery"]["dbos"]
        ratio = "-"
        if None not in ours and None not in theirs:
            ratio = f"{median(theirs) / median(ours):.1f}x"
        lines += ["| runengine | DBOS | DBOS / runengine |", "|---:|---:|---:|", f"| {cell(ours)} | {cell(theirs)} | {ratio} |"]
    else:
        lines += ["| runengine |", "|---:|", f"| {cell(results['recovery']['runengine'])} |"]
    return "\n".join(lines)


def resume_table(results: dict[str, Any]) -> str:
    lines = ["Resume against the run's length: engine start until the agent is past its last replayed step, "
              "beside `runengine.fold` of the same events and reading them from the file (`store.read`, decoded) "
              f"(median of {results['resume_repeat']}):", "",
              "| events in the run | resume | fold | read | floor: sqlite3 fetch, not decoded | resume / floor "
              "| resume / fold | resume / (read + fold) |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["resume"]:
        resume_s, fold_s, read_s, raw_s = row["resume_s"], row["fold_s"], row["read_s"], row["raw_s"]
        known = f"| {row['events']:,} | {{}} | {fold_s * 1e3:,.0f} ms | {read_s * 1e3:,.0f} ms | {raw_s * 1e3:,.0f} ms | {{}} "
        if resume_s is None:
            lines.append(known.format("did not finish", "-") + "| - | - |")
        else:
            lines.append(known.format(f"{resume_s * 1e3:,.0f} ms", f"{resume_s / raw_s:.1f}x")
                         + f"| {resume_s / fold_s:.1f}x | {resume_s / (read_s + fold_s):.2f}x |")
    rows = results["resume"]
    if len(rows) >= 2 and rows[0]["resume_s"] and rows[-1]["resume_s"]:
        events_x = rows[-1]["events"] / rows[0]["events"]
        lines += ["", f"{events_x:.0f}x the events: resume took {rows[-1]['resume_s'] / rows[0]['resume_s']:.1f}x the time, "
                  f"fold {rows[-1]['fold_s'] / rows[0]['fold_s']:.1f}x, read {rows[-1]['read_s'] / rows[0]['read_s']:.1f}x."]
    return "\n".join(lines)


def machine() -> str:
    return (f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 100, 1_000], help="steps per run in part 1")
    parser.add_argument("--repeat", type=int, default=5, help="runs per size in part 1 (median)")
    parser.add_argument("--runs", type=int, default=1_000, help="sleeping runs killed and recovered in part 2")
    parser.add_argument("--recovery-repeat", type=int, default=3)
    parser.add_argument("--events", type=int, nargs="+", default=[10_000, 100_000], help="steps of the long runs of part 3")
    parser.add_argument("--resume-repeat", type=int, default=3)
    parser.add_argument("--concurrent-runs", type=int, default=100, help="runs at once in part 4")
    parser.add_argument("--concurrent-steps", type=int, default=100, help="steps per run in part 4")
    parser.add_argument("--concurrent-repeat", type=int, default=3, help="repeats of part 4 (median)")
    parser.add_argument("--skip-postgres", action="store_true", help="part 4 on SQLite only (no PostgreSQL server)")
    parser.add_argument("--only", choices=["steps", "recovery", "resume", "concurrent"], nargs="+",
                        help="run only these parts (default: all)")
    parser.add_argument("--skip-dbos", action="store_true", help="runengine alone (no DBOS virtualenv)")
    parser.add_argument("--quick", action="store_true", help="small sizes to check the harness")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)  # the benchmark's own child processes
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--synchronous", default="FULL", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        name, path = args.phase[0], Path(args.phase[1])
        if name == "prepare":
            agent, runs = args.phase[2], int(args.phase[3])
            asyncio.run(prepare(path, agent, runs, args.input, args.synchronous))
        elif name == "resume":
            asyncio.run(resume(path, int(args.phase[2])))
        else:
            raise SystemExit(f"unknown phase {name!r}")
        return

    if args.quick:
        args.steps, args.repeat, args.runs, args.recovery_repeat = [10, 100], 1, 50, 1
        args.events, args.resume_repeat = [200, 2_000], 1
        args.concurrent_runs, args.concurrent_steps, args.concurrent_repeat = 10, 20, 1
    parts = set(args.only or ["steps", "recovery", "resume", "concurrent"])
    dbos_python = None
    if not args.skip_dbos:
        sys.path.insert(0, str(HERE / "peers"))
        from run import peer_python  # the peers' virtualenvs, created on first use

        dbos_python = peer_python("dbos")
        version = subprocess.run([dbos_python, "-c", "import importlib.metadata as m; print(m.version('dbos'))"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        print(f"DBOS Transact {version} in {Path(dbos_python).parent.parent}", flush=True)
    print(f"machine: {machine()}", flush=True)

    directory = Path(tempfile.mkdtemp(prefix="runengine-durability-"))
    RESULTS.mkdir(exist_ok=True)
    log = RESULTS / "durability-phases.log"  # the child processes' stderr
    results: dict[str, Any] = {"repeat": args.repeat, "runs": args.runs, "resume_repeat": args.resume_repeat, "steps": [], "resume": [],
                               "recovery": {"runengine": [], "dbos": []}, "concurrent": [],
                               "concurrent_repeat": args.concurrent_repeat}
    try:
        if "steps" in parts:
            print("1. cost per durable step", flush=True)
        for n in args.steps if "steps" in parts else []:
            row: dict[str, Any] = {"n": n, **asyncio.run(runengine_steps(directory / f"steps-{n}.db", directory / f"floor-{n}.db", n, args.repeat))}
            every = row["runengine_every"]
            print(f"  runengine, {n} steps: {median(row['runengine']) * 1e6:,.0f} µs per step, p50 {percentile(every, 0.5) * 1e6:,.0f}, "
                  f"p99 {percentile(every, 0.99) * 1e6:,.0f}", flush=True)
            print(f"  floor, {n} commits (each repeat right after runengine's): {median(row['floor']) * 1e6:,.0f} µs per commit", flush=True)
            print(f"  floor 2, {n} commits on a thread, awaited (right after the floor's): {median(row['thread']) * 1e6:,.0f} µs per commit",
                  flush=True)
            if dbos_python:
                row["dbos"] = dbos_steps(dbos_python, directory / f"dbos-steps-{n}.sqlite", n, args.repeat, log)
                print(f"  DBOS, {n} steps: {median(row['dbos']) * 1e6:,.0f} µs per step", flush=True)
            results["steps"].append(row)

        if "recovery" in parts:
            print("2. recovery", flush=True)
        for i in range(args.recovery_repeat if "recovery" in parts else 0):
            repeat_dir = directory / f"recovery-{i}"
            repeat_dir.mkdir()
            seconds = runengine_recovery(repeat_dir, args.runs, log)
            results["recovery"]["runengine"].append(seconds)
            print(f"  runengine: all {args.runs} back in {seconds} s", flush=True)
            if dbos_python:
                seconds = dbos_recovery(dbos_python, repeat_dir, args.runs, log)
                results["recovery"]["dbos"].append(seconds)
                print(f"  DBOS: all {args.runs} back in {seconds} s", flush=True)

        if "resume" in parts:
            print("3. resume against the run's length", flush=True)
        for steps in args.events if "resume" in parts else []:
            row = resume_against_length(directory, steps, args.resume_repeat, log)
            results["resume"].append(row)
            print(f"  {row['events']:,} events: resume {row['resume_s']} s, fold {row['fold_s']:.4f} s, "
                  f"floor {row['raw_s']:.4f} s", flush=True)

        if "concurrent" in parts:
            print("4. group commit across runs", flush=True)
            results["concurrent"] = concurrent_rows(directory, args.concurrent_runs, args.concurrent_steps, args.concurrent_repeat,
                                                    dbos_python, log, postgres=not args.skip_postgres)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    print()
    print(f"machine: {machine()}")
    print()
    print(table(results, dbos_python is not None))
    sys.stdout.flush()
    os._exit(0)  # the PostgreSQL store's and DBOS' leftovers need no orderly exit


if __name__ == "__main__":
    main()
