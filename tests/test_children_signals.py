"""Child runs (`ctx.spawn`, `await handle`, `ctx.join`, `ctx.run`, `ctx.gather`) and signals
(`engine.signal`, `ctx.receive`, `ctx.poll`), in one engine on the memory and SQLite stores:
recorded, replayed without doing twice what was recorded, cancelled along with their parent."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runengine import RunEngine, Status
from runengine.adapters.memory import MemoryStore
from runengine.adapters.sqlite import SQLiteStore
from runengine.children import ChildFailed
from runengine.errors import InvalidRequest, InvalidRunState, RunNotFound
from runengine.options import Durability, RunLimits
from runengine.signals import SignalTimedOut
from runengine.testing.clock import VirtualClock

from kit import full_log, until

pytestmark = pytest.mark.anyio
ANYIO_BACKENDS = ("asyncio",)  # the SQLite store


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request, tmp_path):
    def make():
        return MemoryStore() if request.param == "memory" else SQLiteStore(str(tmp_path / "runs.db"))

    return make


def _types(log):
    return [e.type for e in log]


async def test_fan_out_fan_in_records_each_child_and_its_output(make_store) -> None:
    engine = RunEngine(make_store())
    calls: Counter[str] = Counter()

    @engine.agent("square")
    async def square(ctx):
        calls[ctx.run_id] += 1
        return ctx.input * ctx.input

    @engine.agent("parent")
    async def parent(ctx):
        handles = [await ctx.spawn("square", n) for n in range(5)]
        outputs = await ctx.gather(*handles)
        alone = await ctx.run("square", 7)
        again = await ctx.join(handles[0].run_id)  # joined before: the same answer, nothing new recorded
        return {"outputs": outputs, "alone": alone, "again": again}

    async with engine:
        state = await engine.execute("parent")
        assert state.status is Status.COMPLETED, state.error
        assert state.output == {"outputs": [0, 1, 4, 9, 16], "alone": 49, "again": 0}
        log = await full_log(engine, state.run_id)
        assert _types(log).count("child.spawned") == 6 and _types(log).count("child.ended") == 6
        assert [c.status for c in state.children] == ["completed"] * 6
        for child in state.children:
            child_state = await engine.status(child.run_id)
            assert child_state.parent_run_id == state.run_id and child_state.owner == state.owner
            assert child_state.status is Status.COMPLETED
        assert sorted(calls.values()) == [1] * 6
        listed = await engine.children(state.run_id)
        assert [row.run_id for row in listed] == [c.run_id for c in state.children]


async def test_a_failed_child_raises_child_failed_in_its_parent(make_store) -> None:
    engine = RunEngine(make_store())

    @engine.agent("broken")
    async def broken(ctx):
        raise RuntimeError("no luck")

    @engine.agent("parent")
    async def parent(ctx):
        handle = await ctx.spawn("broken")
        try:
            await handle
        except ChildFailed as exc:
            results = await ctx.gather(handle, return_exceptions=True)
            return {"code": exc.error.code, "status": exc.status, "again": type(results[0]).__name__}
        return "joined"

    async with engine:
        state = await engine.execute("parent")
        assert state.output == {"code": "agent_error", "status": "failed", "again": "ChildFailed"}


async def test_spawn_refuses_an_unknown_agent_and_a_stranger_run_before_recording(make_store) -> None:
    engine = RunEngine(make_store())

    @engine.agent("parent")
    async def parent(ctx):
        refused = []
        for attempt in (lambda: ctx.spawn("nobody"), lambda: ctx.join("not-a-child")):
            try:
                await attempt()
            except Exception as exc:
                refused.append(type(exc).__name__)
        return refused

    async with engine:
        state = await engine.execute("parent")
        assert state.output == ["AgentNotFound", "InvalidRequest"]
        assert "child.spawned" not in _types(await full_log(engine, state.run_id))


async def test_a_resumed_parent_replays_its_children_and_never_spawns_one_twice(tmp_path) -> None:
    """The parent's process stops while it waits for its children; the next engine replays the
    spawns (the same children), and the joins record each child's output once."""
    path = str(tmp_path / "runs.db")
    calls: Counter[str] = Counter()
    gate = anyio.Event()

    def agents(engine: RunEngine) -> None:
        @engine.agent("child")
        async def child(ctx):
            calls[ctx.run_id] += 1
            if ctx.input == 2:
                await gate.wait()  # the last one is still running when the first engine stops
            return ctx.input * 10

        @engine.agent("parent")
        async def parent(ctx):
            handles = [await ctx.spawn("child", n) for n in range(3)]
            return await ctx.gather(*handles)

    first = RunEngine(SQLiteStore(path), durability=Durability(drain_timeout=0.2))
    agents(first)
    async with first:
        run_id = (await first.execute("parent", mode="async")).run_id
        await until(lambda: len(calls) == 3)
    # stopped gracefully: the parent and its last child are suspended, unfinished
    gate.set()
    second = RunEngine(SQLiteStore(path))
    agents(second)
    async with second:
        state = await second.wait(run_id)
        assert state.status is Status.COMPLETED, state.error
        assert state.output == [0, 10, 20]
        log = await full_log(second, run_id)
        assert _types(log).count("child.spawned") == 3 and _types(log).count("child.ended") == 3
        assert "run.resumed" in _types(log)
    assert sorted(calls.values()) == [1, 1, 2]  # the last child was cut short once and resumed, not created again


async def test_cancelling_a_parent_cancels_its_unfinished_children(make_store) -> None:
    engine = RunEngine(make_store())

    @engine.agent("slow")
    async def slow(ctx):
        await ctx.sleep(3600)

    @engine.agent("quick")
    async def quick(ctx):
        return "done"

    @engine.agent("parent")
    async def parent(ctx):
        done = await ctx.run("quick")
        handles = [await ctx.spawn("slow") for _ in range(2)]
        await ctx.gather(*handles)
        return done

    async with engine:
        run_id = (await engine.execute("parent", mode="async")).run_id
        await until(lambda: _children_started(engine, run_id, 3))
        state = await engine.cancel(run_id, reason="enough")
        assert state.status is Status.CANCELLED
        statuses = [(await engine.status(c.run_id)).status for c in state.children]
        assert statuses == [Status.COMPLETED, Status.CANCELLED, Status.CANCELLED]


async def _children_started(engine: RunEngine, run_id: str, count: int) -> bool:
    state = await engine.status(run_id)
    if len(state.children) < count:
        return False
    for child in state.children:
        if (await engine.status(child.run_id)).status is Status.PENDING:
            return False
    return True


async def test_signals_are_received_in_order_each_once(make_store) -> None:
    engine = RunEngine(make_store())

    @engine.agent("listener")
    async def listener(ctx):
        got = [await ctx.poll("note", default="nothing yet")]
        await ctx.say("ready")
        got.append(await ctx.receive("note"))
        got.append(await ctx.receive("note"))
        got.append(await ctx.poll("note"))
        got.append(await ctx.receive("other"))
        return got

    async with engine:
        run_id = (await engine.execute("listener", mode="async")).run_id
        await until(lambda: _has_message(engine, run_id))
        await engine.signal(run_id, "note", {"n": 1})
        await engine.signal(run_id, "other", "x")
        await engine.signal(run_id, "note", {"n": 2})
        state = await engine.wait(run_id)
        assert state.output == ["nothing yet", {"n": 1}, {"n": 2}, None, "x"]
        assert [s.taken for s in state.signals] == [True, True, True]
        with pytest.raises(InvalidRunState):
            await engine.signal(run_id, "note", 3)  # ended: refused, nothing written
        assert (await engine.status(run_id)).last_seq == state.last_seq


async def _has_message(engine: RunEngine, run_id: str) -> bool:
    return bool((await engine.status(run_id)).messages)


async def test_signal_checks_its_name_payload_owner_and_limits(make_store) -> None:
    engine = RunEngine(make_store(), limits=RunLimits(max_event_bytes=2048))

    @engine.agent("waiter")
    async def waiter(ctx):
        return await ctx.receive("go")

    async with engine:
        run_id = (await engine.execute("waiter", mode="async", owner="alice")).run_id
        for bad in ("", "a/b", "-x", "x" * 129, 5):
            with pytest.raises(InvalidRequest):
                await engine.signal(run_id, bad, None, owner="alice")
        with pytest.raises(InvalidRequest):
            await engine.signal(run_id, "go", float("nan"), owner="alice")
        with pytest.raises(InvalidRequest):
            await engine.signal(run_id, "go", "x" * 4096, owner="alice")
        with pytest.raises(RunNotFound):
            await engine.signal(run_id, "go", 1, owner="bob")
        with pytest.raises(RunNotFound):
            await engine.signal("no-such-run", "go", 1)
        assert (await engine.status(run_id)).signals == ()
        await engine.signal(run_id, "go", "yes", owner="alice")
        assert (await engine.wait(run_id)).output == "yes"


async def test_receive_times_out_at_its_recorded_deadline() -> None:
    clock = VirtualClock()
    engine = RunEngine(MemoryStore(), clock=clock)

    @engine.agent("impatient")
    async def impatient(ctx):
        try:
            await ctx.receive("reply", timeout=60)
        except SignalTimedOut:
            return "timed out"
        return "got one"

    async with engine:
        run_id = (await engine.execute("impatient", mode="async")).run_id
        await until(lambda: _logged(engine, run_id, "signal.waiting"))
        await clock.advance(61)
        state = await engine.wait(run_id)
        assert state.output == "timed out"
        assert _types(await full_log(engine, run_id))[-2] == "signal.missed"


async def _logged(engine: RunEngine, run_id: str, event_type: str) -> bool:
    return event_type in _types(await full_log(engine, run_id))


async def test_a_signal_sent_while_no_process_runs_the_run_is_received_after_the_restart(tmp_path) -> None:
    path = str(tmp_path / "runs.db")
    taken: list[object] = []

    def agents(engine: RunEngine) -> None:
        @engine.agent("listener")
        async def listener(ctx):
            first = await ctx.receive("msg")
            taken.append(first)
            second = await ctx.receive("msg")
            taken.append(second)
            return [first, second]

    first = RunEngine(SQLiteStore(path))
    agents(first)
    async with first:
        run_id = (await first.execute("listener", mode="async")).run_id
        await until(lambda: _logged(first, run_id, "signal.waiting"))
        await first.signal(run_id, "msg", "one")
        await until(lambda: taken == ["one"])
    # the engine is stopped: nothing executes the run, and the signal is recorded all the same
    offline = RunEngine(SQLiteStore(path), durability=Durability(recover_on_start=False))
    async with offline:
        await offline.signal(run_id, "msg", "two")
        assert (await offline.status(run_id)).status is Status.RUNNING
    second = RunEngine(SQLiteStore(path))
    agents(second)
    async with second:
        state = await second.wait(run_id)
        assert state.output == ["one", "two"]
    assert taken == ["one", "one", "two"]  # replayed "one" (recorded), then received "two"


async def test_a_waiting_parent_and_a_waiting_receiver_hold_no_task(make_store) -> None:
    """A parent joining children that have not ended, and a run receiving a signal that has not
    come, end their tasks (`run.suspended` with reason "waiting"): the engine executes nothing.
    A child's end resumes its parent, a signal its receiver; each replays to where it waited."""
    engine = RunEngine(make_store())
    starts: Counter[str] = Counter()

    @engine.agent("gated")
    async def gated(ctx):
        return {"child": ctx.input, "got": await ctx.receive("go")}

    @engine.agent("parent")
    async def parent(ctx):
        starts[ctx.run_id] += 1
        handles = [await ctx.spawn("gated", n) for n in range(2)]
        return await ctx.gather(*handles)

    async with engine:
        run_id = (await engine.execute("parent", mode="async")).run_id

        async def idle() -> bool:
            state = await engine.status(run_id)
            return len(state.children) == 2 and state.suspended and not engine.driver.active

        await until(idle)
        children = [c.run_id for c in (await engine.status(run_id)).children]
        suspended = [e for e in await full_log(engine, run_id) if e.type == "run.suspended"]
        assert [e.reason for e in suspended] == ["waiting"]
        for child in children:
            assert (await engine.status(child)).suspended
        await engine.signal(children[1], "go", "second")  # the one joined last ends first
        await until(lambda: _ended(engine, children[1]))
        await until(idle)  # resumed by that end, replayed, parked again on the first child
        await engine.signal(children[0], "go", "first")
        state = await engine.wait(run_id)
        assert state.output == [{"child": 0, "got": "first"}, {"child": 1, "got": "second"}]
        assert starts[run_id] >= 2  # its function ran again after each wake, replaying
        log = await full_log(engine, run_id)
        assert _types(log).count("child.spawned") == 2 and _types(log).count("child.ended") == 2


async def _ended(engine: RunEngine, run_id: str) -> bool:
    return (await engine.status(run_id)).terminal


@given(data=st.data())
@settings(max_examples=30, deadline=None)
def test_the_hypothesis_strategies_walk_into_every_child_and_signal_event(data) -> None:
    """Where a run has a spawned child and a signal, the strategies offer every child and signal
    event next, and each one they build passes the reducer (its guarded ids drawn from the state)."""
    from runengine.events import COMPOSITION_EVENTS, ChildSpawned, RunCreated, RunStarted, SignalReceived
    from runengine.reducer import Fold
    from runengine.testing.strategies import BASE_TIME, build_event, next_types

    fold = Fold()
    fold.apply_all([
        RunCreated(run_id="r", seq=1, agent="a"), RunStarted(run_id="r", seq=2),
        ChildSpawned(run_id="r", seq=3, child_run_id="c", agent="b"),
        SignalReceived(run_id="r", seq=4, signal_id="s", name="n"),
    ])
    offered = set(next_types(fold))
    assert {cls.type for cls in COMPOSITION_EVENTS} <= offered
    event_type = data.draw(st.sampled_from([cls.type for cls in COMPOSITION_EVENTS]))
    event = build_event(data.draw, event_type, "r", 5, BASE_TIME, fold)
    fold.apply(event)  # InvalidTransition if a drawn id did not pass


async def test_a_signal_to_a_pending_run_waits_in_its_log_until_the_agent_takes_it(make_store) -> None:
    from datetime import timedelta

    clock = VirtualClock()
    engine = RunEngine(make_store(), clock=clock)

    @engine.agent("later")
    async def later(ctx):
        return [await ctx.poll("early"), await ctx.receive("early", timeout=5)]

    async with engine:
        run_id = (await engine.execute("later", mode="async", start_at=clock() + timedelta(seconds=30))).run_id
        await engine.signal(run_id, "early", "one")
        await engine.signal(run_id, "early", "two")
        assert (await engine.status(run_id)).status is Status.PENDING
        await clock.advance(31)
        assert (await engine.wait(run_id)).output == ["one", "two"]


async def test_a_receive_with_a_timeout_is_woken_by_the_signal_and_a_parked_one_can_be_cancelled(make_store) -> None:
    engine = RunEngine(make_store())

    @engine.agent("patient")
    async def patient(ctx):
        return await ctx.receive("reply", timeout=3600)

    @engine.agent("forever")
    async def forever(ctx):
        return await ctx.receive("never")

    async with engine:
        patient_id = (await engine.execute("patient", mode="async")).run_id
        forever_id = (await engine.execute("forever", mode="async")).run_id
        await until(lambda: _logged(engine, patient_id, "signal.waiting"))
        await engine.signal(patient_id, "reply", {"ok": True})
        assert (await engine.wait(patient_id)).output == {"ok": True}
        await until(lambda: _logged(engine, forever_id, "run.suspended"))
        state = await engine.cancel(forever_id, reason="no reply")
        assert state.status is Status.CANCELLED and forever_id not in engine.driver.active


async def test_a_receive_deadline_is_recorded_and_holds_across_a_restart(tmp_path) -> None:
    clock = VirtualClock()
    path = str(tmp_path / "runs.db")

    def agents(engine: RunEngine) -> None:
        @engine.agent("deadline")
        async def deadline(ctx):
            try:
                return await ctx.receive("answer", timeout=60)
            except SignalTimedOut:
                return "too late"

    first = RunEngine(SQLiteStore(path), clock=clock)
    agents(first)
    async with first:
        run_id = (await first.execute("deadline", mode="async")).run_id
        await until(lambda: _logged(first, run_id, "signal.waiting"))
    waiting = [e for e in await _log_of(path, run_id) if e.type == "signal.waiting"][0]
    await clock.advance(30)  # half the wait passes while nothing runs
    second = RunEngine(SQLiteStore(path), clock=clock)
    agents(second)
    async with second:
        await until(lambda: _logged(second, run_id, "run.resumed"))
        await clock.advance(29)
        assert not (await second.status(run_id)).terminal  # the recorded deadline is not reached yet
        await clock.advance(2)
        state = await second.wait(run_id)
        assert state.output == "too late"
        log = await full_log(second, run_id)
        assert [e for e in log if e.type == "signal.waiting"] == [waiting]  # not recorded again


async def _log_of(path: str, run_id: str):
    async with RunEngine(SQLiteStore(path), durability=Durability(recover_on_start=False)) as reader:
        return await full_log(reader, run_id)


async def test_spawn_refuses_an_ended_session_before_recording(make_store) -> None:
    engine = RunEngine(make_store())

    @engine.agent("leaf")
    async def leaf(ctx):
        return ctx.session_id

    @engine.agent("parent")
    async def parent(ctx):
        try:
            await ctx.spawn("leaf", session_id="closed")
        except Exception as exc:
            refused = type(exc).__name__
        return {"refused": refused, "open": await ctx.run("leaf", session_id="fresh")}

    async with engine:
        await engine.create_session(session_id="closed", owner="alice")
        await engine.end_session("closed", owner="alice")
        state = await engine.execute("parent", owner="alice")
        assert state.output == {"refused": "SessionEnded", "open": "fresh"}
        assert _types(await full_log(engine, state.run_id)).count("child.spawned") == 1


async def test_a_run_with_a_timeout_times_out_while_it_waits_for_a_signal() -> None:
    engine = RunEngine(MemoryStore())

    @engine.agent("bounded")
    async def bounded(ctx):
        return await ctx.receive("never")

    async with engine:
        with anyio.fail_after(10):
            state = await engine.execute("bounded", timeout=0.3)
        assert state.status is Status.FAILED and state.error.code == "timeout"


async def test_a_graceful_stop_is_not_undone_by_a_waiting_wake_up(make_store) -> None:
    """A signal to a busy run leaves a wake-up waiting for the run to stop; a graceful stop must
    not have it launch the run again (the engine would never finish stopping)."""
    engine = RunEngine(make_store(), durability=Durability(drain_timeout=0.2))

    @engine.agent("asker")
    async def asker(ctx):
        return await ctx.ask("anything?")

    with anyio.fail_after(15):  # the engine's exit, the stop, included
        async with engine:
            run_id = (await engine.execute("asker", mode="async")).run_id
            await until(lambda: _logged(engine, run_id, "run.waiting_for_input"))
            await engine.signal(run_id, "aside", 1)
    assert not engine.driver.active
