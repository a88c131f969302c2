"""The work queue and workers on a real PostgreSQL, in one test process: each engine has its own
store instance (its own pool and listening connection), as separate processes would."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
from datetime import datetime, timedelta, timezone
from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest
import structlog

from kit import until
from pg_agents import make_worker_engine, register
from runengine import RunEngine
from runengine.engine import SessionBusy
from runengine.adapters.postgres import PostgresStore
from runengine.errors import InvalidRequest
from runengine.events import Event, MessageDelta, RunCreated, RunFailed, RunRequeued, RunResumed, RunStarted, StepCompleted
from runengine.ports import LeaseLost, WorkQueue
from runengine.status import Status
from runengine.worker import WorkerOptions

pytestmark = pytest.mark.postgres


ANYIO_BACKENDS = ("asyncio",)


@pytest.fixture
def url(pg_schema_url: str) -> str:
    return pg_schema_url


@contextlib.asynccontextmanager
async def api_engine(url: str) -> AsyncIterator[RunEngine]:
    async with register(RunEngine(url)) as engine:
        yield engine


def test_worker_mode_needs_a_work_queue() -> None:
    with pytest.raises(InvalidRequest):
        RunEngine("memory://", worker=True)
    with pytest.raises(InvalidRequest):
        WorkerOptions(lease=0)
    with pytest.raises(InvalidRequest):
        WorkerOptions(on_lost="retry")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_execute_anywhere_runs_on_a_worker(url: str) -> None:
    async with api_engine(url) as api, make_worker_engine(url, lease=5, poll=0.2) as worker:
        assert isinstance(api.queue, WorkQueue)
        state = await api.execute("ticker", {"n": 20})
        assert state.status is Status.COMPLETED and state.output == {"n": 20, "attempt": 1}
        assert state.worker == worker.worker_id != api.worker_id
        assert state.text == "".join(f"a1:t{i} " for i in range(20))
        events = [e async for e in await api.execute("ticker", {"n": 5}, mode="stream")]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert events[-1].type == "run.completed"
        pending = await api.execute("ticker", {"n": 3}, mode="async")
        assert pending.status is Status.PENDING
        assert (await api.wait(pending.run_id)).status is Status.COMPLETED


@pytest.mark.anyio
async def test_cancel_from_another_process_stops_an_idle_agent_promptly(url: str) -> None:
    # A 60 s lease: its heartbeat (every 20 s) is far too slow to explain a prompt stop.
    async with api_engine(url) as api, make_worker_engine(url, lease=60, poll=0.2) as worker:
        run = await api.execute("idle", None, mode="async")
        await until(lambda: worker._worker is not None and worker._worker.in_flight == 1)
        await until(lambda: _status_is(api, run.run_id, Status.RUNNING))
        await until(lambda: _reached(api, run.run_id, 3))  # it said its one thing: idle now
        with anyio.fail_after(10):
            state = await api.cancel(run.run_id, reason="user")
            assert state.status is Status.CANCELLED and state.cancel_reason == "user"
            await until(lambda: worker._worker.in_flight == 0, timeout=10)  # type: ignore[union-attr]
        log = [e.type async for e in api.events(run.run_id, follow=False)]
        assert log == ["run.created", "run.started", "message.completed", "run.cancelled"]
        await anyio.sleep(0.3)  # the behaviour: a while in which nothing more may be written
        assert (await api.status(run.run_id)).last_seq == 4  # the worker wrote nothing after


async def _status_is(engine: RunEngine, run_id: str, status: Status) -> bool:
    return (await engine.status(run_id)).status is status


async def _reached(engine: RunEngine, run_id: str, seq: int) -> bool:
    return (await engine.status(run_id)).last_seq >= seq


@pytest.mark.anyio
async def test_input_reaches_the_worker_through_the_database(url: str) -> None:
    async with api_engine(url) as api, make_worker_engine(url, lease=5, poll=0.2):
        waiting = await api.execute("asker", None)
        assert waiting.status is Status.WAITING_FOR_INPUT
        await api.resume(waiting.run_id, "yes")
        done = await api.wait(waiting.run_id)
        assert done.status is Status.COMPLETED and done.output == {"answer": "yes"}


@pytest.mark.anyio
async def test_claims_never_overlap(url: str) -> None:
    async with PostgresStore.from_url(url) as a, PostgresStore.from_url(url) as b:
        for i in range(60):
            await a.work_queue.enqueue(f"r{i}", [RunCreated(run_id=f"r{i}", seq=1, agent="x")])
        claimed: dict[str, list[str]] = {"a": [], "b": []}

        async def claimer(name: str, store: PostgresStore) -> None:
            while True:
                leases = await store.work_queue.claim(name, agents=["x"], limit=3, lease=30)
                if not leases:
                    return
                claimed[name].extend(lease.run_id for lease in leases)

        async with anyio.create_task_group() as tg:
            tg.start_soon(claimer, "a", a)
            tg.start_soon(claimer, "b", b)
        assert not set(claimed["a"]) & set(claimed["b"])
        assert sorted(claimed["a"] + claimed["b"]) == sorted(f"r{i}" for i in range(60))
        assert await a.work_queue.claim("c", agents=["y"], limit=5, lease=1) == []  # not our agent


@pytest.mark.anyio
async def test_a_delayed_run_is_not_claimable_before_its_start_at(url: str) -> None:
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    soon = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    async with PostgresStore.from_url(url) as store:
        queue = store.work_queue
        await queue.enqueue("later", [RunCreated(run_id="later", seq=1, agent="x", start_at=later)])
        await queue.enqueue("soon", [RunCreated(run_id="soon", seq=1, agent="x", start_at=soon)])
        assert await queue.claim("w", agents=["x"], limit=5, lease=30) == []  # no slot held meanwhile
        leases: list[object] = []
        while not leases:
            await queue.wait_for_work(5.0)  # wakes for the earliest start_at, no notice needed
            leases = await queue.claim("w", agents=["x"], limit=5, lease=30)
        assert datetime.now(timezone.utc) >= soon
        assert [lease.run_id for lease in leases] == ["soon"]  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_worker_starts_a_delayed_run_at_its_start_at_without_holding_it_before(url: str) -> None:
    async with api_engine(url) as api, make_worker_engine(url, lease=5, poll=0.2) as worker:
        start_at = datetime.now(timezone.utc) + timedelta(seconds=1)
        run = await api.execute("ticker", {"n": 2}, mode="async", start_at=start_at)
        assert worker._worker is not None and worker._worker.in_flight == 0
        done = await api.wait(run.run_id)
        assert done.status is Status.COMPLETED and done.started_at is not None and done.started_at >= start_at


@pytest.mark.anyio
async def test_a_lost_lease_fences_the_old_worker(url: str) -> None:
    async with PostgresStore.from_url(url) as store:
        queue = store.work_queue
        await queue.enqueue("r", [RunCreated(run_id="r", seq=1, agent="x")])
        [old] = await queue.claim("w1", agents=["x"], limit=1, lease=0.5)
        await queue.append_leased(old, [RunStarted(run_id="r", seq=2, worker="w1")], expected_seq=1)
        assert await queue.claim("w2", agents=["x"], limit=1, lease=30) == []  # still held
        await anyio.sleep(0.7)  # the behaviour: the 0.5 s lease runs out
        with pytest.raises(LeaseLost):  # expired, even before anyone took it over
            await queue.append_leased(old, [MessageDelta(run_id="r", seq=3, message_id="m", content="x")], expected_seq=2)
        [new] = await queue.claim("w2", agents=["x"], limit=1, lease=30)
        assert new.run_id == "r" and new.token != old.token and new.claims == 2
        assert await queue.renew([old], lease=30) == set()  # the old token renews nothing
        with pytest.raises(LeaseLost):
            await queue.append_leased(old, [MessageDelta(run_id="r", seq=3, message_id="m", content="x")], expected_seq=2)
        assert await store.last_seq("r") == 2
        await queue.append_leased(new, [RunRequeued(run_id="r", seq=3, reason="worker_lost")], expected_seq=2)
        assert await queue.renew([new], lease=30) == {"r"}
        # A terminal event by anyone takes the run off the queue: the holder's next renew says so.
        await store.append("r", [RunFailed(run_id="r", seq=4, error=_error())], expected_seq=3)
        assert await queue.renew([new], lease=30) == set()
        assert await queue.claim("w3", agents=["x"], limit=5, lease=1) == []


def _error():  # type: ignore[no-untyped-def]
    from runengine.events import ErrorInfo

    return ErrorInfo(code="test", message="ended by the test")


async def ghost_run(
    url: str, agent: str, input: object, *, losses: int = 0, progressed: bool = True, steps: int = 0
) -> str:
    """A run claimed and started by a worker that then vanished (its lease runs out); before that,
    `losses` resumptions after lost workers in a row, then `steps` recorded steps named "tick"
    (progress), and (`progressed`) a delta after the last (streamed text: not progress)."""
    run_id = uuid.uuid4().hex
    async with PostgresStore.from_url(url) as store:
        queue = store.work_queue
        await queue.enqueue(run_id, [RunCreated(run_id=run_id, seq=1, agent=agent, input=input)])
        [lease] = await queue.claim("ghost", agents=[agent], limit=1, lease=0.5)
        events: list[Event] = [RunStarted(run_id=run_id, seq=2, worker="ghost")]
        for _ in range(losses):
            events.append(RunResumed(run_id=run_id, seq=len(events) + 2, worker="ghost", reason="worker_lost"))
        for _ in range(steps):
            events.append(StepCompleted(run_id=run_id, seq=len(events) + 2, name="tick", output=1))
        if progressed:
            events.append(MessageDelta(run_id=run_id, seq=len(events) + 2, message_id="m", content="lost "))
        await queue.append_leased(lease, events, expected_seq=1)
    return run_id


@pytest.mark.anyio
async def test_a_lost_worker_s_run_is_resumed_by_default_or_failed_on_request(url: str) -> None:
    run_id = await ghost_run(url, "ticker", {"n": 3})
    async with make_worker_engine(url, lease=2, poll=0.1) as worker:
        state = await worker.wait(run_id)
        log = [e async for e in worker.events(run_id, follow=False)]
    assert state.status is Status.COMPLETED and state.output == {"n": 3, "attempt": 2}
    assert [e.type for e in log][:6] == [
        "run.created", "run.started", "message.delta", "run.resumed", "message.discarded", "message.delta",
    ]
    assert log[3].reason == "worker_lost" and log[4].message_id == "m"
    assert state.text == "a2:t0 a2:t1 a2:t2 " and state.discarded == ("m",)  # the lost partial text is dropped
    run_id = await ghost_run(url, "ticker", {"n": 3})
    async with make_worker_engine(url, lease=2, poll=0.1, on_lost="fail") as worker:
        state = await worker.wait(run_id)
    assert state.status is Status.FAILED and state.error is not None and state.error.code == "worker_lost"


@pytest.mark.anyio
async def test_a_worker_loss_counts_only_against_a_run_that_made_no_progress(url: str) -> None:
    # Lost twice in a row without progress, then it made progress (a recorded step) before the
    # third loss: the count starts again, and the run resumes and completes (max_attempts 3).
    progressed = await ghost_run(url, "stepper", {"n": 3}, losses=2, steps=1, progressed=False)
    # Lost twice in a row, and a third time, with only streamed text since (which a resume
    # discards, so it is no progress): that is a crash loop.
    looping = await ghost_run(url, "ticker", {"n": 3}, losses=2, progressed=True)
    async with make_worker_engine(url, lease=2, poll=0.1, max_attempts=3) as worker:
        state = await worker.wait(progressed)
        assert state.status is Status.COMPLETED and state.lost_attempts == 1, (state.status, state.lost_attempts, state.error)
        state = await worker.wait(looping)
        assert state.status is Status.FAILED and state.error is not None and state.error.code == "worker_lost"
        assert state.lost_attempts == 2


@pytest.mark.anyio
async def test_requeue_policy_runs_it_again_then_gives_up(url: str) -> None:
    run_id = await ghost_run(url, "ticker", {"n": 3})
    async with make_worker_engine(url, lease=2, poll=0.1, on_lost="requeue") as worker:
        state = await worker.wait(run_id)
        log = [e.type async for e in worker.events(run_id, follow=False)]
    assert state.status is Status.COMPLETED and state.attempt == 2 and state.output == {"n": 3, "attempt": 2}
    assert log[:5] == ["run.created", "run.started", "message.delta", "run.requeued", "run.started"]
    assert state.text == "a2:t0 a2:t1 a2:t2 "  # what the lost attempt said is not part of the answer
    # With max_attempts reached, the run fails instead.
    run_id = await ghost_run(url, "ticker", {"n": 3})
    async with make_worker_engine(url, lease=2, poll=0.1, on_lost="requeue", max_attempts=1) as worker:
        state = await worker.wait(run_id)
    assert state.status is Status.FAILED and state.error is not None and state.error.code == "worker_lost"


@pytest.mark.anyio
async def test_graceful_shutdown_hands_runs_back(url: str) -> None:
    async with api_engine(url) as api:
        async with make_worker_engine(url, lease=5, poll=0.1, drain_timeout=0.3) as first:
            run = await api.execute("idle", None, mode="async")
            await until(lambda: _status_is(api, run.run_id, Status.RUNNING))
            quick = await api.execute("ticker", {"n": 3}, mode="async")
            await until(lambda: _status_is(api, quick.run_id, Status.COMPLETED))
        # Stopped: the idle run is suspended and back on the queue, untouched by a failure or a cancel.
        state = await api.status(run.run_id)
        assert state.status is Status.RUNNING and state.suspended
        log = [e.type async for e in api.events(run.run_id, follow=False)]
        assert log[-1] == "run.suspended"
        async with make_worker_engine(url, lease=5, poll=0.1) as second:
            await until(lambda: _status_is_resumed(api, run.run_id))
            state = await api.status(run.run_id)
            assert state.attempt == 2 and state.worker == second.worker_id and not state.suspended
            assert [m.content for m in state.messages] == ["waiting"]  # replayed, not said again
            await api.cancel(run.run_id)


async def _status_is_resumed(api: RunEngine, run_id: str) -> bool:
    log = [e.type async for e in api.events(run_id, follow=False)]
    return log[-1] == "run.resumed"


async def _settled_counts(dsn: str) -> tuple[int, int]:
    """The store connections and the tasks, once two readings in a row agree (closing ones gone)."""
    last: tuple[int, int] | None = None

    async def settled() -> tuple[int, int] | None:
        nonlocal last
        now = (await _connections(dsn), len(asyncio.all_tasks()))
        before, last = last, now
        return now if now == before else None

    return await until(settled, every=0.1)


async def _connections(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'runengine'"
            )
        )
    finally:
        await conn.close()


async def _many_runs(url: str, dsn: str, total: int) -> None:
    async with api_engine(url) as api, make_worker_engine(url, lease=10, poll=0.2, concurrency=32) as worker:
        marks: list[tuple[int, int]] = []
        done = 0
        batch = 50
        while done < total:
            async with anyio.create_task_group() as tg:
                for _ in range(batch):
                    tg.start_soon(api.execute, "ticker", {"n": 2})
            done += batch
            if done in (total // 5, total):
                await until(lambda: worker._worker.in_flight == 0)  # type: ignore[union-attr]
                gc.collect()
                marks.append(await _settled_counts(dsn))
        page = await api.list_runs(status=Status.COMPLETED, limit=1)
        assert page.runs and (await api.list_runs(status=Status.RUNNING, limit=1)).runs == ()
    (conns_early, tasks_early), (conns_late, tasks_late) = marks
    assert conns_late <= conns_early + 2, marks
    assert tasks_late <= tasks_early + 5, marks


@pytest.mark.anyio
async def test_connections_and_tasks_stay_flat_over_many_runs(url: str, pg_dsn: str) -> None:
    await _many_runs(url, pg_dsn, 1_000)


@pytest.mark.slow
@pytest.mark.anyio
async def test_connections_and_tasks_stay_flat_over_ten_thousand_runs(url: str, pg_dsn: str) -> None:
    await _many_runs(url, pg_dsn, 10_000)


@pytest.mark.anyio
async def test_fencing_stops_a_worker_that_was_never_told_it_lost_the_run(url: str, pg_dsn: str) -> None:
    """The lease is taken over behind the worker's back (no notification, no heartbeat in time):
    its very next append fails in the database, so it writes nothing more and stops."""
    schema_name = url.rsplit("schema=", 1)[1]
    async with make_worker_engine(url, lease=30, heartbeat=60, poll=0.1) as worker:
        run = await worker.execute("ticker", {"n": 100_000, "delay": 0.005}, mode="async")
        await until(lambda: _has_deltas(worker, run.run_id, 5))
        conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema_name})
        try:
            taken = await conn.execute(
                "UPDATE runengine_queue SET token = gen_random_uuid(), worker = 'thief' WHERE run_id = $1", run.run_id
            )
            assert taken == "UPDATE 1"
            at_takeover = await conn.fetchval("SELECT last_seq FROM runengine_runs WHERE run_id = $1", run.run_id)
        finally:
            await conn.close()
        await until(lambda: worker._worker.in_flight == 0, timeout=20)  # type: ignore[union-attr]
        state = await worker.status(run.run_id)
        # At most the one batch that was committing at the takeover; then nothing, not even an ending.
        assert state.status is Status.RUNNING
        assert state.last_seq - at_takeover <= worker.durability.flush_max + 1
        await anyio.sleep(0.5)  # the behaviour: a while in which the fenced worker writes nothing
        assert (await worker.status(run.run_id)).last_seq == state.last_seq


async def _has_deltas(engine: RunEngine, run_id: str, count: int) -> bool:
    return (await engine.status(run_id)).last_seq >= 2 + count


@pytest.mark.anyio
async def test_session_policy_enqueue_holds_a_run_until_the_session_is_free(url: str) -> None:
    async with api_engine(url) as api, make_worker_engine(url, lease=5, poll=0.1) as worker:
        first = await api.execute("idle", None, mode="async", session_id="s1")
        await until(lambda: _status_is(api, first.run_id, Status.RUNNING))
        second = await api.execute("ticker", {"n": 2}, mode="async", session_id="s1", session_policy="enqueue")
        other = await api.execute("ticker", {"n": 2}, mode="async", session_id="s2", session_policy="enqueue")
        assert (await api.wait(other.run_id)).status is Status.COMPLETED  # another session is not held
        assert (await api.status(second.run_id)).status is Status.PENDING
        await api.cancel(first.run_id)
        with anyio.fail_after(10):  # claimed as soon as the first run ended (a wake-up, not a poll)
            assert (await api.wait(second.run_id)).status is Status.COMPLETED
        third = await api.execute("idle", None, mode="async", session_id="s1")
        await until(lambda: _status_is(api, third.run_id, Status.RUNNING))
        with pytest.raises(SessionBusy):
            await api.execute("ticker", {"n": 1}, session_id="s1", session_policy="reject", mode="async")
        await api.cancel(third.run_id)


@pytest.mark.anyio
async def test_a_run_that_ends_by_itself_is_not_stopped_as_if_its_lease_were_lost(url: str) -> None:
    """A run's end is committed with its queue row deleted, so the worker's lease watcher hears the
    lease go as the run ends: that is the run's own end, not a loss to stop it for (the old code
    cancelled a few runs in 100 this way, logging `run stopped: lease gone`)."""
    with structlog.testing.capture_logs() as lines:
        async with make_worker_engine(url, lease=60, poll=0.05, concurrency=100) as engine:
            for _ in range(3):
                with anyio.fail_after(120):
                    ended = await asyncio.gather(*(engine.execute("stepper", {"n": 100}) for _ in range(100)))
                assert [s.status for s in ended] == [Status.COMPLETED] * 100
    assert [line for line in lines if str(line.get("event", "")).startswith("run stopped")] == []
