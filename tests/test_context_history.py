"""ctx.history() gives an agent its session's earlier turns; ctx.session is there for every run in a session."""

from __future__ import annotations

from typing import Any

import pytest

from runengine import RunEngine, Status
from runengine.adapters.memory import MemoryStore
from runengine.adapters.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def make_engine(store: Any, seen: list[Any]) -> RunEngine:
    engine = RunEngine(store)

    @engine.agent("chat")
    async def chat(ctx):
        history = await ctx.history()
        seen.append((ctx.session, [(m.role, m.content, m.run_id) for m in history]))
        await ctx.say(f"reply to {ctx.input}")

    return engine


async def test_history_is_the_earlier_runs_of_the_session_and_not_this_one():
    seen: list[Any] = []
    async with make_engine(MemoryStore(), seen) as engine:
        first = await engine.execute("chat", "hi", session_id="s1")
        second = await engine.execute("chat", "again", session_id="s1")
        await engine.execute("chat", "elsewhere", session_id="s2")
    assert seen[0][1] == []
    assert seen[1][1] == [("user", "hi", first.run_id), ("assistant", "reply to hi", first.run_id)]
    assert seen[2][1] == []  # another session's turns are not this one's
    assert second.status is Status.COMPLETED


async def test_history_is_empty_outside_a_session_and_session_is_none():
    seen: list[Any] = []
    async with make_engine(MemoryStore(), seen) as engine:
        await engine.execute("chat", "alone")
    assert seen == [(None, [])]


async def test_a_session_a_run_began_implicitly_is_on_ctx_with_its_id():
    await check_sessions_on_ctx(MemoryStore())


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
async def test_a_session_a_run_began_implicitly_is_on_ctx_on_sqlite(tmp_path):
    await check_sessions_on_ctx(SQLiteStore(str(tmp_path / "runs.db")))


async def check_sessions_on_ctx(store: Any) -> None:
    seen: list[Any] = []
    async with make_engine(store, seen) as engine:
        await engine.execute("chat", "hi", session_id="implicit")
        created = await engine.create_session(session_id="explicit", metadata={"user": "ada"})
        await engine.execute("chat", "hi", session_id=created.session_id)
    implicit, explicit = seen[0][0], seen[1][0]
    assert implicit is not None and implicit.session_id == "implicit" and implicit.metadata == {}
    assert explicit is not None and explicit.metadata == {"user": "ada"}


async def test_history_matches_the_engines_session_history():
    seen: list[Any] = []
    async with make_engine(MemoryStore(), seen) as engine:
        for text in ["one", "two", "three"]:
            await engine.execute("chat", text, session_id="s")
        full = (await engine.session_history("s")).messages
    assert [(m.role, m.content, m.run_id) for m in full[:4]] == seen[2][1]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiosqlite needs asyncio
@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_session_steps_are_the_outputs_the_sessions_earlier_runs_recorded_under_a_name(store, tmp_path):
    seen: list[Any] = []
    engine = RunEngine(MemoryStore() if store == "memory" else SQLiteStore(str(tmp_path / "runs.db")))

    @engine.agent("keeper")
    async def keeper(ctx):
        seen.append(await ctx.session_steps("kept"))
        await ctx.step("kept", lambda: {"turn": ctx.input, "part": 1})
        await ctx.step("other", lambda: "not this name")
        await ctx.step("kept", lambda: {"turn": ctx.input, "part": 2})
        if ctx.input == "fails":
            await ctx.step("kept", lambda: 1 / 0)  # a failed step keeps nothing

    async with engine:
        first = await engine.execute("keeper", "one", session_id="s")
        failing = await engine.execute("keeper", "fails", session_id="s")
        await engine.execute("keeper", "elsewhere", session_id="t")
        await engine.execute("keeper", "alone")
        await engine.execute("keeper", "three", session_id="s")
    assert failing.status is Status.FAILED
    assert seen[0] == [] and seen[2] == [] and seen[3] == []  # the first turn, another session, no session
    assert seen[4] == [
        (first.run_id, {"turn": "one", "part": 1}),
        (first.run_id, {"turn": "one", "part": 2}),
        (failing.run_id, {"turn": "fails", "part": 1}),
        (failing.run_id, {"turn": "fails", "part": 2}),
    ]
