"""Flow control (runengine.flow) on PostgreSQL: limits counted over every worker process,
priorities in the queue, token buckets shared by every store instance."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from pg_flow_agents import register
from test_postgres_processes import Proc, worker_id
from runengine import RunEngine
from runengine.adapters.postgres import PostgresStore
from runengine.flow import Rate
from runengine.status import Status
from runengine.worker import WorkerOptions

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]
ANYIO_BACKENDS = ("asyncio",)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at the same instant)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals], key=lambda e: (e[0], e[1]))
    now = most = 0
    for _, change in edges:
        now += change
        most = max(most, now)
    return most


@pytest.mark.server
async def test_concurrency_2_with_50_runs_holds_across_3_worker_processes(pg_schema_url: str, tmp_path: Path) -> None:
    procs: list[Proc] = []
    try:
        async with register(RunEngine(pg_schema_url)) as api:  # creates the schema; only enqueues
            # One run at a time per worker: the limit of 2 can only be reached by two processes at
            # once, so reaching it (and no more) shows the count is shared, not kept per process.
            procs = [
                Proc(f"worker{i}", ["worker", "--app", "pg_flow_agents:make_engine", "--poll", "0.1", "--concurrency", "1"], pg_schema_url, tmp_path)
                for i in range(3)
            ]
            for proc in procs:
                await worker_id(proc)
            runs = [await api.execute("limited", {"hold": 0.05}, mode="async") for _ in range(50)]
            with anyio.fail_after(120):
                ended = [await api.wait(r.run_id) for r in runs]
        assert [s.status for s in ended] == [Status.COMPLETED] * 50, [p.output() for p in procs]
        assert most_at_once([(s.output["start"], s.output["end"]) for s in ended]) == 2
        assert len({s.worker for s in ended}) >= 2
    finally:
        for proc in procs:
            proc.stop()


async def test_priorities_order_a_queued_backlog_and_say_why_runs_wait(pg_schema_url: str) -> None:
    async with register(RunEngine(pg_schema_url)) as api:
        backlog = [("low-a", 0), ("high", 10), ("low-b", 0), ("mid", 5), ("urgent", 100), ("neg", -3)]
        runs = [await api.execute("serial", name, mode="async", priority=p) for name, p in backlog]
        async with register(RunEngine(pg_schema_url, worker=WorkerOptions(poll=0.1, concurrency=4))):
            with anyio.fail_after(30):
                ended = [await api.wait(r.run_id) for r in runs]
    order = [s.output for s in sorted(ended, key=lambda s: s.started_at)]
    assert order == ["urgent", "high", "mid", "low-a", "low-b", "neg"]


async def test_a_rate_holds_queued_runs_back_across_workers(pg_schema_url: str) -> None:
    async with register(RunEngine(pg_schema_url)) as api:
        runs = [await api.execute("hourly", i, mode="async") for i in range(3)]
        async with register(RunEngine(pg_schema_url, worker=WorkerOptions(poll=0.1))), register(
            RunEngine(pg_schema_url, worker=WorkerOptions(poll=0.1))
        ):
            with anyio.fail_after(30):
                first = await api.wait(runs[0].run_id)
            await anyio.sleep(0.5)  # polls by both workers: none may start another
            others = [await api.status(r.run_id) for r in runs[1:]]
            assert first.status is Status.COMPLETED
            assert [s.status for s in others] == [Status.PENDING] * 2
            assert [await api.waiting_for(s) for s in others] == ["rate"] * 2


async def test_token_buckets_are_shared_by_every_store_instance(pg_schema_url: str) -> None:
    a, b = PostgresStore.from_url(pg_schema_url), PostgresStore.from_url(pg_schema_url)
    await a.open()
    await b.open()
    try:
        rate = Rate(3, 60.0, 3.0)
        takes = [await store.take_tokens("step:llm:requests", rate, 1) for store in (a, b, a, b)]
        assert takes[:3] == [0.0, 0.0, 0.0]
        assert 0 < takes[3] <= 20.0  # the fourth waits for the next of 3 a minute, whoever asks
        assert await b.take_tokens("step:llm:requests", rate, 5, force=True) == 0.0  # a debt
        assert await a.take_tokens("step:llm:requests", rate, 0) > 20.0
    finally:
        await a.close()
        await b.close()


async def test_a_debounced_burst_of_20_starts_makes_one_run_on_a_worker(pg_schema_url: str) -> None:
    async with register(RunEngine(pg_schema_url)) as api, register(RunEngine(pg_schema_url, worker=WorkerOptions(poll=0.1))):
        burst = [await api.execute("digest", i, mode="async", metadata={"thread": "t1"}) for i in range(20)]
        assert await api.waiting_for(await api.status(burst[-1].run_id)) == "schedule"
        with anyio.fail_after(30):
            last = await api.wait(burst[-1].run_id)
        superseded = [await api.status(r.run_id) for r in burst[:-1]]
    assert last.status is Status.COMPLETED and last.output == 19
    assert [s.status for s in superseded] == [Status.CANCELLED] * 19
    for run, state in zip(burst[1:], superseded):
        assert state.cancel_reason == f"debounced: superseded by run {run.run_id}"
        assert state.started_at is None  # never ran


async def test_a_queued_run_past_the_limit_says_it_waits_for_concurrency(pg_schema_url: str) -> None:
    async with register(RunEngine(pg_schema_url)) as api:
        first = await api.execute("serial", "a", mode="async")
        second = await api.execute("serial", "b", mode="async")
        assert await api.waiting_for(await api.status(second.run_id)) is None  # claimable: no worker yet
        queue, spec = api.queue, api.agents.get("serial").flow
        assert queue is not None and spec is not None
        claimed = await queue.claim("w", agents=["serial"], limit=5, lease=30, flow={"serial": spec})
        assert [lease.run_id for lease in claimed] == [first.run_id]  # one slot
        assert await api.waiting_for(await api.status(second.run_id)) == "concurrency"
        assert await queue.claim("w2", agents=["serial"], limit=5, lease=30, flow={"serial": spec}) == []
