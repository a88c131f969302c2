"""Rate-limit counting: one command, prints a table.

    .venv/bin/python benchmarks/bench_ratelimit.py                     # starts its own PostgreSQL 15 (fsync on)
    .venv/bin/python benchmarks/bench_ratelimit.py --dsn postgresql://user@host/db

What one counted request costs: `MemoryWindows.take` (this process's count) beside
`PostgresRateWindows.take` (the count every process on the database shares: one upsert),
3,000 sequential takes each after a warm-up, median and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from runengine.adapters.postgres import PostgresStore
from runengine.http.ratelimit import MemoryWindows, WindowCounter

TAKES = 3_000


async def timed(windows: WindowCounter) -> list[float]:
    for _ in range(200):
        await windows.take("alice", 0.0, 10**9)
    times = []
    for _ in range(TAKES):
        started = time.perf_counter()
        await windows.take("alice", 0.0, 10**9)
        times.append(time.perf_counter() - started)
    return sorted(times)


async def measure(dsn: str) -> None:
    async with PostgresStore(dsn, schema=f"b_{uuid.uuid4().hex[:10]}") as store:
        print("| one request counted | p50 µs | p99 µs |\n|---|---:|---:|")
        for label, windows in (("MemoryWindows.take", MemoryWindows()), ("PostgresRateWindows.take", store.rate_windows)):
            times = await timed(windows)
            print(f"| {label} | {times[len(times) // 2] * 1e6:,.0f} | {times[int(len(times) * 0.99)] * 1e6:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="an existing PostgreSQL server (default: start one)")
    args = parser.parse_args()
    if args.dsn:
        asyncio.run(measure(args.dsn))
        return
    from throwaway_postgres import throwaway_postgres

    with throwaway_postgres() as server:
        asyncio.run(measure(server.dsn_for(server.create_database())))


if __name__ == "__main__":
    main()
