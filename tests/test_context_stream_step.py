"""ctx.stream_step: a durable step that streams deltas and thoughts while it runs. Live they go
out as they come; a resumed run gets the recorded result and replays them without calling again."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from runengine import RunEngine, Status, StepFailed
from runengine.adapters.memory import MemoryStore
from runengine.context import TOOL_ARGUMENTS_DELTA
from test_durable_core import DyingStore, crash_then_resume

pytestmark = pytest.mark.anyio


async def test_deltas_and_thoughts_stream_live_then_the_result_is_recorded():
    engine = RunEngine(MemoryStore())

    @engine.agent("llm")
    async def llm(ctx):
        async def call(stream):
            await stream.thought("considering")
            for piece in ["Hello ", "there"]:
                await stream.delta(piece)
            return {"text": "Hello there", "tokens": 2}

        return await ctx.stream_step("model", call)

    async with engine:
        state = await engine.execute("llm")
        log = [e async for e in engine.events(state.run_id, follow=False)]
    assert state.output == {"text": "Hello there", "tokens": 2}
    kinds = [e.type for e in log if e.type in ("thought", "message.delta", "step.completed", "message.completed")]
    assert kinds == ["thought", "message.delta", "message.delta", "step.completed", "message.completed"]
    assert [m.content for m in state.messages] == ["Hello there"]


async def test_a_recorded_stream_step_is_replayed_with_its_deltas_and_not_called_again():
    calls: list[int] = []

    def agents(engine: RunEngine, store: DyingStore) -> None:
        @engine.agent("llm")
        async def llm(ctx):
            async def call(stream):
                calls.append(1)
                await stream.delta("recorded ")
                await stream.delta("answer")
                return "recorded answer"

            text = await ctx.stream_step("model", call)
            await ctx.complete_message()
            await ctx.flush()
            if ctx.attempt == 1:
                store.die()
                await anyio.sleep_forever()
            await ctx.say("after")
            return text

    run_id, engine = await crash_then_resume(agents, "llm")
    async with engine:
        state = await engine.wait(run_id)
        log = [e async for e in engine.events(run_id, follow=False)]
    assert state.status is Status.COMPLETED and state.output == "recorded answer"
    assert calls == [1]
    assert [m.content for m in state.messages] == ["recorded answer", "after"]
    assert [e.content for e in log if e.type == "message.delta"] == ["recorded ", "answer"]


async def test_tool_arguments_and_custom_events_a_stream_step_sent_are_replayed_with_it():
    calls: list[int] = []

    def agents(engine: RunEngine, store: DyingStore) -> None:
        @engine.agent("llm")
        async def llm(ctx):
            async def call(stream):
                calls.append(1)
                await stream.tool_arguments("c1", "add", '{"a": ')
                await stream.tool_arguments("c1", "add", "2}")
                await stream.custom("progress", {"done": 1})
                return {"call": "c1"}

            answer = await ctx.stream_step("model", call)
            await ctx.flush()
            if ctx.attempt == 1:
                store.die()
                await anyio.sleep_forever()
            return answer

    run_id, engine = await crash_then_resume(agents, "llm")
    async with engine:
        state = await engine.wait(run_id)
        log = [e async for e in engine.events(run_id, follow=False)]
    assert state.status is Status.COMPLETED and state.output == {"call": "c1"}, state.error
    assert calls == [1]
    assert [(e.name, e.data) for e in log if e.type == "custom"] == [
        (TOOL_ARGUMENTS_DELTA, {"call_id": "c1", "tool": "add", "delta": '{"a": '}),
        (TOOL_ARGUMENTS_DELTA, {"call_id": "c1", "tool": "add", "delta": "2}"}),
        ("progress", {"done": 1}),
    ]


async def test_a_stream_step_cut_by_a_crash_is_called_again_and_its_half_message_discarded():
    calls: list[int] = []

    def agents(engine: RunEngine, store: DyingStore) -> None:
        @engine.agent("llm")
        async def llm(ctx):
            async def call(stream):
                calls.append(1)
                await stream.delta("first half ")
                if len(calls) == 1:
                    await ctx.flush()
                    store.die()
                    await anyio.sleep_forever()
                await stream.delta("second half")
                return "done"

            return await ctx.stream_step("model", call)

    run_id, engine = await crash_then_resume(agents, "llm")
    async with engine:
        state = await engine.wait(run_id)
    assert state.status is Status.COMPLETED and state.output == "done"
    assert calls == [1, 1]
    assert [m.content for m in state.messages] == ["first half second half"]
    assert len(state.discarded) == 1


async def test_a_failed_stream_step_fails_the_same_way_on_replay():
    calls: list[int] = []

    def agents(engine: RunEngine, store: DyingStore) -> None:
        @engine.agent("llm")
        async def llm(ctx):
            async def call(stream):
                calls.append(1)
                raise ConnectionError("model unreachable")

            try:
                await ctx.stream_step("model", call)
            except StepFailed as failed:
                note: Any = failed.error_code
            await ctx.flush()
            if ctx.attempt == 1:
                store.die()
                await anyio.sleep_forever()
            return note

    run_id, engine = await crash_then_resume(agents, "llm")
    async with engine:
        state = await engine.wait(run_id)
    assert state.status is Status.COMPLETED and state.output == "ConnectionError"
    assert calls == [1]


async def test_a_different_call_where_a_stream_step_was_recorded_is_a_divergence():
    def agents(engine: RunEngine, store: DyingStore) -> None:
        @engine.agent("llm")
        async def llm(ctx):
            async def call(stream):
                await stream.delta("x")
                return 1

            if ctx.attempt == 1:
                await ctx.stream_step("model", call)
                await ctx.flush()
                store.die()
                await anyio.sleep_forever()
            await ctx.stream_step("another", call)

    run_id, engine = await crash_then_resume(agents, "llm")
    async with engine:
        state = await engine.wait(run_id)
    assert state.status is Status.FAILED and state.error.code == "replay_divergence"
