"""A slow commit does not stall a streaming agent at every batch (issue 22, part 3): while one
batch commits, the agent queues up to BACKLOG_BATCHES batches' worth of deltas, which the flush
under way then commits in one append; past that it waits (memory stays bounded)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from runengine.adapters.memory import MemoryStore
from runengine.context import RunContext
from runengine.engine import RunEngine
from runengine.events import Event
from runengine.options import Durability
from runengine.status import Status
from runengine.writer import BACKLOG_BATCHES
from tests.kit import full_log

FLUSH_MAX = 8


class HeldStore(MemoryStore):
    """A memory store whose appends of deltas wait until `release` is set (a slow fsync), counted."""

    def __init__(self) -> None:
        super().__init__()
        self.release = anyio.Event()
        self.held = anyio.Event()
        self.batches: list[int] = []

    async def append(self, run_id: str, events: Sequence[Event], *, expected_seq: int) -> Any:
        if any(e.type == "message.delta" for e in events):
            self.held.set()
            await self.release.wait()
            self.batches.append(len(events))
        return await super().append(run_id, events, expected_seq=expected_seq)


@pytest.mark.anyio
async def test_an_agent_goes_on_streaming_while_a_batch_commits_up_to_the_backlog() -> None:
    store = HeldStore()
    engine = RunEngine(store, durability=Durability(flush_max=FLUSH_MAX, flush_window=0.010))
    produced = 0
    backlog = FLUSH_MAX * BACKLOG_BATCHES

    @engine.agent("stream")
    async def stream(ctx: RunContext) -> None:
        nonlocal produced
        await anyio.sleep(0.01)  # the run's flush task starts (before it, the agent flushes a batch itself)
        for i in range(FLUSH_MAX + backlog + 3 * FLUSH_MAX):
            await ctx.delta(f"t{i} ")
            produced += 1

    async with engine:
        try:
            await streams_while_held(engine, store, lambda: produced, backlog)
        finally:
            store.release.set()  # whatever failed: the engine can stop
        run = (await engine.list_runs()).runs[0]
        with anyio.fail_after(10):
            state = await engine.wait(run.run_id)
        assert state.status is Status.COMPLETED
        assert store.batches[1] >= backlog - FLUSH_MAX  # the backlog went in one append
        deltas = [e for e in await full_log(engine, run.run_id) if e.type == "message.delta"]
        assert [e.content for e in deltas] == [f"t{i} " for i in range(FLUSH_MAX + backlog + 3 * FLUSH_MAX)]


async def streams_while_held(engine: RunEngine, store: HeldStore, produced: Any, backlog: int) -> None:
    await engine.execute("stream", None, mode="async")
    with anyio.fail_after(10):
        await store.held.wait()  # the first batch of deltas is committing
        while produced() < backlog:
            await anyio.sleep(0.001)  # the agent went on: it queued a backlog meanwhile
    await anyio.sleep(0.05)
    assert produced() < FLUSH_MAX + backlog + 3 * FLUSH_MAX  # bounded: it waits past the backlog
