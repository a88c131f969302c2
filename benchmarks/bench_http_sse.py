"""Native SSE benchmark: a run's events over HTTP, beside a transport floor measured in the same run.

    python benchmarks/bench_http_sse.py [--events 10000] [--subscribers 100] [--repeat 3] [--store memory://]

One uvicorn server process-local on 127.0.0.1 serves two ASGI apps on two ports, in one
event loop with the httpx client:

- runengine: `runengine.adapters.asgi.engine_asgi_app` (the app `runengine serve` runs);
- floor: a bare ASGI app that sends the very same SSE bytes, prepared in memory before
  the clock starts, in chunks of 500 frames (what a store page gives the native API).
  No store, no JSON encoding, no routing: the cost of HTTP + SSE framing here.

A third server is the plain SSE endpoint of the streaming row: a starlette app whose
StreamingResponse yields the same frames (built beforehand) one at a time, as a plain SSE
endpoint does, under the same uvicorn.

Rows (medians of --repeat, every repeat on a run of its own so no cache is warm):
- a streamed run, `POST /runs` mode stream of an agent streaming --events deltas live, from
  the request to the last frame, beside the starlette endpoint streaming its frames (the goal
  of issue 22: within 1.2x); 3 x --repeat of each, interleaved;
- replay of a finished run by one client, as SSE and as JSON pages;
- live fan-out: --subscribers clients follow one run from before it starts until it ends
  (the clock runs from the moment the agent starts streaming to the last client done).
"""

from __future__ import annotations

import argparse
import logging
import platform as host
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import structlog
import uvicorn

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from runengine import RunContext, RunEngine
from runengine.adapters.asgi import engine_asgi_app
from runengine.http.sse import sse_frame
from runengine.wire import event_to_json

PAGE = 500


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class Floor:
    """A bare ASGI app streaming pre-built SSE chunks."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def plain_sse_app(frames: list[bytes]) -> Starlette:
    """A plain SSE endpoint: starlette streaming `frames` (filled in before the clock starts) one by one."""

    async def stream(request: Request) -> StreamingResponse:
        await request.body()

        async def body() -> Any:
            for frame in frames:
                yield frame

        return StreamingResponse(body(), media_type="text/event-stream")

    return Starlette(routes=[Route("/stream", stream, methods=["POST"])])


async def count_sse(client: httpx.AsyncClient, url: str, method: str = "GET", json: Any = None) -> int:
    frames = 0
    async with client.stream(method, url, headers={"accept": "text/event-stream"}, json=json) as response:
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                frames += 1
    return frames


async def count_pages(client: httpx.AsyncClient, url: str) -> int:
    events, after = 0, 0
    while True:
        page = (await client.get(url, params={"after_seq": after, "limit": 1000})).json()
        events += len(page["events"])
        after = page["next_after_seq"]
        if page["ended"]:
            return events


async def fan_out(n: int, fn: Callable[[], Awaitable[int]]) -> int:
    total = 0

    async def one() -> None:
        nonlocal total
        count = await fn()
        total += count

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return total


def median(samples: list[tuple[float, int]]) -> tuple[float, int]:
    return statistics.median(s for s, _ in samples), samples[-1][1]


async def run(events: int, subscribers: int, repeat: int, store: str) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    engine = RunEngine(store)
    gates: dict[str, anyio.Event] = {}
    started: dict[str, float] = {}

    @engine.agent("tokens")
    async def tokens(ctx: RunContext) -> None:
        gate = gates.get(ctx.input.get("gate", ""))
        if gate is not None:
            await gate.wait()
        started[ctx.run_id] = time.perf_counter()
        async with ctx.message() as message:
            for i in range(int(ctx.input["n"])):
                await message.delta(f"t{i} ")

    floor = Floor()
    plain_frames: list[bytes] = []
    servers = [
        uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", timeout_keep_alive=300))
        for app in (engine_asgi_app(engine), floor, plain_sse_app(plain_frames))
    ]
    sockets = [free_socket(), free_socket(), free_socket()]
    native, floor_url, plain_url = (f"http://127.0.0.1:{s.getsockname()[1]}" for s in sockets)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    rows: list[tuple[str, tuple[float, int]]] = []
    async with anyio.create_task_group() as tg:
        for server, sock in zip(servers, sockets):
            tg.start_soon(server.serve, [sock])
        while not all(s.started for s in servers):
            await anyio.sleep(0.01)
        async with httpx.AsyncClient(timeout=300, limits=limits) as client:

            async def new_run() -> str:
                run = await client.post(f"{native}/runs", json={"agent": "tokens", "input": {"n": events}})
                return str(run.json()["run_id"])

            first = await new_run()
            log: list[Any] = []
            while page := await engine.store.read(first, after_seq=log[-1].seq if log else 0, limit=PAGE):
                log.extend(page)
            frames = [sse_frame(event_to_json(e), event=e.type, id=e.seq) for e in log]
            floor.chunks = [b"".join(frames[i : i + PAGE]) for i in range(0, len(frames), PAGE)]
            plain_frames.extend(frames)

            async def timed(fn: Callable[[], Awaitable[int]]) -> tuple[float, int]:
                start = time.perf_counter()
                count = await fn()
                return time.perf_counter() - start, count

            streamed: dict[str, list[tuple[float, int]]] = {"plain": [], "runengine": []}
            for _ in range(3 * repeat):  # short: more repeats, interleaved so a change in load lands on both alike
                streamed["plain"].append(await timed(lambda: count_sse(client, f"{plain_url}/stream", "POST", {})))
                body = {"agent": "tokens", "input": {"n": events}, "mode": "stream"}
                streamed["runengine"].append(await timed(lambda: count_sse(client, f"{native}/runs", "POST", body)))
            rows.append(("plain SSE endpoint: starlette, frame by frame", median(streamed["plain"])))
            rows.append(("runengine: POST /runs mode stream (live)", median(streamed["runengine"])))
            rows.append(("floor: bare ASGI, the same SSE bytes", median([await timed(lambda: count_sse(client, floor_url)) for _ in range(repeat)])))
            samples = []
            for _ in range(repeat):
                url = f"{native}/runs/{await new_run()}/events"
                samples.append(await timed(lambda: count_sse(client, url)))
            rows.append(("runengine: replay, GET /runs/{id}/events (SSE)", median(samples)))
            samples = []
            for _ in range(repeat):
                url = f"{native}/runs/{await new_run()}/events"
                samples.append(await timed(lambda: count_pages(client, url)))
            rows.append(("runengine: replay, JSON pages of 1000", median(samples)))
            rows.append((
                f"floor: {subscribers} clients at once",
                median([await timed(lambda: fan_out(subscribers, lambda: count_sse(client, floor_url))) for _ in range(repeat)]),
            ))

            samples = []
            for index in range(repeat):
                gates[str(index)] = gate = anyio.Event()
                run_id = (await client.post(
                    f"{native}/runs", json={"agent": "tokens", "input": {"n": events, "gate": str(index)}, "mode": "async"}
                )).json()["run_id"]
                ready = 0

                async def follower() -> int:
                    nonlocal ready
                    count = 0  # read as count_sse reads the floor, so both cost the client alike
                    url = f"{native}/runs/{run_id}/events"
                    async with client.stream("GET", url, headers={"accept": "text/event-stream"}) as response:
                        async for line in response.aiter_lines():
                            if line.startswith("id: "):
                                count += 1
                            elif line == "event: run.started":
                                ready += 1
                    return count

                async with anyio.create_task_group() as followers:
                    results: list[int] = []

                    async def keep(fn: Callable[[], Awaitable[int]] = follower) -> None:
                        results.append(await fn())

                    for _ in range(subscribers):
                        followers.start_soon(keep)
                    while ready < subscribers:  # every client is live before the agent streams
                        await anyio.sleep(0.005)
                    gate.set()
                end = time.perf_counter()
                samples.append((end - started[run_id], sum(results)))
            rows.append((f"runengine: {subscribers} clients follow a live run", median(samples)))
        for server in servers:
            server.should_exit = True

    print(
        f"{len(log)} events per run ({store}), median of {repeat}; "
        f"Python {host.python_version()}, {host.machine()}, client and server in one process"
    )
    print(f"| {'what':<48} | {'events':>8} | {'seconds':>8} | {'events/s':>10} |")
    print(f"|{'-' * 50}|{'-' * 10}|{'-' * 10}|{'-' * 12}|")
    for name, (seconds, count) in rows:
        print(f"| {name:<48} | {count:>8} | {seconds:>8.3f} | {count / seconds:>10.0f} |")
    plain, ours = dict(rows)["plain SSE endpoint: starlette, frame by frame"], dict(rows)["runengine: POST /runs mode stream (live)"]
    print(f"\nA streamed run of {events:,} deltas takes {ours[0] / plain[0]:.2f}x the plain SSE endpoint's time (goal: at most 1.2x).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", default="memory://")
    parser.add_argument("--quick", action="store_true", help="small sizes to check the harness")
    args = parser.parse_args()
    if args.quick:
        args.events, args.subscribers, args.repeat = 1_000, 10, 1
    anyio.run(run, args.events, args.subscribers, args.repeat, args.store)


if __name__ == "__main__":
    main()
