"""Durable runs across restarts (issue 12), on SQLite.

- SIGTERM to `runengine serve` with one run waiting for input and one run in a 5 s `ctx.sleep`:
  the restarted server completes the first on `POST input`, and the second wakes once, at its
  original deadline, without being started over.
- A changed agent (one more tool call inserted before the recorded ones) makes its in-flight run
  fail with `replay_divergence` after the restart, and leaves the log valid.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from chaoskit import read_log
from durable_apps import create_counters, read_counters
from faultkit import ServeProcess
from kit import until_sync
from runengine import RunEngine
from runengine.context import RunContext
from runengine.reducer import fold
from runengine.status import Status
from runengine.wire import event_to_dict, parse_time
from runengine.options import Durability

TESTS = Path(__file__).parent
SLEEP = 5.0


@pytest.mark.slow
def test_sigterm_keeps_a_waiting_run_and_a_sleeping_run_for_the_next_server(tmp_path: Path) -> None:
    counters = tmp_path / "effects.db"
    create_counters(counters)
    server = ServeProcess(
        ["--app", "durable_apps:restart_engine", "--log-level", "warning"],
        tmp_path / "serve.log",
        env={"RUNENGINE_DURABLE_STORE": f"sqlite:///{tmp_path / 'runs.db'}", "RUNENGINE_DURABLE_COUNTERS": str(counters)},
        cwd=TESTS,
    )
    server.start()
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            asker = client.post("/runs", json={"agent": "asker", "mode": "async"}).json()["run_id"]
            sleeper = client.post("/runs", json={"agent": "sleeper", "input": {"seconds": SLEEP}, "mode": "async"}).json()["run_id"]
            until_sync(lambda: client.get(f"/runs/{asker}").json()["status"] == "waiting_for_input")
            until_sync(lambda: any(e["type"] == "timer.started" for e in read_log(client, sleeper)))
            before = {run_id: read_log(client, run_id) for run_id in (asker, sleeper)}

        # SIGTERM: a graceful stop, well inside the sleep; it ends neither run.
        assert server.process is not None
        process = server.process
        os.killpg(process.pid, signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down: -SIGTERM is its clean exit.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM), server.log.read_text()[-3000:]
        server.process = None
        server.start()

        with httpx.Client(base_url=server.base, timeout=30) as client:
            for run_id, log in before.items():
                after_stop = read_log(client, run_id)
                assert after_stop[: len(log)] == log  # nothing recorded was touched
                # The stop was graceful: each run recorded its suspension, and nothing that ends it.
                assert [e["type"] for e in after_stop[len(log):]][:1] == ["run.suspended"], after_stop[len(log):]
            given = client.post(f"/runs/{asker}/input", json={"content": "yes"})
            assert given.status_code == 200, given.text
            done = until_sync(lambda: _ended(client, asker))
            assert done["status"] == "completed" and done["output"] == {"answer": "yes"}, done
            slept = until_sync(lambda: _ended(client, sleeper), timeout=60)
            assert slept["status"] == "completed" and slept["output"] == {"slept": SLEEP}, slept
            asker_log, sleeper_log = read_log(client, asker), read_log(client, sleeper)
    finally:
        server.kill(signal.SIGKILL)

    for log in (asker_log, sleeper_log):
        assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
        assert any(e["type"] == "run.resumed" for e in log)  # taken up again by the new server
    # The sleeper: one timer, started before the SIGTERM and fired after the restart, at its deadline.
    started = [e for e in sleeper_log if e["type"] == "timer.started"]
    fired = [e for e in sleeper_log if e["type"] == "timer.fired"]
    assert len(started) == 1 and len(fired) == 1, [e["type"] for e in sleeper_log]
    resumed = [e["seq"] for e in sleeper_log if e["type"] == "run.resumed"]
    assert started[0]["seq"] < resumed[0] < fired[0]["seq"]
    assert parse_time(fired[0]["at"]) >= parse_time(started[0]["data"]["until"])
    # Not started over: what came before the sleep (and the ask) ran once.
    counts = read_counters(counters)
    assert counts == {(sleeper, "before-sleep"): 1, (sleeper, "after-sleep"): 1, (asker, "before-ask"): 1}
    assert [e["type"] for e in sleeper_log].count("step.completed") == 2
    assert [e["type"] for e in asker_log].count("step.completed") == 1


def _ended(client: httpx.Client, run_id: str) -> dict[str, Any] | None:
    state = client.get(f"/runs/{run_id}").json()
    return state if state["status"] in ("completed", "failed", "cancelled") else None


# -- a changed agent -------------------------------------------------------------------------------


def _changing_agent(engine: RunEngine, effects: list[str], *, inserted: bool, blocked: anyio.Event | None) -> None:
    """`changing`: tools `first` and `second`, then an ask. The changed version calls `inserted` first.
    With `blocked`, `second` sets it and never returns (the run is in flight inside the tool)."""

    def tool(name: str) -> Callable[..., Any]:
        async def run() -> str:
            effects.append(name)
            if name == "second" and blocked is not None:
                blocked.set()
                await anyio.sleep_forever()
            return name

        return run

    @engine.agent("changing")
    async def changing(ctx: RunContext) -> Any:
        if inserted:
            await ctx.tool_call("inserted", {}, tool("inserted"))
        await ctx.tool_call("first", {}, tool("first"))
        await ctx.tool_call("second", {}, tool("second"))
        return await ctx.ask({"question": "go?"})


@pytest.mark.parametrize("where", ["waiting_for_input", "inside_a_tool"])
def test_a_changed_agent_fails_its_in_flight_run_with_replay_divergence(tmp_path: Path, where: str) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    effects: list[str] = []

    async def scenario() -> tuple[list[Any], list[Any]]:
        old = RunEngine(url, durability=Durability(drain_timeout=0.2))
        blocked = anyio.Event() if where == "inside_a_tool" else None
        _changing_agent(old, effects, inserted=False, blocked=blocked)
        async with old:
            if blocked is None:
                run = await old.execute("changing", mode="sync")
                assert run.status is Status.WAITING_FOR_INPUT
            else:
                run = await old.execute("changing", mode="async")
                await blocked.wait()
        async with RunEngine(url, durability=Durability(recover_on_start=False)) as reader:
            before = [e async for e in reader.events(run.run_id, follow=False)]
        assert not any(e.terminal for e in before)

        new = RunEngine(url)
        _changing_agent(new, effects, inserted=True, blocked=None)
        async with new:
            if blocked is None:  # idle in the store until its input comes: then it replays, and diverges
                await new.resume(run.run_id, "go")
            with anyio.fail_after(30):
                after = [e async for e in new.events(run.run_id)]  # to its terminal event
            state = await new.status(run.run_id)
        assert state.status is Status.FAILED and state.error is not None, state
        assert state.error.code == "replay_divergence", state.error
        return before, after

    before, after = anyio.run(scenario)
    assert after[: len(before)] == before  # the recorded events are untouched
    assert [e.seq for e in after] == list(range(1, len(after) + 1))
    assert after[-1].type == "run.failed" and sum(e.terminal for e in after) == 1
    folded = fold(after)  # still a valid log
    assert folded is not None and folded.status is Status.FAILED
    # The changed agent stopped at its first call: nothing new ran and nothing new was recorded.
    assert "inserted" not in effects and effects == ["first", "second"]
    assert not any(event_to_dict(e)["data"].get("name") == "inserted" for e in after)
