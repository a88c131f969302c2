"""Patching (`ctx.patched`, `ctx.deprecate_patch`) and the replay checker (`check_replay`), in process
on SQLite (issue 26). The `digest` agent's three codes are in patching_apps.py: the old one, a
changed one (a `rank` step inserted before summarize) and the same change behind `ctx.patched`.

A run is left in flight as a deploy leaves it: its engine stops gracefully while a step is running,
and the next engine, with other code, resumes it from its log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit import full_log
from patching_apps import PATCH, register
from runengine import RunEngine, Status
from runengine.context import AgentFn, RunContext
from runengine.errors import InvalidRequest
from runengine.events import Event, PatchMarked, StepCompleted
from runengine.options import Durability
from runengine.worker import WorkerOptions
from runengine.reducer import Fold
from runengine.testing import check_replay
from runengine.testing.replay_check import check_store
from runengine.testing.strategies import histories, next_types

pytestmark = pytest.mark.anyio

ANYIO_BACKENDS = ("asyncio",)  # SQLite in files: one backend is enough here


def digest(code: str, effects: list[str] | None = None) -> AgentFn:
    """The `digest` agent function in `code`, outside any engine's run (what check_replay takes)."""
    return register(RunEngine(), code, effects).agents.get("digest").fn


async def start_in_flight(url: str, code: str, held_in: str, **options: Any) -> str:
    """A `digest` run of `code` left in flight inside its step `held_in` (its engine, built with
    `options`, stops then)."""
    reached = anyio.Event()

    async def hold(name: str) -> None:
        if name == held_in:
            reached.set()
            await anyio.sleep_forever()

    # Not resuming the runs already in flight: only this one reaches `held_in`.
    durability = Durability(drain_timeout=0.1, recover_on_start=False)
    engine = register(RunEngine(url, durability=durability, **options), code, blocks=hold)
    async with engine:
        run = await engine.execute("digest", "news", mode="async")
        with anyio.fail_after(20):
            await reached.wait()
    return run.run_id


async def resume_all(url: str, code: str, run_ids: list[str], effects: list[str]) -> dict[str, tuple[Any, list[Event]]]:
    """Resume the runs with `code` to their end: per run, its final state and log."""
    engine = register(RunEngine(url), code, effects)
    async with engine:
        ended = {}
        for run_id in run_ids:
            with anyio.fail_after(20):
                state = await engine.wait(run_id)
            ended[run_id] = (state, await full_log(engine, run_id))
    return ended


def marks(log: list[Event]) -> list[tuple[int, str]]:
    return [(e.seq, e.name) for e in log if isinstance(e, PatchMarked)]


def step_seq(log: list[Event], name: str) -> int:
    return next(e.seq for e in log if isinstance(e, StepCompleted) and e.name == name)


# -- ctx.patched ------------------------------------------------------------------------------------


async def test_a_patched_agent_replays_old_and_new_logs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    old_run = await start_in_flight(url, "old", held_in="publish")  # recorded retrieve and summarize
    new_run = await start_in_flight(url, "patched", held_in="publish")  # marked the patch, ranked
    async with RunEngine(url, durability=Durability(recover_on_start=False)) as reader:
        new_before = await full_log(reader, new_run)
    assert marks(new_before) == [(step_seq(new_before, "retrieve") + 1, PATCH)]

    effects: list[str] = []
    ended = await resume_all(url, "patched", [old_run, new_run], effects)
    old_state, old_log = ended[old_run]
    new_state, new_log = ended[new_run]
    # The old run replayed the old code (no rank), the new one the new code: neither recomputed a step.
    assert old_state.status is Status.COMPLETED, old_state.error
    assert old_state.output == {"published": "published news-1 + news-2"}
    assert new_state.status is Status.COMPLETED, new_state.error
    assert new_state.output == {"published": "published news-2 + news-1"}
    assert effects == ["publish", "publish"]
    assert marks(old_log) == [] and marks(new_log) == marks(new_before)
    assert new_log[: len(new_before)] == new_before


async def test_a_replay_past_its_log_takes_the_patched_code(tmp_path: Path) -> None:
    """An old run whose log ends before the patch (it was inside summarize) reaches it live."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = await start_in_flight(url, "old", held_in="summarize")
    effects: list[str] = []
    state, log = (await resume_all(url, "patched", [run_id], effects))[run_id]
    assert state.status is Status.COMPLETED, state.error
    assert state.output == {"published": "published news-2 + news-1"}
    assert effects == ["rank", "summarize", "publish"]
    resumed = next(e.seq for e in log if e.type == "run.resumed")
    assert marks(log) == [(resumed + 1, PATCH)]


async def test_patched_answers_once_per_run_and_must_be_awaited() -> None:
    answers: list[bool] = []
    engine = RunEngine()

    @engine.agent("twice")
    async def twice(ctx: RunContext) -> None:
        answers.extend([await ctx.patched("p"), await ctx.patched("p")])

    @engine.agent("unawaited")
    async def unawaited(ctx: RunContext) -> None:
        if ctx.patched("p"):  # type: ignore[truthy-function]  # the mistake this refuses
            await ctx.say("new code")

    @engine.agent("nameless")
    async def nameless(ctx: RunContext) -> None:
        await ctx.patched("")

    async with engine:
        run = await engine.execute("twice", mode="sync")
        assert run.status is Status.COMPLETED and answers == [True, True]
        assert marks(await full_log(engine, run.run_id)) == [(3, "p")]
        run = await engine.execute("unawaited", mode="sync")
        assert run.status is Status.FAILED and run.error is not None
        assert "must be awaited" in run.error.message and not run.messages
        assert not marks(await full_log(engine, run.run_id))
        run = await engine.execute("nameless", mode="sync")
        assert run.status is Status.FAILED and run.error is not None and "patch name" in run.error.message


async def test_deprecate_patch_replays_marked_runs_and_records_nothing(tmp_path: Path) -> None:
    """The cleanup step: the old code gone, `deprecate_patch` replays the runs that marked the patch
    (the changed code without it does not) and new runs record no marker."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    marked_run = await start_in_flight(url, "patched", held_in="publish")
    effects: list[str] = []

    def deprecated(engine: RunEngine) -> RunEngine:
        @engine.agent("digest")
        async def digest_v3(ctx: RunContext) -> dict[str, Any]:
            docs = await ctx.step("retrieve", lambda: ["news-1", "news-2"])
            await ctx.deprecate_patch(PATCH)
            docs = await ctx.step("rank", lambda: sorted(docs, reverse=True))
            summary = await ctx.step("summarize", lambda: " + ".join(docs))
            def publish() -> str:
                effects.append("publish")
                return f"published {summary}"

            return {"published": await ctx.step("publish", publish)}

        return engine

    old_past = await start_in_flight(url, "old", held_in="publish")  # recorded summarize unranked
    old_before = await start_in_flight(url, "old", held_in="summarize")  # not at the patch point yet
    async with RunEngine(url, durability=Durability(recover_on_start=False)) as reader:
        marked_log, past_log, before_log = [await full_log(reader, run) for run in (marked_run, old_past, old_before)]
        for run in (old_past, old_before):  # only the marked run is left for the code below
            await reader.cancel(run)
    fn = deprecated(RunEngine()).agents.get("digest").fn
    # The check that says when the old code may go: an old run past the patch point is flagged.
    [flagged] = await check_replay(fn, [marked_log, past_log, before_log])
    assert (flagged.run_id, flagged.seq) == (old_past, step_seq(past_log, "summarize"))
    [found] = await check_replay(digest("changed"), [marked_log])  # dropping the call too early
    assert found.recorded["type"] == "patch.marked" and found.call == "step('rank')"

    async with deprecated(RunEngine(url)) as engine:
        state = await engine.wait(marked_run)
        assert state.status is Status.COMPLETED and state.output == {"published": "published news-2 + news-1"}
        fresh = await engine.execute("digest", mode="sync")
        assert fresh.status is Status.COMPLETED
        assert marks(await full_log(engine, fresh.run_id)) == []
    assert effects == ["publish", "publish"]


# -- check_replay ---------------------------------------------------------------------------------


def test_check_replay_flags_the_changed_agent_and_passes_the_patched_one(tmp_path: Path) -> None:
    """Called without an event loop (a plain test), on a completed and an in-flight old run."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def old_logs() -> list[list[Event]]:
        in_flight = await start_in_flight(url, "old", held_in="publish")
        async with register(RunEngine(url, durability=Durability(recover_on_start=False)), "old") as engine:
            done = await engine.execute("digest", "news", mode="sync")
            assert done.status is Status.COMPLETED
            return [await full_log(engine, in_flight), await full_log(engine, done.run_id)]

    logs = anyio.run(old_logs)
    effects: list[str] = []
    found = check_replay(digest("changed", effects), logs)
    assert [(d.run_id, d.seq) for d in found] == [(log[0].run_id, step_seq(log, "summarize")) for log in logs]
    for divergence in found:
        assert divergence.call == "step('rank')"
        assert divergence.recorded["type"] == "step.completed" and divergence.recorded["data"]["name"] == "summarize"
        assert f"seq {divergence.seq}" in divergence.message
    assert check_replay(digest("patched", effects), logs) == []
    assert check_replay(digest("old", effects), logs) == []
    assert effects == []  # recorded results only: no step ran


async def test_check_replay_has_no_side_effects_and_stops_past_the_log(tmp_path: Path) -> None:
    """Awaited (inside an event loop). A log ending inside summarize: the patched code's calls past
    it would be live, so its check stops there; nothing runs and the store is left as it was."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = await start_in_flight(url, "old", held_in="summarize")
    async with RunEngine(url, durability=Durability(recover_on_start=False)) as engine:
        log = await full_log(engine, run_id)
        effects: list[str] = []
        assert await check_replay(digest("patched", effects), [log], store=engine.store) == []
        assert await check_replay(digest("changed", effects), [log], store=engine.store) == []
        assert effects == []
        assert await full_log(engine, run_id) == log
        assert (await engine.status(run_id)).status is Status.RUNNING


async def test_check_replay_writes_nothing_for_an_agent_that_swallows_the_end_of_its_log(tmp_path: Path) -> None:
    """An agent that catches every error and goes on calling: each call past the log ends the check
    again, none is made or recorded."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = await start_in_flight(url, "old", held_in="summarize")
    effects: list[str] = []

    async def stubborn(ctx: RunContext) -> str:
        await ctx.step("retrieve", effects.append, "retrieve")
        for name in ("summarize", "publish"):
            try:
                await ctx.step(name, effects.append, name)
            except Exception:  # noqa: BLE001 - the point of the test
                pass
        await ctx.delta("done")
        await ctx.say("really done")
        return "done"

    async with RunEngine(url, durability=Durability(recover_on_start=False)) as engine:
        log = await full_log(engine, run_id)
        assert await check_replay(stubborn, [log], store=engine.store) == []
        assert await full_log(engine, run_id) == log
    assert effects == []


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_check_replay_is_awaited_on_either_backend(anyio_backend: str) -> None:
    engine = register(RunEngine(), "old")
    async with engine:
        log = await full_log(engine, (await engine.execute("digest", mode="sync")).run_id)
    [found] = await check_replay(digest("changed"), [log])
    assert found.call == "step('rank')"


async def test_check_replay_flags_new_code_that_raises_where_the_old_went_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    async with register(RunEngine(url), "old") as engine:
        run = await engine.execute("digest", "news", mode="sync")
        log = await full_log(engine, run.run_id)

    async def strict(ctx: RunContext) -> None:
        docs = await ctx.step("retrieve", lambda: [])
        if len(docs) > 1:
            raise ValueError("one document at most now")

    [found] = await check_replay(strict, [log])
    assert found.seq == step_seq(log, "summarize") and found.call == "raise ValueError: one document at most now"


async def test_check_replay_checks_the_version_when_asked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    async with register(RunEngine(url), "old") as engine:
        log = await full_log(engine, (await engine.execute("digest", mode="sync")).run_id)
    assert await check_replay(digest("old"), [log], version="2", check_version=False) == []
    [found] = await check_replay(digest("old"), [log], version="2", check_version=True)
    assert found.seq == 2 and found.recorded["type"] == "run.started" and "version" in found.message


async def test_check_replay_refuses_a_log_no_engine_wrote() -> None:
    with pytest.raises(InvalidRequest):
        await check_replay(digest("old"), [[]])


async def test_check_store_on_postgresql_flags_the_changed_agent_and_passes_the_patched_one(pg_schema_url: str) -> None:
    """What `runengine check-replay` does, on PostgreSQL: every run of the agents given, replayed."""
    run_id = await start_in_flight(pg_schema_url, "old", held_in="publish", worker=WorkerOptions(poll=0.05))
    async with RunEngine(pg_schema_url, durability=Durability(recover_on_start=False)) as engine:
        log = await full_log(engine, run_id)
        changed = register(RunEngine(), "changed").agents
        found = await check_store(engine.store, changed)
        assert found.checked == (run_id,)
        [divergence] = found.divergences
        assert (divergence.run_id, divergence.seq, divergence.call) == (run_id, step_seq(log, "summarize"), "step('rank')")
        patched = await check_store(engine.store, register(RunEngine(), "patched").agents, in_flight=True)
        assert patched.checked == (run_id,) and patched.divergences == ()
        assert (await check_store(engine.store, [])).checked == ()  # not an agent of the app: not checked
        assert await full_log(engine, run_id) == log


# -- the hypothesis strategies know patch.marked ---------------------------------------------------


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_histories_mark_patches(data: st.DataObject) -> None:
    log = data.draw(histories(min_events=3, max_events=12, include_unknown=False))
    fold = Fold()
    fold.apply_all(log)
    assert fold.status is not None
    if not fold.status.terminal:
        assert ("patch.marked" in next_types(fold)) is (fold.status is Status.RUNNING)
