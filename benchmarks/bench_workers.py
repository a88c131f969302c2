"""PostgreSQL at scale: 1, 2 and 4 `runengine worker` processes on one PostgreSQL executing runs
of 10 durable steps each.

    .venv/bin/python benchmarks/bench_workers.py              # starts its own PostgreSQL 15 (fsync on)
    .venv/bin/python benchmarks/bench_workers.py --quick      # smaller, to check the harness
    .venv/bin/python benchmarks/bench_workers.py --dsn postgresql://user@host/db   # an existing server

For each number of worker processes, in a schema of its own on the same server:

- throughput: --runs runs (an agent of 10 `ctx.step` calls of a trivial function, each step
  committed before the agent goes on) enqueued at once by this process; from the first enqueue
  until every run has completed: runs/s and durable steps/s;
- pick-up latency: --paced runs enqueued one at a time, each once the previous one completed:
  from the run's `run.created` to its `run.started` (both times recorded by PostgreSQL's
  clients on one machine: the queue's wake-up, the claim and the start), p50 and p99; the same
  figure over the burst's runs (queueing behind the others included) is shown beside it.

DBOS Transact beside it, on the same server: the same workload (ten `@DBOS.step` calls per
workflow) on a DBOS queue executed by 1, 2 and 4 DBOS processes (benchmarks/peers/dbos_workers.py,
in the virtualenv .bench-venvs/dbos; --skip-dbos leaves it out).

The reference measured in the same run: the same number of steps as bare asyncpg transactions,
one INSERT of one row each, committed one after the other by one connection (the floor of a
durable step on this server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from runengine import RunContext
from runengine.adapters.postgres import PostgresStore
from runengine.engine import RunEngine

HERE = Path(__file__).resolve().parent
STEPS = 10


def make_engine() -> RunEngine:
    """The worker processes' engine (`runengine worker --app bench_workers:make_engine`)."""
    return register(RunEngine(os.environ["RUNENGINE_BENCH_STORE"]))


def register(engine: RunEngine) -> RunEngine:
    @engine.agent("steps")
    async def steps(ctx: RunContext) -> int:
        total = 0
        for i in range(STEPS):
            total += await ctx.step("add", lambda i=i: i)
        return total

    return engine


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def floor(dsn: str, commits: int) -> float:
    """Bare asyncpg: one INSERT per transaction, one after the other. Returns commits/s."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_floor_steps (run_id text, seq int, data text)")
        started = time.perf_counter()
        for i in range(commits):
            async with conn.transaction():
                await conn.execute("INSERT INTO bench_floor_steps VALUES ($1, $2, $3)", "r", i, '{"output":1}')
        return commits / (time.perf_counter() - started)
    finally:
        await conn.execute("DROP TABLE IF EXISTS bench_floor_steps")
        await conn.close()


async def started_delays(url: str, run_ids: list[str]) -> list[float]:
    """run.started at - run.created at, per run, read from the events table."""
    store = PostgresStore.from_url(url)
    async with store:
        rows = await store._fetch(
            "SELECT c.run_id, extract(epoch FROM s.at - c.at) FROM runengine_events AS c"
            " JOIN runengine_events AS s ON s.run_id = c.run_id AND s.type = 'run.started'"
            " WHERE c.seq = 1 AND c.run_id = ANY($1::text[])",
            (run_ids,),
        )
    return [float(row[1]) for row in rows]


async def with_workers(dsn: str, workers: int, runs: int, paced: int) -> dict[str, Any]:
    url = f"{dsn}{'&' if '?' in dsn else '?'}schema=w_{uuid.uuid4().hex[:10]}"
    async with PostgresStore.from_url(url):  # create the schema before the workers race for it
        pass
    env = dict(os.environ, RUNENGINE_BENCH_STORE=url, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    result: dict[str, Any] = {"workers": workers}
    try:
        for i in range(workers):
            log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_workers_{i}_{os.getpid()}.log"
            logs.append(log_path)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "runengine.adapters.cli", "worker", "--app", "bench_workers:make_engine",
                 "--concurrency", "16"],
                stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=env, cwd=str(HERE),
            ))
        deadline = time.monotonic() + 60
        for log_path in logs:
            while not re.search(r"worker (\S+) ready", log_path.read_text(errors="replace")):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not start: {log_path.read_text()}")
                await asyncio.sleep(0.05)
        async with register(RunEngine(url)) as api:  # enqueues; executes nothing
            # pick-up latency on idle workers
            paced_ids = []
            for _ in range(paced):  # one at a time: each on workers with nothing else to do
                paced_ids.append((await api.execute("steps", mode="async")).run_id)
                await api.wait(paced_ids[-1])
            delays = await started_delays(url, paced_ids)
            result["pickup_p50"], result["pickup_p99"] = percentile(delays, 0.5), percentile(delays, 0.99)
            # throughput: a burst
            started = time.perf_counter()
            ids = [(await api.execute("steps", mode="async")).run_id for _ in range(runs)]
            enqueued = time.perf_counter() - started
            for run_id in ids:
                state = await api.wait(run_id)
                assert state.output == sum(range(STEPS)), state
            wall = time.perf_counter() - started
            burst = await started_delays(url, ids)
            result.update(runs_s=runs / wall, steps_s=runs * STEPS / wall, wall=wall, enqueue_s=enqueued,
                          burst_p50=percentile(burst, 0.5), burst_p99=percentile(burst, 0.99))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    return result


def dbos_with_workers(dbos_python: str, dsn: str, workers: int, runs: int, paced: int) -> dict[str, Any]:
    """The same workload on DBOS: `workers` DBOS processes on a queue, a DBOSClient enqueueing."""
    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    script = str(HERE / "peers" / "dbos_workers.py")
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for i in range(workers):
            log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_workers_dbos_{i}_{os.getpid()}.log"
            logs.append(log_path)
            procs.append(subprocess.Popen([dbos_python, script, "worker", url], stdout=open(log_path, "wb"),
                                          stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        for log_path in logs:
            while "ready" not in log_path.read_text(errors="replace"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"DBOS worker did not start: {log_path.read_text()}")
                time.sleep(0.05)
        out = subprocess.run([dbos_python, script, "burst", url, str(runs), str(paced)], capture_output=True, text=True,
                             timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(f"DBOS burst failed: {out.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(30)
    result["workers"] = workers
    return result


def table(rows: list[dict[str, Any]], floor_rate: float, runs: int, paced: int) -> str:
    lines = [
        f"{runs} runs of {STEPS} durable steps on PostgreSQL (fsync on), enqueued at once, executed by `runengine worker` "
        f"processes (concurrency 16 each); pick-up: {paced} runs enqueued one after the other's end, run.created to run.started. "
        f"Floor: one bare asyncpg INSERT per transaction, one connection, {floor_rate:,.0f} commits/s:",
        "",
        "| worker processes (DBOS: its processes on one queue) | runs/s | durable steps/s | steps/s / floor | pick-up p50 | pick-up p99 | burst: created to started p50 / p99 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.get('label', '')}{row['workers']} | {row['runs_s']:,.0f} | {row['steps_s']:,.0f} | {row['steps_s'] / floor_rate:.1f}x "
            f"| {row['pickup_p50'] * 1e3:,.1f} ms | {row['pickup_p99'] * 1e3:,.1f} ms "
            f"| {row['burst_p50']:.2f} s / {row['burst_p99']:.2f} s |"
        )
    return "\n".join(lines)


def machine() -> str:
    return f"Python {platform.python_version()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"


async def run(dsn: str, args: argparse.Namespace) -> None:
    print(f"machine: {machine()}", flush=True)
    floor_rate = await floor(dsn, args.runs * STEPS // 4)
    print(f"  floor: {floor_rate:,.0f} commits/s", flush=True)
    rows = []
    for workers in args.workers:
        row = await with_workers(dsn, workers, args.runs, args.paced)
        print(f"  {workers} workers: {row['runs_s']:,.0f} runs/s, {row['steps_s']:,.0f} steps/s, "
              f"pick-up p99 {row['pickup_p99'] * 1e3:,.1f} ms", flush=True)
        rows.append(row)
    if args.dbos_python:
        for workers in args.workers:
            row = dbos_with_workers(args.dbos_python, dsn, workers, args.runs, args.paced)
            row["label"] = "DBOS, "
            print(f"  DBOS, {workers} processes: {row['runs_s']:,.0f} runs/s, {row['steps_s']:,.0f} steps/s, "
                  f"pick-up p99 {row['pickup_p99'] * 1e3:,.1f} ms", flush=True)
            rows.append(row)
    print()
    print(f"machine: {machine()}")
    print()
    print(table(rows, floor_rate, args.runs, args.paced))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000, help="runs per burst")
    parser.add_argument("--paced", type=int, default=50, help="runs enqueued one at a time for the pick-up latency")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--quick", action="store_true", help="smaller, to check the harness")
    parser.add_argument("--skip-dbos", action="store_true", help="runengine only (no DBOS virtualenv)")
    parser.add_argument("--dsn", default=None, help="an existing server (default: start one from /usr/lib/postgresql/15/bin)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.paced = 100, 20
    args.dbos_python = None
    if not args.skip_dbos:
        sys.path.insert(0, str(HERE / "peers"))
        from run import peer_python  # the peers' virtualenvs, created on first use

        args.dbos_python = peer_python("dbos")
    if args.dsn:
        asyncio.run(run(args.dsn, args))
        return
    from throwaway_postgres import throwaway_postgres

    with throwaway_postgres() as server:
        asyncio.run(run(server.dsn, args))


if __name__ == "__main__":
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    main()
