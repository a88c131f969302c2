"""Agents for the PostgreSQL tests, in engine processes started with `--app pg_agents:make_engine`
and in the test process itself. The store URL comes from RUNENGINE_TEST_STORE."""

from __future__ import annotations

import os
from typing import Any

import anyio

from runengine import RunEngine
from runengine.context import RunContext
from runengine.worker import WorkerOptions


def register(engine: RunEngine) -> RunEngine:
    @engine.agent("ticker", description="Streams n tokens, `delay` seconds apart; tokens name the attempt.")
    async def ticker(ctx: RunContext) -> dict[str, Any]:
        n = int(ctx.input.get("n", 50))
        delay = float(ctx.input.get("delay", 0.0))
        async with ctx.message() as message:
            for i in range(n):
                await message.delta(f"a{ctx.attempt}:t{i} ")
                if delay:
                    await anyio.sleep(delay)
        return {"n": n, "attempt": ctx.attempt}

    @engine.agent("stepper", description="n durable steps, then their count.")
    async def stepper(ctx: RunContext) -> int:
        return sum([await ctx.step("tick", lambda: 1) for _ in range(int(ctx.input.get("n", 3)))])

    @engine.agent("idle", description="Says one thing, then waits until it is stopped.")
    async def idle(ctx: RunContext) -> None:
        await ctx.say("waiting")
        await anyio.sleep_forever()

    @engine.agent("asker", description="Asks a question and returns the answer.")
    async def asker(ctx: RunContext) -> Any:
        answer = await ctx.ask({"question": "go?"})
        await ctx.say(f"got {answer}")
        return {"answer": answer}

    return engine


def make_engine() -> RunEngine:
    return register(RunEngine(os.environ["RUNENGINE_TEST_STORE"]))


def make_worker_engine(url: str, **options: Any) -> RunEngine:
    return register(RunEngine(url, worker=WorkerOptions(**options)))
