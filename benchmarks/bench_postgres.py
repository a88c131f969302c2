"""PostgreSQL store benchmark: one command, prints a table.

    .venv/bin/python benchmarks/bench_postgres.py              # starts its own PostgreSQL 15 (fsync on)
    .venv/bin/python benchmarks/bench_postgres.py --quick      # smaller, for a smoke test
    .venv/bin/python benchmarks/bench_postgres.py --dsn postgresql://user@host/db   # an existing server

Measured in the same run, against the same server, into the same table:

- reference: raw asyncpg, a multi-row insert (`INSERT ... SELECT * FROM unnest(...)`) of
  100 prepared rows per transaction into the store's own events table;
- the engine on PostgresStore (worker in the same process): 1 run x 100k `ctx.delta`
  calls, and 100 runs x 1k deltas at once; events/s and the ratio to the reference; the
  store's commit latency p50/p99 and mean events per transaction;
- replay: `read(after_seq=last-100, limit=100)` on a 1k-event and a 1M-event run, and
  `engine.status` of both (the big one has a snapshot 500 events before its end);
- end to end: 2 `runengine worker` processes execute 100 runs of 1k deltas started at
  once by this process, which streams every run's events (LISTEN/NOTIFY across processes):
  wall time, events/s delivered, time to the first delta and to the end, p50/p99.

Rounds are interleaved (reference, engine, reference, ...) and the median is shown:
this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg

from runengine.adapters.postgres import PostgresStore
from runengine.engine import RunEngine
from runengine.events import Event, MessageDelta, RunCreated, RunStarted
from runengine.reducer import Fold
from runengine.worker import WorkerOptions
from timing import median_time

HERE = Path(__file__).resolve().parent
RUN_ID = "0123456789abcdef0123456789abcdef"


def make_engine() -> RunEngine:
    """The worker processes' engine (`runengine worker --app bench_postgres:make_engine`)."""
    return register(RunEngine(os.environ["RUNENGINE_BENCH_STORE"]))


def register(engine: RunEngine) -> RunEngine:
    @engine.agent("tokens")
    async def tokens(ctx: Any) -> None:
        for _ in range(ctx.input):
            await ctx.delta("tok ")

    return engine


async def reference(dsn: str, schema: str, rows: int) -> float:
    """Raw asyncpg: 100 rows per transaction, one multi-row insert each. Returns rows/s."""
    async with PostgresStore(dsn, schema=schema):  # the store's own schema
        pass
    at = datetime.now(timezone.utc)
    data = json.dumps({"message_id": "msg_0123456789abcdef", "content": "tok "}, separators=(",", ":"))
    run_id = uuid.uuid4().hex
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        started = time.perf_counter()
        for start in range(1, rows + 1, 100):
            seqs = list(range(start, min(start + 100, rows + 1)))
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO runengine_events (run_id, seq, type, at, data)"
                    " SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::text[])",
                    [run_id] * len(seqs),
                    seqs,
                    ["message.delta"] * len(seqs),
                    [at] * len(seqs),
                    [data] * len(seqs),
                )
        return rows / (time.perf_counter() - started)
    finally:
        await conn.close()


async def engine_stream(dsn: str, runs: int, deltas: int) -> tuple[float, PostgresStore]:
    """`runs` runs of `deltas` deltas each, all at once, through the engine. Returns events/s."""
    store = PostgresStore(dsn, schema=f"b_{uuid.uuid4().hex[:10]}")
    engine = register(RunEngine(store, worker=WorkerOptions(concurrency=max(runs, 1), lease=60, poll=0.05)))
    async with engine:
        started = time.perf_counter()
        pending = [await engine.execute("tokens", deltas, mode="async") for _ in range(runs)]
        states = await asyncio.gather(*(engine.wait(p.run_id) for p in pending))
        elapsed = time.perf_counter() - started
        assert all(s.status.value == "completed" and s.last_seq == deltas + 4 for s in states), states[0]
    return runs * deltas / elapsed, store


async def build_run(store: PostgresStore, run_id: str, events: int, snapshot_at: int | None) -> None:
    at = datetime.now(timezone.utc)
    fold = Fold()
    batch: list[Event] = [RunCreated(run_id=run_id, seq=1, at=at, agent="tokens"), RunStarted(run_id=run_id, seq=2, at=at)]
    seq, written = 2, 0
    while seq < events:
        seq += 1
        batch.append(MessageDelta(run_id=run_id, seq=seq, at=at, message_id="m", content=f"t{seq % 1000} "))
        if len(batch) == 5000 or seq == events:
            if snapshot_at is not None and written < snapshot_at <= seq:
                fold.apply_all(batch[: snapshot_at - written])
                await store.append(run_id, batch, expected_seq=written)
                state = fold.state
                assert state is not None
                await store.save_snapshot(state)
                fold.apply_all(batch[snapshot_at - written :])
            else:
                if snapshot_at is not None:
                    fold.apply_all(batch)
                await store.append(run_id, batch, expected_seq=written)
            written, batch = seq, []


async def replay_and_status(dsn: str, big: int) -> list[tuple[str, str]]:
    schema = f"r_{uuid.uuid4().hex[:10]}"
    async with PostgresStore(dsn, schema=schema) as store:
        started = time.perf_counter()
        await build_run(store, "small", 1_000, snapshot_at=None)
        await build_run(store, "big", big, snapshot_at=big - 500)
        build = time.perf_counter() - started
    async with PostgresStore(dsn, schema=schema) as store:
        small = await median_time(lambda: store.read("small", after_seq=900, limit=100), 300)
        large = await median_time(lambda: store.read("big", after_seq=big - 100, limit=100), 300)
        full = await median_time(lambda: store.read("small", after_seq=0, limit=1000), 30)
        engine = RunEngine(store)
        status_small = await median_time(lambda: engine.status("small"), 20)
        status_big = await median_time(lambda: engine.status("big"), 5)
        assert (await engine.status("big")).last_seq == big
    return [
        (f"(building the runs: {big + 1000:,} events in 5,000-event appends)", f"{build:.1f} s ({(big + 1000) / build:,.0f} events/s)"),
        ("replay last 100, 1k-event run", f"{small * 1e6:,.0f} µs"),
        (f"replay last 100, {big // 1000}k-event run", f"{large * 1e6:,.0f} µs  ({large / small:.2f}x)"),
        ("replay a whole 1k-event run (one page)", f"{full * 1e3:,.2f} ms  ({1000 / full:,.0f} events/s)"),
        ("status, 1k-event run (fold 1k, no snapshot)", f"{status_small * 1e3:,.1f} ms"),
        (f"status, {big // 1000}k-event run (snapshot + 500-event tail)", f"{status_big * 1e3:,.1f} ms"),
    ]


async def end_to_end(dsn: str, runs: int, deltas: int, workers: int) -> list[tuple[str, str]]:
    url = f"{dsn}{'&' if '?' in dsn else '?'}schema=e_{uuid.uuid4().hex[:10]}"
    async with PostgresStore.from_url(url):  # create the schema before the workers race for it
        pass
    env = dict(os.environ, RUNENGINE_BENCH_STORE=url, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for i in range(workers):
            log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_postgres_worker{i}_{os.getpid()}.log"
            logs.append(log_path)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "runengine.adapters.cli", "worker", "--app", "bench_postgres:make_engine",
                     "--concurrency", str(runs), "--poll", "0.2"],
                    stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=env, cwd=str(HERE),
                )
            )
        deadline = time.monotonic() + 60
        ids: list[str] = []
        for log_path in logs:
            while True:
                found = re.search(r"worker (\S+) ready", log_path.read_text(errors="replace"))
                if found:
                    ids.append(found.group(1))
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not start: {log_path.read_text()}")
                await asyncio.sleep(0.05)
        async with register(RunEngine(url)) as api:  # accepts and streams; executes nothing
            first: list[float] = []
            ends: list[float] = []
            per_worker: dict[str, int] = {}
            started = time.perf_counter()

            async def one() -> int:
                t0 = time.perf_counter()
                count, seqs, got_first = 0, [], False
                async for event in await api.execute("tokens", deltas, mode="stream"):
                    seqs.append(event.seq)
                    count += 1
                    if event.type == "run.started":
                        per_worker[event.worker] = per_worker.get(event.worker, 0) + 1  # type: ignore[attr-defined]
                    if event.type == "message.delta" and not got_first:
                        got_first = True
                        first.append(time.perf_counter() - t0)
                assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == deltas + 4
                ends.append(time.perf_counter() - t0)
                return count

            counts = await asyncio.gather(*(one() for _ in range(runs)))
            wall = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    spread = ", ".join(str(per_worker.get(i, 0)) for i in ids)
    return [
        (f"end to end: {runs} streamed runs x {deltas // 1000}k deltas, {workers} worker processes", f"{wall:.2f} s wall, {sum(counts) / wall:,.0f} events/s delivered"),
        ("  runs per worker", spread),
        ("  time to first delta p50 / p99", f"{percentile(first, 0.5) * 1e3:,.0f} / {percentile(first, 0.99) * 1e3:,.0f} ms"),
        ("  time to the run's end p50 / p99", f"{percentile(ends, 0.5) * 1e3:,.0f} / {percentile(ends, 0.99) * 1e3:,.0f} ms"),
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(dsn: str, args: argparse.Namespace) -> None:
    single = 20_000 if args.quick else 100_000
    many_runs, many_deltas = (20, 1_000) if args.quick else (100, 1_000)
    big = 100_000 if args.quick else 1_000_000
    rounds = 1 if args.quick else args.rounds
    refs, singles, manys = [], [], []
    commit_times: list[float] = []
    batch_sizes: list[int] = []
    for _ in range(rounds):
        refs.append(await reference(dsn, f"ref_{uuid.uuid4().hex[:10]}", single))
        rate, store = await engine_stream(dsn, 1, single)
        singles.append(rate)
        commit_times += store.commit_times
        batch_sizes += store.batch_sizes
        refs.append(await reference(dsn, f"ref_{uuid.uuid4().hex[:10]}", single))
        rate, store = await engine_stream(dsn, many_runs, many_deltas)
        manys.append(rate)
        commit_times += store.commit_times
        batch_sizes += store.batch_sizes
    ref, one, many = statistics.median(refs), statistics.median(singles), statistics.median(manys)
    rows = [
        ("reference: raw asyncpg multi-row insert, 100 rows/transaction", f"{ref:,.0f} rows/s"),
        (f"engine on PostgresStore: 1 run x {single // 1000}k deltas", f"{one:,.0f} events/s  ({one / ref:.0%} of reference)"),
        (f"engine on PostgresStore: {many_runs} runs x {many_deltas // 1000}k deltas at once", f"{many:,.0f} events/s  ({many / ref:.0%} of reference)"),
        ("store transaction latency p50 / p99", f"{percentile(commit_times, 0.5) * 1e3:.2f} / {percentile(commit_times, 0.99) * 1e3:.2f} ms"),
        ("events per transaction (mean)", f"{statistics.mean(batch_sizes):,.0f}"),
    ]
    rows += await replay_and_status(dsn, big)
    rows += await end_to_end(dsn, many_runs, 1_000, 2)
    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        fsync = await conn.fetchval("SHOW fsync")
        sync = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    width = max(len(name) for name, _ in rows)
    print(
        f"PostgreSQL store benchmark (PostgreSQL {version}, fsync={fsync}, synchronous_commit={sync}, asyncpg "
        f"{asyncpg.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {rounds} round(s))"
    )
    print(f"| {'what'.ljust(width)} | result |")
    print(f"|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn", default=None, help="an existing server (default: start one from /usr/lib/postgresql/15/bin)")
    args = parser.parse_args()
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
