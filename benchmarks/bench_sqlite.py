"""SQLite store benchmark: one command, prints a table.

    .venv/bin/python benchmarks/bench_sqlite.py            # full run (a few minutes)
    .venv/bin/python benchmarks/bench_sqlite.py --quick    # smaller, for a smoke test
    .venv/bin/python benchmarks/bench_sqlite.py --sweep    # also try other flush_max / flush_window

Measured in the same run, on the same disk, with the same rows:

- reference: raw aiosqlite, `executemany` of 100 prepared rows per commit (WAL,
  synchronous=FULL), into the store's own events table;
- the engine on SQLiteStore: 1 run x 100k `ctx.delta` calls, and 100 runs x 1k
  deltas at once; events/s and the ratio to the reference; the store's commit
  latency p50/p99 and mean batch size;
- replay: `read(after_seq=last-100, limit=100)` on a 1k-event and a 1M-event run,
  from the database (a freshly opened store: no in-memory tail) and from the tail;
- status: `engine.status` of a 1M-event run (snapshot 500 events before its end)
  and of a 1k-event run with no snapshot;
- sequential sync runs (`await engine.execute(...)` one after another, an agent that
  says one message), runs/s, beside raw aiosqlite writing the same rows with the same
  number of commits per run (run.created; run.started + message.completed;
  run.completed), so the figure shows the engine's cost over the fsyncs a run needs.

Rounds are interleaved (reference, engine, reference, ...) and the median is shown,
because this machine is shared and its disk and CPUs are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite

from runengine.adapters.sqlite import SQLiteStore
from runengine.engine import RunEngine
from runengine.events import Event, MessageDelta, RunCreated, RunStarted
from runengine.reducer import Fold
from timing import median_time

RUN_ID = "0123456789abcdef0123456789abcdef"


def fresh(directory: Path, name: str) -> Path:
    path = directory / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


async def reference(directory: Path, rows: int) -> float:
    """Raw aiosqlite: executemany of 100 prepared rows per commit. Returns rows/s."""
    path = fresh(directory, "reference.db")
    async with SQLiteStore(path):  # the same schema the store uses
        pass
    at = (datetime.now(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    data = json.dumps({"message_id": "msg_0123456789abcdef", "content": "tok "}, separators=(",", ":"))
    prepared = [(RUN_ID, seq, "message.delta", at, data) for seq in range(1, rows + 1)]
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
        started = time.perf_counter()
        for start in range(0, rows, 100):
            await conn.execute("BEGIN")
            await conn.executemany(
                "INSERT INTO events (run_id, seq, type, at_us, data) VALUES (?, ?, ?, ?, ?)", prepared[start : start + 100]
            )
            await conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
    return rows / elapsed


async def reference_runs(directory: Path, runs: int) -> float:
    """Raw aiosqlite: per run, the rows a one-message run writes, in the engine's 3 commits. Runs/s."""
    path = fresh(directory, "reference-runs.db")
    async with SQLiteStore(path):  # the same schema the store uses
        pass
    at = (datetime.now(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    insert = "INSERT INTO events (run_id, seq, type, at_us, data) VALUES (?, ?, ?, ?, ?)"
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
        started = time.perf_counter()
        for n in range(runs):
            run_id = f"{n:032x}"
            for batch in (
                [(run_id, 1, "run.created", at, '{"agent":"t","input":"x"}')],
                [(run_id, 2, "run.started", at, "{}"), (run_id, 3, "message.completed", at, '{"content":"ok"}')],
                [(run_id, 4, "run.completed", at, '{"output":"ok"}')],
            ):
                await conn.execute("BEGIN")
                await conn.executemany(insert, batch)
                await conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
    return runs / elapsed


async def engine_sync_runs(directory: Path, runs: int) -> float:
    """`runs` sequential sync runs of a one-message agent through the engine. Runs/s."""
    engine = RunEngine(SQLiteStore(fresh(directory, "sync-runs.db")))

    @engine.agent("t")
    async def say_ok(ctx: Any) -> None:
        await ctx.say("ok")

    async with engine:
        for _ in range(20):  # warm up
            await engine.execute("t", "x")
        started = time.perf_counter()
        for _ in range(runs):
            state = await engine.execute("t", "x")
        elapsed = time.perf_counter() - started
        assert state.status.value == "completed"
    return runs / elapsed


def token_engine(store: SQLiteStore) -> RunEngine:
    engine = RunEngine(store)

    @engine.agent("tokens")
    async def tokens(ctx: Any) -> None:
        for _ in range(ctx.input):
            await ctx.delta("tok ")

    return engine


async def until_ended(store: SQLiteStore, run_id: str) -> None:
    """Wait for the run's terminal event through the runs table (without reading every event)."""
    while True:
        summary = await store.get_run(run_id)
        if summary is not None and summary.status.terminal:
            return
        await store.wait(run_id, after_seq=summary.last_seq if summary else 0, timeout=60)


async def engine_stream(directory: Path, runs: int, deltas: int, **store_options: Any) -> tuple[float, SQLiteStore]:
    """`runs` runs of `deltas` deltas each, all at once, through the engine. Returns events/s.

    Measures appending: the runs are started with mode="async" and awaited through the
    runs table, so no reader decodes the events meanwhile (the reference reads nothing either).
    """
    store = SQLiteStore(fresh(directory, "engine.db"), **store_options)
    engine = token_engine(store)
    async with engine:
        started = time.perf_counter()
        pending = [await engine.execute("tokens", deltas, mode="async") for _ in range(runs)]
        await asyncio.gather(*(until_ended(store, p.run_id) for p in pending))
        elapsed = time.perf_counter() - started
        for p in pending:
            assert (await store.get_run(p.run_id)).last_seq == deltas + 4  # type: ignore[union-attr]
    return runs * deltas / elapsed, store


async def build_run(store: SQLiteStore, run_id: str, events: int, snapshot_at: int | None) -> None:
    """A run of `events` events (created, started, deltas of one message), appended in batches of 2000."""
    at = datetime.now(timezone.utc)
    fold = Fold()
    batch: list[Event] = [
        RunCreated(run_id=run_id, seq=1, at=at, agent="tokens"),
        RunStarted(run_id=run_id, seq=2, at=at, worker="bench"),
    ]
    seq = 2
    written = 0
    while seq < events:
        seq += 1
        batch.append(MessageDelta(run_id=run_id, seq=seq, at=at, message_id="m", content=f"t{seq % 1000} "))
        if len(batch) == 2000 or seq == events:
            if snapshot_at is not None and written < snapshot_at <= seq:
                fold.apply_all(batch[: snapshot_at - written])
                state = fold.state
                assert state is not None
                await store.append(run_id, batch, expected_seq=written)
                await store.save_snapshot(state)
                fold.apply_all(batch[snapshot_at - written :])
            else:
                if snapshot_at is not None:
                    fold.apply_all(batch)
                await store.append(run_id, batch, expected_seq=written)
            written = seq
            batch = []


async def replay_and_status(directory: Path, big: int) -> list[tuple[str, str]]:
    path = fresh(directory, "replay.db")
    async with SQLiteStore(path, synchronous="NORMAL") as store:
        started = time.perf_counter()
        await build_run(store, "small", 1_000, snapshot_at=None)
        await build_run(store, "big", big, snapshot_at=big - 500)
        build_time = time.perf_counter() - started
        warm_small = await median_time(lambda: store.read("small", after_seq=900, limit=100), 300)
        warm_big = await median_time(lambda: store.read("big", after_seq=big - 100, limit=100), 300)
    out = [("(building the runs: {:,} events appended)".format(big + 1000), f"{build_time:.1f} s")]
    async with SQLiteStore(path) as store:  # freshly opened: nothing in memory, reads hit the database
        assert len(await store.read("big", after_seq=big - 100, limit=100)) == 100
        cold_small = await median_time(lambda: store.read("small", after_seq=900, limit=100), 300)
        cold_big = await median_time(lambda: store.read("big", after_seq=big - 100, limit=100), 300)
        engine = RunEngine(store)
        status_small = await median_time(lambda: engine.status("small"), 20)
        status_big = await median_time(lambda: engine.status("big"), 5)
        state = await engine.status("big")
        assert state.last_seq == big
    out += [
        ("replay last 100, 1k-event run (database)", f"{cold_small * 1e6:,.0f} µs"),
        (f"replay last 100, {big // 1000}k-event run (database)", f"{cold_big * 1e6:,.0f} µs  ({cold_big / cold_small:.2f}x)"),
        ("replay last 100, 1k-event run (in-memory tail)", f"{warm_small * 1e6:,.0f} µs"),
        (f"replay last 100, {big // 1000}k-event run (in-memory tail)", f"{warm_big * 1e6:,.0f} µs"),
        ("status, 1k-event run (fold 1k, no snapshot)", f"{status_small * 1e3:,.1f} ms"),
        (
            f"status, {big // 1000}k-event run (snapshot + 500-event tail)",
            f"{status_big * 1e3:,.1f} ms  (state: {len(state.partial.content) if state.partial else 0:,} chars of text)",
        ),
    ]
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sweep", action="store_true", help="also measure other flush_max / flush_window settings")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the databases (default: a temp dir)")
    args = parser.parse_args()
    single = 20_000 if args.quick else 100_000
    many_runs, many_deltas = (20, 1_000) if args.quick else (100, 1_000)
    big = 100_000 if args.quick else 1_000_000
    rounds = 1 if args.quick else args.rounds

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        refs: list[float] = []
        singles: list[float] = []
        manys: list[float] = []
        commit_times: list[float] = []
        batch_sizes: list[int] = []
        for _ in range(rounds):
            refs.append(await reference(directory, single))
            rate, store = await engine_stream(directory, 1, single)
            singles.append(rate)
            commit_times += store.commit_times
            batch_sizes += store.batch_sizes
            refs.append(await reference(directory, single))
            rate, store = await engine_stream(directory, many_runs, many_deltas)
            manys.append(rate)
            commit_times += store.commit_times
            batch_sizes += store.batch_sizes
        ref = statistics.median(refs)
        one = statistics.median(singles)
        many = statistics.median(manys)
        rows: list[tuple[str, str]] = [
            ("reference: raw aiosqlite executemany, 100 rows/commit", f"{ref:,.0f} rows/s"),
            (f"engine on SQLiteStore: 1 run x {single // 1000}k deltas", f"{one:,.0f} events/s  ({one / ref:.0%} of reference)"),
            (
                f"engine on SQLiteStore: {many_runs} runs x {many_deltas // 1000}k deltas at once",
                f"{many:,.0f} events/s  ({many / ref:.0%} of reference)",
            ),
            ("store commit latency p50 / p99", f"{percentile(commit_times, 0.5) * 1e3:.2f} / {percentile(commit_times, 0.99) * 1e3:.2f} ms"),
            ("events per commit (mean)", f"{statistics.mean(batch_sizes):,.0f}"),
        ]
        if args.sweep:  # the store's own window, each setting measured in every round (interleaved)
            settings = [(2048, 0.0), (256, 0.002), (2048, 0.002), (2048, 0.005), (8192, 0.010)]
            rates: dict[tuple[int, float, int], list[float]] = {}
            for _ in range(rounds):
                for flush_max, flush_window in settings:
                    for runs, deltas in ((1, single), (many_runs, many_deltas)):
                        rate, _store = await engine_stream(
                            directory, runs, deltas, flush_max=flush_max, flush_window=flush_window
                        )
                        rates.setdefault((flush_max, flush_window, runs), []).append(rate)
            for flush_max, flush_window in settings:
                one_rate = statistics.median(rates[(flush_max, flush_window, 1)])
                many_rate = statistics.median(rates[(flush_max, flush_window, many_runs)])
                rows.append(
                    (f"  sweep: store flush_max={flush_max} flush_window={flush_window * 1e3:g} ms (1 run / {many_runs} runs)",
                     f"{one_rate:,.0f} / {many_rate:,.0f} events/s")
                )
        sync_runs = 300 if args.quick else 1_000
        ref_runs: list[float] = []
        engine_runs: list[float] = []
        for _ in range(rounds):
            ref_runs.append(await reference_runs(directory, sync_runs))
            engine_runs.append(await engine_sync_runs(directory, sync_runs))
        ref_rate, engine_rate = statistics.median(ref_runs), statistics.median(engine_runs)
        rows += [
            (f"reference: raw aiosqlite, the rows of {sync_runs:,} runs in 3 commits each", f"{ref_rate:,.0f} runs/s"),
            (f"engine: {sync_runs:,} sequential sync runs (one message each)",
             f"{engine_rate:,.0f} runs/s  ({engine_rate / ref_rate:.0%} of reference)"),
        ]
        rows += await replay_and_status(directory, big)

    width = max(len(name) for name, _ in rows)
    print(f"SQLite store benchmark (SQLite {aiosqlite.sqlite_version}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, median of {rounds} round(s))")
    print(f"| {'what'.ljust(width)} | result |")
    print(f"|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main())
