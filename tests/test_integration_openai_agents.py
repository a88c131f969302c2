"""runengine.integrations.openai_agents: an OpenAI Agents SDK agent run as a runengine agent, the
SDK's own chat-completions model talking to the OpenAI-compatible server on 127.0.0.1
(tests/openai_server.py): streaming, function tools, a handoff, a guardrail trip, session memory,
and a crash resumed without repeating a recorded model call or tool (counted at the server)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from agents import (
    Agent,
    GuardrailFunctionOutput,
    OpenAIChatCompletionsModel,
    OpenAIProvider,
    RunConfig,
    function_tool,
    handoff,
    input_guardrail,
)
from pydantic import BaseModel

from kit import free_port, full_log
from openai_server import FakeOpenAI, Reply, text, tool_calls
from runengine import RunEngine, Status
from runengine.adapters.memory import MemoryStore
from runengine.context import TOOL_ARGUMENTS_DELTA
from runengine.integrations.openai_agents import (
    APPROVAL_NOT_SUPPORTED,
    GUARDRAIL_TRIPPED,
    HANDOFF,
    MAX_TURNS_EXCEEDED,
    MODEL_STEP,
    SESSION_STEP,
    agent_from_openai_agents,
    openai_agents_agent,
)
from test_cli import COMMAND, wait_ready
from test_durable_core import DyingStore, crash_then_resume
from test_integration_openai import api, client_for  # noqa: F401 - the fake server's fixture

pytestmark = [pytest.mark.anyio, pytest.mark.server]

ANYIO_BACKENDS = ("asyncio",)  # the SDK and uvicorn run on asyncio


def config(base_url: str) -> RunConfig:
    """The SDK's OpenAI provider on the test server's chat completions, tracing off."""
    return RunConfig(model_provider=OpenAIProvider(openai_client=client_for(base_url), use_responses=False), tracing_disabled=True)


def adder(adds: list[tuple[int, int]]) -> Agent[Any]:
    @function_tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        adds.append((a, b))
        return a + b

    return Agent(name="adder", instructions="Add.", model="test-model", tools=[add])


async def test_text_streams_as_deltas_tools_go_through_tool_call_and_arguments_stream_as_they_arrive(api):
    fake, base_url = api
    fake.script(tool_calls(("call_1", "add", {"a": 2, "b": 3})), text("The sum ", "is 5.", prompt_tokens=9, completion_tokens=4, reasoning="add them"))
    adds: list[tuple[int, int]] = []
    engine = RunEngine(MemoryStore())
    engine.agents.add(agent_from_openai_agents(adder(adds), name="adder", run_config=config(base_url)))
    async with engine:
        state = await engine.execute("adder", "2+3?")
        log = await full_log(engine, state.run_id)
    assert state.status is Status.COMPLETED, state.error
    assert state.output == "The sum is 5."
    assert [e.content for e in log if e.type == "message.delta"] == ["The sum ", "is 5."]
    assert [m.content for m in state.messages] == ["The sum is 5."]
    assert [e.content for e in log if e.type == "thought"] == ["add them"]
    assert [(c.call_id, c.name, c.arguments, c.output) for c in state.tool_calls] == [("call_1", "add", {"a": 2, "b": 3}, 5)]
    assert adds == [(2, 3)]
    pieces = [e.data for e in log if e.type == "custom" and e.name == TOOL_ARGUMENTS_DELTA]
    assert "".join(p["delta"] for p in pieces) == '{"a": 2, "b": 3}' and len(pieces) == 2
    assert {(p["call_id"], p["tool"]) for p in pieces} == {("call_1", "add")}
    assert [e.name for e in log if e.type == "step.completed"] == [MODEL_STEP, MODEL_STEP]
    assert [(u.input_tokens, u.output_tokens) for u in log if u.type == "usage"] == [(5, 2), (9, 4)]
    # The SDK asked to stream, and sent the tool's result back.
    assert all(request["stream"] is True for request in fake.requests)
    assert {"role": "tool", "tool_call_id": "call_1", "content": "5"} in fake.requests[1]["messages"]


@pytest.mark.parametrize("given_as", ["agent", "handoff"])
async def test_a_handoff_is_recorded_and_the_agent_handed_to_answers_with_its_own_model_and_tools(api, given_as):
    fake, base_url = api
    fake.script(tool_calls(("h_1", "transfer_to_billing", {})), tool_calls(("call_r", "refund", {"amount": 7})), text("Refunded 7."))
    refunds: list[int] = []

    @function_tool
    def refund(amount: int) -> str:
        """Refund an amount."""
        refunds.append(amount)
        return f"refunded {amount}"

    # The agent handed to has its model as an instance (not a name): recorded just the same.
    billing = Agent(name="billing", instructions="Refund.", tools=[refund],
                    model=OpenAIChatCompletionsModel(model="billing-model", openai_client=client_for(base_url)))
    target = billing if given_as == "agent" else handoff(billing)
    triage = Agent(name="triage", instructions="Route.", model="test-model", handoffs=[target])
    engine = RunEngine(MemoryStore())
    engine.agent("triage")(openai_agents_agent(triage, run_config=config(base_url)))
    async with engine:
        state = await engine.execute("triage", "refund me 7")
        log = await full_log(engine, state.run_id)
    assert state.status is Status.COMPLETED and state.output == "Refunded 7.", state.error
    assert [e.data for e in log if e.type == "custom" and e.name == HANDOFF] == [{"from": "triage", "to": "billing"}]
    assert [e.name for e in log if e.type == "step.completed"] == [MODEL_STEP] * 3
    assert [c.name for c in state.tool_calls] == ["refund"] and refunds == [7]
    assert [r["model"] for r in fake.requests] == ["test-model", "billing-model", "billing-model"]
    assert triage.handoffs == [target] and billing.tools == [refund]  # the given agents are untouched


async def test_a_tripped_guardrail_fails_the_run_with_its_own_code(api):
    fake, base_url = api
    fake.script(text("never shown"))

    @input_guardrail(run_in_parallel=False)
    def no_secrets(context: Any, agent: Any, input: Any) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered="password" in str(input))

    guarded = Agent(name="guarded", model="test-model", input_guardrails=[no_secrets])
    engine = RunEngine(MemoryStore())
    engine.agent("guarded")(openai_agents_agent(guarded, run_config=config(base_url)))
    async with engine:
        tripped = await engine.execute("guarded", "my password is hunter2")
        fine = await engine.execute("guarded", "hello")
    assert tripped.status is Status.FAILED and tripped.error.code == GUARDRAIL_TRIPPED
    assert "no_secrets" in tripped.error.message
    assert fine.status is Status.COMPLETED and fine.output == "never shown"
    assert len(fake.requests) == 1  # the tripped run never reached the model


async def test_a_tool_that_raises_is_reported_to_the_model_as_the_sdk_does_and_recorded_as_its_result(api):
    fake, base_url = api
    fake.script(tool_calls(("call_x", "explode", {})), text("It failed, sorry."))

    @function_tool
    def explode() -> str:
        """Always fails."""
        raise ValueError("boom")

    engine = RunEngine(MemoryStore())
    engine.agent("x")(openai_agents_agent(Agent(name="x", model="test-model", tools=[explode]), run_config=config(base_url)))
    async with engine:
        state = await engine.execute("x", "go")
    assert state.status is Status.COMPLETED and state.output == "It failed, sorry."
    [call] = state.tool_calls
    assert call.error is None and call.output.startswith("An error occurred while running the tool")  # the SDK's text
    assert {"role": "tool", "tool_call_id": "call_x", "content": call.output} in fake.requests[1]["messages"]


async def test_max_turns_and_a_tool_that_needs_approval_fail_the_run_with_their_codes(api):
    fake, base_url = api
    fake.script(tool_calls(("call_d", "delete", {"path": "/tmp/x"})))  # every reply calls the tool again
    deleted: list[str] = []

    @function_tool(needs_approval=True)
    def delete(path: str) -> str:
        """Delete a file."""
        deleted.append(path)
        return "deleted"

    @function_tool
    def look(path: str) -> str:
        """Look at a file."""
        return "a file"

    engine = RunEngine(MemoryStore())
    engine.agent("careful")(openai_agents_agent(Agent(name="careful", model="test-model", tools=[delete]), run_config=config(base_url)))
    engine.agent("looping")(
        openai_agents_agent(Agent(name="looping", model="test-model", tools=[look]), run_config=config(base_url), max_turns=2)
    )
    async with engine:
        careful = await engine.execute("careful", "clean up")
        fake.script(tool_calls(("call_l", "look", {"path": "/tmp/x"})))
        looping = await engine.execute("looping", "look forever")
    assert careful.status is Status.FAILED and careful.error.code == APPROVAL_NOT_SUPPORTED, careful.error
    assert "delete" in careful.error.message and deleted == []
    assert looping.status is Status.FAILED and looping.error.code == MAX_TURNS_EXCEEDED, looping.error


class Answer(BaseModel):
    name: str
    turns: int


async def test_session_memory_is_the_sessions_recorded_items_and_structured_output_is_the_runs_output(api):
    fake, base_url = api
    fake.script(text("Hi Ada."), text('{"name": "Ada", "turns": 2}'))
    engine = RunEngine(MemoryStore())
    chat = Agent(name="chat", model="test-model")
    engine.agent("chat")(openai_agents_agent(chat, run_config=config(base_url)))
    engine.agent("form")(openai_agents_agent(chat.clone(output_type=Answer), run_config=config(base_url)))
    async with engine:
        first = await engine.execute("chat", "I am Ada.", session_id="s")
        second = await engine.execute("form", "Who am I?", session_id="s")
        log = await full_log(engine, first.run_id)
    assert first.output == "Hi Ada." and second.output == {"name": "Ada", "turns": 2}, second.error
    sent = [(m["role"], m["content"]) for m in fake.requests[1]["messages"] if m["role"] in ("user", "assistant")]
    assert sent == [("user", "I am Ada."), ("assistant", "Hi Ada."), ("user", "Who am I?")]
    assert any(e.type == "step.completed" and e.name == SESSION_STEP for e in log)  # kept in the run's own log


def durable_agents(fake: FakeOpenAI, base_url: str, charges: list[int], die_on_request: int | None) -> Any:
    """`shop` charges through a tool, then answers; the model call number `die_on_request` (as the
    server counts them) kills the first engine, or with None the end of its first attempt does."""

    def agents(engine: RunEngine, store: DyingStore) -> None:
        @function_tool
        def charge(amount: int) -> dict[str, int]:
            """Charge an amount."""
            charges.append(amount)
            return {"charged": amount}

        run = openai_agents_agent(Agent(name="shop", model="test-model", tools=[charge]), run_config=config(base_url))

        @engine.agent("shop")
        async def shop(ctx):
            output = await run(ctx)
            if die_on_request is None and ctx.attempt == 1 and ctx.input == "charge 5":
                await ctx.flush()
                store.die()
                await anyio.sleep_forever()
            return output

        if die_on_request is not None and not isinstance(fake.requests, DieOnRequest):  # the first engine's
            fake.requests = DieOnRequest(fake.requests)
            fake.requests.when, fake.requests.store = die_on_request, store

    return agents


class DieOnRequest(list):
    """The server's list of requests, which kills `store` when request number `when` arrives."""

    when: int
    store: DyingStore

    def append(self, item: Any) -> None:
        super().append(item)
        if len(self) == self.when and not self.store.dead:
            self.store.die()


async def resume(api: Any, die_on_request: int | None, session: Any = None) -> tuple[Any, list[int], Any]:
    fake, base_url = api
    charges: list[int] = []
    agents = durable_agents(fake, base_url, charges, die_on_request)
    run_id, second = await crash_then_resume(agents, "shop", "charge 5", session=session)
    async with second:
        state = await second.wait(run_id)
        log = await full_log(second, run_id)
    return state, charges, log


async def test_a_resumed_run_makes_no_recorded_model_call_and_no_recorded_tool_call_again(api):
    fake, _ = api
    fake.script(tool_calls(("call_1", "charge", {"amount": 5})), text("Charged ", "5."))
    state, charges, log = await resume(api, die_on_request=None)
    assert state.status is Status.COMPLETED and state.output == "Charged 5.", state.error
    assert len(fake.requests) == 2 and charges == [5]  # both model calls and the tool replayed from the log
    assert [m.content for m in state.messages] == ["Charged 5."]
    assert [e.type for e in log].count("run.resumed") == 1


async def test_a_resumed_run_in_a_session_replays_what_it_told_the_session_memory(api):
    fake, _ = api
    fake.script(text("First."), tool_calls(("call_1", "charge", {"amount": 5})), text("Charged ", "5."))

    async def earlier_turn(engine: RunEngine) -> str:
        await engine.create_session(session_id="shop-session")
        await engine.execute("shop", "hello", session_id="shop-session")
        return "shop-session"

    state, charges, log = await resume(api, die_on_request=None, session=earlier_turn)
    assert state.status is Status.COMPLETED and state.output == "Charged 5.", state.error
    assert len(fake.requests) == 3 and charges == [5]  # the earlier turn's call, then this run's two, none again
    sent = [(m["role"], m.get("content")) for m in fake.requests[1]["messages"] if m["role"] in ("user", "assistant")]
    assert sent == [("user", "hello"), ("assistant", "First."), ("user", "charge 5")]
    changes = [e.output for e in log if e.type == "step.completed" and e.name == SESSION_STEP]
    assert [item.get("role") for change in changes for item in change["add"]][:1] == ["user"]
    assert [e.type for e in log].count("run.resumed") == 1


async def test_a_model_call_in_flight_at_the_crash_is_made_again_and_nothing_recorded_before_it(api):
    fake, _ = api
    fake.script(tool_calls(("call_1", "charge", {"amount": 5})), Reply(text("Charged ", "5.").chunks, cut_after=2), text("Charged ", "5."))
    state, charges, log = await resume(api, die_on_request=2)
    assert state.status is Status.COMPLETED and state.output == "Charged 5.", state.error
    # Call 1 recorded (replayed), call 2 in flight at the crash (made again), the tool once.
    assert len(fake.requests) == 3 and charges == [5]
    assert [m.content for m in state.messages] == ["Charged 5."]
    assert [e.name for e in log if e.type == "step.completed"] == [MODEL_STEP, MODEL_STEP]


REPO = Path(__file__).resolve().parent.parent


async def test_the_example_serves_with_its_documented_command_against_the_test_server(api):
    """`runengine serve --app examples.openai_agents_agent:engine` from the repository root, the
    model being the test server (OPENAI_BASE_URL, chat completions): a run calls the tool, a
    session's second run sees the first, a password trips the guardrail."""
    fake, base_url = api
    fake.script(tool_calls(("call_m", "multiply", {"a": 17, "b": 23})), text("17 * 23 = ", "391"), text("You asked 17 * 23."))
    port = free_port()
    env = {**os.environ, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "test-key", "OPENAI_MODEL": "test-model",
           "RUNENGINE_STORE": "memory://"}
    process = subprocess.Popen(
        [*COMMAND, "serve", "--app", "examples.openai_agents_agent:engine", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await anyio.to_thread.run_sync(wait_ready, url, process)  # the loop goes on serving the test API
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
            first = (await http.post("/runs", json={"agent": "assistant", "input": "17*23?", "session_id": "ex"})).json()
            assert first["status"] == "completed" and first["output"] == "17 * 23 = 391", first
            again = (await http.post("/runs", json={"agent": "assistant", "input": "what did I ask?", "session_id": "ex"})).json()
            assert again["output"] == "You asked 17 * 23.", again
            tripped = (await http.post("/runs", json={"agent": "assistant", "input": "my password is x"})).json()
            assert tripped["status"] == "failed" and tripped["error"]["code"] == GUARDRAIL_TRIPPED, tripped
    finally:
        process.send_signal(signal.SIGINT)
        await anyio.to_thread.run_sync(process.wait, 20)
    assert [r["model"] for r in fake.requests] == ["test-model"] * 3
    assert {"role": "tool", "tool_call_id": "call_m", "content": "391.0"} in fake.requests[1]["messages"]  # float tool
    assert {"role": "user", "content": "17*23?"} in fake.requests[2]["messages"]
