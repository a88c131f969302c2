"""Flow control (runengine.flow) on an engine that executes its own runs (SQLite, memory):
concurrency limits and keys, start rates, priorities, debounce, step limits, `waiting_for`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from runengine import RunEngine, Status
from runengine.adapters.memory import MemoryStore
from runengine.errors import InvalidRequest
from runengine.flow import Bucket, Rate, take
from runengine.options import Durability, Flow, StepLimit
from runengine.testing.clock import EPOCH, VirtualClock

pytestmark = pytest.mark.anyio
#: The SQLite store runs on asyncio.
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


class Gauge:
    """Runs executing at once, as the agent measures it: now and at most."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.per_key: dict[str, int] = {}
        self.most_per_key: dict[str, int] = {}

    async def hold(self, key: str = "", seconds: float = 0.002) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        self.per_key[key] = self.per_key.get(key, 0) + 1
        self.most_per_key[key] = max(self.most_per_key.get(key, 0), self.per_key[key])
        try:
            await anyio.sleep(seconds)
        finally:
            self.now -= 1
            self.per_key[key] -= 1


@asyncio_only
async def test_concurrency_2_with_50_runs_never_executes_more_than_2_at_once_on_sqlite(tmp_path: Path) -> None:
    engine = RunEngine(f"sqlite:///{tmp_path / 'runs.db'}")
    gauge = Gauge()

    @engine.agent("limited", concurrency=2)
    async def limited(ctx):
        await gauge.hold()
        return ctx.input

    async with engine:
        runs = [await engine.execute("limited", i, mode="async") for i in range(50)]
        with anyio.fail_after(30):
            ended = [await engine.wait(r.run_id) for r in runs]
    assert [s.status for s in ended] == [Status.COMPLETED] * 50
    assert gauge.most == 2


async def test_runs_past_the_limit_wait_pending_in_order_with_no_task_and_say_why() -> None:
    engine = RunEngine(MemoryStore())
    release = anyio.Event()
    started: list[int] = []

    @engine.agent("one", concurrency=1)
    async def one(ctx):
        started.append(ctx.input)
        await release.wait()

    async with engine:
        runs = [await engine.execute("one", i, mode="async") for i in range(5)]
        with anyio.fail_after(5):
            while not started:
                await anyio.sleep(0.005)
        await anyio.sleep(0.02)
        assert len(engine.driver.active) == 1  # the four others: ids in line, no task, no writer
        waiting = [await engine.status(r.run_id) for r in runs[1:]]
        assert {s.status for s in waiting} == {Status.PENDING}
        assert [await engine.waiting_for(s) for s in waiting] == ["concurrency"] * 4
        assert await engine.waiting_for(await engine.status(runs[0].run_id)) is None  # running
        release.set()
        with anyio.fail_after(5):
            for r in runs:
                await engine.wait(r.run_id)
    assert started == [0, 1, 2, 3, 4]


async def test_a_concurrency_key_limits_each_key_on_its_own() -> None:
    engine = RunEngine(MemoryStore())
    gauge = Gauge()

    @engine.agent("per_user", concurrency=1, concurrency_key=lambda input, metadata: metadata["user"])
    async def per_user(ctx):
        await gauge.hold(ctx.metadata["user"], 0.005)

    async with engine:
        runs = [
            await engine.execute("per_user", i, mode="async", metadata={"user": f"u{i % 3}"}) for i in range(12)
        ]
        assert (await engine.status(runs[0].run_id)).concurrency_key == "u0"
        with anyio.fail_after(10):
            for r in runs:
                assert (await engine.wait(r.run_id)).status is Status.COMPLETED
    assert gauge.most_per_key == {"u0": 1, "u1": 1, "u2": 1}
    assert gauge.most == 3  # the keys ran side by side


async def test_priorities_order_a_backlog() -> None:
    engine = RunEngine(MemoryStore())
    gate = anyio.Event()
    order: list[str] = []

    @engine.agent("serial", concurrency=1)
    async def serial(ctx):
        if ctx.input == "first":
            await gate.wait()
        order.append(ctx.input)

    async with engine:
        first = await engine.execute("serial", "first", mode="async")
        with anyio.fail_after(5):
            while (await engine.status(first.run_id)).status is Status.PENDING:
                await anyio.sleep(0.005)
        backlog = [("low-a", 0), ("high", 10), ("low-b", 0), ("mid", 5), ("urgent", 100), ("neg", -3)]
        runs = [await engine.execute("serial", name, mode="async", priority=p) for name, p in backlog]
        assert (await engine.status(runs[1].run_id)).priority == 10
        gate.set()
        with anyio.fail_after(5):
            for r in runs:
                await engine.wait(r.run_id)
    assert order == ["first", "urgent", "high", "mid", "low-a", "low-b", "neg"]


async def test_a_bad_priority_or_flow_declaration_is_refused_and_creates_nothing() -> None:
    engine = RunEngine(MemoryStore())

    @engine.agent("a")
    async def a(ctx):
        return None

    async with engine:
        for bad in (1.5, "high", True, 10**7):
            with pytest.raises(InvalidRequest, match="priority"):
                await engine.execute("a", mode="async", priority=bad)
        assert not (await engine.list_runs()).runs
    for kwargs, words in (
        ({"concurrency": 0}, "concurrency"), ({"rate": "lots"}, "rate"), ({"rate": "0/minute"}, "rate"),
        ({"debounce": -1}, "debounce"), ({"concurrency_key": lambda i, m: 1}, "concurrency_key needs"),
        ({"debounce": 1, "debounce_key": "user"}, "debounce_key"),
    ):
        with pytest.raises(InvalidRequest, match=words):
            engine.agent("b", **kwargs)


def test_a_rate_is_a_token_bucket_of_evenly_spaced_tokens() -> None:
    rate = Rate.parse("60/minute")
    assert (rate.count, rate.per, rate.burst) == (60, 60.0, 1.0)
    assert Rate.parse("1000/5minutes").per == 300.0
    wait, bucket = take(None, rate, 100.0)
    assert wait == 0.0
    wait, bucket = take(bucket, rate, 100.5)
    assert wait == pytest.approx(0.5)
    wait, bucket = take(bucket, rate, 101.0)
    assert wait == 0.0
    # A cost above the bucket's size goes once it is full, and leaves a debt; force takes at once.
    big = Rate(10, 60.0, 10.0)
    assert take(Bucket(10.0, 0.0), big, 0.0, 25)[1].tokens == -15.0
    assert take(Bucket(-15.0, 0.0), big, 0.0, 0.0)[0] == pytest.approx(90.0)
    assert take(Bucket(-15.0, 0.0), big, 0.0, 5, force=True)[1].tokens == -20.0


async def test_a_rate_of_60_per_minute_holds_within_5_percent_over_a_virtual_minute() -> None:
    clock = VirtualClock()
    engine = RunEngine(MemoryStore(), clock=clock)
    starts: list[float] = []

    @engine.agent("paced", rate="60/minute")
    async def paced(ctx):
        starts.append((clock() - EPOCH).total_seconds())

    async with engine:
        runs = [await engine.execute("paced", i, mode="async") for i in range(200)]
        await anyio.sleep(0.05)
        assert len(starts) == 1  # one token at first: the rest wait for theirs
        assert await engine.waiting_for(await engine.status(runs[1].run_id)) == "rate"
        assert await engine.waiting_for(await engine.status(runs[2].run_id)) == "concurrency"  # behind it
        for _ in range(60):
            await clock.advance(1)
        await anyio.sleep(0.05)
    within_a_minute = [t for t in starts if t < 60.0]
    assert abs(len(within_a_minute) - 60) <= 3, starts
    assert len(starts) <= 61


async def test_a_debounced_burst_of_20_starts_makes_one_run_and_the_others_name_it() -> None:
    clock = VirtualClock()
    engine = RunEngine(MemoryStore(), clock=clock)
    ran: list[int] = []

    @engine.agent("digest", debounce=5, debounce_key=lambda input, metadata: metadata["thread"])
    async def digest(ctx):
        ran.append(ctx.input)
        return ctx.input

    async with engine:
        burst = [await engine.execute("digest", i, mode="async", metadata={"thread": "t1"}) for i in range(20)]
        other = await engine.execute("digest", 99, mode="async", metadata={"thread": "t2"})
        assert await engine.waiting_for(await engine.status(burst[-1].run_id)) == "schedule"
        await clock.advance(6)
        with anyio.fail_after(5):
            last = await engine.wait(burst[-1].run_id)
            await engine.wait(other.run_id)
        superseded = [await engine.status(r.run_id) for r in burst[:-1]]
    assert sorted(ran) == [19, 99]
    assert last.status is Status.COMPLETED and last.output == 19
    assert {s.status for s in superseded} == {Status.CANCELLED}
    # Each superseded run names the one that replaced it: the chain leads to the run that ran.
    for run, state in zip(burst[1:], superseded):
        assert state.cancel_reason == f"debounced: superseded by run {run.run_id}"


async def test_a_step_limit_shares_one_request_budget_between_runs() -> None:
    clock = VirtualClock()
    engine = RunEngine(
        MemoryStore(), clock=clock, flow=Flow(step_limits={"llm": StepLimit(requests_per_minute=3)})
    )
    calls: list[float] = []

    @engine.agent("caller")
    async def caller(ctx):
        return await ctx.step("ask", lambda: calls.append((clock() - EPOCH).total_seconds()) or len(calls), limit="llm")

    async with engine:
        runs = [await engine.execute("caller", i, mode="async") for i in range(5)]
        await anyio.sleep(0.05)
        assert len(calls) == 3  # a minute's budget
        await clock.advance(20)
        await anyio.sleep(0.05)
        assert len(calls) == 4  # one more request every 20 s
        await clock.advance(20)
        with anyio.fail_after(5):
            for r in runs:
                assert (await engine.wait(r.run_id)).status is Status.COMPLETED
    assert calls == [0.0, 0.0, 0.0, 20.0, 40.0]


async def test_a_step_limit_waits_while_its_tokens_are_spent() -> None:
    clock = VirtualClock()
    engine = RunEngine(
        MemoryStore(), clock=clock, flow=Flow(step_limits={"llm": StepLimit(tokens_per_minute=600)})
    )
    calls: list[float] = []

    @engine.agent("hungry")
    async def hungry(ctx):
        await ctx.step("ask", lambda: calls.append((clock() - EPOCH).total_seconds()), limit="llm")
        await ctx.usage(input_tokens=500, output_tokens=400, limit="llm")  # 300 over the minute's budget

    async with engine:
        first = await engine.execute("hungry", mode="async")
        with anyio.fail_after(5):
            await engine.wait(first.run_id)
        second = await engine.execute("hungry", mode="async")
        await anyio.sleep(0.05)
        assert calls == [0.0]  # in debt: waits for 300 tokens, 30 s
        await clock.advance(29)
        await anyio.sleep(0.02)
        assert calls == [0.0]
        await clock.advance(1)
        with anyio.fail_after(5):
            await engine.wait(second.run_id)
    assert calls == [0.0, 30.0]


async def test_an_unknown_step_limit_fails_the_step_clearly() -> None:
    engine = RunEngine(MemoryStore())

    @engine.agent("typo")
    async def typo(ctx):
        return await ctx.step("ask", lambda: 1, limit="opneai")

    async with engine:
        state = await engine.execute("typo")
    assert state.status is Status.FAILED
    assert "no step limit named 'opneai'" in state.error.message


@asyncio_only
async def test_runs_in_line_and_under_way_keep_their_limit_across_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    gauge = Gauge()
    stuck = anyio.Event()  # never set: the first engine's two runs are under way when it stops

    def build(first: bool) -> RunEngine:
        engine = RunEngine(url, durability=Durability(drain_timeout=0))

        @engine.agent("limited", concurrency=2)
        async def limited(ctx):
            if first:
                await stuck.wait()
            await gauge.hold(seconds=0.05)

        return engine

    async with build(first=True) as engine:
        runs = [await engine.execute("limited", i, mode="async") for i in range(10)]
        with anyio.fail_after(5):
            while len(engine.driver.active) < 2:
                await anyio.sleep(0.005)
        await anyio.sleep(0.02)
        assert len(engine.driver.active) == 2  # the other eight are in line
    # The next engine resumes the two (they hold their slots) and puts the eight in line again.
    async with build(first=False) as engine:
        with anyio.fail_after(10):
            for r in runs:
                assert (await engine.wait(r.run_id)).status is Status.COMPLETED
    assert gauge.most == 2


async def test_a_run_cancelled_in_line_leaves_it() -> None:
    engine = RunEngine(MemoryStore())
    release = anyio.Event()
    started: list[int] = []

    @engine.agent("one", concurrency=1)
    async def one(ctx):
        started.append(ctx.input)
        await release.wait()

    async with engine:
        runs = [await engine.execute("one", i, mode="async") for i in range(3)]
        await anyio.sleep(0.02)
        cancelled = await engine.cancel(runs[1].run_id)
        assert cancelled.status is Status.CANCELLED
        assert engine.admission.gate.depths() == {("one", None): 1}
        release.set()
        with anyio.fail_after(5):
            await engine.wait(runs[2].run_id)
    assert started == [0, 2]
