"""Agents for the durable-runs suites (issue 12), served with `runengine serve --app durable_apps:NAME`
or `runengine worker --app durable_apps:NAME` (tests/ is the working directory there), and used in
process by the restart tests.

The store URL comes from RUNENGINE_DURABLE_STORE. Tool side effects are counted outside the
run's store, in the SQLite file RUNENGINE_DURABLE_COUNTERS: each tool execution adds one to the
row (run_id, tool) in a transaction of its own, so the test can tell how often a tool really ran.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from runengine.context import RunContext
from runengine.engine import RunEngine
from runengine.options import RunLimits

#: The chaos agent's streamed answer: the text its run's messages must hold exactly once.
ANSWER_WORDS = 24
ANSWER = "".join(f"w{i} " for i in range(ANSWER_WORDS))
TOOLS = ("lookup", "compute", "store")
#: The `chaos_open` agent's first message, streamed with the message left open across its tool
#: calls, a step and a timer (issue 20): it too must be in the run's messages exactly once.
OPEN_WORDS = 24
OPEN_TEXT = "Let me check... " + "".join(f"o{i} " for i in range(OPEN_WORDS))
#: Per chaos agent, the contents of its run's messages at the end.
MESSAGES = {"chaos": [ANSWER], "chaos_open": [OPEN_TEXT, ANSWER]}


def store_url() -> str:
    return os.environ["RUNENGINE_DURABLE_STORE"]


def counters_path() -> Path:
    return Path(os.environ["RUNENGINE_DURABLE_COUNTERS"])


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def create_counters(path: Path) -> None:
    conn = _connect(path)
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS effects (run_id TEXT NOT NULL, tool TEXT NOT NULL,"
            " count INTEGER NOT NULL, PRIMARY KEY (run_id, tool))"
        )
    finally:
        conn.close()


def bump(path: Path, run_id: str, tool: str) -> None:
    """One side effect of `tool` in `run_id`: its own committed transaction."""
    conn = _connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO effects (run_id, tool, count) VALUES (?, ?, 1)"
            " ON CONFLICT (run_id, tool) DO UPDATE SET count = count + 1",
            (run_id, tool),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def read_counters(path: Path) -> dict[tuple[str, str], int]:
    conn = _connect(path)
    try:
        return {(r, t): c for r, t, c in conn.execute("SELECT run_id, tool, count FROM effects")}
    finally:
        conn.close()


def counted_tool(counters: Path, run_id: str, name: str) -> Any:
    """A tool whose every execution is counted in `counters`."""

    async def run(**arguments: Any) -> dict[str, Any]:
        await anyio.to_thread.run_sync(bump, counters, run_id, name)
        # The side effect is committed, its tool.result is not yet: a kill here is the
        # at-least-once window.
        await anyio.sleep(0.02)
        return {"tool": name, "n": arguments["n"]}

    return run


async def stream_answer(ctx: RunContext) -> None:
    async with ctx.message() as message:
        for i in range(ANSWER_WORDS):
            await message.delta(f"w{i} ")
            await anyio.sleep(0.004)


def register_chaos(engine: RunEngine, counters: Path) -> RunEngine:
    @engine.agent("chaos", description="Thinks, calls three counted tools, asks, streams an answer.")
    async def chaos(ctx: RunContext) -> None:
        def tool(name: str) -> Any:
            return counted_tool(counters, ctx.run_id, name)

        await ctx.thought("planning the lookup", source="planner")
        found = await ctx.tool_call("lookup", {"n": 1}, tool("lookup"))
        await ctx.thought(f"found {found['n']}")
        computed = await ctx.tool_call("compute", {"n": found["n"] + 1}, tool("compute"))
        answer = await ctx.ask({"question": "store it?", "n": computed["n"]})
        await ctx.thought(f"told {answer!r}")
        await ctx.tool_call("store", {"n": computed["n"] + 1}, tool("store"))
        await stream_answer(ctx)
        # No return value: the run's output is its last message, the answer.

    @engine.agent("chaos_open", description="Streams one message across two tools, a step and a timer; asks; answers.")
    async def chaos_open(ctx: RunContext) -> None:
        def tool(name: str) -> Any:
            return counted_tool(counters, ctx.run_id, name)

        async def words(start: int, stop: int) -> None:
            for i in range(start, stop):
                await ctx.delta(f"o{i} ")
                await anyio.sleep(0.004)

        # The most common agent shape: a message left open while the agent works (issue 20).
        await ctx.delta("Let me check... ")
        found = await ctx.tool_call("lookup", {"n": 1}, tool("lookup"))
        await words(0, 6)
        await ctx.sleep(0.01)
        await words(6, 12)
        computed = await ctx.tool_call("compute", {"n": found["n"] + 1}, tool("compute"))
        await words(12, 18)
        await ctx.step("note", lambda: computed["n"])
        await words(18, OPEN_WORDS)
        answer = await ctx.ask({"question": "store it?", "n": computed["n"]})  # completes the message
        await ctx.tool_call("store", {"n": computed["n"] + 1}, tool("store"))
        await ctx.thought(f"told {answer!r}")
        await stream_answer(ctx)

    return engine


def chaos_engine() -> RunEngine:
    """`runengine serve|worker --app durable_apps:chaos_engine`."""
    # Every run must end completed however many kills it lives through: the crash-loop bound
    # (max_attempts, 3 by default) is raised out of the way.
    return register_chaos(RunEngine(store_url(), limits=RunLimits(max_attempts=1000)), counters_path())


def register_restart(engine: RunEngine, counters: Path) -> RunEngine:
    @engine.agent("asker", description="Asks, then answers with what it was told.")
    async def asker(ctx: RunContext) -> dict[str, Any]:
        await ctx.step("before-ask", bump, counters, ctx.run_id, "before-ask")
        answer = await ctx.ask({"question": "go?"})
        await ctx.say(f"got {answer}")
        return {"answer": answer}

    @engine.agent("sleeper", description="Counts a step, sleeps durably for input['seconds'], says so.")
    async def sleeper(ctx: RunContext) -> dict[str, Any]:
        await ctx.step("before-sleep", bump, counters, ctx.run_id, "before-sleep")
        await ctx.sleep(float(ctx.input["seconds"]))
        await ctx.step("after-sleep", bump, counters, ctx.run_id, "after-sleep")
        return {"slept": ctx.input["seconds"]}

    return engine


def restart_engine() -> RunEngine:
    """`runengine serve --app durable_apps:restart_engine`."""
    return register_restart(RunEngine(store_url()), counters_path())


#: The crash-loop suite: the innocent agent's steps, and how long each takes.
INNOCENT_STEPS = 80
INNOCENT_STEP_SECONDS = 0.06
#: How long the crashing step runs before it kills its process.
CRASH_AFTER_SECONDS = 1.0


def crash_loop_engine() -> RunEngine:
    """`runengine serve --app durable_apps:crash_loop_engine`: `crasher`, whose step kills the
    process (a native crash, an OOM kill), and `innocent`, which makes steady progress."""
    engine = RunEngine(store_url())

    async def kill_the_process() -> None:
        await anyio.sleep(CRASH_AFTER_SECONDS)
        os.kill(os.getpid(), signal.SIGKILL)

    @engine.agent("crasher", description="Its one step kills the process it runs in.")
    async def crasher(ctx: RunContext) -> None:
        await ctx.step("native-call", kill_the_process)

    @engine.agent("talking_crasher", description="Streams a few words, then its step kills the process.")
    async def talking_crasher(ctx: RunContext) -> None:
        await ctx.delta("Let me check that... ")  # a message left open across the fatal step
        await ctx.step("native-call", kill_the_process)

    async def work(i: int) -> int:
        await anyio.sleep(INNOCENT_STEP_SECONDS)
        return i

    @engine.agent("innocent", description="Many short steps, then the sum of their results.")
    async def innocent(ctx: RunContext) -> int:
        return sum([await ctx.step(f"work-{i}", work, i) for i in range(INNOCENT_STEPS)])

    return engine
