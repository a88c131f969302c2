"""Sync runs over HTTP: `POST /runs` (mode sync, a trivial agent) beside the floor, in one run.

    .venv/bin/python benchmarks/bench_http_sync.py              # full run (10 to 40 minutes here, with the load)
    .venv/bin/python benchmarks/bench_http_sync.py --quick      # small sizes, to check the harness

The floor is the peer benchmark's: a FastAPI JSON endpoint (benchmarks/peers/floor_server.py)
under the same uvicorn (asyncio loop, h11) that `runengine serve` runs, answering a small run
object at once, with no bookkeeping at all. runengine is `runengine serve` of the peer
benchmark's engine (benchmarks/peers/bench_app.py: `bench_echo` answers its input as one
message) on SQLite as shipped (synchronous=FULL) and, with --stores, on memory.

1. sequential: one client, one run at a time, in batches of --runs interleaved across the
   sides (batch 1 of every side, then batch 2 ...), so a change in the machine's load lands on
   all of them alike; runs/s, median of the batches.
2. concurrent: --clients clients at once (each its own connection), --concurrent-runs runs in
   all; runs/s, median of --repeat.
3. flat as the store grows: --soak runs (sequential, or from --soak-clients clients) on the
   first store, runs/s for every 10,000 (the file grows by every run: a figure that fell as
   it grew would show here).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))

from run import Server, Side, concurrent_sync, floor_side, runengine_native_side, sync_batch  # noqa: E402

PYTHON = sys.executable
#: The store URL behind `runengine serve` for each --stores choice ({dir}: a temporary folder).
STORES = {"sqlite": "sqlite:///{dir}/sync.db", "memory": "memory://"}
SOAK_WINDOW = 10_000


def machine() -> str:
    return (f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.1f}")


def floor_server() -> Server:
    return Server("sync-floor", lambda port: [PYTHON, str(HERE / "peers" / "floor_server.py"), str(port)], "/openapi.json")


def runengine_server(store: str, directory: Path, base: Path | None = None) -> Server:
    """`runengine serve` of the bench app on `store`; with `base`, the code importable from that folder
    instead of this checkout's (its `runengine` package, with `adapters` inside it as installed)."""
    runengine = str(Path(PYTHON).parent / "runengine")
    env = {"RUNENGINE_BENCH_STORE": STORES[store].format(dir=directory / ("base" if base else "new"))}
    if base is not None:
        env["PYTHONPATH"] = str(base)
    return Server(
        f"sync-runengine-{store}{'-base' if base else ''}",
        lambda port: [runengine, "serve", "--app", "benchmarks.peers.bench_app:engine", "--host", "127.0.0.1",
                      "--port", str(port), "--log-level", "warning"],
        "/openapi.json",
        cwd=HERE.parent,
        env=env,
    )


async def workloads(sides: list[Side], args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"sequential": {s.name: [] for s in sides}, "concurrent": {s.name: [] for s in sides}, "soak": []}
    async with httpx.AsyncClient(timeout=httpx.Timeout(120, connect=30)) as client:
        for side in sides:  # warm-up: imports, caches, the first connection
            await sync_batch(client, side, 20, 0)
        for batch in range(args.batches):
            for side in sides:
                results["sequential"][side.name].append(await sync_batch(client, side, args.runs, 1_000 + batch * args.runs))
            print(f"  sequential batch {batch + 1}/{args.batches}: " + ", ".join(
                f"{name} {rates[-1]:.0f}/s" for name, rates in results["sequential"].items()), flush=True)
        for rep in range(args.repeat):
            for side in sides:
                row = await concurrent_sync(side, args.concurrent_runs, args.clients, 300.0, 2_000_000 + rep * args.concurrent_runs)
                if not row["finished"]:
                    raise RuntimeError(f"{side.name}: {args.clients} clients did not finish {args.concurrent_runs} runs in 300 s")
                results["concurrent"][side.name].append(row["runs_per_s"])
            print(f"  {args.clients} clients, repeat {rep + 1}/{args.repeat}: " + ", ".join(
                f"{name} {rates[-1]:.0f}/s" for name, rates in results["concurrent"].items()), flush=True)
        soaked = next((s for s in sides if s.soak), None)
        if soaked is not None and args.soak:
            done = 0
            while done < args.soak:
                window = min(SOAK_WINDOW, args.soak - done)
                started = time.perf_counter()
                if args.soak_clients > 1:
                    row = await concurrent_sync(soaked, window, args.soak_clients, 3_600.0, 10_000_000 + done)
                    if not row["finished"]:
                        raise RuntimeError(f"{soaked.name}: the soak did not finish {window} runs within an hour")
                else:
                    for chunk in range(0, window, 1_000):  # batches of 1,000: one slow request cannot hide in a mean
                        await sync_batch(client, soaked, min(1_000, window - chunk), 10_000_000 + done + chunk)
                done += window
                results["soak"].append((done, window / (time.perf_counter() - started), os.getloadavg()[0]))
                print(f"  soak {soaked.name}: {done:,} runs, {results['soak'][-1][1]:.0f}/s over the last {window:,}", flush=True)
            results["soak_side"] = soaked.name
            # The load here moves the rates above by more than a store's growth could: so the grown
            # store is also measured beside a fresh one, batches interleaved, in this one run.
            fresh_dir = Path(tempfile.mkdtemp(prefix="runengine-sync-fresh-"))
            fresh = runengine_native_side(runengine_server(args.stores[0], fresh_dir), "fresh", soak=False)
            (fresh_dir / "new").mkdir()
            fresh.server.start()
            try:
                await sync_batch(client, fresh, 20, 0)
                for batch in range(args.batches):
                    for side, key in ((soaked, "grown"), (fresh, "fresh")):
                        results.setdefault(key, []).append(await sync_batch(client, side, args.runs, 30_000_000 + batch * args.runs))
            finally:
                fresh.server.stop()
                shutil.rmtree(fresh_dir, ignore_errors=True)
    return results


def table(results: dict[str, Any], args: argparse.Namespace, floor_name: str) -> str:
    seq, conc = results["sequential"], results["concurrent"]
    floor_seq, floor_conc = statistics.median(seq[floor_name]), statistics.median(conc[floor_name])
    lines = [f"Sync runs of a trivial agent over HTTP (loopback), runs/s: sequential (median of {args.batches} batches of "
             f"{args.runs}) and {args.clients} concurrent clients (median of {args.repeat} x {args.concurrent_runs} runs); "
             "the floor: a FastAPI JSON endpoint under the same uvicorn:", "",
             f"| side | sequential | of the floor | {args.clients} clients | of the floor |", "|---|---:|---:|---:|---:|"]
    for name in seq:
        s, c = statistics.median(seq[name]), statistics.median(conc[name])
        lines.append(f"| {name} | {s:,.0f} | {s / floor_seq:.0%} | {c:,.0f} | {c / floor_conc:.0%} |")
    if results["soak"]:
        rates = [rate for _, rate, _ in results["soak"]]
        how = "sequential" if args.soak_clients <= 1 else f"from {args.soak_clients} clients,"
        lines += ["", f"{results['soak_side']}: {results['soak'][-1][0]:,} {how} sync runs into one store, runs/s per "
                  f"{SOAK_WINDOW:,} (last / first {rates[-1] / rates[0]:.2f}):", "",
                  "| runs so far | " + " | ".join(f"{n:,}" for n, _, _ in results["soak"]) + " |",
                  "|---|" + "---:|" * len(rates),
                  "| runs/s | " + " | ".join(f"{r:,.0f}" for r in rates) + " |",
                  "| load average | " + " | ".join(f"{load:.1f}" for _, _, load in results["soak"]) + " |",
                  "", f"Sequential, batches of {args.runs} interleaved: the store of {results['soak'][-1][0]:,} runs "
                  f"{statistics.median(results['grown']):,.0f} runs/s, a fresh store {statistics.median(results['fresh']):,.0f} "
                  f"(grown / fresh {statistics.median(results['grown']) / statistics.median(results['fresh']):.2f})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=500, help="sequential runs per batch")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--concurrent-runs", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3, help="repeats of the concurrent workload (median)")
    parser.add_argument("--soak", type=int, default=100_000, help="sequential runs into one store, rates per 10,000 (0: skip)")
    parser.add_argument("--soak-clients", type=int, default=1, help="clients of the soak (1: sequential)")
    parser.add_argument("--stores", nargs="+", default=["sqlite"], choices=sorted(STORES))
    parser.add_argument("--base", type=Path, default=None,
                        help="also serve older code, importable from this folder (a `git archive` of it with adapters/ "
                             "copied to runengine/adapters), beside this checkout's, interleaved in the same run")
    parser.add_argument("--quick", action="store_true", help="small sizes to check the harness")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.batches, args.concurrent_runs, args.repeat = 200, 2, 400, 1
        args.soak = min(args.soak, 2_000)

    print(f"machine: {machine()}", flush=True)
    directory = Path(tempfile.mkdtemp(prefix="runengine-sync-"))
    (directory / "base").mkdir()
    (directory / "new").mkdir()
    floor = dataclasses.replace(floor_side(floor_server()), name="floor: FastAPI JSON endpoint")
    sides = [floor]
    for i, store in enumerate(args.stores):
        if args.base is not None:
            sides.append(runengine_native_side(runengine_server(store, directory, args.base), f"runengine native ({store}), base", soak=False))
        sides.append(runengine_native_side(runengine_server(store, directory), f"runengine native ({store})", soak=i == 0))
    try:
        for side in sides:
            side.server.start()
        results = asyncio.run(workloads(sides, args))
    finally:
        for side in sides:
            side.server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    print()
    print(f"machine: {machine()}")
    print()
    print(table(results, args, floor.name))


if __name__ == "__main__":
    main()
