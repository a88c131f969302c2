"""The engine on the memory store, on both anyio backends."""

from __future__ import annotations

import random

import anyio
import pytest
from hypothesis import settings
from hypothesis import strategies as st

from runengine import (
    AgentNotFound,
    InvalidRequest,
    InvalidRunState,
    InvalidTransition,
    RunEngine,
    RunNotFound,
    SessionBusy,
    Status,
    fold,
)
from runengine.engine import SessionEnded
from runengine.errors import ConcurrencyConflict, EngineNotStarted
from runengine.adapters.memory import MemoryStore
from runengine.events import MessageDelta, RunCreated, RunStarted
from runengine.testing.clock import VirtualClock
from runengine.testing.machine import EngineMachine
from runengine.options import Durability

pytestmark = pytest.mark.anyio


def make_engine(**options) -> RunEngine:
    engine = RunEngine(MemoryStore(), **options)

    @engine.agent("echo", description="streams its input back word by word")
    async def echo(ctx):
        for word in str(ctx.input).split():
            await ctx.delta(word + " ")

    @engine.agent("tools")
    async def tools(ctx):
        await ctx.thought("adding", source="planner")
        total = await ctx.tool_call("add", {"a": 2, "b": 3}, lambda a, b: a + b)
        await ctx.usage(input_tokens=5, output_tokens=7, cost=0.01)
        return {"total": total}

    @engine.agent("approval")
    async def approval(ctx):
        answer = await ctx.ask({"question": "approve?"})
        await ctx.say(f"answer was {answer}")

    @engine.agent("boom")
    async def boom(ctx):
        await ctx.delta("partial ")
        raise ValueError("broken tool chain")

    @engine.agent("sleepy")
    async def sleepy(ctx):
        await ctx.delta("zz")
        await anyio.sleep(60)

    @engine.agent("bad")
    async def bad(ctx):
        await ctx.tool_result("never-called", 1)

    return engine


async def collect(iterator):
    return [event async for event in iterator]


async def test_sync_run_returns_the_completed_state():
    async with make_engine() as engine:
        state = await engine.execute("echo", "hello there world")
        assert state.status is Status.COMPLETED
        assert state.output == "hello there world "
        assert [m.content for m in state.messages] == ["hello there world "]
        events = await collect(engine.events(state.run_id))
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert events[0].type == "run.created" and events[-1].type == "run.completed"
        assert fold(events) == state == await engine.status(state.run_id)


async def test_tools_thoughts_and_usage_are_recorded():
    async with make_engine() as engine:
        state = await engine.execute("tools")
        assert state.output == {"total": 5}
        assert state.thoughts[0].content == "adding" and state.thoughts[0].source == "planner"
        call = state.tool_calls[0]
        assert (call.name, call.arguments, call.done, call.output) == ("add", {"a": 2, "b": 3}, True, 5)
        assert (state.usage.input_tokens, state.usage.output_tokens, state.usage.cost) == (5, 7, 0.01)


async def test_async_run_returns_pending_at_once_then_runs():
    async with make_engine() as engine:
        state = await engine.execute("echo", "a b", mode="async")
        assert state.status is Status.PENDING and state.last_seq == 1
        final = await engine.wait(state.run_id)
        assert final.status is Status.COMPLETED


async def test_stream_yields_every_event_from_seq_1_and_ends():
    async with make_engine() as engine:
        stream = await engine.execute("echo", "one two three", mode="stream")
        events = await collect(stream)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.content for e in events if isinstance(e, MessageDelta)] == ["one ", "two ", "three "]
        assert events[-1].type == "run.completed"


async def test_ask_waits_for_input_and_resume_continues():
    async with make_engine() as engine:
        state = await engine.execute("approval")
        assert state.status is Status.WAITING_FOR_INPUT
        assert state.await_request == {"question": "approve?"}
        resumed = await engine.resume(state.run_id, "yes")
        assert resumed.inputs == ("yes",)
        assert (await engine.wait(state.run_id)).status is Status.COMPLETED  # no after_seq: the run's end
        final = await engine.wait(state.run_id, after_seq=resumed.last_seq)
        assert final.status is Status.COMPLETED and final.output == "answer was yes"
        with pytest.raises(InvalidRunState):
            await engine.resume(state.run_id, "again")


async def test_agent_exception_fails_the_run_with_agent_error():
    async with make_engine() as engine:
        state = await engine.execute("boom")
        assert state.status is Status.FAILED
        assert state.error.code == "agent_error" and "broken tool chain" in state.error.message
        assert state.partial.content == "partial "


async def test_illegal_event_from_an_agent_fails_the_run_and_writes_nothing_illegal():
    async with make_engine() as engine:
        state = await engine.execute("bad")
        assert state.status is Status.FAILED and "InvalidTransition" in state.error.message
        events = await collect(engine.events(state.run_id))
        assert [e.type for e in events] == ["run.created", "run.started", "run.failed"]


async def test_timeout_fails_the_run_with_code_timeout():
    """The timeout is waited for on the engine's clock: a VirtualClock reaches it, to the second."""
    clock = VirtualClock()
    async with make_engine(clock=clock) as engine:
        run = await engine.execute("sleepy", mode="async", timeout=3600)
        async for event in engine.events(run.run_id):
            if event.type == "message.delta":
                break  # the agent is running and asleep
        await clock.advance(3599)
        assert (await engine.status(run.run_id)).status is Status.RUNNING
        await clock.advance(1)
        with anyio.fail_after(10):
            state = await engine.wait(run.run_id)
        assert state.status is Status.FAILED and state.error.code == "timeout"
        assert state.partial.content == "zz"


async def test_cancel_is_idempotent_and_ends_the_run():
    async with make_engine() as engine:
        state = await engine.execute("sleepy", mode="async")
        async for event in engine.events(state.run_id):
            if event.type == "message.delta":
                break  # the agent is running and asleep
        cancelled = await engine.cancel(state.run_id, reason="user asked")
        assert cancelled.status is Status.CANCELLED and cancelled.cancel_reason == "user asked"
        assert await engine.cancel(state.run_id) == cancelled
        waiting = await engine.execute("approval")
        assert (await engine.cancel(waiting.run_id)).status is Status.CANCELLED


async def test_precise_errors_for_unknown_agent_run_mode_and_bad_arguments():
    async with make_engine() as engine:
        with pytest.raises(AgentNotFound):
            await engine.execute("nobody")
        with pytest.raises(RunNotFound):
            await engine.status("missing")
        with pytest.raises(RunNotFound):
            await engine.wait("missing")
        with pytest.raises(RunNotFound):
            await collect(engine.events("missing"))
        with pytest.raises(RunNotFound):
            await engine.cancel("missing")
        with pytest.raises(InvalidRequest):
            await engine.execute("echo", "x", mode="later")
        with pytest.raises(InvalidRequest):
            await engine.execute("echo", "x", timeout=-1)
        assert (await engine.list_runs()).runs == ()  # nothing was created by the refusals


async def test_execute_outside_the_engine_context_is_refused():
    engine = make_engine()
    with pytest.raises(EngineNotStarted):
        await engine.execute("echo", "x")


async def test_eight_concurrent_appenders_never_duplicate_or_gap():
    store = MemoryStore()
    await store.append("r", [RunCreated(run_id="r", seq=1, agent="a"), RunStarted(run_id="r", seq=2)], expected_seq=0)
    wins = []

    async def appender(name: str) -> None:
        for _ in range(50):
            while True:
                last = await store.last_seq("r")
                try:
                    await store.append(
                        "r", [MessageDelta(run_id="r", seq=last + 1, message_id="m", content=name)], expected_seq=last
                    )
                    wins.append(name)
                    break
                except ConcurrencyConflict:
                    await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(appender, f"w{i}")
    events = await store.read("r", limit=1000)
    assert [e.seq for e in events] == list(range(1, 403))
    assert len(wins) == 400


async def test_reconnecting_readers_reassemble_exactly_the_log_while_it_is_written():
    rng = random.Random(7)
    async with make_engine(durability=Durability(flush_window=0.001, flush_max=16)) as engine:

        @engine.agent("chatty")
        async def chatty(ctx):
            for i in range(300):
                await ctx.delta(f"{i},")
                if i % 37 == 0:
                    await anyio.sleep(0.001)

        for _ in range(5):
            run = await engine.execute("chatty", mode="async")
            seen: list = []
            while not seen or not seen[-1].terminal:
                after = seen[-1].seq if seen else 0
                budget = rng.randint(1, 60)  # drop the connection after a random number of events
                async for event in engine.events(run.run_id, after_seq=after):
                    seen.append(event)
                    budget -= 1
                    if budget == 0:
                        break
            log = await collect(engine.events(run.run_id, follow=False))
            assert seen == log
            assert [e.seq for e in seen] == list(range(1, len(log) + 1))


async def test_session_policies_reject_enqueue_interrupt():
    async with make_engine() as engine:
        first = await engine.execute("approval", session_id="s1")
        with pytest.raises(SessionBusy):
            await engine.execute("echo", "x", session_id="s1", session_policy="reject")
        queued = await engine.execute("echo", "later", session_id="s1", session_policy="enqueue", mode="async")
        await anyio.wait_all_tasks_blocked()  # everything the engine would do now is done
        assert (await engine.status(queued.run_id)).status is Status.PENDING  # waits for the first
        await engine.resume(first.run_id, "ok")
        assert (await engine.wait(queued.run_id)).status is Status.COMPLETED
        blocker = await engine.execute("approval", session_id="s1")
        fresh = await engine.execute("echo", "now", session_id="s1", session_policy="interrupt")
        assert (await engine.status(blocker.run_id)).status is Status.CANCELLED
        assert fresh.status is Status.COMPLETED
        history = (await engine.session_history("s1")).messages
        assert [m.role for m in history][:2] == ["user", "assistant"]


async def test_idempotency_key_returns_the_same_run():
    async with make_engine() as engine:
        one = await engine.execute("echo", "a", idempotency_key="k1")
        two = await engine.execute("echo", "a", idempotency_key="k1")
        other = await engine.execute("echo", "a", idempotency_key="k1", owner="someone-else")
        assert one.run_id == two.run_id != other.run_id
        assert len((await engine.list_runs()).runs) == 2


async def test_ended_sessions_refuse_new_runs():
    async with make_engine() as engine:
        session = await engine.create_session(metadata={"tier": "gold"})

        @engine.agent("meta")
        async def meta(ctx):
            return ctx.session.metadata["tier"]

        assert (await engine.execute("meta", session_id=session.session_id)).output == "gold"
        await engine.end_session(session.session_id)
        with pytest.raises(SessionEnded):
            await engine.execute("meta", session_id=session.session_id)


async def test_list_runs_filters_and_pages_newest_first():
    async with make_engine() as engine:
        ids = [(await engine.execute("echo", str(i), session_id="s" if i % 2 else None)).run_id for i in range(7)]
        page = await engine.list_runs(limit=3)
        assert [r.run_id for r in page.runs] == ids[::-1][:3]
        rest = await engine.list_runs(limit=10, before=page.next_before)
        assert [r.run_id for r in rest.runs] == ids[::-1][3:]
        assert {r.run_id for r in (await engine.list_runs(session_id="s")).runs} == set(ids[1::2])
        assert len((await engine.list_runs(status="completed", limit=100)).runs) == 7
        with pytest.raises(InvalidRequest):
            await engine.list_runs(status="sleeping")


async def test_shutdown_suspends_runs_in_flight_and_the_next_engine_resumes_them():
    engine = make_engine(durability=Durability(drain_timeout=0.05))
    async with engine:
        run = await engine.execute("sleepy", mode="async")
        await engine.store.wait(run.run_id, after_seq=2)  # its first delta is committed
    state = await engine.status(run.run_id)
    assert state.status is Status.RUNNING and state.suspended and state.partial.content == "zz"
    async with engine:
        log = await collect(engine.events(run.run_id, follow=False))
        while [e.type for e in log][-1] != "message.delta":
            await engine.store.wait(run.run_id, after_seq=log[-1].seq)
            log = await collect(engine.events(run.run_id, follow=False))
        types = [e.type for e in log]
        assert types[types.index("run.suspended") :] == ["run.suspended", "run.resumed", "message.discarded", "message.delta"]
        assert log[types.index("run.resumed")].reason == "restart"
        resumed = await engine.status(run.run_id)
        assert resumed.partial.content == "zz" and resumed.partial.message_id != state.partial.message_id
        assert resumed.discarded == (state.partial.message_id,)


async def test_recovery_resumes_runs_left_running_by_a_dead_process():
    store = MemoryStore()
    await store.append(
        "orphan", [RunCreated(run_id="orphan", seq=1, agent="echo", input="a b"), RunStarted(run_id="orphan", seq=2)],
        expected_seq=0,
    )
    await store.append("queued", [RunCreated(run_id="queued", seq=1, agent="echo", input="x y")], expected_seq=0)
    await store.append("stranger", [RunCreated(run_id="stranger", seq=1, agent="gone")], expected_seq=0)
    engine = RunEngine(store)

    @engine.agent("echo")
    async def echo(ctx):
        await ctx.delta(ctx.input)

    async with engine:
        orphan = await engine.wait("orphan")
        assert orphan.status is Status.COMPLETED and orphan.output == "a b" and orphan.lost_attempts == 1
        assert (await engine.wait("queued")).status is Status.COMPLETED
        # No engine here has agent "gone": its run waits, pending, for one that has.
        assert (await engine.status("stranger")).status is Status.PENDING


@pytest.mark.slow  # 4-5 s on each backend
async def test_ten_thousand_runs_leave_no_tasks_or_active_runs_behind():
    async with make_engine() as engine:
        await engine.execute("echo", "warm up")
        baseline = _task_count()
        for i in range(10_000):
            await engine.execute("echo", "a b" if i % 2 else "c")
        await anyio.wait_all_tasks_blocked()  # the last run's tasks have ended
        assert engine.driver.active == {}
        assert engine._session_locks == {}
        assert _task_count() <= baseline


def _task_count() -> int:
    import sniffio

    if sniffio.current_async_library() == "trio":
        import trio

        def walk(task) -> int:
            return 1 + sum(walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

        return walk(trio.lowlevel.current_root_task())
    import asyncio

    return len(asyncio.all_tasks())


async def test_invalid_transition_is_refused_by_resume_validation():
    async with make_engine() as engine:
        state = await engine.execute("echo", "x")
        with pytest.raises(InvalidRunState):
            await engine.resume(state.run_id, "late")
        assert (await engine.status(state.run_id)) == state
        assert issubclass(InvalidTransition, Exception)


class DemoAgentsMachine(EngineMachine):
    agents = ("echo", "approval", "tools", "boom")
    inputs = st.text(alphabet="ab ", max_size=12)

    def make_engine(self) -> RunEngine:
        return make_engine()


TestDemoAgentsMachine = DemoAgentsMachine.TestCase
TestDemoAgentsMachine.settings = settings(max_examples=15, stateful_step_count=12, deadline=None)


def test_a_run_task_names_its_event_loop_once_for_anyio() -> None:
    """anyio sniffs the event loop for every primitive it makes (cancel scopes, events, task
    groups: ~15 a resumed run); a run's task names it once in its own context, under a plain
    asyncio.run too (not only under anyio.run, which names it for the whole run)."""
    import asyncio
    import contextvars

    import sniffio

    seen: list[str | None] = []

    async def main() -> None:
        engine = RunEngine()

        @engine.agent("probe")
        async def probe(ctx) -> None:  # type: ignore[no-untyped-def]
            seen.append(sniffio.current_async_library_cvar.get())

        async with engine:
            await engine.execute("probe")
        seen.append(sniffio.current_async_library_cvar.get())  # the caller's context is left as it was

    contextvars.Context().run(asyncio.run, main())
    assert seen == ["asyncio", None]
