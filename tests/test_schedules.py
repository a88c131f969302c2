"""Issue 25 (schedules): `engine.schedule(...)` starts one run per cron slot, on the engine's
clock (a VirtualClock here, to reach slots without waiting): kept in the store across restarts
(SQLite), each slot once; missed slots after downtime by policy; pause, resume, delete, list
with the next fire time; overlapping runs by the session policies; time zones; bad input refused."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from kit import until
from runengine import RunEngine, Status
from runengine.adapters.sqlite import SQLiteStore
from runengine.errors import AgentNotFound, InvalidRequest
from runengine.ports import EventStore
from runengine.schedules import Schedule, ScheduleExists, ScheduleNotFound, schedule_from_entry, slot_run_id
from runengine.testing.clock import VirtualClock
from runengine.wire import format_time

ANYIO_BACKENDS = ("asyncio",)  # aiosqlite
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def make_engine(store: EventStore | str, clock: VirtualClock) -> RunEngine:
    engine = RunEngine(store, clock=clock)

    @engine.agent("echo")
    async def echo(ctx: Any) -> Any:
        return ctx.input

    @engine.agent("waits")
    async def waits(ctx: Any) -> Any:
        return await ctx.ask("go?")

    return engine


async def scheduled_runs(engine: RunEngine, schedule_id: str = "every-minute") -> dict[str, str]:
    """slot (as recorded in the run's metadata) -> run id, of every run the schedule started."""
    page = await engine.list_runs(limit=500)
    runs: dict[str, str] = {}
    for summary in page.runs:
        state = await engine.status(summary.run_id)
        if state.metadata.get("schedule_id") == schedule_id:
            assert state.metadata["schedule_slot"] not in runs, "two runs for one slot"
            runs[state.metadata["schedule_slot"]] = summary.run_id
    return runs


def slot(minutes: int) -> str:
    return format_time(T0 + timedelta(minutes=minutes))


async def advance_minutes(engine: RunEngine, clock: VirtualClock, minutes: int) -> None:
    """Move the clock a minute at a time, each slot's run created before the next minute."""
    for _ in range(minutes):
        await clock.advance(60)
        expected = slot(int((clock() - T0).total_seconds() // 60))
        await until(lambda: _has(engine, expected))


async def _has(engine: RunEngine, expected: str) -> bool:
    return expected in await scheduled_runs(engine)


@pytest.mark.anyio
async def test_one_run_per_slot_with_its_id_input_and_metadata_and_the_next_fire_time() -> None:
    clock = VirtualClock(T0)
    async with make_engine("memory://", clock) as engine:
        created = await engine.schedule("every-minute", cron="* * * * *", agent="echo", input={"n": 1},
                                        metadata={"team": "a"})
        assert created.next_fire(clock()) == T0 + timedelta(minutes=1)
        await clock.advance(30)
        assert await scheduled_runs(engine) == {}
        await advance_minutes(engine, clock, 3)  # 3.5 minutes in: the slots 1, 2, 3
        runs = await scheduled_runs(engine)
        assert sorted(runs) == [slot(1), slot(2), slot(3)]
        for minute in (1, 2, 3):
            run_id = runs[slot(minute)]
            assert run_id == slot_run_id(created, T0 + timedelta(minutes=minute))
            state = await engine.wait(run_id)
            assert state.status is Status.COMPLETED and state.output == {"n": 1}
            assert state.metadata["team"] == "a"
        stored = await engine.schedules.get("every-minute")
        assert stored.last_slot == T0 + timedelta(minutes=3)
        assert stored.next_fire(clock()) == T0 + timedelta(minutes=4)
        await clock.advance(29)
        assert len(await scheduled_runs(engine)) == 3
        assert [s.schedule_id for s in await engine.schedules.list()] == ["every-minute"]


@pytest.mark.anyio
async def test_pause_resume_and_delete() -> None:
    clock = VirtualClock(T0)
    async with make_engine("memory://", clock) as engine:
        await engine.schedule("every-minute", cron="* * * * *", agent="echo")
        await advance_minutes(engine, clock, 1)
        paused = await engine.schedules.pause("every-minute")
        assert paused.paused and paused.next_fire(clock()) is None
        await clock.advance(180)
        assert sorted(await scheduled_runs(engine)) == [slot(1)]  # nothing while paused
        resumed = await engine.schedules.resume("every-minute")
        assert not resumed.paused and resumed.last_slot == T0 + timedelta(minutes=4)
        await clock.advance(1)
        assert sorted(await scheduled_runs(engine)) == [slot(1)]  # the paused slots are not caught up
        await advance_minutes(engine, clock, 1)
        assert sorted(await scheduled_runs(engine)) == [slot(1), slot(5)]
        await engine.schedules.delete("every-minute")
        with pytest.raises(ScheduleNotFound):
            await engine.schedules.get("every-minute")
        await clock.advance(300)
        assert sorted(await scheduled_runs(engine)) == [slot(1), slot(5)]
        assert await engine.schedules.list() == []


@pytest.mark.anyio
async def test_a_schedule_across_restarts_fires_each_slot_once(tmp_path: Path) -> None:
    path, clock = tmp_path / "runs.db", VirtualClock(T0)
    async with make_engine(SQLiteStore(str(path)), clock) as engine:
        await engine.schedule("every-minute", cron="* * * * *", agent="echo", input="x")
        await advance_minutes(engine, clock, 2)
    # A restart at the very minute of the last slot: that slot is not started again.
    async with make_engine(SQLiteStore(str(path)), clock) as engine:
        await clock.advance(0)
        await anyio.sleep(0.2)
        assert sorted(await scheduled_runs(engine)) == [slot(1), slot(2)]
        await advance_minutes(engine, clock, 2)
    # A restart 30 s after a slot that no engine reached: it is on time (within the grace), started once.
    await clock.advance(90)
    async with make_engine(SQLiteStore(str(path)), clock) as engine:
        await until(lambda: _has(engine, slot(5)))
        await advance_minutes(engine, clock, 1)
        runs = await scheduled_runs(engine)
        assert sorted(runs) == [slot(m) for m in range(1, 7)]
        for run_id in runs.values():
            assert (await engine.wait(run_id)).status is Status.COMPLETED


@pytest.mark.anyio
@pytest.mark.parametrize("missed", ["skip", "catch_up_one"])
async def test_slots_missed_while_down_follow_the_policy(tmp_path: Path, missed: str) -> None:
    path, clock = tmp_path / "runs.db", VirtualClock(T0)
    async with make_engine(SQLiteStore(str(path)), clock) as engine:
        await engine.schedule("every-minute", cron="* * * * *", agent="echo", missed=missed)
        await advance_minutes(engine, clock, 1)
    await clock.advance(10 * 60 + 20)  # down from minute 1 to 11:20
    restarted = make_engine(SQLiteStore(str(path)), clock)
    restarted.schedules.grace = 10  # slots 2..11 are missed (more than 10 s late)
    async with restarted as engine:
        stored = await until(lambda: _handled(engine, T0 + timedelta(minutes=11)))
        assert stored.next_fire(clock()) == T0 + timedelta(minutes=12)
        runs = await scheduled_runs(engine)
        assert sorted(runs) == ([slot(1)] if missed == "skip" else [slot(1), slot(11)])
        await clock.advance(40)
        await until(lambda: _has(engine, slot(12)))
        assert len(await scheduled_runs(engine)) == (2 if missed == "skip" else 3)


async def _handled(engine: RunEngine, last: datetime) -> Schedule | None:
    stored = await engine.schedules.get("every-minute")
    return stored if stored.last_slot == last else None


@pytest.mark.anyio
async def test_overlapping_runs_follow_the_session_policy() -> None:
    clock = VirtualClock(T0)
    async with make_engine("memory://", clock) as engine:
        await engine.schedule("every-minute", cron="* * * * *", agent="waits", session_id="daily",
                              session_policy="reject")
        await advance_minutes(engine, clock, 1)
        await clock.advance(60)  # the first run still waits for input: slot 2 is refused by "reject"
        await until(lambda: _handled(engine, T0 + timedelta(minutes=2)))
        runs = await scheduled_runs(engine)
        assert sorted(runs) == [slot(1)]
        await engine.resume(runs[slot(1)], "done")
        await advance_minutes(engine, clock, 1)  # no run active: slot 3 starts
        assert sorted(await scheduled_runs(engine)) == [slot(1), slot(3)]
        assert (await engine.status(runs[slot(1)])).session_id == "daily"


def test_slots_are_computed_in_the_schedules_time_zone() -> None:
    paris = Schedule(schedule_id="s", cron="0 9 * * *", agent="a", timezone="Europe/Paris", created_at=T0)
    assert paris.next_slot(datetime(2030, 1, 10, tzinfo=timezone.utc)) == datetime(2030, 1, 10, 8, tzinfo=timezone.utc)
    assert paris.next_slot(datetime(2030, 7, 10, tzinfo=timezone.utc)) == datetime(2030, 7, 10, 7, tzinfo=timezone.utc)
    # The day clocks go forward (31 March 2030 in Paris) 9:00 is still 9:00 local.
    assert paris.next_slot(datetime(2030, 3, 31, tzinfo=timezone.utc)) == datetime(2030, 3, 31, 7, tzinfo=timezone.utc)
    assert paris.latest_slot(datetime(2030, 7, 10, 7, tzinfo=timezone.utc)) == datetime(2030, 7, 10, 7, tzinfo=timezone.utc)


@pytest.mark.anyio
async def test_bad_schedules_are_refused_and_nothing_is_kept() -> None:
    clock = VirtualClock(T0)
    async with make_engine("memory://", clock) as engine:
        bad: list[tuple[type[Exception], dict[str, Any]]] = [
            (InvalidRequest, {"cron": "61 * * * *"}),
            (InvalidRequest, {"cron": "every day"}),
            (InvalidRequest, {"timezone": "Mars/Olympus"}),
            (InvalidRequest, {"missed": "all"}),
            (InvalidRequest, {"session_policy": "sometimes"}),
            (InvalidRequest, {"input": float("nan")}),
            (AgentNotFound, {"agent": "nobody"}),
        ]
        for error, changes in bad:
            with pytest.raises(error):
                await engine.schedule("s", **{"cron": "* * * * *", "agent": "echo", **changes})
        with pytest.raises(InvalidRequest):
            await engine.schedule("a/b", cron="* * * * *", agent="echo")
        assert await engine.schedules.list() == []
        await engine.schedule("s", cron="* * * * *", agent="echo", input=1)
        with pytest.raises(ScheduleExists):
            await engine.schedule("s", cron="0 * * * *", agent="echo", input=2)
        assert (await engine.schedules.get("s")).input == 1


@pytest.mark.anyio
async def test_schedule_ids_are_per_owner() -> None:
    clock = VirtualClock(T0)
    async with make_engine("memory://", clock) as engine:
        await engine.schedule("daily", cron="* * * * *", agent="echo", owner="alice", input="a")
        await engine.schedule("daily", cron="* * * * *", agent="echo", owner="bob", input="b")
        with pytest.raises(ScheduleNotFound):
            await engine.schedules.get("other", owner="alice")
        assert (await engine.schedules.get("daily", owner="bob")).input == "b"
        assert [s.owner for s in await engine.schedules.list(owner="alice")] == ["alice"]
        await clock.advance(60)
        runs = await until(lambda: _runs_of("daily", engine, 2))
        assert sorted([(await engine.status(r)).owner or "" for r in runs]) == ["alice", "bob"]


async def _runs_of(schedule_id: str, engine: RunEngine, count: int) -> list[str] | None:
    page = await engine.list_runs(limit=100)
    runs = [r.run_id for r in page.runs if (await engine.status(r.run_id)).metadata.get("schedule_id") == schedule_id]
    return runs if len(runs) >= count else None


@pytest.mark.anyio
async def test_a_declared_schedule_is_added_kept_and_updated_keeping_its_progress(tmp_path: Path) -> None:
    path, clock = tmp_path / "runs.db", VirtualClock(T0)
    entry = {"schedule_id": "every-minute", "cron": "* * * * *", "agent": "echo", "input": 1}
    engine = make_engine(SQLiteStore(str(path)), clock)
    engine.schedules.declared.append(schedule_from_entry(entry, clock()))
    async with engine:
        await advance_minutes(engine, clock, 2)
        await engine.schedules.pause("every-minute")
    # Started again with the same entry: left alone (its last slot and pause kept).
    again = make_engine(SQLiteStore(str(path)), clock)
    again.schedules.declared.append(schedule_from_entry(entry, clock()))
    async with again as engine:
        kept = await engine.schedules.get("every-minute")
        assert kept.created_at == T0 and kept.last_slot == T0 + timedelta(minutes=2) and kept.paused
    # With another input: replaced, its progress and pause kept.
    changed = make_engine(SQLiteStore(str(path)), clock)
    changed.schedules.declared.append(schedule_from_entry({**entry, "input": 2}, clock()))
    async with changed as engine:
        replaced = await engine.schedules.get("every-minute")
        assert replaced.input == 2 and replaced.last_slot == T0 + timedelta(minutes=2) and replaced.paused
        await engine.schedules.resume("every-minute")
        await advance_minutes(engine, clock, 1)
        runs = await scheduled_runs(engine)
        assert sorted(runs) == [slot(1), slot(2), slot(3)]
        assert (await engine.wait(runs[slot(3)])).output == 2
    with pytest.raises(InvalidRequest):
        schedule_from_entry({**entry, "cron": 5}, clock())
