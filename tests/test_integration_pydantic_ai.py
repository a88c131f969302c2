"""runengine.integrations.pydantic_ai: a Pydantic AI Agent run as a runengine agent, tested with
Pydantic AI's own FunctionModel and TestModel (streaming, thinking, tools, errors, approvals,
history) and crashed and resumed through the engine's resume path (tests/test_durable_core.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from dataclasses import dataclass

from pydantic import BaseModel
from pydantic_ai import Agent, CallDeferred, ModelRetry
from pydantic_ai import RunContext as PydanticRunContext
from pydantic_ai.usage import UsageLimits
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaThinkingPart, DeltaToolCall, FunctionModel
from pydantic_ai.models.test import TestModel

from runengine import RunEngine, Status
from runengine.adapters.memory import MemoryStore
from runengine.context import TOOL_ARGUMENTS_DELTA, current_idempotency_key
from runengine.integrations.pydantic_ai import INVALID_DEPS, MESSAGES_STEP, MODEL_STEP, USAGE_LIMIT_EXCEEDED, agent_from_pydantic_ai, pydantic_ai_agent
from chaoskit import read_log
from durable_apps import create_counters, read_counters
from faultkit import ServeProcess
from kit import free_port, full_log, until_sync
from test_cli import COMMAND, wait_ready
from test_durable_core import DyingStore, crash_then_resume
from runengine.options import RunLimits

pytestmark = pytest.mark.anyio


ANYIO_BACKENDS = ("asyncio",)  # Pydantic AI runs on asyncio


def answered(messages: list[ModelMessage]) -> bool:
    """True once the last request carries a tool's return: the model then answers in text."""
    return any(isinstance(part, ToolReturnPart) for part in messages[-1].parts)


def adder_model(calls: list[list[ModelMessage]]) -> FunctionModel:
    """Thinks, calls `add(2, 3)` with its arguments streamed in two pieces, then streams the answer."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        calls.append(messages)
        if not answered(messages):
            yield {0: DeltaThinkingPart(content="need ")}
            yield {0: DeltaThinkingPart(content="a tool")}
            yield {1: DeltaToolCall(name="add", json_args='{"a": 2, ', tool_call_id="call_add")}
            yield {1: DeltaToolCall(json_args='"b": 3}')}
        else:
            for piece in ["The ", "sum ", "is 5."]:
                yield piece

    return FunctionModel(stream_function=stream)


def adder_agent(calls: list[list[ModelMessage]], adds: list[tuple[int, int]]) -> Agent[None, str]:
    agent = Agent(adder_model(calls))

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        adds.append((a, b))
        return a + b

    return agent


async def test_text_thinking_tools_and_usage_become_the_runs_events():
    calls: list[list[ModelMessage]] = []
    adds: list[tuple[int, int]] = []
    engine = RunEngine(MemoryStore())
    engine.agents.add(agent_from_pydantic_ai(adder_agent(calls, adds), name="adder"))
    async with engine:
        state = await engine.execute("adder", "2+3?")
        log = await full_log(engine, state.run_id)
    assert state.status is Status.COMPLETED and state.output == "The sum is 5."
    assert [e.content for e in log if e.type == "message.delta"] == ["The ", "sum ", "is 5."]
    assert [m.content for m in state.messages] == ["The sum is 5."]
    assert [e.content for e in log if e.type == "thought"] == ["need a tool"]
    tool_call = next(e for e in log if e.type == "tool.call")
    assert (tool_call.call_id, tool_call.name, tool_call.arguments) == ("call_add", "add", {"a": 2, "b": 3})
    assert next(e for e in log if e.type == "tool.result").output == 5
    assert adds == [(2, 3)]
    assert [e.name for e in log if e.type == "step.completed"] == [MODEL_STEP, MODEL_STEP, MESSAGES_STEP]
    usage = [e for e in log if e.type == "usage"]
    assert len(usage) == 2 and all(u.input_tokens > 0 and u.output_tokens > 0 for u in usage)
    # The user prompt reached the model as the run's input.
    first_request = calls[0][-1]
    assert isinstance(first_request, ModelRequest)
    assert [p.content for p in first_request.parts if isinstance(p, UserPromptPart)] == ["2+3?"]


async def test_the_sessions_earlier_turns_come_back_as_the_same_model_messages_tools_and_thinking_included():
    calls: list[list[ModelMessage]] = []
    adds: list[tuple[int, int]] = []
    engine = RunEngine(MemoryStore())
    engine.agents.add(agent_from_pydantic_ai(adder_agent(calls, adds), name="adder"))

    @engine.agent("plain")
    async def plain(ctx):
        await ctx.say("a plain reply")
        return None

    async with engine:
        first = await engine.execute("adder", "2+3?", session_id="s")
        await engine.execute("plain", "hello", session_id="s")
        await engine.execute("adder", {"again": True}, session_id="s")
        log = await full_log(engine, first.run_id)
    recorded = ModelMessagesTypeAdapter.validate_python(next(e for e in log if e.type == "step.completed" and e.name == MESSAGES_STEP).output)
    # Turn 1 as Pydantic AI kept it: prompt, thinking + tool call, tool return, answer (with usage).
    assert recorded[:-1] == calls[1] and recorded[-1].parts == [TextPart("The sum is 5.")]
    third_turn = calls[2]
    assert third_turn[: len(recorded)] == recorded  # the same ModelMessage objects, round-tripped
    parts = [p for m in third_turn for p in m.parts]
    assert any(isinstance(p, ThinkingPart) and p.content == "need a tool" for p in parts)
    assert any(isinstance(p, ToolCallPart) and p.args_as_dict() == {"a": 2, "b": 3} for p in parts)
    assert any(isinstance(p, ToolReturnPart) and p.content == 5 for p in parts)
    assert isinstance(third_turn[len(recorded) - 1], ModelResponse) and third_turn[len(recorded) - 1].usage.output_tokens > 0
    # The run of another agent (nothing recorded) comes as its input and its text.
    plain_turn = third_turn[len(recorded) : len(recorded) + 2]
    assert [p.content for p in plain_turn[0].parts] == ["hello"] and plain_turn[1].parts == [TextPart("a plain reply")]
    assert [p.content for p in third_turn[-1].parts if isinstance(p, UserPromptPart)] == ['{"again": true}']


async def test_a_turn_whose_messages_are_too_large_to_keep_still_completes_and_is_text_for_the_next():
    seen: list[list[ModelMessage]] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        seen.append(messages)
        if answered(messages) or len(seen) > 2:
            yield "short answer"
        else:
            yield {0: DeltaToolCall(name="big", json_args="{}", tool_call_id="c_big")}

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool_plain
    def big() -> str:
        return "x" * 1500  # fits in its own tool.result, not with the whole turn's messages

    engine = RunEngine(MemoryStore(), limits=RunLimits(max_event_bytes=2048))
    engine.agent("big")(pydantic_ai_agent(agent))
    async with engine:
        first = await engine.execute("big", "go", session_id="s")
        second = await engine.execute("big", "again", session_id="s")
        log = await full_log(engine, first.run_id)
    assert first.status is Status.COMPLETED and first.output == "short answer", first.error
    assert MESSAGES_STEP not in [e.name for e in log if e.type == "step.completed"]
    assert second.status is Status.COMPLETED
    assert [[p.content for p in m.parts] for m in seen[-1][:2]] == [["go"], ["short answer"]]  # the first turn as text


async def test_history_runs_keeps_the_last_turns_only():
    prompts: list[list[str]] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        prompts.append([p.content for m in messages for p in m.parts if isinstance(p, UserPromptPart)])
        yield "ok"

    engine = RunEngine(MemoryStore())
    engine.agent("short")(pydantic_ai_agent(Agent(FunctionModel(stream_function=model)), history_runs=2))
    async with engine:
        for turn in ["one", "two", "three", "four"]:
            await engine.execute("short", turn, session_id="s")
    assert prompts[-1] == ["two", "three", "four"]


async def test_test_model_calls_every_tool_and_its_output_is_the_runs_output():
    agent = Agent(TestModel(custom_output_text="done"))
    seen: list[str] = []

    @agent.tool_plain
    def lookup(city: str) -> str:
        seen.append(city)
        return f"sunny in {city}"

    engine = RunEngine(MemoryStore())
    engine.agent("weather")(pydantic_ai_agent(agent))
    async with engine:
        state = await engine.execute("weather", "weather?")
        log = await full_log(engine, state.run_id)
    assert state.status is Status.COMPLETED and state.output == "done"
    assert [c.name for c in state.tool_calls] == ["lookup"] and len(seen) == 1
    assert next(e for e in log if e.type == "tool.result").output == f"sunny in {seen[0]}"


async def test_a_model_that_raises_fails_the_run_with_its_error():
    async def broken(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        raise RuntimeError("the model is down")
        yield ""  # pragma: no cover - makes this a generator

    engine = RunEngine(MemoryStore())
    engine.agent("broken")(pydantic_ai_agent(Agent(FunctionModel(stream_function=broken))))
    async with engine:
        state = await engine.execute("broken", "hi")
        log = await full_log(engine, state.run_id)
    assert state.status is Status.FAILED
    assert "the model is down" in state.error.message
    step = next(e for e in log if e.type == "step.completed")
    assert step.name == MODEL_STEP and step.error.code == "RuntimeError"


@pytest.mark.slow  # about 11 s here
async def test_a_tool_that_raises_model_retry_asks_the_model_again_and_one_that_raises_fails_the_run():
    attempts: list[int] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        parts = [p for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
        returns = [p for p in parts if p.outcome != "retried"]
        retries = [p for p in parts if p.outcome == "retried"]
        if returns:
            yield f"ok after {len(retries)} retry"
        else:
            yield {0: DeltaToolCall(name=info.function_tools[0].name, json_args="{}", tool_call_id=f"c{len(retries)}")}

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool_plain
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ModelRetry("try once more")
        return "fine"

    crashing = Agent(FunctionModel(stream_function=model))

    @crashing.tool_plain
    def explode() -> str:
        raise ValueError("boom")

    engine = RunEngine(MemoryStore())
    engine.agent("flaky")(pydantic_ai_agent(agent))
    engine.agent("explode")(pydantic_ai_agent(crashing))
    async with engine:
        state = await engine.execute("flaky", "go")
        failed = await engine.execute("explode", "go")
    assert state.status is Status.COMPLETED and state.output == "ok after 1 retry"
    assert len(attempts) == 2
    assert state.tool_calls[0].output["__pydantic_ai_control__"] == "retry"
    assert failed.status is Status.FAILED and "boom" in failed.error.message
    assert failed.tool_calls[0].error.message == "ValueError: boom"


def durable_agents(calls: list[list[ModelMessage]], adds: list[tuple[int, int]], crash_on_request: int | None):
    """The adder, whose model request number `crash_on_request` (1-based) kills the first process."""

    def agents(engine: RunEngine, store: DyingStore) -> None:
        base = adder_model(calls)

        async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
            if len(calls) + 1 == crash_on_request and not store.dead and engine_number == 1:
                calls.append(messages)
                store.die()
                await anyio.sleep_forever()
            async for piece in base.stream_function(messages, info):  # type: ignore[misc]
                yield piece

        engine_number = len(engines) + 1
        engines.append(engine)
        agent = Agent(FunctionModel(stream_function=stream))

        @agent.tool_plain
        def add(a: int, b: int) -> int:
            adds.append((a, b))
            return a + b

        @engine.agent("adder")
        async def adder(ctx):
            output = await pydantic_ai_agent(agent)(ctx)
            if crash_on_request is None and ctx.attempt == 1:
                await ctx.flush()
                store.die()
                await anyio.sleep_forever()
            return output

    engines: list[RunEngine] = []
    return agents


async def resume_after_crash(agents: Any) -> tuple[Any, list[Any]]:
    """The run of `adder` after its first engine died (store.die()) and a second one resumed it."""
    run_id, second = await crash_then_resume(agents, "adder", "2+3?")
    async with second:
        state = await second.wait(run_id)
        log = await full_log(second, run_id)
    return state, log


async def test_a_resumed_run_repeats_no_recorded_model_request_and_no_tool_call():
    calls: list[list[ModelMessage]] = []
    adds: list[tuple[int, int]] = []
    state, log = await resume_after_crash(durable_agents(calls, adds, crash_on_request=None))
    assert state.status is Status.COMPLETED and state.output == "The sum is 5."
    assert len(calls) == 2 and adds == [(2, 3)]  # both requests and the tool call replayed from the log
    assert [m.content for m in state.messages] == ["The sum is 5."]
    assert [e.type for e in log].count("run.resumed") == 1


async def test_a_model_request_in_flight_at_the_crash_is_made_again_and_nothing_before_it():
    calls: list[list[ModelMessage]] = []
    adds: list[tuple[int, int]] = []
    state, log = await resume_after_crash(durable_agents(calls, adds, crash_on_request=2))
    assert state.status is Status.COMPLETED and state.output == "The sum is 5."
    # Request 1 recorded (replayed), request 2 in flight at the crash (made again), the tool once.
    assert len(calls) == 3 and adds == [(2, 3)]
    assert [m.content for m in state.messages] == ["The sum is 5."]
    assert [e.name for e in log if e.type == "step.completed"] == [MODEL_STEP, MODEL_STEP, MESSAGES_STEP]


def approval_agent(ran: list[str]) -> Agent[None, str]:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        returns = [p for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
        if returns:
            yield f"result: {returns[-1].content}"
        else:
            yield {0: DeltaToolCall(name="delete", json_args='{"path": "/tmp/x"}', tool_call_id="del_1")}
            yield {1: DeltaToolCall(name="weather", json_args='{"city": "Oslo"}', tool_call_id="wx_1")}

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool_plain(requires_approval=True)
    def delete(path: str) -> str:
        ran.append(path)
        return f"deleted {path}"

    @agent.tool_plain
    def weather(city: str) -> str:
        raise CallDeferred()  # the result comes from outside the agent

    return agent


async def test_approval_and_deferred_tools_wait_for_input_and_go_on_with_it():
    ran: list[str] = []
    engine = RunEngine(MemoryStore())
    engine.agent("guarded")(pydantic_ai_agent(approval_agent(ran)))
    async with engine:
        run = await engine.execute("guarded", "clean up", mode="async")
        waiting = await engine.wait(run.run_id)
        assert waiting.status is Status.WAITING_FOR_INPUT and ran == []
        assert waiting.await_request == {"type": "approval", "tool": "delete", "arguments": {"path": "/tmp/x"}, "call_id": "del_1"}
        await engine.resume(run.run_id, {"approved": True})
        waiting = await engine.wait(run.run_id)
        assert waiting.status is Status.WAITING_FOR_INPUT
        assert waiting.await_request["type"] == "tool_result" and waiting.await_request["tool"] == "weather"
        await engine.resume(run.run_id, "rain")
        state = await engine.wait(run.run_id)
    assert state.status is Status.COMPLETED, state.error
    assert ran == ["/tmp/x"]
    # The deferral is recorded as the weather call's result (so a replay defers again); delete ran once.
    assert [(c.name, c.output) for c in state.tool_calls] == [
        ("weather", {"__pydantic_ai_control__": "deferred", "metadata": None, "kind": "external"}),
        ("delete", "deleted /tmp/x"),
    ]


async def test_a_denied_approval_does_not_run_the_tool():
    ran: list[str] = []
    engine = RunEngine(MemoryStore())
    engine.agent("guarded")(pydantic_ai_agent(approval_agent(ran)))
    async with engine:
        run = await engine.execute("guarded", "clean up", mode="async")
        await engine.wait(run.run_id)
        await engine.resume(run.run_id, "no")
        await engine.wait(run.run_id)
        await engine.resume(run.run_id, "rain")
        state = await engine.wait(run.run_id)
    assert state.status is Status.COMPLETED
    assert ran == [] and [c.name for c in state.tool_calls] == ["weather"]


async def test_a_run_waiting_for_approval_goes_on_in_the_next_engine_without_asking_the_model_again():
    store = MemoryStore()
    ran: list[str] = []
    requests: list[int] = []

    def make() -> RunEngine:
        agent = approval_agent(ran)
        counted = agent.model
        assert isinstance(counted, FunctionModel) and counted.stream_function is not None
        inner = counted.stream_function

        async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
            requests.append(1)
            async for piece in inner(messages, info):  # type: ignore[misc]
                yield piece

        engine = RunEngine(store)
        engine.agent("guarded")(pydantic_ai_agent(agent, model=FunctionModel(stream_function=stream)))
        return engine

    async with make() as engine:
        run = await engine.execute("guarded", "clean up")
        assert run.status is Status.WAITING_FOR_INPUT
    assert len(requests) == 1
    async with make() as engine:
        await engine.resume(run.run_id, True)
        await engine.wait(run.run_id)
        await engine.resume(run.run_id, "rain")
        state = await engine.wait(run.run_id)
    assert state.status is Status.COMPLETED and state.output == "result: rain"
    assert ran == ["/tmp/x"]
    assert len(requests) == 2  # the first request replayed from the log; one more after the answers


REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"


@pytest.mark.server
def test_the_example_serves_with_its_documented_command_on_the_test_model() -> None:
    """`runengine serve --app examples.pydantic_ai_agent:engine` from the repository root with
    PYDANTIC_AI_MODEL=test: TestModel calls both tools, the one that needs approval waits for it."""
    port = free_port()
    env = {**os.environ, "PYDANTIC_AI_MODEL": "test", "RUNENGINE_STORE": "memory://"}
    process = subprocess.Popen(
        [*COMMAND, "serve", "--app", "examples.pydantic_ai_agent:engine", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        with httpx.Client(base_url=url, timeout=30.0) as http:
            run = http.post("/runs", json={"agent": "assistant", "input": "roll", "session_id": "ex"}).json()
            assert run["status"] == "waiting_for_input", run
            assert run["await_request"]["type"] == "approval" and run["await_request"]["tool"] == "forget_session"
            assert http.post(f"/runs/{run['run_id']}/input", json={"content": True}).status_code == 200
            for _ in range(300):
                done = http.get(f"/runs/{run['run_id']}").json()
                if done["status"] not in ("running", "pending"):
                    break
                time.sleep(0.1)
            assert done["status"] == "completed", done
            assert sorted(c["name"] for c in done["tool_calls"]) == ["forget_session", "roll_die"]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)


async def test_tools_the_model_calls_together_run_one_after_another_in_its_order():
    steps: list[str] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        if answered(messages):
            yield "both done"
        else:
            yield {0: DeltaToolCall(name="first", json_args="{}", tool_call_id="c_first")}
            yield {1: DeltaToolCall(name="second", json_args="{}", tool_call_id="c_second")}

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool_plain
    async def first() -> str:
        steps.append("first started")
        for _ in range(5):  # gives a concurrent call every chance to start meanwhile
            await anyio.lowlevel.checkpoint()
        steps.append("first ended")
        return "1"

    @agent.tool_plain
    async def second() -> str:
        steps.append("second started")
        return "2"

    engine = RunEngine(MemoryStore())
    engine.agent("pair")(pydantic_ai_agent(agent))
    async with engine:
        state = await engine.execute("pair", "go")
    assert state.status is Status.COMPLETED
    assert steps == ["first started", "first ended", "second started"]
    assert [c.call_id for c in state.tool_calls] == ["c_first", "c_second"]


async def test_a_tool_in_flight_at_the_crash_runs_again_with_the_same_idempotency_key():
    keys: list[str] = []

    def agents(engine: RunEngine, store: DyingStore) -> None:
        agent = Agent(adder_model([]))

        @agent.tool_plain
        async def add(a: int, b: int) -> int:
            keys.append(current_idempotency_key())  # what a payment API would be given
            if len(keys) == 1:
                store.die()  # in flight: tool.call recorded, tool.result never
                await anyio.sleep_forever()
            return a + b

        engine.agent("adder")(pydantic_ai_agent(agent))

    with anyio.fail_after(30):  # without a key the tool fails and never reaches its crash
        state, _ = await resume_after_crash(agents)
    assert state.status is Status.COMPLETED and state.output == "The sum is 5."
    assert keys == [f"{state.run_id}/tool/call_add"] * 2


class Booking(BaseModel):
    city: str
    nights: int


@dataclass
class Guest:
    name: str
    vip: bool = False


def booking_model(seen: list[list[ModelMessage]]) -> FunctionModel:
    """Answers through the output tool with a Booking (its arguments streamed), greeting the guest in deps."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        seen.append(messages)
        output_tool = info.output_tools[0].name
        yield {0: DeltaToolCall(name=output_tool, json_args='{"city": "Oslo", ', tool_call_id=f"out_{len(seen)}")}
        yield {0: DeltaToolCall(json_args='"nights": 3}')}

    return FunctionModel(stream_function=stream)


async def test_structured_output_is_the_runs_output_and_its_arguments_stream_as_they_arrive():
    seen: list[list[ModelMessage]] = []
    engine = RunEngine(MemoryStore())
    engine.agent("book")(pydantic_ai_agent(Agent(booking_model(seen)), output_type=Booking))
    async with engine:
        first = await engine.execute("book", "a room in Oslo", session_id="s")
        second = await engine.execute("book", "and again", session_id="s")
        log = await full_log(engine, first.run_id)
    assert first.status is Status.COMPLETED and first.output == {"city": "Oslo", "nights": 3}
    assert second.output == {"city": "Oslo", "nights": 3}
    pieces = [e.data for e in log if e.type == "custom" and e.name == TOOL_ARGUMENTS_DELTA]
    assert [p["delta"] for p in pieces] == ['{"city": "Oslo", ', '"nights": 3}']
    assert {(p["call_id"], p["tool"]) for p in pieces} == {("out_1", "final_result")}
    # Turn 2 saw turn 1 whole (the output tool's call and return) and then its own prompt.
    prompts = [p.content for m in seen[1] for p in m.parts if isinstance(p, UserPromptPart)]
    assert prompts == ["a room in Oslo", "and again"]
    assert any(isinstance(p, ToolCallPart) and p.tool_call_id == "out_1" for m in seen[1] for p in m.parts)


async def test_deps_come_from_the_runs_metadata_as_the_agents_deps_type_and_bad_ones_fail_the_run():
    greeted: list[Guest] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        if answered(messages):
            yield "done"
        else:
            yield {0: DeltaToolCall(name="greet", json_args="{}", tool_call_id="g")}

    agent = Agent(FunctionModel(stream_function=model), deps_type=Guest)

    @agent.tool
    def greet(run: PydanticRunContext[Guest]) -> str:
        greeted.append(run.deps)
        return f"hello {run.deps.name}"

    engine = RunEngine(MemoryStore())
    engine.agent("greeter")(pydantic_ai_agent(agent))
    engine.agent("factory")(pydantic_ai_agent(agent, deps=lambda ctx: Guest(name=ctx.input.upper())))
    async with engine:
        state = await engine.execute("greeter", "hi", metadata={"deps": {"name": "Ada", "vip": True}})
        bad = await engine.execute("greeter", "hi", metadata={"deps": {"vip": "maybe"}})
        made = await engine.execute("factory", "bo")
    assert state.status is Status.COMPLETED and state.tool_calls[0].output == "hello Ada"
    assert greeted[0] == Guest(name="Ada", vip=True)
    assert bad.status is Status.FAILED and bad.error.code == INVALID_DEPS and "name" in bad.error.message
    assert bad.tool_calls == () and len(greeted) == 2  # nothing ran for the bad one
    assert made.tool_calls[0].output == "hello BO"


async def test_pydantic_ai_usage_limits_fail_the_run_with_their_code_and_the_engines_event_limit_with_its_own():
    requests: list[int] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        requests.append(1)  # calls its tool forever
        yield {0: DeltaToolCall(name="again", json_args="{}", tool_call_id=f"c{len(requests)}")}

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool_plain
    def again() -> str:
        return "again"

    engine = RunEngine(MemoryStore(), limits=RunLimits(max_events_per_run=40))
    engine.agent("limited")(pydantic_ai_agent(agent, usage_limits=UsageLimits(request_limit=3)))
    engine.agent("unlimited")(pydantic_ai_agent(agent, usage_limits=UsageLimits(request_limit=None)))
    async with engine:
        limited = await engine.execute("limited", "go")
        assert len(requests) == 3
        unlimited = await engine.execute("unlimited", "go")
        log = await full_log(engine, unlimited.run_id)
    assert limited.status is Status.FAILED and limited.error.code == USAGE_LIMIT_EXCEEDED
    assert "request_limit of 3" in limited.error.message
    assert unlimited.status is Status.FAILED and unlimited.error.code == "too_many_events"
    assert len(log) == 40


@pytest.mark.slow
def test_three_turns_across_a_sigkill_in_turn_two_turn_three_sees_turn_ones_tool_result(tmp_path: Path) -> None:
    """`runengine serve` on SQLite, a session of three turns with tools (tests/integration_apps.py):
    turn 2's process is SIGKILLed while its second model request is in flight (its tool's result
    recorded). The restarted server finishes turn 2 without repeating the recorded request or the
    tool, and turn 3's model finds turn 1's tool result among its input messages."""
    counters = tmp_path / "effects.db"
    create_counters(counters)
    server = ServeProcess(
        ["--app", "integration_apps:pydantic_memo_engine", "--log-level", "warning"],
        tmp_path / "serve.log",
        env={"RUNENGINE_DURABLE_STORE": f"sqlite:///{tmp_path / 'runs.db'}", "RUNENGINE_DURABLE_COUNTERS": str(counters),
             "RUNENGINE_KILL_MARKER": str(tmp_path / "killed")},
        cwd=TESTS,
    )
    server.start()
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            first = client.post("/runs", json={"agent": "memo", "input": "store", "session_id": "memo"}).json()
            assert first["status"] == "completed" and first["output"] == "stored.", first
            secret = first["tool_calls"][0]["output"]
            second = client.post("/runs", json={"agent": "memo", "input": "work", "session_id": "memo", "mode": "async"}).json()
        assert server.process is not None
        assert server.process.wait(timeout=60) == -signal.SIGKILL  # killed itself in turn 2
        server.process = None
        server.start()  # recovers the unfinished run at start
        with httpx.Client(base_url=server.base, timeout=30) as client:
            done = until_sync(lambda: _ended(client, second["run_id"]), timeout=60)
            assert done["status"] == "completed" and done["output"] == "worked.", done
            third = client.post("/runs", json={"agent": "memo", "input": "recall", "session_id": "memo"}).json()
            assert third["status"] == "completed", third
            assert third["output"] == f"the secret is {secret}"
            types = [e["type"] for e in read_log(client, second["run_id"])]
    finally:
        server.kill(signal.SIGKILL)
    assert types.count("run.resumed") == 1 and types.count("message.discarded") <= 1
    assert read_counters(counters) == {
        ("store", "model"): 2, ("store", "secret"): 1,
        # Request 1 recorded (replayed, not made again), request 2 in flight at the kill (made again).
        ("work", "model"): 3, ("work", "work"): 1,
        ("recall", "model"): 1,
    }


def _ended(client: httpx.Client, run_id: str) -> dict[str, Any] | None:
    state = client.get(f"/runs/{run_id}").json()
    return state if state["status"] not in ("pending", "running") else None


async def test_model_requests_wait_for_the_engines_step_limit_and_spend_its_tokens() -> None:
    from runengine.options import Flow, StepLimit
    from runengine.testing.clock import VirtualClock

    requests: list[int] = []

    async def reply(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        requests.append(len(messages))
        yield "fine"

    clock = VirtualClock()
    engine = RunEngine(
        MemoryStore(), clock=clock, flow=Flow(step_limits={"llm": StepLimit(requests_per_minute=1, tokens_per_minute=100_000)})
    )
    engine.agents.add(agent_from_pydantic_ai(Agent(FunctionModel(stream_function=reply)), name="pyd", limit="llm"))
    async with engine:
        first = await engine.execute("pyd", "hi", mode="async")
        second = await engine.execute("pyd", "hi", mode="async")
        with anyio.fail_after(10):
            assert (await engine.wait(first.run_id)).status is Status.COMPLETED
        await anyio.sleep(0.1)
        assert len(requests) == 1  # one request a minute: the second run's waits
        await clock.advance(60)
        with anyio.fail_after(10):
            done = await engine.wait(second.run_id)
        spent = engine.driver.limiter.buckets._buckets["step:llm:tokens"]
    assert done.status is Status.COMPLETED and len(requests) == 2
    assert spent.tokens < 100_000  # the second request's usage was spent from the budget
