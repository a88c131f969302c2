"""Durable Streams benchmark: a 10,000-item stream read through /ds, caught up and live, beside the
native SSE stream of a run and beside the protocol's Node reference server.

    python benchmarks/bench_durable_streams.py [--items 10000] [--repeat 3] [--store sqlite|memory]

One uvicorn server on 127.0.0.1 (the app `runengine serve` builds), the store a SQLite file in a
temporary folder (or memory). Rows, medians of --repeat:

- a JSON stream of --items items written one item per POST (`append`), then read from -1 to the
  end with catch-up GETs (`catch-up`) and with one SSE response (`sse catch-up`), and read live by
  an SSE reader at offset=now while another --items items are appended (`sse live`: until the
  reader has them all);
- a run of --items token deltas read through its stream /ds/v1/stream/runs/{id}: live by SSE from
  its start to its close, then caught up (catch-up GETs, and SSE), beside the native API's SSE
  stream of the same kind of run (`POST /runs` mode stream, live) and of the finished run
  (`GET /runs/{id}/events`);
- the same stream rows on the Node reference server `@durable-streams/server` (tests/js, after
  `npm ci` there), in memory and file-backed, when Node and the package are installed.

Client and server share one event loop (the Node server runs in its own process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform as host
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import structlog
import uvicorn

from runengine import RunContext, RunEngine
from runengine.adapters.asgi import ASGIApp
from runengine.adapters.server import build_app

JS = Path(__file__).resolve().parent.parent / "tests" / "js"
JSON_TYPE = {"content-type": "application/json"}
#: The Node reference server, started by node in tests/js: prints its URL, serves until killed.
NODE_SERVER = """
import { DurableStreamTestServer } from "@durable-streams/server"
const dataDir = process.argv[1] || undefined
const server = new DurableStreamTestServer({ port: 0, host: "127.0.0.1", dataDir, longPollTimeout: 20000 })
console.log(await server.start())
"""


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def timed(fn: Callable[[], Awaitable[int]], repeat: int) -> tuple[float, int]:
    """The median seconds of `repeat` calls, and what the last one counted."""
    times, count = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), count


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of a Durable Streams SSE response."""
    event, data = "", []
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:])
        elif not line and event:
            yield event, "\n".join(data)
            event, data = "", []


async def read_sse(client: httpx.AsyncClient, url: str, offset: str, want: int) -> int:
    """Items a JSON stream's SSE reader gets from `offset` until `want` of them, or the close; as a
    client does, it resumes from the last control event's offset when a response ends (runengine
    ends each after 60 s)."""
    got = 0
    while True:
        async with client.stream("GET", url, params={"offset": offset, "live": "sse"}) as response:
            async for event, data in sse_events(response):
                if event == "data":
                    got += len(json.loads(data))
                    continue
                control = json.loads(data)
                offset = control["streamNextOffset"]
                if got >= want or control.get("streamClosed"):
                    return got


async def read_catch_up(client: httpx.AsyncClient, url: str) -> int:
    """Items read from -1 to the end by catch-up GETs (a page each)."""
    offset, got = "-1", 0
    while True:
        response = await client.get(url, params={"offset": offset})
        got += len(response.json())
        offset = response.headers["stream-next-offset"]
        if response.headers.get("stream-up-to-date") == "true":
            return got


async def stream_rows(client: httpx.AsyncClient, base: str, items: int, repeat: int) -> list[tuple[str, float, int]]:
    """The stream rows against a Durable Streams server at `base` (its /v1/stream root's parent)."""
    rows = []

    async def write() -> int:
        url = f"{base}/v1/stream/bench-{uuid.uuid4().hex}"
        (await client.put(url, headers=JSON_TYPE)).raise_for_status()
        for i in range(items):
            (await client.post(url, content=json.dumps({"i": i}), headers=JSON_TYPE)).raise_for_status()
        written.append(url)
        return items

    written: list[str] = []
    seconds, count = await timed(write, repeat)
    rows.append(("append (one item per POST)", seconds, count))
    url = written[-1]
    seconds, count = await timed(lambda: read_catch_up(client, url), repeat)
    rows.append(("catch-up (GET pages from -1)", seconds, count))
    seconds, count = await timed(lambda: read_sse(client, url, "-1", items), repeat)
    rows.append(("sse catch-up (from -1)", seconds, count))

    async def live() -> int:
        reader = asyncio.create_task(read_sse(client, url, "now", items))
        await asyncio.sleep(0.05)
        for i in range(items):
            (await client.post(url, content=json.dumps({"live": i}), headers=JSON_TYPE)).raise_for_status()
        return await reader

    seconds, count = await timed(live, repeat)
    rows.append(("sse live (read while written, one item per POST)", seconds, count))
    return rows


async def run_rows(client: httpx.AsyncClient, base: str, items: int, repeat: int) -> list[tuple[str, float, int]]:
    rows = []
    finished: list[str] = []

    async def ds_live() -> int:
        run = (await client.post(f"{base}/runs", json={"agent": "tok", "input": items, "mode": "async"})).json()
        finished.append(run["run_id"])
        return await read_sse(client, f"{base}/ds/v1/stream/runs/{run['run_id']}", "-1", 1 << 60)

    async def native_live() -> int:
        frames = 0
        async with client.stream("POST", f"{base}/runs", json={"agent": "tok", "input": items, "mode": "stream"}) as response:
            async for line in response.aiter_lines():
                frames += line.startswith("id: ")
        return frames

    async def native_replay() -> int:
        frames = 0
        headers = {"accept": "text/event-stream"}
        async with client.stream("GET", f"{base}/runs/{finished[-1]}/events", headers=headers) as response:
            async for line in response.aiter_lines():
                frames += line.startswith("id: ")
        return frames

    seconds, count = await timed(ds_live, repeat)
    rows.append(("run via /ds: sse live (start to close)", seconds, count))
    seconds, count = await timed(native_live, repeat)
    rows.append(("run via native SSE: live (POST /runs mode stream)", seconds, count))
    url = f"{base}/ds/v1/stream/runs/{finished[-1]}"
    seconds, count = await timed(lambda: read_catch_up(client, url), repeat)
    rows.append(("run via /ds: catch-up (GET pages)", seconds, count))
    seconds, count = await timed(lambda: read_sse(client, url, "-1", 1 << 60), repeat)
    rows.append(("run via /ds: sse catch-up (ended run)", seconds, count))
    seconds, count = await timed(native_replay, repeat)
    rows.append(("run via native SSE: replay (GET /runs/{id}/events)", seconds, count))
    return rows


@contextlib.contextmanager
def node_server(data_dir: str | None) -> AsyncIterator[str] | None:  # type: ignore[misc]
    """The Node reference server's base URL (None when Node or the package is missing)."""
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "@durable-streams" / "server" / "package.json").exists():
        yield None
        return
    process = subprocess.Popen(
        [node, "--input-type=module", "-e", NODE_SERVER, data_dir or ""], cwd=JS, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = ""
        while not line.startswith("http"):  # the file-backed store logs its recovery first
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("the Node reference server did not start")
        yield line.strip().rstrip("/")
    finally:
        process.terminate()
        process.wait(10)


async def main_async(items: int, repeat: int, store: str) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    folder = Path(tempfile.mkdtemp(prefix="bench-ds-"))
    engine = RunEngine(f"sqlite:///{folder / 'runs.db'}" if store == "sqlite" else "memory://")

    @engine.agent("tok", description="streams input tokens")
    async def tok(ctx: RunContext) -> None:
        async with ctx.message() as message:
            for i in range(int(ctx.input)):
                await message.delta(f"t{i} ")

    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(ASGIApp(build_app(engine)), lifespan="off", log_level="warning", access_log=False))
    table: list[tuple[str, str, float, int]] = []
    try:
        async with engine:
            task = asyncio.create_task(server.serve([sock]))
            while not server.started:
                await asyncio.sleep(0.01)
            base = f"http://127.0.0.1:{sock.getsockname()[1]}"
            async with httpx.AsyncClient(timeout=120) as client:
                for row in await stream_rows(client, base + "/ds", items, repeat):
                    table.append((f"runengine /ds ({store})", *row))
                for row in await run_rows(client, base, items, repeat):
                    table.append((f"runengine ({store})", *row))
                for label, data_dir in (("Node reference (memory)", None), ("Node reference (file)", str(folder / "node"))):
                    with node_server(data_dir) as node_base:
                        if node_base is None:
                            table.append((label, "not run: Node or tests/js's @durable-streams/server missing", 0.0, 0))
                            break
                        for row in await stream_rows(client, node_base, items, repeat):
                            table.append((label, *row))
            server.should_exit = True
            await task
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nDurable Streams, {items} items, median of {repeat}; {host.python_implementation()} {host.python_version()},"
          f" {os.cpu_count()} cores\n")
    print(f"| server | what | seconds | items | items/s |\n|---|---|---:|---:|---:|")
    for server_name, what, seconds, count in table:
        rate = f"{count / seconds:,.0f}" if seconds else ""
        print(f"| {server_name} | {what} | {seconds:.3f} | {count} | {rate} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    args = parser.parse_args()
    asyncio.run(main_async(args.items, args.repeat, args.store))


if __name__ == "__main__":
    sys.exit(main())
