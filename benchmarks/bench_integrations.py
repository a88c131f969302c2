"""LLM integrations benchmark: what runengine adds to a model call and to a tool call, beside the
bare framework on the same in-process fake model, measured in the same run.

    python benchmarks/bench_integrations.py [--runs 200] [--store memory|sqlite|both]

For Pydantic AI (FunctionModel) and the OpenAI Agents SDK (its ScriptedModel), two agents: one
that answers in one model call (three streamed text pieces), and one whose first model call calls
a tool five times and whose second answers (two model calls, five tool calls). Each is run `--runs` times bare (`agent.run`,
`Runner.run`) and as a runengine agent (`engine.execute`, on the memory store and on a SQLite
file as shipped, synchronous=FULL), the bare and the integrated runs interleaved so that the load
of the machine falls on both alike; and a runengine run of an agent that does nothing (what any run
costs: created, started, completed, durably on SQLite). Overhead per model call = integrated - bare
of the answer run, less that; per tool call = integrated - bare of the tool run, less that and its
two model calls' overhead, over five.
Medians; on a loaded machine a figure under about 0.5 ms is within the noise.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from agents import Agent as SdkAgent
from agents import RunConfig, Runner, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

from runengine import RunEngine, Status
from runengine.options import Durability
from runengine.integrations.openai_agents import openai_agents_agent
from runengine.integrations.pydantic_ai import pydantic_ai_agent

Run = Callable[[], Awaitable[Any]]
#: Tools the tool run's first model response calls (several, so each one's share stands out of the noise).
TOOL_CALLS = 5


# -- the agents, bare and integrated, on the same fake models -----------------------------------


def pydantic_agents(with_tool: bool) -> Agent[None, str]:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        if with_tool and not any(isinstance(p, ToolReturnPart) for p in messages[-1].parts):
            for i in range(TOOL_CALLS):
                yield {i: DeltaToolCall(name="add", json_args=f'{{"a": {i}, "b": 3}}', tool_call_id=f"call_{i}")}
        else:
            for piece in ("The ", "answer ", "is 5."):
                yield piece

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        return a + b

    return agent


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def sdk_model(with_tool: bool) -> ScriptedModel:
    """A fresh script per run: a tool call first when `with_tool`, then the answer."""
    calls = [function_call("add", {"a": i, "b": 3}, call_id=f"call_{i}") for i in range(TOOL_CALLS)]
    steps: list[Any] = [calls] if with_tool else []
    return ScriptedModel([*steps, [assistant_message("The answer is 5.")]])


def sdk_agent(with_tool: bool) -> SdkAgent[Any]:
    return SdkAgent(name="bench", model=sdk_model(with_tool), tools=[add])


CONFIG = RunConfig(tracing_disabled=True)


async def consume(run_context: Any, events: AsyncIterator[Any]) -> None:
    async for _ in events:
        pass


def bare_runs() -> dict[tuple[str, bool], Run]:
    agents = {with_tool: pydantic_agents(with_tool) for with_tool in (False, True)}  # built once, as registered

    async def pydantic(with_tool: bool) -> Any:
        # Streamed, as the integration asks the model: agent.run with its events consumed.
        return (await agents[with_tool].run("go", event_stream_handler=consume)).output

    async def sdk(with_tool: bool) -> Any:
        return (await Runner.run(sdk_agent(with_tool), "go", run_config=CONFIG)).final_output

    return {
        ("Pydantic AI", False): lambda: pydantic(False),
        ("Pydantic AI", True): lambda: pydantic(True),
        ("OpenAI Agents SDK", False): lambda: sdk(False),
        ("OpenAI Agents SDK", True): lambda: sdk(True),
    }


def register(engine: RunEngine) -> dict[tuple[str, bool], Run]:
    for with_tool in (False, True):
        engine.agent(f"pydantic-{with_tool}")(pydantic_ai_agent(pydantic_agents(with_tool), history=False))

        async def scripted(ctx: Any, with_tool: bool = with_tool) -> Any:
            # A new script each run, as bare (a ScriptedModel is used up); its calls are recorded.
            return await openai_agents_agent(sdk_agent(with_tool), run_config=CONFIG, session=False)(ctx)

        engine.agent(f"sdk-{with_tool}")(scripted)

    @engine.agent("empty")
    async def empty(ctx: Any) -> None:
        return None

    async def execute(name: str) -> Any:
        state = await engine.execute(name, "go")
        assert state.status is Status.COMPLETED, state.error
        return state.output

    return {
        ("Pydantic AI", False): lambda: execute("pydantic-False"),
        ("Pydantic AI", True): lambda: execute("pydantic-True"),
        ("OpenAI Agents SDK", False): lambda: execute("sdk-False"),
        ("OpenAI Agents SDK", True): lambda: execute("sdk-True"),
        ("runengine", False): lambda: execute("empty"),
    }


# -- measuring ------------------------------------------------------------------------------------


async def nothing() -> None:
    return None


async def timed(call: Run) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def measure(store: str, runs: int, flush_window: float | None) -> dict[tuple[str, bool], tuple[float, float]]:
    """(bare, integrated) median seconds per run of each (framework, with_tool); ("runengine", False):
    a run of an agent that does nothing (what any run costs the engine), beside nothing at all."""
    engine = RunEngine(store, durability=Durability(flush_window=flush_window) if flush_window is not None else Durability())
    bare = {**bare_runs(), ("runengine", False): nothing}
    async with engine:
        integrated = register(engine)
        times: dict[tuple[str, bool], tuple[list[float], list[float]]] = {key: ([], []) for key in bare}
        for key in bare:  # warm-up: imports, schema building, the store's first pages
            await bare[key]()
            await integrated[key]()
        for _ in range(runs):
            for key in bare:
                times[key][0].append(await timed(bare[key]))
                times[key][1].append(await timed(integrated[key]))
    return {key: (statistics.median(b), statistics.median(i)) for key, (b, i) in times.items()}


def table(store: str, medians: dict[tuple[str, bool], tuple[float, float]]) -> list[str]:
    per_run = medians[("runengine", False)][1] - medians[("runengine", False)][0]
    rows = []
    for framework in ("Pydantic AI", "OpenAI Agents SDK"):
        bare_answer, integrated_answer = medians[(framework, False)]
        bare_tool, integrated_tool = medians[(framework, True)]
        per_model = integrated_answer - bare_answer - per_run
        per_tool = ((integrated_tool - bare_tool) - per_run - 2 * per_model) / TOOL_CALLS
        rows.append(
            f"| {framework} | {store} | {per_run * 1e3:.2f} | {bare_answer * 1e3:.2f} | {integrated_answer * 1e3:.2f} "
            f"| {per_model * 1e3:.2f} | {bare_tool * 1e3:.2f} | {integrated_tool * 1e3:.2f} | {per_tool * 1e3:.2f} |"
        )
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs of each agent, bare and integrated (default 200)")
    parser.add_argument("--store", choices=["memory", "sqlite", "both"], default="both")
    parser.add_argument("--flush-window", type=float, default=None, help="the engine's flush_window (default: its own)")
    args = parser.parse_args()
    print(f"Python {platform.python_version()}, {args.runs} runs of each agent, medians in ms")
    print()
    print("| framework | store | a run of an empty agent | bare: answer run | runengine: answer run "
          "| overhead per model call | bare: tool run | runengine: tool run | overhead per tool call |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        stores = {"memory": "memory://", "sqlite": f"sqlite:///{Path(folder) / 'bench.db'}"}
        for name in (["memory", "sqlite"] if args.store == "both" else [args.store]):
            for row in table(name, await measure(stores[name], args.runs, args.flush_window)):
                print(row, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
