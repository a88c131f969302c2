"""Leaks: 10,000 runs through the HTTP API; tasks, file descriptors, connections and memory stay flat.

A real uvicorn server serves the engine (SQLite store) in this process, so its asyncio
tasks can be counted. Eight clients drive 10,000 runs in a mix of every way the API is
used: sync runs, streamed runs read to the end, streamed runs the client drops half way,
async runs followed over SSE, and bad requests. After each 1,000 runs the suite waits
until every run has ended and reads the figures; after the first 1,000 (caches, pools and
lazily created state warmed up) they must not grow. The figures are printed.
"""

from __future__ import annotations

import asyncio
import gc
import random
from pathlib import Path

import anyio
import httpx
import pytest

from runengine.context import RunContext
from runengine.engine import RunEngine

from faultkit import FrameReader, open_fds, open_sockets, rss_bytes, serve_engine, tcp_connections

pytestmark = [pytest.mark.slow]

TOTAL = 10_000
PHASE = 1_000
CLIENTS = 8


ANYIO_BACKENDS = ("asyncio",)  # uvicorn and the SQLite store


async def read_sse(response: httpx.Response, stop_after: int | None = None) -> int:
    reader = FrameReader()
    count = 0
    async for chunk in response.aiter_raw():
        for frame in reader.feed(chunk):
            count += 1
            if stop_after is not None and count >= stop_after:
                return count
            if frame.event in ("run.completed", "run.failed", "run.cancelled"):
                return count
    return count


@pytest.mark.anyio
async def test_ten_thousand_runs_leave_nothing_behind(tmp_path: Path) -> None:
    engine = RunEngine(f"sqlite:///{tmp_path / 'leaks.db'}")

    @engine.agent("tiny")
    async def tiny(ctx: RunContext) -> None:
        for word in str(ctx.input).split():
            await ctx.delta(word + " ")

    rng = random.Random(11)
    counts = {"sync": 0, "stream": 0, "dropped": 0, "async+sse": 0, "bad": 0}

    async def one_run(client: httpx.AsyncClient, base: str, i: int) -> None:
        kind = rng.random()
        text = f"run {i} says hello to the leak test"
        if kind < 0.55:
            response = await client.post(f"{base}/runs", json={"agent": "tiny", "input": text})
            assert response.status_code == 200 and response.json()["status"] == "completed", response.text
            counts["sync"] += 1
        elif kind < 0.75:
            body = {"agent": "tiny", "input": text, "mode": "stream"}
            async with client.stream("POST", f"{base}/runs", json=body) as response:
                assert response.status_code == 200
                assert await read_sse(response) == 12  # created, started, 8 deltas, message, completed
            counts["stream"] += 1
        elif kind < 0.85:
            body = {"agent": "tiny", "input": text, "mode": "stream"}
            async with client.stream("POST", f"{base}/runs", json=body) as response:
                assert response.status_code == 200
                await read_sse(response, stop_after=rng.randint(1, 5))  # then drop the connection
            counts["dropped"] += 1
        elif kind < 0.97:
            response = await client.post(f"{base}/runs", json={"agent": "tiny", "input": text, "mode": "async"})
            assert response.status_code == 202, response.text
            run_id = response.json()["run_id"]
            headers = {"accept": "text/event-stream"}
            async with client.stream("GET", f"{base}/runs/{run_id}/events", headers=headers) as events:
                assert events.status_code == 200
                assert await read_sse(events) == 12
            counts["async+sse"] += 1
        else:
            response = await client.post(f"{base}/runs", content=b'{"agent": "tiny", "mode": "sideways"')
            assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"
            counts["bad"] += 1

    async def settle(port: int) -> None:
        """Wait until every run has ended and the server has closed every connection the clients
        closed (a leaked run or connection makes this time out, and the test fail)."""
        with anyio.fail_after(60):
            while engine.driver.active or tcp_connections(port):
                await anyio.sleep(0.01)
        gc.collect()

    figures: list[dict[str, float]] = []
    async with engine:
        async with serve_engine(engine) as base:
            port = int(base.rsplit(":", 1)[1])
            limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
            next_run = 0
            for phase in range(TOTAL // PHASE):
                # A fresh client pool per phase: when it closes, the server must be left with no connection.
                async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as client:

                    async def worker(start: int) -> None:
                        for i in range(start, start + PHASE, CLIENTS):
                            await one_run(client, base, i)

                    with anyio.fail_after(300):
                        async with anyio.create_task_group() as tg:
                            for c in range(CLIENTS):
                                tg.start_soon(worker, next_run + c)
                next_run += PHASE
                await settle(port)
                figures.append(
                    {
                        "runs": next_run,
                        "tasks": len(asyncio.all_tasks()),
                        "fds": open_fds(),
                        "sockets": open_sockets(),
                        "tcp": tcp_connections(port),
                        "rss_mb": rss_bytes() / 2**20,
                        "active_runs": len(engine.driver.active),
                    }
                )

    print("\n  runs | tasks |  fds | sockets | TCP conns | RSS MB | active runs")
    for f in figures:
        print(
            f"{f['runs']:>6} | {f['tasks']:>5} | {f['fds']:>4} | {f['sockets']:>7} | {f['tcp']:>9} | "
            f"{f['rss_mb']:>6.1f} | {f['active_runs']:>11}"
        )
    print(f"  mix: {counts}")

    assert sum(counts.values()) == TOTAL
    warm = figures[0]
    for f in figures[1:]:
        assert f["active_runs"] == 0
        # With no client connected: the tasks, descriptors and sockets of after the first 1,000
        # (give or take a timer or a closing handle of the moment); a per-run leak would add thousands.
        assert f["tasks"] <= warm["tasks"] + 2, f
        assert f["fds"] <= warm["fds"] + 2, f
        assert f["sockets"] <= warm["sockets"] + 2, f
        assert f["tcp"] == 0, f
    # Memory: after the warm-up, 9,000 more runs may not add more than a few MB (no per-run residue).
    growth = figures[-1]["rss_mb"] - figures[1]["rss_mb"]
    per_run_bytes = growth * 2**20 / (figures[-1]["runs"] - figures[1]["runs"])
    print(f"  RSS growth from {figures[1]['runs']} to {figures[-1]['runs']} runs: {growth:.1f} MB ({per_run_bytes:.0f} bytes per run)")
    assert growth < 16, f"RSS grew {growth:.1f} MB over {figures[-1]['runs'] - figures[1]['runs']} runs"
