"""Engines that the fault suites serve with `runengine serve --app fault_apps:NAME` (tests/ is the
working directory there). The store URL comes from RUNENGINE_FAULT_STORE."""

from __future__ import annotations

import os

import anyio

from runengine.context import RunContext
from runengine.engine import RunEngine


def _store() -> str:
    return os.environ.get("RUNENGINE_FAULT_STORE", "sqlite:///fault.db")


def fuzz() -> RunEngine:
    """Agents that always end on their own (a fuzzer must never wait on a run forever)."""
    engine = RunEngine(_store())

    @engine.agent("echo", description="Streams its input back, word by word.")
    async def echo(ctx: RunContext) -> str:
        text = ctx.input if isinstance(ctx.input, str) else repr(ctx.input)
        for word in text.split()[:50]:
            await ctx.delta(word + " ")
        return text

    @engine.agent("tools", description="Calls a local tool and reports.")
    async def tools(ctx: RunContext) -> dict:
        result = await ctx.tool_call("length", {"value": repr(ctx.input)}, lambda value: len(value))
        await ctx.say(f"the input is {result} characters long")
        return {"length": result}

    @engine.agent("fails", description="Raises: the run fails with agent_error.")
    async def fails(ctx: RunContext) -> None:
        raise ValueError("this agent always fails")

    return engine


def gate() -> RunEngine:
    """`gate` waits for input, then streams `n` parts (input {"n": N}): many subscribers can
    connect before anything is streamed."""
    engine = RunEngine(_store())

    @engine.agent("gate", description="Waits for input, then streams n parts.")
    async def gate_agent(ctx: RunContext) -> str:
        n = int(ctx.input["n"])
        await ctx.ask({"question": "go?"})
        for i in range(n):
            await ctx.delta(f"p{i} ")
            if i % 50 == 49:
                await anyio.sleep(0)  # let the subscribers' streams interleave with the writer
        return f"streamed {n} parts"

    return engine
