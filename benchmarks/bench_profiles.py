"""What the API profiles cost: one streamed run of N token deltas through each surface.

    .venv/bin/python benchmarks/bench_profiles.py            # N = 1,000 and 10,000, 5 repeats
    .venv/bin/python benchmarks/bench_profiles.py --quick    # N = 1,000, 2 repeats

The same engine (memory store) is served by uvicorn on 127.0.0.1 with every surface
mounted (build_app); an httpx client reads each SSE stream to its end. The reference,
measured in the same run and interleaved with the others, is the native API's stream
of the same run shape; the profiles add only their mapping of events to wire shapes.
Prints the median seconds from request to last byte, events per second and the ratio
to the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import socket
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
import structlog
import uvicorn

from runengine.adapters.asgi import ASGIApp
from runengine.adapters.server import build_app
from runengine.context import RunContext
from runengine.engine import RunEngine


def make_engine() -> RunEngine:
    engine = RunEngine("memory://")

    @engine.agent("tokens")
    async def tokens(ctx: RunContext) -> None:
        for i in range(int(ctx.input)):
            await ctx.delta(f"t{i} ")

    return engine


async def read_stream(http: httpx.AsyncClient, method: str, path: str, **kwargs: object) -> int:
    size = 0
    async with http.stream(method, path, **kwargs) as response:  # type: ignore[arg-type]
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            size += len(chunk)
    return size


async def v1_run_and_stream(http: httpx.AsyncClient, text: str) -> int:
    """Seed 004 has no streaming create: POST the run, then read its event stream from seq 1."""
    created = await http.post("/v1/threads/bench/runs", json={"persona_id": "tokens", "input": text})
    created.raise_for_status()
    return await read_stream(http, "GET", f"/v1/runs/{created.json()['run_id']}/events")


def surfaces(n: int) -> dict[str, Callable[[httpx.AsyncClient], Awaitable[int]]]:
    text = str(n)
    return {
        "native  POST /runs (stream)  [reference]": lambda http: read_stream(
            http, "POST", "/runs", json={"agent": "tokens", "input": text, "mode": "stream"}
        ),
        "acp     POST /acp/runs (stream)": lambda http: read_stream(
            http, "POST", "/acp/runs",
            json={"agent_name": "tokens", "input": [{"parts": [{"content": text}]}], "mode": "stream"},
        ),
        "kore    execute (stream tokens)": lambda http: read_stream(
            http, "POST", "/kore/apps/a/environments/e/runs/execute",
            json={
                "sessionIdentity": [{"type": "sessionReference", "value": f"bench-{time.monotonic_ns()}"}],
                "input": [{"type": "text", "content": text}],
                "invoke": {"tasks": [{"type": "agent", "name": "tokens"}]},
                "stream": {"enable": True, "streamMode": "tokens"},
            },
        ),
        "v1      POST + GET /v1/runs/{id}/events": lambda http: v1_run_and_stream(http, text),
    }


async def main(sizes: list[int], repeats: int) -> None:
    engine = make_engine()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with engine:
        config = uvicorn.Config(ASGIApp(build_app(engine)), log_level="warning", access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve([sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        rows = []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
            for n in sizes:
                sides = surfaces(n)
                times: dict[str, list[float]] = {name: [] for name in sides}
                for name, run in sides.items():  # warm-up, not counted
                    await run(http)
                for _ in range(repeats):  # interleaved, so load changes hit every side alike
                    for name, run in sides.items():
                        start = time.perf_counter()
                        await run(http)
                        times[name].append(time.perf_counter() - start)
                reference = statistics.median(next(iter(times.values())))
                for name, values in times.items():
                    median = statistics.median(values)
                    rows.append((n, name, median, (n + 3) / median, median / reference))
        server.should_exit = True
        await task
    print(f"python {platform.python_version()}, {platform.machine()}, {repeats} repeats, medians")
    print(f"| {'deltas':>7} | {'surface':<42} | {'seconds':>8} | {'events/s':>9} | {'x reference':>11} |")
    print(f"|{'-' * 9}|{'-' * 44}|{'-' * 10}|{'-' * 11}|{'-' * 13}|")
    for n, name, median, rate, ratio in rows:
        print(f"| {n:>7,} | {name:<42} | {median:>8.3f} | {rate:>9,.0f} | {ratio:>11.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1,000 only, 2 repeats")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings only
    asyncio.run(main([1000] if args.quick else [1000, 10000], 2 if args.quick else 5))
