"""Issue 22 item 1: idle runs cost nothing. A run in a durable wait (`ctx.ask`, `ctx.sleep`) or
delayed is a row of the store's timer index (`RunSummary.wake_at`, from `Event.wake_after`), not a
task: after a restart the engine holds nothing for it; its timer (read a page at a time by one
scanner, runengine.idle) or its input (`engine.resume`) takes it up again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest
import structlog
import structlog._config
import structlog.testing

from runengine import RunEngine, Status, context, recording
from runengine.adapters.memory import MemoryStore
from runengine.adapters.sqlite import SQLiteStore
from runengine.errors import InputTimedOut
from runengine.events import (
    NO_DEADLINE,
    RunCancelled,
    RunCreated,
    RunInput,
    RunStarted,
    RunWaitingForInput,
    TimerFired,
    TimerStarted,
    Usage,
)
from runengine.idle import SCAN_PAGE
from runengine.options import Durability
from runengine.ports import EventStore, WakeIndex
from runengine.state import RunState

from kit import full_log, until

ANYIO_BACKENDS = ("asyncio",)  # the SQLite store

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def now() -> datetime:
    return datetime.now(timezone.utc)


def make_engine(path: Path, *, horizon: float = 60.0, **durability: Any) -> RunEngine:
    engine = RunEngine(SQLiteStore(str(path)), durability=Durability(delay_horizon=horizon, drain_timeout=1.0, **durability))

    @engine.agent("ask")
    async def ask(ctx) -> object:  # type: ignore[no-untyped-def]
        answer = await ctx.ask({"question": ctx.input})
        await ctx.say(f"got {answer}")
        return answer

    @engine.agent("ask_within")
    async def ask_within(ctx) -> object:  # type: ignore[no-untyped-def]
        try:
            return await ctx.ask("anyone?", timeout=ctx.input)
        except InputTimedOut:
            return "nobody answered"

    @engine.agent("nap")
    async def nap(ctx) -> str:  # type: ignore[no-untyped-def]
        await ctx.sleep(ctx.input)
        return "rested"

    return engine


async def sleeping(engine: RunEngine, run_id: str) -> bool:
    return (await engine.status(run_id)).timer_id is not None


async def ended(engine: RunEngine, run_id: str) -> RunState | None:
    state = await engine.status(run_id)
    return state if state.terminal else None


# -- the engine -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_after_a_restart_runs_waiting_for_input_or_asleep_hold_no_task(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with make_engine(path) as engine:
        waiting = [(await engine.execute("ask", i)).run_id for i in range(120)]  # sync: returns once it waits
        asleep = [(await engine.execute("nap", 3600, mode="async")).run_id for _ in range(120)]
        for run_id in asleep:
            await until(lambda: sleeping(engine, run_id))
        assert len(engine.driver.active) == 240  # held while this process is the one that saw them wait
    async with make_engine(path) as engine:
        assert not engine.driver.active  # after the restart: no task, writer or state for any of them
        store = engine.store
        assert isinstance(store, WakeIndex)
        assert (await store.list_busy(limit=10)).runs == ()
        assert (await engine.status(waiting[0])).status is Status.WAITING_FOR_INPUT
        assert await sleeping(engine, asleep[0])
        # Its input takes a waiting run up again; the others stay in the store.
        await engine.resume(waiting[7], "yes")
        done = await engine.wait(waiting[7], after_seq=(await engine.status(waiting[7])).last_seq)
        assert done.status is Status.COMPLETED and done.output == "yes"
        assert done.messages[-1].content == "got yes"
        assert not engine.driver.active
        # A run idle in the store is cancelled there.
        assert (await engine.cancel(asleep[3])).status is Status.CANCELLED
        log = await full_log(engine, waiting[7])
        resumed = [e for e in log if e.type == "run.resumed"]
        assert [e.reason for e in resumed] == ["restart"]  # woken by its input: not a lost process
    # Nothing was lost: every other run is still where it was.
    async with make_engine(path) as engine:
        assert not engine.driver.active
        statuses = {(await engine.status(run_id)).status for run_id in waiting if run_id != waiting[7]}
        assert statuses == {Status.WAITING_FOR_INPUT}
        assert all([await sleeping(engine, run_id) for run_id in asleep if run_id != asleep[3]])


@pytest.mark.anyio
async def test_a_timer_takes_its_run_up_when_it_comes_due_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with make_engine(path, horizon=0.2) as engine:
        run = await engine.execute("nap", 1.5, mode="async")
        await until(lambda: sleeping(engine, run.run_id))
        until_at = (await engine.status(run.run_id)).sleeping_until
        assert until_at is not None
    async with make_engine(path, horizon=0.2) as engine:
        assert run.run_id not in engine.driver.active  # not due yet: left in the store
        with anyio.fail_after(20):
            state = await engine.wait(run.run_id)
        assert state.status is Status.COMPLETED and state.output == "rested"
        log = await full_log(engine, run.run_id)
        fired = [e for e in log if isinstance(e, TimerFired)]
        assert len(fired) == 1 and fired[0].at >= until_at
        assert [e.type for e in log].count("timer.started") == 1


@pytest.mark.anyio
async def test_an_input_deadline_takes_its_run_up_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with make_engine(path, horizon=0.2) as engine:
        run = await engine.execute("ask_within", 1.5)
        assert run.status is Status.WAITING_FOR_INPUT
    async with make_engine(path, horizon=0.2) as engine:
        assert run.run_id not in engine.driver.active
        state = await until(lambda: ended(engine, run.run_id))
        assert state.status is Status.COMPLETED and state.output == "nobody answered"


@pytest.mark.anyio
async def test_an_idle_run_of_an_agent_this_engine_lacks_is_left_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with make_engine(path, horizon=0.2) as engine:
        run = await engine.execute("nap", 0.3, mode="async")
        await until(lambda: sleeping(engine, run.run_id))
        later = await engine.execute("nap", 0.6, mode="async")
        await until(lambda: sleeping(engine, later.run_id))
    other = RunEngine(SQLiteStore(str(path)), durability=Durability(delay_horizon=0.2))

    @other.agent("nap")  # a changed agent: it naps less
    async def nap(ctx) -> str:  # type: ignore[no-untyped-def]
        await ctx.sleep(ctx.input)
        return "rested"

    unrelated = RunEngine(SQLiteStore(str(path)), durability=Durability(delay_horizon=0.2))

    @unrelated.agent("echo")
    async def echo(ctx) -> str:  # type: ignore[no-untyped-def]
        return str(ctx.input)

    async with unrelated:  # both timers come due: the scanner passes them by and goes on
        await anyio.sleep(1.0)
        assert not unrelated.driver.active
        assert (await unrelated.execute("echo", "still here")).output == "still here"
    async with other:
        for run_id in (run.run_id, later.run_id):
            with anyio.fail_after(20):
                assert (await other.wait(run_id)).output == "rested"


# -- the stores' timer index ------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    opened: EventStore = MemoryStore() if request.param == "memory" else SQLiteStore(str(tmp_path / "runs.db"))
    await opened.open()
    yield opened
    await opened.close()


async def wake_index_follows_the_events(store: EventStore) -> None:
    """What every store with a timer index keeps: each run's wake time as its events leave it."""
    assert isinstance(store, WakeIndex)
    at = T0

    async def wake(run_id: str) -> datetime | None:
        summary = await store.get_run(run_id)
        assert summary is not None
        return summary.wake_at

    start_at = T0 + timedelta(days=2)
    await store.append("delayed", [RunCreated(run_id="delayed", seq=1, at=at, agent="a", start_at=start_at)], expected_seq=0)
    assert await wake("delayed") == start_at
    await store.append("now", [RunCreated(run_id="now", seq=1, at=at, agent="a")], expected_seq=0)
    assert await wake("now") is None
    # asleep: until its timer fires
    until_at = T0 + timedelta(hours=1)
    await store.append(
        "now",
        [RunStarted(run_id="now", seq=2, at=at), TimerStarted(run_id="now", seq=3, at=at, timer_id="t", until=until_at)],
        expected_seq=1,
    )
    assert await wake("now") == until_at
    await store.append("now", [TimerFired(run_id="now", seq=4, at=at, timer_id="t")], expected_seq=3)
    assert await wake("now") is None
    # waiting for input with no deadline: only its input wakes it (and usage noted meanwhile keeps it idle)
    await store.append("now", [RunWaitingForInput(run_id="now", seq=5, at=at)], expected_seq=4)
    await store.append("now", [Usage(run_id="now", seq=6, at=at, input_tokens=1)], expected_seq=5)
    assert await wake("now") == NO_DEADLINE
    await store.append("now", [RunInput(run_id="now", seq=7, at=at, content="x")], expected_seq=6)
    assert await wake("now") is None
    deadline = T0 + timedelta(minutes=5)
    await store.append("now", [RunWaitingForInput(run_id="now", seq=8, at=at, expires_at=deadline)], expected_seq=7)
    assert await wake("now") == deadline
    # the listings: due ones earliest first (never the ones only input wakes), the busy ones newest first
    await store.append("forever", [RunCreated(run_id="forever", seq=1, at=at, agent="a"), RunStarted(run_id="forever", seq=2, at=at),
                                   RunWaitingForInput(run_id="forever", seq=3, at=at)], expected_seq=0)
    await store.append("busy", [RunCreated(run_id="busy", seq=1, at=at, agent="a"), RunStarted(run_id="busy", seq=2, at=at)],
                       expected_seq=0)
    first = await store.list_waking(limit=1)
    assert [r.run_id for r in first.runs] == ["now"] and first.next_before is not None
    second = await store.list_waking(limit=1, after=first.next_before)
    assert [r.run_id for r in second.runs] == ["delayed"] and second.next_before is None
    assert [r.run_id for r in (await store.list_busy(limit=10)).runs] == ["busy"]
    # an ended run is neither
    await store.append("now", [RunCancelled(run_id="now", seq=9, at=at)], expected_seq=8)
    assert await wake("now") is None
    assert [r.run_id for r in (await store.list_waking(limit=10)).runs] == ["delayed"]
    page = await store.list_busy(limit=1)
    assert [r.run_id for r in page.runs] == ["busy"] and page.next_before is None


@pytest.mark.anyio
async def test_the_timer_index_follows_the_events(store: EventStore) -> None:
    await wake_index_follows_the_events(store)


@pytest.mark.postgres
@pytest.mark.anyio
async def test_the_postgresql_timer_index_follows_the_events(pg_schema_url: str) -> None:
    from runengine.adapters.postgres import PostgresStore

    async with PostgresStore.from_url(pg_schema_url) as store:
        await wake_index_follows_the_events(store)


# -- parking: a run idle in memory long enough leaves it ------------------------------------------


def parking(path_or_url: str, **worker: object) -> RunEngine:
    """An engine that parks a run idle 0.2 s in a wait not due within 0.5 s."""
    from runengine.worker import WorkerOptions

    options = WorkerOptions(**worker) if worker else None  # type: ignore[arg-type]
    engine = RunEngine(path_or_url, worker=options, durability=Durability(park_after=0.2, delay_horizon=0.5))

    @engine.agent("ask")
    async def ask(ctx) -> object:  # type: ignore[no-untyped-def]
        return await ctx.ask("go?")

    @engine.agent("nap")
    async def nap(ctx) -> str:  # type: ignore[no-untyped-def]
        await ctx.sleep(ctx.input)
        return "rested"

    return engine


async def parked_and_taken_up_again(engine: RunEngine, held: Callable[[], int]) -> None:
    waiting = await engine.execute("ask", mode="async")
    asleep = await engine.execute("nap", 2.0, mode="async")
    await until(lambda: status_is(engine, waiting.run_id, Status.WAITING_FOR_INPUT))
    await until(lambda: sleeping(engine, asleep.run_id))
    await until(lambda: held() == 0)  # both parked: no task holds them
    await engine.resume(waiting.run_id, "yes")  # its input takes it up again
    assert (await until(lambda: ended(engine, waiting.run_id))).output == "yes"
    assert (await until(lambda: ended(engine, asleep.run_id))).output == "rested"  # and its timer
    for run_id in (waiting.run_id, asleep.run_id):
        types = [e.type for e in await full_log(engine, run_id)]
        assert "run.suspended" not in types and types.count("run.resumed") == 1  # parking wrote nothing
        assert types[-1] == "run.completed"


async def status_is(engine: RunEngine, run_id: str, status: Status) -> bool:
    return (await engine.status(run_id)).status is status


@pytest.mark.anyio
async def test_a_run_idle_long_enough_is_parked_and_taken_up_again_by_its_input_or_timer(tmp_path: Path) -> None:
    async with parking(f"sqlite:///{tmp_path / 'runs.db'}") as engine:
        await parked_and_taken_up_again(engine, lambda: len(engine.driver.active))


@pytest.mark.postgres
@pytest.mark.anyio
async def test_a_worker_hands_an_idle_run_back_to_the_queue_until_its_input_or_timer(pg_schema_url: str) -> None:
    async with parking(pg_schema_url, lease=5, poll=0.2) as engine:
        worker = engine._worker
        assert worker is not None
        await parked_and_taken_up_again(engine, lambda: worker.in_flight)


@pytest.mark.anyio
async def test_at_start_every_due_idle_run_is_listed_and_its_log_read_before_any_is_launched(tmp_path: Path) -> None:
    """Recovery takes the idle runs already due up in the same pass as the runs at work: every page
    of the timer index is read, then their logs in one pass, and only then are they launched, all
    before the engine has started (a page read no longer waits behind the runs just launched)."""
    path = tmp_path / "runs.db"
    count = SCAN_PAGE + 50  # more than one page of the timer index
    async with make_engine(path, horizon=7200) as engine:
        runs = [(await engine.execute("nap", 3600, mode="async")).run_id for _ in range(count)]
        for run_id in runs:
            await until(lambda: sleeping(engine, run_id))
    engine = make_engine(path, horizon=7200)  # an hour's sleep is due within the horizon
    store, driver = engine.store, engine.driver
    calls: list[str] = []

    def recorded(name: str, read: Callable[..., Any]) -> Callable[..., Any]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return await read(*args, **kwargs)

        return call

    store.list_waking = recorded("list_waking", store.list_waking)  # type: ignore[attr-defined]
    store.read_heads = recorded("read_heads", store.read_heads)  # type: ignore[attr-defined]
    launch = driver.launch

    def launching(*args: Any, **kwargs: Any) -> Any:
        calls.append("launch")
        return launch(*args, **kwargs)

    driver.launch = launching  # type: ignore[method-assign]
    async with engine:
        assert set(driver.active) == set(runs)  # every one taken up by the time the engine has started
        first = calls.index("launch")
        assert calls[:first] == ["list_waking", "list_waking", "read_heads"]
        assert calls[first:] == ["launch"] * count
        assert [(await engine.status(run_id)).timer_id is not None for run_id in runs[:3]] == [True] * 3


@pytest.mark.anyio
async def test_resumed_runs_bind_no_logger_and_draw_no_timer_id_until_they_need_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-run costs of a resume paid only when used: a run's logger is bound when a line is
    logged (ctx.log on first use, the driver's on its first line), a replayed sleep draws no new
    timer id. Logged lines still carry the run."""
    path = tmp_path / "runs.db"
    async with make_engine(path, horizon=7200) as engine:
        runs = [(await engine.execute("nap", 3600, mode="async")).run_id for _ in range(5)]
        for run_id in runs:
            await until(lambda: sleeping(engine, run_id))
    binds, ids = [], []
    bind = structlog._config.BoundLoggerLazyProxy.bind
    monkeypatch.setattr(structlog._config.BoundLoggerLazyProxy, "bind", lambda self, **kw: binds.append(kw) or bind(self, **kw))
    new_id = recording.new_id
    monkeypatch.setattr(context, "new_id", lambda kind: ids.append(kind) or new_id(kind))
    engine = make_engine(path, horizon=7200)

    @engine.agent("logs")
    async def logs(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.log.info("hello")

    async with engine:
        await until(lambda: all(engine.driver.active[r].recorder is not None and not engine.driver.active[r].recorder.replaying
                                for r in runs))
        assert binds == [] and ids == []  # five runs resumed and asleep again: no logger, no id
        with structlog.testing.capture_logs() as lines:
            state = await engine.execute("logs")
        assert state.status is Status.COMPLETED
        assert [(line["event"], line["run_id"]) for line in lines if line["event"] == "hello"] == [("hello", state.run_id)]


# -- a mass wake: admitted as earlier runs end ------------------------------------------------------


async def last_timer(engine: RunEngine, runs: list[str]) -> datetime:
    """Once every run is asleep: when the last of their timers comes due."""
    for run_id in runs:
        await until(lambda: sleeping(engine, run_id))
    timers = [(await engine.status(run_id)).sleeping_until for run_id in runs]
    return max(at for at in timers if at is not None)


async def sleep_past(at: datetime) -> None:
    await anyio.sleep((at - now()).total_seconds() + 0.1)


def most_held(engine: RunEngine) -> Callable[[], int]:
    """The most runs the engine held at once, counted at each launch."""
    most = 0
    launch = engine.driver.launch

    def launching(*args: Any, **kwargs: Any) -> Any:
        nonlocal most
        active = launch(*args, **kwargs)
        most = max(most, len(engine.driver.active))
        return active

    engine.driver.launch = launching  # type: ignore[method-assign]
    return lambda: most


@pytest.mark.anyio
async def test_a_mass_wake_holds_no_more_woken_runs_than_the_limit(tmp_path: Path) -> None:
    """Every timer comes due at once: the engine takes the runs up as earlier ones end, never
    holding more than `in_flight` of them (all of them, before), and every one completes."""
    path = tmp_path / "runs.db"
    async with make_engine(path, horizon=0.2) as engine:
        runs = [(await engine.execute("nap", 3.0, mode="async")).run_id for _ in range(100)]
        due = await last_timer(engine, runs)
    await sleep_past(due)  # every timer is due when the next engine starts
    engine = make_engine(path, horizon=0.2)
    engine.idle.in_flight = 10
    held = most_held(engine)
    async with engine:
        for run_id in runs:
            with anyio.fail_after(30):
                assert (await engine.wait(run_id)).output == "rested"
    assert 0 < held() <= 10


@pytest.mark.anyio
async def test_a_woken_run_waiting_again_for_what_is_not_due_frees_its_place(tmp_path: Path) -> None:
    """A run its timer woke that then asks for input is idle again: it no longer counts among the
    woken runs in flight, so the runs due after it are taken up without waiting for it to be
    parked (`park_after`, a minute); an input wakes its run at once, whatever is in flight."""
    path = tmp_path / "runs.db"

    def nap_then_ask(engine: RunEngine) -> RunEngine:
        @engine.agent("nap_then_ask")
        async def nap_then_ask(ctx) -> object:  # type: ignore[no-untyped-def]
            await ctx.sleep(ctx.input)
            return await ctx.ask("more?")

        return engine

    async with nap_then_ask(make_engine(path, horizon=0.2)) as engine:
        runs = [(await engine.execute("nap_then_ask", 2.0, mode="async")).run_id for _ in range(12)]
        due = await last_timer(engine, runs)
    await sleep_past(due)
    engine = nap_then_ask(make_engine(path, horizon=0.2))
    engine.idle.in_flight = 4
    held = most_held(engine)
    async with engine:
        with anyio.fail_after(20):
            for run_id in runs:
                await until(lambda: status_is(engine, run_id, Status.WAITING_FOR_INPUT))
        assert held() > 4  # held in memory, waiting: not in flight
        await engine.resume(runs[0], "no")
        with anyio.fail_after(20):
            assert (await engine.wait(runs[0])).output == "no"


@pytest.mark.anyio
async def test_a_run_asleep_until_a_time_within_the_horizon_has_no_park_watcher(tmp_path: Path) -> None:
    """A run held in memory for a wait due within the horizon (a mass wake holds thousands) never
    needs parking: one task each (its own; its writer's flush loop is a task only once it has
    work, and a durable sleep leaves none queued), no park watcher polling meanwhile.
    A run waiting for what is not due within the horizon still gets one, and is parked."""
    import asyncio

    async with make_engine(tmp_path / "runs.db", horizon=60.0, park_after=0.2) as engine:
        before = len(asyncio.all_tasks())
        runs = [(await engine.execute("nap", 30.0, mode="async")).run_id for _ in range(20)]
        for run_id in runs:
            await until(lambda: sleeping(engine, run_id))
        await anyio.sleep(0.3)  # past park_after: none of them is parked (due within the horizon)
        assert set(engine.driver.active) == set(runs)
        assert len(asyncio.all_tasks()) - before == len(runs)
        waiting = await engine.execute("ask", "go?", mode="async")
        await until(lambda: status_is(engine, waiting.run_id, Status.WAITING_FOR_INPUT))
        await until(lambda: waiting.run_id not in engine.driver.active)  # watched, then parked
