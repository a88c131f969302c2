"""Issue 25 (fork from any event): `engine.fork(run_id, at_seq, input=...)` makes a new run whose
log begins with the source's events up to at_seq, then `run.forked`; its agent replays that
prefix and goes on live. Property: forked at every seq of a generated run's log, the fork
replays the prefix without divergence, redoes nothing recorded in it, and ends as the source did."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings

from kit import full_log
from runengine import RunEngine, Status
from runengine.adapters.sqlite import SQLiteStore
from runengine.errors import InvalidRequest, InvalidRunState, RunNotFound
from runengine.events import RunForked
from test_durable_replay_property import kept_texts, normalize, register, scripts

ANYIO_BACKENDS = ("asyncio",)


def recorded_effects(events: list[Any]) -> set[str]:
    """The step and tool functions whose result a log records (`register` names them so)."""
    names = {e.name for e in events if e.type == "step.completed"}
    calls = {e.call_id: e.name for e in events if e.type == "tool.call"}
    return names | {calls[e.call_id] for e in events if e.type == "tool.result"}


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(script=scripts)
def test_a_fork_at_every_seq_replays_the_prefix_without_divergence(script: list[Any]) -> None:
    import anyio

    async def main() -> None:
        calls: Counter[str] = Counter()
        engine = RunEngine("memory://")
        register(engine, script, calls)
        async with engine:
            source = await engine.execute("scripted", None)
            assert source.status is Status.COMPLETED
            source_log = await full_log(engine, source.run_id)
            for at_seq in range(1, len(source_log)):  # every event but the one that ended it
                calls.clear()
                fork = await engine.fork(source.run_id, at_seq)
                ended = await engine.wait(fork.run_id)
                fork_log = await full_log(engine, fork.run_id)
                assert ended.status is Status.COMPLETED and ended.output == "done", (at_seq, ended.error)
                prefix = fork_log[:at_seq]
                assert [attrs.evolve(e, run_id=source.run_id) for e in prefix] == source_log[:at_seq]
                assert fork_log[at_seq] == RunForked(
                    run_id=fork.run_id, seq=at_seq + 1, at=fork_log[at_seq].at, source_run_id=source.run_id,
                    source_seq=at_seq,
                )
                assert ended.forked_from == source.run_id and ended.forked_at_seq == at_seq
                # The same run as the source's, event for event (ids, times and bookkeeping aside) ...
                unmarked = [e for e in fork_log if e.type != RunForked.type]
                assert normalize(unmarked) == normalize(source_log), at_seq
                assert kept_texts(fork_log) == kept_texts(source_log), at_seq
                # ... and nothing recorded in the prefix was done again.
                assert not recorded_effects(prefix) & set(calls), (at_seq, calls)

    anyio.run(main)


def tool_agent(engine: RunEngine, ran: Counter[str]) -> None:
    @engine.agent("weather")
    async def weather(ctx: Any) -> Any:
        def lookup(city: str) -> dict[str, Any]:
            ran["lookup"] += 1
            return {"city": city, "temp": 12}

        forecast = await ctx.tool_call("lookup", {"city": ctx.input}, lookup)
        answer = await ctx.ask({"forecast": forecast})
        return {"forecast": forecast, "answer": answer}


@pytest.mark.anyio
async def test_fork_with_a_replacement_tool_result_and_a_different_input(tmp_path: Path) -> None:
    ran: Counter[str] = Counter()
    engine = RunEngine(SQLiteStore(str(tmp_path / "runs.db")))
    tool_agent(engine, ran)
    async with engine:
        source = await engine.execute("weather", "Paris")
        await engine.resume(source.run_id, "thanks")
        assert (await engine.wait(source.run_id)).status is Status.COMPLETED
        source_log = await full_log(engine, source.run_id)
        by_type = {e.type: e.seq for e in source_log}
        assert ran["lookup"] == 1

        # At the tool.result: another result, the tool is not called.
        fork = await engine.fork(source.run_id, by_type["tool.result"], input={"city": "Paris", "temp": 30})
        waiting = await engine.wait(fork.run_id)
        assert waiting.status is Status.WAITING_FOR_INPUT and waiting.await_request == {"forecast": {"city": "Paris", "temp": 30}}
        await engine.resume(fork.run_id, "hot")
        assert (await engine.wait(fork.run_id)).output == {"forecast": {"city": "Paris", "temp": 30}, "answer": "hot"}
        assert ran["lookup"] == 1
        fork_log = await full_log(engine, fork.run_id)
        forked = fork_log[by_type["tool.result"]]
        assert isinstance(forked, RunForked) and forked.replaced

        # At the run.input: a different answer.
        other = await engine.fork(source.run_id, by_type["run.input"], input="no thanks")
        assert (await engine.wait(other.run_id)).output == {"forecast": {"city": "Paris", "temp": 12}, "answer": "no thanks"}
        # At run.created: another input, everything after it live again.
        again = await engine.fork(source.run_id, 1, input="Oslo")
        assert (await engine.wait(again.run_id)).await_request == {"forecast": {"city": "Oslo", "temp": 12}}
        assert ran["lookup"] == 2
        # The source is unchanged.
        assert await full_log(engine, source.run_id) == source_log


@pytest.mark.anyio
async def test_bad_forks_are_refused_and_create_nothing() -> None:
    engine = RunEngine("memory://")
    tool_agent(engine, Counter())
    async with engine:
        source = await engine.execute("weather", "Paris")
        await engine.resume(source.run_id, "thanks")
        await engine.wait(source.run_id)
        last = (await engine.status(source.run_id)).last_seq
        before = len((await engine.list_runs()).runs)
        for at_seq in (0, -1, last + 1, "2", True):
            with pytest.raises(InvalidRequest):
                await engine.fork(source.run_id, at_seq)  # type: ignore[arg-type]
        with pytest.raises(InvalidRunState):
            await engine.fork(source.run_id, last)  # the run.completed: nothing goes on after it
        with pytest.raises(InvalidRequest):
            await engine.fork(source.run_id, 2, input="x")  # run.started has no result to replace
        with pytest.raises(InvalidRequest):
            await engine.fork(source.run_id, 1, input=float("nan"))
        with pytest.raises(RunNotFound):
            await engine.fork("nope", 1)
        with pytest.raises(RunNotFound):
            await engine.fork(source.run_id, 1, owner="mallory")  # another owner's run
        assert len((await engine.list_runs()).runs) == before
