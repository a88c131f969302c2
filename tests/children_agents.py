"""Agents of the child-run crash tests (SQLite processes, PostgreSQL workers): a parent that fans
out to `n` children, joins them all, then waits for the signal "finish"; each child notes its
live start in the file RUNENGINE_TEST_STARTS (a resumed child replays and notes nothing), does a
slow durable step and returns twice its number. `--app children_agents:make_engine` serves them
on the store RUNENGINE_TEST_STORE."""

from __future__ import annotations

import os
from typing import Any

import anyio

from runengine import RunEngine
from runengine.context import RunContext


def _note(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def register(engine: RunEngine) -> RunEngine:
    @engine.agent("fan_child", description="notes its live start, works input.delay seconds, returns 2 * input.i")
    async def fan_child(ctx: RunContext) -> int:
        if not ctx.replaying:
            await ctx.flush()  # its run.started committed: from here on, a crash resumes it (replaying)
            _note(os.environ["RUNENGINE_TEST_STARTS"], f"start {ctx.run_id}")

        async def work() -> int:
            await anyio.sleep(float(ctx.input["delay"]))
            return 2 * int(ctx.input["i"])

        result = int(await ctx.step("work", work))
        print(f"child done {ctx.input['i']}", flush=True)
        return result

    @engine.agent("fan_parent", description="spawns input.n children, joins them, then waits for signal finish")
    async def fan_parent(ctx: RunContext) -> dict[str, Any]:
        n, delay = int(ctx.input["n"]), float(ctx.input["delay"])
        handles = [await ctx.spawn("fan_child", {"i": i, "delay": delay * (i + 1)}) for i in range(n)]
        outputs = await ctx.gather(*handles)
        return {"outputs": outputs, "finish": await ctx.receive("finish")}

    return engine


def make_engine() -> RunEngine:
    return register(RunEngine(os.environ["RUNENGINE_TEST_STORE"]))

