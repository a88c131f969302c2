"""The engine `runengine serve --app benchmarks.peers.bench_app:engine` serves in the peer benchmark.

The same two workloads as the peers: `bench_parts` streams N parts "tok<i> " (input: N as
text), `bench_echo` answers its input as one message. The store URL comes from the
environment (RUNENGINE_BENCH_STORE), so the benchmark picks the file.
"""

from __future__ import annotations

import os

from runengine.context import RunContext
from runengine.engine import RunEngine


def engine() -> RunEngine:
    bench = RunEngine(os.environ.get("RUNENGINE_BENCH_STORE", "sqlite:///bench.db"))

    @bench.agent("bench_parts", description="Streams N parts; the input is N.")
    async def parts(ctx: RunContext) -> None:
        for i in range(int(ctx.input)):
            await ctx.delta(f"tok{i} ")

    @bench.agent("bench_echo", description="Answers its input as one message.")
    async def echo(ctx: RunContext) -> None:
        await ctx.say(str(ctx.input))

    return bench
