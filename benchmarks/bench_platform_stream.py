"""Profile stream benchmark: seed-002 (/platform), AI SDK (/ai) and LangGraph (/langgraph) SSE frames beside the native SSE stream, same run.

    python benchmarks/bench_platform_stream.py [--tokens 10000] [--repeat 3]

One uvicorn server on 127.0.0.1 (the app `runengine serve` builds: native API at `/`,
the platform profile at `/platform`, the AI SDK's UI message stream at `/ai`), memory store.
For a run of --tokens token deltas:

- live: `POST /platform/apps/tok/execute/stream` and `POST /ai/chat` (start the run and
  stream it to the end) beside the reference `POST /runs` with `mode: stream` (native),
  measured in the same run;
- replay of the finished run: `GET /platform/apps/tok/traces/{id}/stream` beside
  the reference `GET /runs/{id}/events` (SSE), the very same run;
- /langgraph: `POST /langgraph/threads/{id}/runs/stream` in `messages-tuple` mode (one
  `AIMessageChunk` frame per delta), and in useStream's modes (values, updates, messages-tuple),
  and the join of a finished run from its start (`Last-Event-ID: -1`).

Client and server share one event loop and the machine's cores; medians of --repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform as host
import socket
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
import structlog
import uvicorn

from runengine import RunContext, RunEngine
from runengine.adapters.asgi import ASGIApp
from runengine.adapters.server import build_app


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def count_frames(response: httpx.Response) -> int:
    frames = 0
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            frames += 1
    return frames


async def timed(fn: Callable[[], Awaitable[int]], repeat: int) -> tuple[float, int]:
    times, frames = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        frames = await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), frames


async def main(tokens: int, repeat: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # no per-run debug lines
    engine = RunEngine("memory://")

    @engine.agent("tok", description="streams input tokens")
    async def tok(ctx: RunContext) -> None:
        for i in range(int(ctx.input)):
            await ctx.delta(f"t{i} ")

    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(ASGIApp(build_app(engine)), lifespan="off", log_level="warning", access_log=False))
    async with engine:
        task = asyncio.create_task(server.serve([sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        base = "http://127.0.0.1:%d" % sock.getsockname()[1]
        traces: list[str] = []
        async with httpx.AsyncClient(base_url=base, timeout=600) as http:

            async def platform_live() -> int:
                async with http.stream("POST", "/platform/apps/tok/execute/stream", json={"message": str(tokens)}) as r:
                    traces.append(r.headers["x-trace-id"])
                    return await count_frames(r)

            async def native_live() -> int:
                body = {"agent": "tok", "input": tokens, "mode": "stream"}
                async with http.stream("POST", "/runs", json=body, headers={"accept": "text/event-stream"}) as r:
                    return await count_frames(r)

            async def ai_live() -> int:
                chat = f"bench-{len(traces)}-{time.perf_counter_ns()}"
                text = {"type": "text", "text": str(tokens)}
                body = {"id": chat, "agent": "tok", "messages": [{"id": "m", "role": "user", "parts": [text]}]}
                async with http.stream("POST", "/ai/chat", json=body) as r:
                    return await count_frames(r)

            async def platform_replay() -> int:
                async with http.stream("GET", f"/platform/apps/tok/traces/{traces[0]}/stream") as r:
                    return await count_frames(r)

            async def native_replay() -> int:
                async with http.stream("GET", f"/runs/{traces[0]}/events", headers={"accept": "text/event-stream"}) as r:
                    return await count_frames(r)

            thread = (await http.post("/langgraph/threads", json={})).json()["thread_id"]
            runs: list[str] = []

            def langgraph_live(modes: list[str]) -> Callable[[], Awaitable[int]]:
                async def stream() -> int:
                    body = {"assistant_id": "tok", "input": tokens, "stream_mode": modes}
                    async with http.stream("POST", f"/langgraph/threads/{thread}/runs/stream", json=body) as r:
                        runs.append(r.headers["content-location"].rsplit("/", 1)[-1])
                        return await count_frames(r)

                return stream

            async def langgraph_join() -> int:
                path = f"/langgraph/threads/{thread}/runs/{runs[0]}/stream"
                async with http.stream("GET", path, params={"stream_mode": "messages-tuple"}, headers={"last-event-id": "-1"}) as r:
                    return await count_frames(r)

            rows = [
                ("live: native POST /runs (stream)", *await timed(native_live, repeat)),
                ("live: platform POST execute/stream", *await timed(platform_live, repeat)),
                ("live: ai POST /ai/chat (UI message stream)", *await timed(ai_live, repeat)),
                ("replay: native GET /runs/{id}/events", *await timed(native_replay, repeat)),
                ("replay: platform GET traces/{id}/stream", *await timed(platform_replay, repeat)),
                ("live: langgraph runs/stream messages-tuple", *await timed(langgraph_live(["messages-tuple"]), repeat)),
                ("live: langgraph runs/stream useStream modes", *await timed(langgraph_live(["values", "updates", "messages-tuple"]), repeat)),
                ("replay: langgraph join from -1 (tuple)", *await timed(langgraph_join, repeat)),
            ]
        server.should_exit = True
        await task

    print(f"{tokens} token deltas per run, median of {repeat}; Python {host.python_version()}, {host.machine()}")
    print(f"| {'stream':<44} | {'frames':>7} | {'seconds':>8} | {'frames/s':>9} |")
    print(f"|{'-' * 46}|{'-' * 9}|{'-' * 10}|{'-' * 11}|")
    for name, seconds, frames in rows:
        print(f"| {name:<44} | {frames:>7} | {seconds:>8.3f} | {frames / seconds:>9.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.tokens, args.repeat))
