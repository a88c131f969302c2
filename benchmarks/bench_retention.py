"""Retention sweeps on SQLite: what deleting expired runs costs, and what a sweep that finds
nothing costs in a large store (it should not grow with the store: the ended-time index).

    python benchmarks/bench_retention.py [--runs 20000] [--events 20] [--quick]

Runs are written straight to the store (20 events each): half ended long ago (expired), a
quarter ended recently, a quarter still running.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from runengine.adapters.sqlite import SQLiteStore
from runengine.events import Event, MessageDelta, RunCompleted, RunCreated, RunStarted
from runengine.retention import sweep

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def run_log(run_id: str, events: int, ended: datetime | None) -> list[Event]:
    at = (ended or NOW) - timedelta(minutes=1)
    log: list[Event] = [RunCreated(run_id=run_id, seq=1, at=at, agent="a"), RunStarted(run_id=run_id, seq=2, at=at)]
    log += [MessageDelta(run_id=run_id, seq=seq, at=at, message_id="m", content="token ") for seq in range(3, events)]
    if ended is not None:
        log.append(RunCompleted(run_id=run_id, seq=events, at=ended))
    return log


async def populate(store: SQLiteStore, runs: int, events: int) -> int:
    expired = 0
    batch = []
    for i in range(runs):
        kind = i % 4
        ended = NOW - timedelta(days=40) if kind < 2 else (NOW - timedelta(days=1) if kind == 2 else None)
        expired += kind < 2
        batch.append(store.append(f"run-{i:07d}", run_log(f"run-{i:07d}", events, ended), expected_seq=0))
        if len(batch) == 500:
            await asyncio.gather(*batch)
            batch = []
    await asyncio.gather(*batch)
    return expired


async def main(runs: int, events: int) -> None:
    cutoff = NOW - timedelta(days=30)
    with tempfile.TemporaryDirectory() as directory:
        async with SQLiteStore(Path(directory) / "bench.db") as store:
            expired = await populate(store, runs, events)
            started = time.perf_counter()
            deleted = await sweep(store, ended_before=cutoff)
            took = time.perf_counter() - started
            assert len(deleted) == expired
            empty = []
            for _ in range(20):
                started = time.perf_counter()
                assert await sweep(store, ended_before=cutoff) == []
                empty.append(time.perf_counter() - started)
            empty.sort()
    print(f"| what ({runs:,} runs x {events} events, SQLite synchronous=FULL) | result |")
    print("|---|---|")
    print(f"| sweep deleting {expired:,} expired runs ({expired * events:,} events) | {took:.2f} s, {expired / took:,.0f} runs/s |")
    print(f"| sweep finding nothing, {runs - expired:,} runs left (median of 20) | {empty[10] * 1000:.2f} ms |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(2_000 if args.quick else args.runs, args.events))
