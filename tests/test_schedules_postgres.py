"""Issue 25 (schedules) on PostgreSQL with several `runengine worker` processes, each running the
schedules of the store: an every-second schedule starts exactly one run per slot, while a worker
is SIGKILLed and another started, then every worker is SIGKILLed and two new ones started; every
run is executed to its end, once. And a fork on PostgreSQL: enqueued whole, resumed by a worker."""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path

import anyio
import pytest

from kit import full_log, until
from pg_agents import make_worker_engine, register
from runengine import RunEngine
from runengine.status import Status
from runengine.wire import parse_time
from test_postgres_processes import Cluster

pytestmark = pytest.mark.postgres
ANYIO_BACKENDS = ("asyncio",)


@pytest.fixture
def cluster(pg_schema_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    group = Cluster(pg_schema_url, tmp_path)
    yield group
    group.stop()


async def scheduled(engine: RunEngine) -> dict[datetime, str]:
    """slot -> run id of every run the schedule started (asserting one run per slot)."""
    runs: dict[datetime, str] = {}
    page = await engine.list_runs(limit=1000)
    for summary in page.runs:
        state = await engine.status(summary.run_id)
        if state.metadata.get("schedule_id") == "tick":
            slot = parse_time(state.metadata["schedule_slot"])
            assert slot not in runs, f"two runs for the slot {slot}"
            runs[slot] = summary.run_id
    return runs


@pytest.mark.anyio
async def test_each_slot_starts_one_run_across_worker_processes_and_a_kill(cluster: Cluster) -> None:
    async with register(RunEngine(cluster.url)) as engine:
        await engine.schedule("tick", cron="* * * * * *", agent="stepper", input={"n": 2})
    workers = [cluster.worker("--lease", "3", "--poll", "0.2") for _ in range(3)]
    async with register(RunEngine(cluster.url)) as engine:
        engine.schedules.stop()  # this process only reads: the workers start the runs
        await until(lambda: _at_least(engine, 3), timeout=60)
        workers[0].signal(signal.SIGKILL)
        await anyio.sleep(2)
        cluster.worker("--lease", "3", "--poll", "0.2")
        before = len(await scheduled(engine))
        await until(lambda: _at_least(engine, before + 5), timeout=60)
        # Every process down (SIGKILL), then two new ones: the slots meanwhile are within the
        # grace, so each starts once, at the restart.
        for proc in cluster.procs:
            proc.signal(signal.SIGKILL)
        await anyio.sleep(2)
        cluster.worker("--lease", "3", "--poll", "0.2")
        cluster.worker("--lease", "3", "--poll", "0.2")
        before = len(await scheduled(engine))
        await until(lambda: _at_least(engine, before + 5), timeout=60)
        await engine.schedules.pause("tick")
        await anyio.sleep(1.5)  # a slot being started as it was paused
        runs = await scheduled(engine)
        slots = sorted(runs)
        # One run for each second from the first slot to the last: none lost, none twice.
        assert len(slots) == int((slots[-1] - slots[0]).total_seconds()) + 1, slots
        for run_id in runs.values():
            state = await until(lambda run_id=run_id: _ended(engine, run_id), timeout=60)
            assert state.status is Status.COMPLETED and state.output == 2, (run_id, state.error)
            log = await full_log(engine, run_id)
            assert [e.type for e in log].count("run.created") == 1
            assert [e.type for e in log].count("step.completed") == 2  # each step recorded once


async def _at_least(engine: RunEngine, count: int) -> bool:
    return len(await scheduled(engine)) >= count


async def _ended(engine: RunEngine, run_id: str):  # type: ignore[no-untyped-def]
    state = await engine.status(run_id)
    return state if state.terminal else None


@pytest.mark.anyio
async def test_a_fork_on_postgresql_is_queued_and_resumed_by_a_worker(pg_schema_url: str) -> None:
    async with register(RunEngine(pg_schema_url)) as api, make_worker_engine(pg_schema_url, lease=5, poll=0.2) as worker:
        source = await api.execute("asker", None)
        assert source.status is Status.WAITING_FOR_INPUT
        await api.resume(source.run_id, "yes")
        assert (await api.wait(source.run_id)).output == {"answer": "yes"}
        log = await full_log(api, source.run_id)
        input_seq = next(e.seq for e in log if e.type == "run.input")
        fork = await api.fork(source.run_id, input_seq, input="no")
        ended = await api.wait(fork.run_id)
        assert ended.status is Status.COMPLETED and ended.output == {"answer": "no"}
        assert ended.worker == worker.worker_id != api.worker_id  # enqueued, claimed by the worker
        assert ended.forked_from == source.run_id and ended.forked_at_seq == input_seq
