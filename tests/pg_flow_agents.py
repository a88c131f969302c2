"""Agents with flow control (runengine.flow) for the PostgreSQL tests, in `runengine worker
--app pg_flow_agents:make_engine` processes and in the test process. The store URL comes from
RUNENGINE_TEST_STORE."""

from __future__ import annotations

import os
import time
from typing import Any

import anyio

from runengine import RunEngine
from runengine.context import RunContext


def register(engine: RunEngine) -> RunEngine:
    @engine.agent("limited", concurrency=2, description="Holds a slot `hold` seconds; says when, by the wall clock.")
    async def limited(ctx: RunContext) -> dict[str, Any]:
        start = time.time()
        await anyio.sleep(float(ctx.input.get("hold", 0.05)))
        return {"start": start, "end": time.time()}

    @engine.agent("serial", concurrency=1, description="Returns its input, one run at a time.")
    async def serial(ctx: RunContext) -> Any:
        return ctx.input

    @engine.agent("hourly", rate="1/hour", description="Starts once an hour.")
    async def hourly(ctx: RunContext) -> Any:
        return ctx.input

    @engine.agent("digest", debounce=1, debounce_key=lambda input, metadata: metadata["thread"],
                  description="Debounced per thread: a burst of starts runs its last.")
    async def digest(ctx: RunContext) -> Any:
        return ctx.input

    return engine


def make_engine() -> RunEngine:
    return register(RunEngine(os.environ["RUNENGINE_TEST_STORE"]))
