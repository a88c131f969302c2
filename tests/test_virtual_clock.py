"""`runengine.testing.VirtualClock`: durable waits reach their deadlines when a test moves the
clock, in deadline order, each at its own time, without waiting."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from runengine import RunEngine, Status
from runengine.adapters.memory import MemoryStore
from runengine.testing.clock import EPOCH, VirtualClock

pytestmark = pytest.mark.anyio


async def test_two_sleeps_within_one_advance_wake_in_turn_at_their_own_times() -> None:
    clock = VirtualClock()
    engine = RunEngine(MemoryStore(), clock=clock)
    woke: list[tuple[str, object]] = []

    @engine.agent("twice")
    async def twice(ctx):
        await ctx.sleep(10)
        woke.append(("first", clock()))
        await ctx.sleep(20)
        woke.append(("second", clock()))

    @engine.agent("once")
    async def once(ctx):
        await ctx.sleep(15)
        woke.append(("between", clock()))

    async with engine:
        a = await engine.execute("twice", mode="async")
        b = await engine.execute("once", mode="async")
        with anyio.fail_after(5):  # both asleep before time moves
            while None in [(await engine.status(r.run_id)).sleeping_until for r in (a, b)]:
                await anyio.sleep(0.005)
        await clock.advance(3600)
        for run in (a, b):
            assert (await engine.wait(run.run_id)).status is Status.COMPLETED
    t = EPOCH
    assert woke == [("first", t + timedelta(seconds=10)), ("between", t + timedelta(seconds=15)),
                    ("second", t + timedelta(seconds=30))]
    assert clock() == t + timedelta(seconds=3600)


async def test_a_wait_ends_only_when_the_clock_reaches_it_and_time_never_goes_back() -> None:
    clock = VirtualClock()
    done = anyio.Event()

    async def sleeper() -> None:
        await clock.sleep_until(EPOCH + timedelta(minutes=5))
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await clock.advance(299)
        assert not done.is_set() and clock.next_deadline == EPOCH + timedelta(minutes=5)
        await clock.advance(1)
        assert done.is_set() and clock.next_deadline is None
    with pytest.raises(ValueError):
        await clock.advance(-1)
    with pytest.raises(ValueError):
        await clock.advance_to(EPOCH)
