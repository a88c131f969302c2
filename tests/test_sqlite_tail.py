"""The SQLite store's committed tail (adapters/log_cache.py): a commit decodes nothing; the first
read of a cached event decodes it, once, exactly as a read of the database gives it back."""

from __future__ import annotations

from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from runengine.adapters import sql_log
from runengine.adapters.sqlite import SQLiteStore
from runengine.events import StepCompleted
from runengine.testing.conformance import T0
from runengine.testing.conformance import created as created_run

ANYIO_BACKENDS = ("asyncio",)  # the SQLite store needs asyncio

STEPS = 20


@pytest.mark.anyio
async def test_a_commit_decodes_nothing_and_a_read_of_the_tail_decodes_each_event_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    real_decode = sql_log.decode_event

    def counting_decode(*args: Any) -> Any:
        decoded.append(args[1])
        return real_decode(*args)

    monkeypatch.setattr(sql_log, "decode_event", counting_decode)
    path = tmp_path / "runs.db"
    east = timezone(timedelta(hours=3))  # read back in UTC: the tail must not hand out this object
    async with SQLiteStore(path, synchronous="NORMAL") as store:
        await store.append("r1", [created_run("r1")], expected_seq=0)
        for seq in range(2, STEPS + 2):
            step = StepCompleted(run_id="r1", seq=seq, at=T0.astimezone(east), name="s", output={"n": seq})
            await store.append("r1", [step], expected_seq=seq - 1)
        assert decoded == []  # committed, cached, not decoded
        cached = await store.read("r1", after_seq=1, limit=STEPS)
        assert decoded == list(range(2, STEPS + 2))
        assert await store.read("r1", after_seq=1, limit=STEPS) == cached
        assert len(decoded) == STEPS  # decoded once, kept decoded
    async with SQLiteStore(path, synchronous="NORMAL") as reopened:  # no tail: read from the file
        from_file = await reopened.read("r1", after_seq=1, limit=STEPS)
    assert cached == from_file
    assert all(event.at.tzinfo is timezone.utc and event.at == T0 for event in cached)


@pytest.mark.anyio
async def test_an_event_of_scalars_in_utc_is_cached_as_itself_and_a_container_is_not_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    real_decode = sql_log.decode_event
    monkeypatch.setattr(sql_log, "decode_event", lambda *args: decoded.append(args[1]) or real_decode(*args))
    path = tmp_path / "runs.db"
    outputs: list[Any] = [7, "text \u00e9\u4e2d", 0.1, -0.0, 10**40, True, None, {"n": [1, 2]}]
    async with SQLiteStore(path, synchronous="NORMAL") as store:
        await store.append("r1", [created_run("r1")], expected_seq=0)
        appended = [StepCompleted(run_id="r1", seq=seq, at=T0, name="s", output=output)
                    for seq, output in enumerate(outputs, start=2)]
        for step in appended:
            await store.append("r1", [step], expected_seq=step.seq - 1)
        appended[-1].output["n"].append(3)  # the agent changes the container its step returned
        cached = await store.read("r1", after_seq=1, limit=len(outputs))
        assert all(got is step for got, step in zip(cached[:-1], appended))  # scalars: the event itself
        assert decoded == [appended[-1].seq]  # the container: decoded from its row
        assert cached[-1].output == {"n": [1, 2]}
    async with SQLiteStore(path, synchronous="NORMAL") as reopened:
        assert await reopened.read("r1", after_seq=1, limit=len(outputs)) == cached


@pytest.mark.anyio
async def test_every_event_of_a_run_reads_the_same_from_the_tail_as_from_the_file(tmp_path: Path) -> None:
    from runengine.engine import RunEngine

    path = tmp_path / "runs.db"
    engine = RunEngine(SQLiteStore(path, synchronous="NORMAL"))

    @engine.agent("varied")
    async def varied(ctx: Any) -> Any:
        await ctx.say("hello")
        await ctx.thought("thinking", source="model")
        await ctx.tool_call("search", {"q": "x"}, lambda q: {"hits": [q, 2]})
        await ctx.tool_call("count", {}, lambda: 5)
        await ctx.step("n", lambda: 3)
        await ctx.step("f", lambda: 2.5)
        await ctx.step("d", lambda: {"a": [1, {"b": None}]})
        await ctx.custom("note", "plain")
        await ctx.usage(input_tokens=3, output_tokens=4)
        await ctx.now()
        await ctx.sleep(0.01)
        return {"done": True}

    async with engine:
        state = await engine.execute("varied", {"in": 1})
        assert state.status.value == "completed", state.error
        cached = await engine.store.read(state.run_id, after_seq=0, limit=1000)
    async with SQLiteStore(path, synchronous="NORMAL") as reopened:
        from_file = await reopened.read(state.run_id, after_seq=0, limit=1000)
    assert len(from_file) > 12
    assert cached == from_file
    assert [type(e) for e in cached] == [type(e) for e in from_file]
