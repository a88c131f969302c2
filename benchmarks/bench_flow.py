"""Flow control benchmark: the scheduling overhead of a concurrency-limited queue, beside DBOS queues.

    .venv/bin/python benchmarks/bench_flow.py                # 10,000 runs per side (a few minutes here)
    .venv/bin/python benchmarks/bench_flow.py --quick        # 500 runs, to check the harness
    .venv/bin/python benchmarks/bench_flow.py --skip-dbos    # runengine only (no peer virtualenv)

A backlog of --runs runs of a trivial agent declared with `concurrency=--limit` is created
first (not timed); then the figure is claims per second: runs started through the limit per
second, from the moment the backlog may start until the last run has ended.

- runengine on SQLite: one engine (it executes its own runs; the backlog waits in its gate).
  The backlog is created by an engine that stops before any run starts (they stay pending
  in the file); the timed engine takes them up at its start.
- runengine on PostgreSQL: the backlog is queued by an API engine; then --workers worker
  engines (in this process, each with its own store and pool) claim within the limit,
  counted over all of them (the claim of a limited agent is one claimer at a time).
- DBOS Transact: a `Queue(concurrency=--limit)` of --runs workflows of one trivial step,
  enqueued before `DBOS.launch()`, timed from the launch until every workflow has ended;
  on its SQLite system database and on the same PostgreSQL server (a database of its own).

DBOS runs in a virtualenv of its own (.bench-venvs/dbos, benchmarks/peers/run.py), one
process per side (benchmarks/peers/dbos_queue_bench.py). PostgreSQL is the test suite's
throwaway server (tests/pg.py), with fsync on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog

from runengine import RunContext, RunEngine
from runengine.adapters.sqlite import SQLiteStore
from runengine.events import RunCreated
from runengine.status import Status
from runengine.worker import WorkerOptions

HERE = Path(__file__).resolve().parent
DBOS_SCRIPT = HERE / "peers" / "dbos_queue_bench.py"
#: Seconds a side may take before the benchmark gives up on it.
SIDE_CAP = 900.0


def make_engine(store: Any, limit: int, **options: Any) -> RunEngine:
    engine = RunEngine(store, **options)

    @engine.agent("trivial", concurrency=limit)
    async def trivial(ctx: RunContext) -> int:
        return 1

    return engine


async def wait_all(engine: RunEngine, run_ids: list[str]) -> None:
    for run_id in run_ids:
        state = await engine.wait(run_id)
        if state.status is not Status.COMPLETED:
            raise RuntimeError(f"run {run_id} ended {state.status.value}")


async def backlog(store: SQLiteStore, runs: int) -> list[str]:
    """`runs` pending runs written straight to the store, as `execute` records them (not timed)."""
    run_ids = [uuid.uuid4().hex for _ in range(runs)]
    now = datetime.now(timezone.utc)
    await store.open()
    try:
        for i, run_id in enumerate(run_ids):
            created = RunCreated(run_id=run_id, seq=1, at=now, agent="trivial", input=i, mode="async")
            await store.append(run_id, [created], expected_seq=0)
    finally:
        await store.close()
    return run_ids


async def runengine_sqlite(path: Path, runs: int, limit: int) -> float:
    """Claims per second of `runs` backlogged runs on SQLite: the engine takes them up at its start."""
    run_ids = await backlog(SQLiteStore(path, synchronous="NORMAL"), runs)
    started = time.perf_counter()
    async with make_engine(SQLiteStore(path), limit) as engine:  # recovers the backlog into its gate
        await asyncio.wait_for(wait_all(engine, run_ids), SIDE_CAP)
    return runs / (time.perf_counter() - started)


async def runengine_postgres(url: str, runs: int, limit: int, workers: int) -> float:
    """Claims per second of `runs` queued runs, claimed by `workers` worker engines."""
    async with make_engine(url, limit) as api:
        run_ids = [(await api.execute("trivial", i, mode="async")).run_id for i in range(runs)]
        started = time.perf_counter()
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(workers):
                await stack.enter_async_context(make_engine(url, limit, worker=WorkerOptions(poll=0.05, concurrency=limit)))
            await asyncio.wait_for(wait_all(api, run_ids), SIDE_CAP)
            seconds = time.perf_counter() - started
    return runs / seconds


def dbos_side(python: str, database_url: str, runs: int, limit: int) -> float | None:
    done = subprocess.run(
        [python, str(DBOS_SCRIPT), database_url, str(runs), str(limit)],
        capture_output=True, text=True, timeout=SIDE_CAP,
    )
    if done.returncode != 0:
        print(f"  DBOS did not finish: {done.stderr[-1500:]}", flush=True)
        return None
    return float(json.loads(done.stdout.strip().splitlines()[-1])["claims_per_second"])


def machine() -> str:
    return f"{platform.machine()}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def table(rows: list[tuple[str, float | None, float | None]], runs: int, limit: int) -> str:
    lines = [
        f"Claims per second: a backlog of {runs:,} runs of a trivial agent, concurrency {limit}",
        "",
        "| store | runengine | DBOS queue | runengine / DBOS |",
        "|---|---:|---:|---:|",
    ]
    for store, ours, theirs in rows:
        mine = f"{ours:,.0f}" if ours is not None else "did not finish"
        peer = f"{theirs:,.0f}" if theirs is not None else "not measured"
        ratio = f"{ours / theirs:.2f}x" if ours and theirs else "-"
        lines.append(f"| {store} | {mine} | {peer} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="500 runs (a smoke test)")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=10, help="the queue's concurrency")
    parser.add_argument("--workers", type=int, default=3, help="PostgreSQL worker engines")
    parser.add_argument("--skip-dbos", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.runs = 500
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    dbos_python = None
    if not args.skip_dbos:
        sys.path.insert(0, str(HERE / "peers"))
        from run import peer_python  # the peers' virtualenvs, created on first use

        dbos_python = peer_python("dbos")
        version = subprocess.run([dbos_python, "-c", "import importlib.metadata as m; print(m.version('dbos'))"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        print(f"DBOS Transact {version} in {Path(dbos_python).parent.parent}", flush=True)
    print(f"machine: {machine()}", flush=True)

    directory = Path(tempfile.mkdtemp(prefix="runengine-flow-"))
    rows: list[tuple[str, float | None, float | None]] = []
    ours = asyncio.run(runengine_sqlite(directory / "flow.db", args.runs, args.limit))
    print(f"  runengine, SQLite: {ours:,.0f} claims/s", flush=True)
    theirs = dbos_side(dbos_python, f"sqlite:///{directory / 'dbos.sqlite'}", args.runs, args.limit) if dbos_python else None
    if theirs is not None:
        print(f"  DBOS, SQLite: {theirs:,.0f} claims/s", flush=True)
    rows.append(("SQLite", ours, theirs))

    if not args.skip_postgres:
        from throwaway_postgres import throwaway_postgres

        with throwaway_postgres() as server:
            ours_pg = asyncio.run(runengine_postgres(server.dsn_for(server.create_database("flow")), args.runs, args.limit,
                                                     args.workers))
            print(f"  runengine, PostgreSQL ({args.workers} workers): {ours_pg:,.0f} claims/s", flush=True)
            theirs_pg = None
            if dbos_python:
                theirs_pg = dbos_side(dbos_python, server.dsn_for(server.create_database("dbos")), args.runs, args.limit)
                if theirs_pg is not None:
                    print(f"  DBOS, PostgreSQL: {theirs_pg:,.0f} claims/s", flush=True)
            rows.append((f"PostgreSQL ({args.workers} worker engines)", ours_pg, theirs_pg))
    print()
    print(f"machine: {machine()}")
    print(table(rows, args.runs, args.limit))


if __name__ == "__main__":
    main()
