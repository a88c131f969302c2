"""Durable runs in one process: a run resumes from its log in the next engine, replaying what it recorded.

A crash is simulated by a store that dies (every append fails from then on, as if the
process had stopped there); the next engine opens the same underlying store and resumes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from runengine import InvalidRequest, RunEngine, Status, StepFailed
from runengine.errors import InputTimedOut, StoreError
from runengine.adapters.memory import MemoryStore
from runengine.options import Durability, RunLimits
from runengine.testing.clock import VirtualClock

pytestmark = pytest.mark.anyio


class DyingStore:
    """The store as a process sees it: once `die()` is called nothing it writes lands any more."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.dead = False

    def die(self) -> None:
        self.dead = True

    async def append(self, run_id: str, events: Any, *, expected_seq: int) -> None:
        if self.dead:
            raise StoreError("the process is gone")
        await self._store.append(run_id, events, expected_seq=expected_seq)

    async def save_snapshot(self, state: Any) -> None:
        if not self.dead:
            await self._store.save_snapshot(state)

    async def open(self) -> None:
        await self._store.open()

    async def close(self) -> None:  # the shared store outlives each "process"
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


Agents = Callable[[RunEngine, DyingStore], None]


async def crash_then_resume(
    agents: Agents,
    agent: str,
    input: Any = None,
    *,
    session: Callable[[RunEngine], Awaitable[str]] | None = None,
    **engine_options: Any,
):
    """Run `agent` in a first engine until it calls `store.die()`, then resume it in a second one.
    `session`: makes the run's session in the first engine (e.g. through a profile's API)."""
    shared = MemoryStore()
    first = DyingStore(shared)
    engine = RunEngine(first, durability=Durability(drain_timeout=0), **engine_options)
    agents(engine, first)
    async with engine:
        session_id = await session(engine) if session is not None else None
        run = await engine.execute(agent, input, mode="async", session_id=session_id)
        while not first.dead:
            await anyio.sleep(0.001)
    second_store = DyingStore(shared)
    second = RunEngine(second_store, **engine_options)
    agents(second, second_store)
    return run.run_id, second


async def test_a_recorded_step_is_replayed_and_not_run_again():
    calls: list[str] = []

    def agents(engine: RunEngine, store: DyingStore) -> None:
        @engine.agent("pay")
        async def pay(ctx):
            receipt = await ctx.step("charge", lambda: calls.append("charge") or {"id": "ch_1", "amount": 5})
            await ctx.thought("charged")
            if not calls.count("crashed"):
                calls.append("crashed")
                store.die()
                await anyio.sleep_forever()
            return receipt

    run_id, engine = await crash_then_resume(agents, "pay")
    async with engine:
        state = await engine.wait(run_id)
    assert state.status is Status.COMPLETED and state.output == {"id": "ch_1", "amount": 5}
    assert calls == ["charge", "crashed"]  # not charged twice
    assert state.steps == 1 and state.lost_attempts == 1


async def test_a_step_that_raised_raises_the_same_on_replay():
    attempts: list[int] = []
    crashes: list[int] = []

    def agents(engine: RunEngine, store: DyingStore) -> None:
        @engine.agent("flaky")
        async def flaky(ctx):
            def fail() -> None:
                attempts.append(1)
                raise ConnectionError("upstream down")

            try:
                await ctx.step("fetch", fail)
            except StepFailed as exc:
                note = exc.error_message
            if not crashes:
                crashes.append(1)
                store.die()
                await anyio.sleep_forever()
            return note

    run_id, engine = await crash_then_resume(agents, "flaky")
    async with engine:
        state = await engine.wait(run_id)
    assert state.status is Status.COMPLETED and state.output == "ConnectionError: upstream down"
    assert len(attempts) == 1


async def test_tool_calls_with_results_are_not_redone_and_one_in_flight_is():
    effects: list[str] = []

    def agents(engine: RunEngine, store: DyingStore) -> None:
        @engine.agent("tools")
        async def tools(ctx):
            a = await ctx.tool_call("first", {"x": 1}, lambda x: effects.append("first") or x + 1)

            def second(x: int) -> int:
                effects.append("second")
                if effects.count("second") == 1:
                    store.die()  # the process dies while this call is in flight
                return x * 10

            b = await ctx.tool_call("second", {"x": a}, second)
            return {"a": a, "b": b}

    run_id, engine = await crash_then_resume(agents, "tools")
    async with engine:
        state = await engine.wait(run_id)
    assert state.status is Status.COMPLETED and state.output == {"a": 2, "b": 20}
    assert effects == ["first", "second", "second"]  # the in-flight call is the at-least-once window
    assert [c.name for c in state.tool_calls] == ["first", "second"]


async def test_a_half_streamed_message_is_discarded_and_streamed_afresh():
    def agents(engine: RunEngine, store: DyingStore) -> None:
        @engine.agent("talk")
        async def talk(ctx):
            await ctx.say("hello")
            async with ctx.message() as m:
                await m.delta("The answer ")
                await ctx.flush()
                if not store.dead and ctx.attempt == 1:
                    store.die()
                    await anyio.sleep_forever()
                await m.delta("is 42.")

    run_id, engine = await crash_then_resume(agents, "talk")
    async with engine:
        state = await engine.wait(run_id)
        log = [e async for e in engine.events(run_id)]
    assert state.status is Status.COMPLETED
    assert [m.content for m in state.messages] == ["hello", "The answer is 42."]
    assert state.output == "The answer is 42."
    discarded = [e for e in log if e.type == "message.discarded"]
    assert len(discarded) == 1 and discarded[0].message_id in state.discarded
    kept = {m.message_id for m in state.messages}
    assert discarded[0].message_id not in kept
    # Every delta the client keeps (not of a discarded message) spells the final text once.
    visible = "".join(e.content for e in log if e.type == "message.delta" and e.message_id not in state.discarded)
    assert visible == "The answer is 42."


async def test_recorded_time_uuid_and_random_come_back_the_same():
    seen: list[tuple[Any, ...]] = []

    def agents(engine: RunEngine, store: DyingStore) -> None:
        @engine.agent("det")
        async def det(ctx):
            values = (await ctx.now(), await ctx.uuid(), await ctx.random())
            seen.append(values)
            if len(seen) == 1:
                store.die()
                await anyio.sleep_forever()
            return [values[0].isoformat(), values[1], values[2]]

    run_id, engine = await crash_then_resume(agents, "det")
    async with engine:
        state = await engine.wait(run_id)
    assert state.status is Status.COMPLETED
    assert seen[0] == seen[1] and isinstance(seen[0][0], datetime) and 0 <= seen[0][2] < 1


async def test_a_changed_agent_fails_with_replay_divergence_and_leaves_the_log_valid():
    def agents_v1(engine: RunEngine, store: DyingStore) -> None:
        @engine.agent("flow")
        async def flow(ctx):
            await ctx.tool_call("lookup", {"q": 1}, lambda q: q)
            store.die()
            await anyio.sleep_forever()

    shared = MemoryStore()
    first = DyingStore(shared)
    engine = RunEngine(first, durability=Durability(drain_timeout=0))
    agents_v1(engine, first)
    async with engine:
        run = await engine.execute("flow", mode="async")
        while not first.dead:
            await anyio.sleep(0.001)

    second = RunEngine(shared)
    effects: list[str] = []

    @second.agent("flow")
    async def flow_v2(ctx):  # one more tool call inserted before the recorded one
        await ctx.tool_call("audit", {}, lambda: effects.append("audit"))
        await ctx.tool_call("lookup", {"q": 1}, lambda q: q)

    async with second:
        state = await second.wait(run.run_id)
        log = [e async for e in second.events(run.run_id)]
    assert state.status is Status.FAILED and state.error.code == "replay_divergence"
    assert "tool_call('audit')" in state.error.message and "seq" in state.error.message
    assert effects == []  # nothing ran against the wrong log
    assert [e.seq for e in log] == list(range(1, len(log) + 1))


async def test_a_new_agent_version_refuses_to_replay_old_runs():
    shared = MemoryStore()
    first = DyingStore(shared)
    engine = RunEngine(first, durability=Durability(drain_timeout=0))

    @engine.agent("v", version="1")
    async def v1(ctx):
        await ctx.step("s", lambda: 1)
        first.die()
        await anyio.sleep_forever()

    async with engine:
        run = await engine.execute("v", mode="async")
        while not first.dead:
            await anyio.sleep(0.001)
    second = RunEngine(shared)

    @second.agent("v", version="2")
    async def v2(ctx):
        return "never"

    async with second:
        state = await second.wait(run.run_id)
    assert state.error.code == "replay_divergence" and "'1'" in state.error.message and "'2'" in state.error.message


async def test_a_run_that_kills_its_process_every_time_fails_worker_lost_after_max_attempts():
    shared = MemoryStore()
    executions = 0
    run_id = None
    for _ in range(5):
        store = DyingStore(shared)
        engine = RunEngine(store, durability=Durability(drain_timeout=0), limits=RunLimits(max_attempts=3))

        @engine.agent("doomed")
        async def doomed(ctx, store=store):
            nonlocal executions
            executions += 1
            await ctx.thought("here we go")
            await ctx.flush()
            store.die()
            await anyio.sleep_forever()

        async with engine:
            if run_id is None:
                run_id = (await engine.execute("doomed", mode="async")).run_id
            while not store.dead and not (state := await engine.status(run_id)).terminal:
                await anyio.sleep(0.001)
        state = await engine.status(run_id)
        if state.terminal:
            break
    assert state.status is Status.FAILED and state.error.code == "worker_lost"
    assert executions == 3 and state.lost_attempts == 2


async def test_a_waiting_run_keeps_waiting_across_a_graceful_restart():
    store = MemoryStore()

    def make() -> RunEngine:
        engine = RunEngine(store)

        @engine.agent("approval")
        async def approval(ctx):
            await ctx.thought("asking")
            answer = await ctx.ask({"question": "ship it?"})
            return f"answer: {answer}"

        return engine

    engine = make()
    async with engine:
        run = await engine.execute("approval")
        assert run.status is Status.WAITING_FOR_INPUT
    state = await engine.status(run.run_id)
    assert state.status is Status.WAITING_FOR_INPUT and state.suspended
    engine = make()
    async with engine:
        await engine.resume(run.run_id, "yes")
        done = await engine.wait(run.run_id)
    assert done.status is Status.COMPLETED and done.output == "answer: yes"
    assert [t.content for t in done.thoughts] == ["asking"]


async def test_ask_with_a_timeout_times_out_durably_across_a_restart():
    store = MemoryStore()
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]

    def make() -> RunEngine:
        engine = RunEngine(store, clock=lambda: now[0])

        @engine.agent("ask")
        async def ask(ctx):
            try:
                return await ctx.ask("anyone?", timeout=60)
            except InputTimedOut:
                return "nobody answered"

        return engine

    engine = make()
    async with engine:
        run = await engine.execute("ask")
        assert run.input_expires_at == now[0] + timedelta(seconds=60)
    now[0] += timedelta(seconds=61)  # the deadline passes while no engine runs
    engine = make()
    async with engine:
        log = [e async for e in engine.events(run.run_id)]
        state = await engine.status(run.run_id)
    assert state.status is Status.COMPLETED and state.output == "nobody answered"
    assert [e.type for e in log][-2:] == ["run.input_timed_out", "run.completed"]


async def test_a_sleep_resumed_after_a_restart_wakes_once_at_its_deadline():
    store, clock = MemoryStore(), VirtualClock()
    woke: list[datetime] = []

    def make() -> RunEngine:
        engine = RunEngine(store, clock=clock, durability=Durability(drain_timeout=0))

        @engine.agent("nap")
        async def nap(ctx):
            await ctx.sleep(3600)
            woke.append(clock())

        return engine

    engine = make()
    async with engine:
        run = await engine.execute("nap", mode="async")
        while (await engine.status(run.run_id)).sleeping_until is None:
            await anyio.sleep(0.01)
    started = await engine.status(run.run_id)
    engine = make()
    async with engine:
        await clock.advance(3599)
        assert (await engine.status(run.run_id)).status is Status.RUNNING and woke == []
        await clock.advance(1)
        state = await engine.wait(run.run_id)
        log = [e async for e in engine.events(run.run_id)]
    assert state.status is Status.COMPLETED and woke == [started.sleeping_until]
    assert [e.type for e in log].count("timer.started") == 1 and [e.type for e in log].count("timer.fired") == 1
    fired = next(e for e in log if e.type == "timer.fired")
    assert fired.at == started.sleeping_until


async def test_a_delayed_run_stays_pending_until_its_start_time_across_a_restart():
    store, clock = MemoryStore(), VirtualClock()
    start_at = clock() + timedelta(hours=2)

    def make() -> RunEngine:
        engine = RunEngine(store, clock=clock, durability=Durability(drain_timeout=0))

        @engine.agent("later")
        async def later(ctx):
            return "ran"

        return engine

    engine = make()
    async with engine:
        run = await engine.execute("later", mode="async", start_at=start_at)
        await clock.advance(3600)
    assert (await engine.status(run.run_id)).status is Status.PENDING
    engine = make()
    async with engine:
        await clock.advance(3599)
        assert (await engine.status(run.run_id)).status is Status.PENDING
        await clock.advance(1)
        state = await engine.wait(run.run_id)
    assert state.status is Status.COMPLETED and state.started_at == start_at


async def test_ask_with_a_timeout_takes_an_input_in_time_and_times_out_without_one():
    clock = VirtualClock()
    engine = RunEngine(MemoryStore(), clock=clock)

    @engine.agent("ask")
    async def ask(ctx):
        try:
            return await ctx.ask("anyone?", timeout=600)
        except InputTimedOut:
            return "nobody answered"

    async with engine:
        answered = await engine.execute("ask")
        await clock.advance(599)
        await engine.resume(answered.run_id, "me")
        ignored = await engine.execute("ask")
        assert (await engine.wait(answered.run_id, after_seq=answered.last_seq)).output == "me"
        await clock.advance(599)
        assert (await engine.status(ignored.run_id)).status is Status.WAITING_FOR_INPUT
        await clock.advance(1)
        await engine.wait(ignored.run_id, after_seq=ignored.last_seq)
        events = [e async for e in engine.events(ignored.run_id)]
        assert events[-1].type == "run.completed" and events[-1].output == "nobody answered"
        assert events[-2].type == "run.input_timed_out" and events[-2].at == ignored.created_at + timedelta(seconds=600)


async def test_a_graceful_stop_lets_a_step_in_flight_finish_and_record_before_suspending():
    store = MemoryStore()
    calls: list[str] = []
    started = anyio.Event()

    def make(drain: float) -> RunEngine:
        engine = RunEngine(store, durability=Durability(drain_timeout=drain))

        @engine.agent("slow")
        async def slow(ctx):
            async def charge() -> str:
                calls.append("charge")
                started.set()
                await anyio.sleep(0.2)
                return "charged"

            first = await ctx.step("charge", charge)
            second = await ctx.step("notify", lambda: calls.append("notify") or "notified")
            return [first, second]

        return engine

    engine = make(drain=5)
    async with engine:
        run = await engine.execute("slow", mode="async")
        await started.wait()
    state = await engine.status(run.run_id)
    assert state.status is Status.RUNNING and state.suspended and state.steps == 1
    engine = make(drain=5)
    async with engine:
        events = [e async for e in engine.events(run.run_id)]
    assert events[-1].output == ["charged", "notified"] and calls == ["charge", "notify"]


async def test_a_run_whose_agent_is_gone_stays_as_it_is_and_says_so_until_an_engine_has_it():
    from runengine.adapters.profiles.native_shapes import run_to_json

    store = MemoryStore()

    def make(with_agent: bool) -> RunEngine:
        engine = RunEngine(store)

        @engine.agent("other")
        async def other(ctx):
            return "other"

        if with_agent:

            @engine.agent("approval")
            async def approval(ctx):
                return f"answer: {await ctx.ask('ship it?')}"

        return engine

    engine = make(with_agent=True)
    async with engine:
        waiting = await engine.execute("approval")
        delayed = await engine.execute("approval", mode="async", start_at=datetime.now(timezone.utc) + timedelta(hours=1))
        assert engine.waiting_for_agent(await engine.status(waiting.run_id)) is False
    engine = make(with_agent=False)
    async with engine:
        for run_id, status in ((waiting.run_id, Status.WAITING_FOR_INPUT), (delayed.run_id, Status.PENDING)):
            state = await engine.status(run_id)
            assert state.status is status  # neither failed nor started
            assert engine.waiting_for_agent(state) is True
            assert run_to_json(state, waiting_for_agent=engine.waiting_for_agent(state))["waiting_for_agent"] is True
    engine = make(with_agent=True)
    async with engine:
        assert engine.waiting_for_agent(await engine.status(waiting.run_id)) is False
        await engine.resume(waiting.run_id, "yes")
        done = await engine.wait(waiting.run_id)
        assert done.output == "answer: yes" and engine.waiting_for_agent(done) is False


def open_message_agents(crash_after: str) -> Agents:
    """An agent that streams, makes durable calls with its message still open, then streams more;
    its first process dies after the call named `crash_after` ("tool", "sleep" or "more": the
    first delta after them, committed)."""

    def agents(engine: RunEngine, store: DyingStore) -> None:
        async def die_at(point: str, ctx: Any) -> None:
            if point == crash_after and not store.dead and ctx.attempt == 1:
                await ctx.flush()
                store.die()
                await anyio.sleep_forever()

        @engine.agent("checker")
        async def checker(ctx):
            await ctx.delta("Let me check... ")
            found = await ctx.step("look", lambda: 41)
            await ctx.delta("found it. ")
            await ctx.tool_call("add", {"n": found}, lambda n: n + 1)
            await die_at("tool", ctx)
            await ctx.sleep(0)
            await die_at("sleep", ctx)
            await ctx.delta("The answer ")
            await die_at("more", ctx)
            await ctx.delta("is 42.")

    return agents


ANSWER_ACROSS_CALLS = "Let me check... found it. The answer is 42."


@pytest.mark.parametrize("crash_after", ["tool", "sleep", "more"])
async def test_a_message_open_across_durable_calls_resumes_with_every_word_once(crash_after: str):
    run_id, engine = await crash_then_resume(open_message_agents(crash_after), "checker")
    async with engine:
        state = await engine.wait(run_id)
        log = [e async for e in engine.events(run_id)]
    assert state.status is Status.COMPLETED, state.error
    assert [m.content for m in state.messages] == [ANSWER_ACROSS_CALLS]
    assert state.output == ANSWER_ACROSS_CALLS
    # What a client keeps (the deltas of messages not discarded) spells the answer once.
    visible = "".join(e.content for e in log if e.type == "message.delta" and e.message_id not in state.discarded)
    assert visible == ANSWER_ACROSS_CALLS
    discarded = [e for e in log if e.type == "message.discarded"]
    if crash_after == "more":  # "The answer " followed by nothing recorded: dropped, the rest carried on
        assert len(discarded) == 1 and discarded[0].continued_as == state.messages[0].message_id
    else:  # nothing streamed after the last recorded call: the message just goes on
        assert discarded == []


@pytest.mark.parametrize(
    "wait",
    [
        lambda ctx: ctx.sleep(1e13),
        lambda ctx: ctx.sleep(1e15),
        lambda ctx: ctx.ask(timeout=1e12),
        lambda ctx: ctx.sleep(-1),
        lambda ctx: ctx.ask(timeout=float("nan")),
    ],
    ids=["sleep 1e13", "sleep 1e15", "ask 1e12", "sleep -1", "ask nan"],
)
async def test_a_wait_past_the_latest_date_is_refused_as_invalid_request_and_records_nothing(wait):
    engine = RunEngine(MemoryStore())

    @engine.agent("waiter")
    async def waiter(ctx):
        try:
            await wait(ctx)
        except InvalidRequest as exc:
            return {"refused": exc.code}
        return "waited"

    async with engine:
        run = await engine.execute("waiter", mode="async")
        with anyio.fail_after(10):
            state = await engine.wait(run.run_id)
        types = [e.type async for e in engine.events(run.run_id)]
    assert state.status is Status.COMPLETED and state.output == {"refused": "invalid_request"}, state.error
    assert "timer.started" not in types and "run.waiting_for_input" not in types


async def test_a_run_delayed_to_the_latest_date_stays_pending():
    engine = RunEngine(MemoryStore())

    @engine.agent("later")
    async def later(ctx):
        return "never yet"

    async with engine:
        run = await engine.execute("later", mode="async", start_at=datetime.max.replace(tzinfo=timezone.utc))
        await anyio.sleep(0.2)
        state = await engine.status(run.run_id)
    assert state.status is Status.PENDING and state.error is None


async def test_a_step_and_a_tool_call_see_the_same_idempotency_key_across_a_crash_in_flight():
    keys: dict[str, list[str]] = {"step": [], "tool": []}

    def agents(engine: RunEngine, store: DyingStore) -> None:
        def effect(kind: str, ctx: Any) -> Callable[..., Awaitable[str]]:
            async def run(**_: Any) -> str:
                keys[kind].append(ctx.idempotency_key())
                if kind == crashing[0] and not store.dead and ctx.attempt == 1:
                    store.die()  # in flight: its result is never recorded, so it runs again
                    await anyio.sleep_forever()
                return ctx.idempotency_key()

            return run

        @engine.agent("payer")
        async def payer(ctx):
            first = await ctx.step("quote", lambda: ctx.idempotency_key())
            paid = await ctx.step("pay", effect("step", ctx))
            sent = await ctx.tool_call("send", {"to": "x"}, effect("tool", ctx))
            return [first, paid, sent]

    for crashing in (["step"], ["tool"]):
        keys = {"step": [], "tool": []}
        with anyio.fail_after(30):  # without a key the step fails and never reaches its crash
            run_id, engine = await crash_then_resume(agents, "payer")
        async with engine:
            state = await engine.wait(run_id)
        assert state.status is Status.COMPLETED, state.error
        quote, paid, sent = state.output
        assert len(keys[crashing[0]]) == 2 and len(set(keys[crashing[0]])) == 1  # ran twice, one key
        assert paid == keys["step"][0] == f"{run_id}/step/1" and quote == f"{run_id}/step/0"
        assert sent == keys["tool"][0] == f"{run_id}/tool/{state.tool_calls[0].call_id}"


async def test_an_idempotency_key_exists_only_inside_a_step_or_tool_function():
    engine = RunEngine(MemoryStore())

    @engine.agent("outside")
    async def outside(ctx):
        try:
            ctx.idempotency_key()
        except RuntimeError as exc:
            return str(exc)
        return "a key outside a call"

    async with engine:
        state = await engine.execute("outside", None)
    assert state.output == "an idempotency key exists only while a step or tool function runs"


async def test_a_message_open_across_a_step_and_a_timer_survives_a_graceful_stop():
    """SIGTERM's path (engine.__aexit__): the run suspends in its durable sleep with its message open,
    and the next engine replays the message's recorded part instead of diverging on it."""
    engine = RunEngine(MemoryStore(), durability=Durability(drain_timeout=0))

    @engine.agent("patient")
    async def patient(ctx):
        await ctx.delta("Let me check... ")
        await ctx.step("look", lambda: 42)
        await ctx.delta("found. ")
        await ctx.sleep(0.5)
        await ctx.delta("Done.")

    async with engine:
        run = await engine.execute("patient", mode="async")
        with anyio.fail_after(10):
            while (await engine.status(run.run_id)).sleeping_until is None:
                await anyio.sleep(0.01)
    assert (await engine.status(run.run_id)).suspended
    async with engine:
        with anyio.fail_after(10):
            state = await engine.wait(run.run_id)
        types = [e.type async for e in engine.events(run.run_id)]
    assert state.status is Status.COMPLETED, state.error
    assert [m.content for m in state.messages] == ["Let me check... found. Done."]
    assert "message.discarded" not in types


async def test_the_journal_folds_only_when_the_state_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replaying a long run costs no fold per event: the journal passes events and folds them
    when (and only when) the agent reads the state, which is then exactly as it was there."""
    from runengine.reducer import Fold
    from runengine.replay import Journal
    from runengine.testing.conformance import created, started
    from runengine.events import StepCompleted

    store = MemoryStore()
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    log = [created("r"), started("r")] + [
        StepCompleted(run_id="r", seq=seq, at=at, name="s", output=seq) for seq in range(3, 1503)
    ]
    await store.append("r", log, expected_seq=0)
    applied = 0
    real_apply = Fold.apply

    def counting_apply(self: Fold, event: Any) -> None:
        nonlocal applied
        applied += 1
        real_apply(self, event)

    monkeypatch.setattr(Fold, "apply", counting_apply)
    journal = Journal(store, "r", end_seq=len(log))
    outputs = []
    while (event := await journal.next()) is not None and event.seq < 1000:
        outputs.append(event.output)
    assert outputs == list(range(3, 1000)) and applied == 0  # passed, none folded
    state = journal.fold.state
    assert state is not None and state.last_seq == 1000 and state.steps == 998
    assert applied == 1000
