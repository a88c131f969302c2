"""runengine.integrations.openai with the real `openai` client against an OpenAI-compatible server
on 127.0.0.1 (tests/openai_server.py): streaming, tool calls, durability, 429 / 500 / a cut stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from openai import AsyncOpenAI

from httpkit import serve
from kit import free_port
from kit import full_log
from openai_server import FakeOpenAI, Reply, error, text, tool_calls
from runengine import RunEngine, Status, StepFailed
from runengine.adapters.memory import MemoryStore
from runengine.integrations.openai import Tool, chat, session_messages, tool_loop
from test_cli import COMMAND, wait_ready
from test_durable_core import DyingStore, crash_then_resume

pytestmark = [pytest.mark.anyio, pytest.mark.server]


ANYIO_BACKENDS = ("asyncio",)  # uvicorn serves the fake API in the test's loop


_clients: list[AsyncOpenAI] = []


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI(text("unused"))
    async with serve(fake.app, lifespan="off", access_log=False) as url:
        try:
            yield fake, f"{url}/v1"
        finally:
            while _clients:  # closed in the loop that opened their connections
                await _clients.pop().close()


def client_for(base_url: str, max_retries: int = 2) -> AsyncOpenAI:
    client = AsyncOpenAI(base_url=base_url, api_key="test-key", max_retries=max_retries)
    _clients.append(client)
    return client


async def test_a_streamed_reply_becomes_deltas_one_message_a_thought_and_usage(api):
    fake, base_url = api
    fake.script(text("Hel", "lo ", "world", reasoning="think first", prompt_tokens=11, completion_tokens=4))
    engine = RunEngine(MemoryStore())

    @engine.agent("talk")
    async def talk(ctx):
        reply = await chat(ctx, client_for(base_url), model="m", messages=[{"role": "user", "content": ctx.input}])
        return reply["finish_reason"]

    async with engine:
        state = await engine.execute("talk", "hi")
        log = await full_log(engine, state.run_id)
    assert state.status is Status.COMPLETED and state.output == "stop"
    assert [e.content for e in log if e.type == "message.delta"] == ["Hel", "lo ", "world"]
    assert [m.content for m in state.messages] == ["Hello world"]
    assert [e.content for e in log if e.type == "thought"] == ["think first"]
    usage = [e for e in log if e.type == "usage"]
    assert [(u.input_tokens, u.output_tokens) for u in usage] == [(11, 4)]
    request = fake.requests[0]
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    assert request["messages"] == [{"role": "user", "content": "hi"}]


async def test_tool_call_fragments_are_assembled_and_results_fed_back_until_the_model_stops(api):
    fake, base_url = api
    fake.script(
        tool_calls(("call_a", "add", {"a": 2, "b": 3}), ("call_b", "nope", {}), ("call_c", "add", "{not json")),
        text("5, as asked"),
    )
    engine = RunEngine(MemoryStore())
    add = Tool(
        name="add",
        fn=lambda a, b: a + b,
        description="add two numbers",
        parameters={"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
    )

    @engine.agent("calc")
    async def calc(ctx):
        reply = await tool_loop(ctx, client_for(base_url), model="m", messages=[{"role": "user", "content": "2+3?"}], tools=[add])
        return reply["content"]

    async with engine:
        state = await engine.execute("calc", None)
        log = await full_log(engine, state.run_id)
    assert state.status is Status.COMPLETED and state.output == "5, as asked"
    calls = [e for e in log if e.type == "tool.call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("call_a", "add", {"a": 2, "b": 3}),
        ("call_b", "nope", {}),
        ("call_c", "add", {"arguments": "{not json"}),
    ]
    results = {e.call_id: e for e in log if e.type == "tool.result"}
    assert results["call_a"].output == 5
    assert "no tool named 'nope'" in results["call_b"].error.message
    assert "not valid JSON" in results["call_c"].error.message
    assert fake.requests[0]["tools"][0]["function"]["name"] == "add"
    # The second request carries the assistant's tool calls and one tool message per call.
    second = fake.requests[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "tool", "tool", "tool"]
    assert second[1]["tool_calls"][0]["function"] == {"name": "add", "arguments": json.dumps({"a": 2, "b": 3})}
    assert second[2] == {"role": "tool", "tool_call_id": "call_a", "content": "5"}
    assert "no tool named" in json.loads(second[3]["content"])["error"]


def durable_agents(base_url: str, charges: list[int], die_when: Any) -> Any:
    """An agent that charges through a tool, then asks the model for a summary; `die_when(store, ctx)` crashes it."""

    def agents(engine: RunEngine, store: DyingStore) -> None:
        def charge(amount: int) -> dict[str, int]:
            charges.append(amount)
            return {"charged": amount}

        tool = Tool(name="charge", fn=charge, parameters={"type": "object", "properties": {"amount": {"type": "integer"}}})

        @engine.agent("shop")
        async def shop(ctx):
            client = client_for(base_url)
            reply = await tool_loop(ctx, client, model="m", messages=[{"role": "user", "content": "charge 5"}], tools=[tool])
            await die_when(store, ctx)
            return reply["content"]

    return agents


async def resume_after_crash(agents: Any) -> tuple[Any, list[Any]]:
    """The run of `shop` after its first engine died (store.die()) and a second one resumed it."""
    run_id, second = await crash_then_resume(agents, "shop", None)
    async with second:
        state = await second.wait(run_id)
        log = await full_log(second, run_id)
    return state, log


async def test_a_resumed_run_calls_neither_the_model_nor_the_tools_again(api):
    fake, base_url = api
    fake.script(tool_calls(("call_1", "charge", {"amount": 5})), text("Charged ", "5."))
    charges: list[int] = []

    async def die_after_the_loop(store: DyingStore, ctx: Any) -> None:
        await ctx.flush()
        if ctx.attempt == 1:
            store.die()
            await anyio.sleep_forever()

    state, log = await resume_after_crash(durable_agents(base_url, charges, die_after_the_loop))
    assert state.status is Status.COMPLETED and state.output == "Charged 5."
    assert len(fake.requests) == 2  # two model calls, both recorded, none made again
    assert charges == [5]
    assert [m.content for m in state.messages] == ["Charged 5."]
    assert [e.type for e in log].count("usage") == 2


async def test_a_model_call_in_flight_at_the_crash_is_made_again_and_its_half_message_discarded(api):
    fake, base_url = api
    charges: list[int] = []
    engines: list[DyingStore] = []

    # The second model call kills the first process once its first delta is out.
    fake.script(tool_calls(("call_1", "charge", {"amount": 5})), Reply(text("Charged ", "5.").chunks, cut_after=2), text("Charged ", "5."))

    async def never(store: DyingStore, ctx: Any) -> None:
        return None

    agents = durable_agents(base_url, charges, never)

    def dying_agents(engine: RunEngine, store: DyingStore) -> None:
        engines.append(store)
        agents(engine, store)
        original = fake.requests

        class DieOnSecondCall(list):
            def append(self, item: Any) -> None:
                super().append(item)
                if len(self) == 2 and not store.dead:
                    store.die()

        if len(engines) == 1:
            fake.requests = DieOnSecondCall(original)

    state, log = await resume_after_crash(dying_agents)
    assert state.status is Status.COMPLETED and state.output == "Charged 5."
    assert charges == [5]
    assert len(fake.requests) == 3  # the first call replayed; the one in flight made again
    assert [m.content for m in state.messages] == ["Charged 5."]


async def test_a_429_is_retried_by_the_client_and_the_run_goes_on(api):
    fake, base_url = api
    fake.script(error(429), error(429), text("fine"))
    engine = RunEngine(MemoryStore())

    @engine.agent("talk")
    async def talk(ctx):
        return (await chat(ctx, client_for(base_url, max_retries=2), model="m", messages=[]))["content"]

    async with engine:
        state = await engine.execute("talk", None)
        log = await full_log(engine, state.run_id)
    assert state.status is Status.COMPLETED and state.output == "fine"
    assert len(fake.requests) == 3
    assert [e.type for e in log].count("step.completed") == 1  # one recorded call, whatever the retries


async def test_a_500_that_outlasts_the_retries_fails_the_run_with_the_clients_error(api):
    fake, base_url = api
    fake.script(error(500))
    engine = RunEngine(MemoryStore())

    @engine.agent("talk")
    async def talk(ctx):
        return await chat(ctx, client_for(base_url, max_retries=1), model="m", messages=[])

    async with engine:
        state = await engine.execute("talk", None)
        log = await full_log(engine, state.run_id)
    assert state.status is Status.FAILED
    assert len(fake.requests) == 2  # the first try and one retry
    step = [e for e in log if e.type == "step.completed"][0]
    assert step.name == "openai.chat" and step.error.code == "InternalServerError"
    assert state.error.code == "agent_error" and "InternalServerError" in state.error.message


async def test_a_stream_cut_midway_is_not_retried_and_reaches_the_agent_as_step_failed(api):
    fake, base_url = api
    fake.script(Reply(text("Half ", "an ", "answer").chunks, cut_after=3))
    engine = RunEngine(MemoryStore())

    @engine.agent("talk")
    async def talk(ctx):
        try:
            await chat(ctx, client_for(base_url), model="m", messages=[])
        except StepFailed as failed:
            return {"code": failed.error_code}
        return "unreachable"

    async with engine:
        state = await engine.execute("talk", None)
        log = await full_log(engine, state.run_id)
    assert len(fake.requests) == 1  # the client does not retry once the reply began
    assert state.status is Status.COMPLETED
    assert state.output["code"] == "APIConnectionError", state.output
    assert [e.content for e in log if e.type == "message.delta"] == ["Half ", "an "]
    assert [m.content for m in state.messages] == ["Half an "]  # what arrived stays, as documented


async def test_session_messages_turn_the_history_into_chat_messages(api):
    fake, base_url = api
    fake.script(text("first answer"), text("second answer"))
    engine = RunEngine(MemoryStore())

    @engine.agent("talk")
    async def talk(ctx):
        messages = await session_messages(ctx) + [{"role": "user", "content": ctx.input}]
        return (await chat(ctx, client_for(base_url), model="m", messages=messages))["content"]

    async with engine:
        await engine.execute("talk", "one", session_id="s")
        await engine.execute("talk", {"q": "two"}, session_id="s")
    assert fake.requests[1]["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": {"q": "two"}},
    ]


REPO = Path(__file__).resolve().parent.parent


async def test_the_example_serves_with_its_documented_command_against_the_test_server(api):
    """`runengine serve --app examples.openai_agent:engine` from the repository root, the model
    being the test server (OPENAI_BASE_URL): a run calls the tool and streams the reply."""
    fake, base_url = api
    fake.script(tool_calls(("call_m", "multiply", {"a": 17, "b": 23})), text("17 * 23 = ", "391"))
    port = free_port()
    env = {**os.environ, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "test-key", "OPENAI_MODEL": "test-model",
           "RUNENGINE_STORE": "memory://"}
    process = subprocess.Popen(
        [*COMMAND, "serve", "--app", "examples.openai_agent:engine", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await anyio.to_thread.run_sync(wait_ready, url, process)  # the loop goes on serving the test API
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
            first = (await http.post("/runs", json={"agent": "assistant", "input": "17*23?", "session_id": "ex"})).json()
            assert first["status"] == "completed", first
            assert first["output"] == "17 * 23 = 391"
    finally:
        process.send_signal(signal.SIGINT)
        await anyio.to_thread.run_sync(process.wait, 20)
    assert fake.requests[0]["model"] == "test-model"
    assert fake.requests[1]["messages"][-1] == {"role": "tool", "tool_call_id": "call_m", "content": "391"}


def test_a_tool_from_a_typed_function_has_its_name_docstring_and_parameter_schema():
    def book(city: str, nights: int = 1) -> str:
        """Book a hotel."""
        return f"{nights} nights in {city}"

    tool = Tool.from_function(book)
    assert tool.definition() == {
        "type": "function",
        "function": {
            "name": "book",
            "description": "Book a hotel.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"title": "City", "type": "string"},
                    "nights": {"default": 1, "title": "Nights", "type": "integer"},
                },
                "required": ["city"],
            },
        },
    }


async def test_a_tool_that_takes_an_idempotency_key_gets_the_same_one_when_run_again_after_a_crash(api):
    fake, base_url = api
    fake.script(tool_calls(("call_1", "charge", {"amount": 5})), text("Charged ", "5."))
    keys: list[str] = []

    def agents(engine: RunEngine, store: DyingStore) -> None:
        async def charge(amount: int, idempotency_key: str) -> dict[str, Any]:
            keys.append(idempotency_key)  # a payment API dedups on it: the charge happens once
            if len(keys) == 1:
                store.die()  # in flight: tool.call recorded, tool.result never
                await anyio.sleep_forever()
            return {"charged": amount}

        tool = Tool.from_function(charge)
        assert set(tool.parameters["properties"]) == {"amount"}  # not the model's to give

        @engine.agent("shop")
        async def shop(ctx):
            reply = await tool_loop(ctx, client_for(base_url), model="m", messages=[{"role": "user", "content": "charge 5"}], tools=[tool])
            return reply["content"]

    with anyio.fail_after(30):  # without the key the tool fails and never reaches its crash
        state, _ = await resume_after_crash(agents)
    assert state.status is Status.COMPLETED and state.output == "Charged 5."
    assert keys == [f"{state.run_id}/tool/call_1"] * 2


async def test_model_calls_wait_for_the_engines_step_limit_and_spend_its_tokens(api):
    from runengine.options import Flow, StepLimit
    from runengine.testing.clock import VirtualClock

    fake, base_url = api
    fake.script(*[text("ok", prompt_tokens=30, completion_tokens=10) for _ in range(3)])
    clock = VirtualClock()
    engine = RunEngine(
        MemoryStore(), clock=clock, flow=Flow(step_limits={"openai": StepLimit(requests_per_minute=2, tokens_per_minute=1000)})
    )

    @engine.agent("talk")
    async def talk(ctx):
        return (await chat(ctx, client_for(base_url), model="m", messages=[{"role": "user", "content": "hi"}], limit="openai"))["content"]

    async with engine:
        runs = [await engine.execute("talk", mode="async") for _ in range(3)]
        with anyio.fail_after(10):
            for run in runs[:2]:
                assert (await engine.wait(run.run_id)).status is Status.COMPLETED
        await anyio.sleep(0.1)
        assert len(fake.requests) == 2  # the third waits for the minute's next request
        assert (await engine.status(runs[2].run_id)).status is Status.RUNNING
        await clock.advance(30)
        with anyio.fail_after(10):
            assert (await engine.wait(runs[2].run_id)).status is Status.COMPLETED
        tokens = engine.driver.limiter.buckets._buckets["step:openai:tokens"]  # what the replies used, spent
    assert len(fake.requests) == 3
    # Two replies of 40 tokens at 0 s; refilled to the full 1000 by 30 s; the third's 40 spent then.
    assert tokens.tokens == pytest.approx(960)
