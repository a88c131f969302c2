"""What a durable `ctx.step` costs the event loop, counted (issue 22): the Python calls the loop
makes per step, and the payload of a step that returned a number or text written without the
converter. Counts, not timings: a count is the same on a busy machine."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from runengine import RunContext
from runengine import wire
from runengine.adapters.memory import MemoryStore
from runengine.adapters import db_thread
from runengine.adapters import sqlite as sqlite_adapter
from runengine.adapters.sqlite import SQLiteStore
from runengine.engine import RunEngine
from runengine.events import EVENT_TYPES, RunCompleted, StepCompleted, Thought
from runengine.options import Durability
from kit import PythonCalls

ANYIO_BACKENDS = ("asyncio",)  # the SQLite store needs asyncio

AT = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
STEPS = 200

#: Python calls (frames entered, a coroutine's resumption included) on the loop per step of one
#: run: 137 on the memory store and 157 on SQLite before the first bound, 114 and 134 after it;
#: 96 and 107 since the writer makes its shielded scope with the backend's class looked up once
#: and knows whether its first commit is still to be announced, a step without an observer needs
#: no null context, and the SQLite store's queue item, answer and committed-tail bookkeeping do
#: less per append; 92.5 and 103.5 -> 89.5 and 94.5 since a step's call is not wrapped in a
#: closure, a flush reports to no observer when none is installed, and the SQLite store's append
#: (its queue item, its answer, its committed tail, its wake-up) calls nothing for a step's one
#: event that only a run.created, a batch of several or an installed observer needs.
MAX_CALLS_PER_STEP = {"memory": 90.5, "sqlite": 95.5}


def _trivial(i: int) -> int:
    return i


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_durable_step_makes_few_python_calls_on_the_loop(tmp_path: Path, kind: str) -> None:
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "runs.db", synchronous="NORMAL")
    engine = RunEngine(store, durability=Durability(park_after=None))
    calls = PythonCalls()

    @engine.agent("steps")
    async def steps(ctx: RunContext) -> None:
        await ctx.step("first", _trivial, -1)  # the run's start and its first commit, not counted
        sys.setprofile(calls)
        try:
            for i in range(STEPS):
                await ctx.step("trivial", _trivial, i)
        finally:
            sys.setprofile(None)

    async with engine:
        state = await engine.execute("steps", None)
    assert state.status.value == "completed" and state.steps == STEPS + 1
    assert calls.count / STEPS <= MAX_CALLS_PER_STEP[kind], f"{calls.count / STEPS:.1f} Python calls per step"


#: Python calls on the SQLite writer thread per event it commits, many runs stepping at once (each
#: batch holds one step of most runs): 15.0 before this bound was set, 8.2-8.7 after (the append
#: decision's one-event path, one comprehension for every event row of a batch); 8.9 -> 7.0 since
#: the batch is split, its runs' rows looked up and a terminal status told without a call made.
MAX_WRITER_CALLS_PER_EVENT = 7.5
RUNS = 20


@pytest.mark.anyio
async def test_the_sqlite_writer_makes_few_python_calls_per_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteStore(tmp_path / "runs.db", synchronous="NORMAL")
    engine = RunEngine(store, durability=Durability(park_after=None))
    calls = PythonCalls()

    commit = sqlite_adapter._BatchWriter.commit

    def counted(self: Any, raw: Any, batch: Any) -> Any:  # on the writer thread: its own profile
        sys.setprofile(calls)
        try:
            return commit(self, raw, batch)
        finally:
            sys.setprofile(None)

    monkeypatch.setattr(sqlite_adapter._BatchWriter, "commit", counted)

    @engine.agent("steps")
    async def steps(ctx: RunContext) -> None:
        for i in range(RUNS):
            await ctx.step("trivial", _trivial, i)

    async with engine:
        await engine.execute("steps", None)  # the store's first batches, not counted
        calls.count = 0
        store.batch_sizes.clear()
        states = await asyncio.gather(*(engine.execute("steps", None) for _ in range(RUNS)))
        written = sum(store.batch_sizes)
    assert all(state.status.value == "completed" and state.steps == RUNS for state in states)
    assert written >= RUNS * RUNS and max(store.batch_sizes) > 1  # many runs' steps in a batch
    assert calls.count / written <= MAX_WRITER_CALLS_PER_EVENT, f"{calls.count / written:.1f} Python calls per event"


def test_a_payload_of_json_scalars_is_written_without_the_converter(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_event: Any) -> Any:
        raise AssertionError("the converter was asked for a payload of JSON scalars")

    monkeypatch.setitem(wire._DATA_OUT, StepCompleted.type, refuse)
    monkeypatch.setitem(wire._DATA_OUT, Thought.type, refuse)
    step = StepCompleted(run_id="r", seq=2, at=AT, name="llm", output="ça \"va\"\n")
    assert wire.data_to_json(step) == '{"name":"llm","output":"ça \\"va\\"\\n","error":null}'
    assert wire.data_to_json(Thought(run_id="r", seq=3, at=AT, content="hm")) == '{"content":"hm","source":null}'


SCALARS = ["", "x", "é\u2028\"\\\x00\U0001f600", 0, -7, 2**70, 1.5, 1e16, -0.0, 5e-324, True, False, None]


@pytest.mark.parametrize("value", SCALARS, ids=repr)
def test_the_scalar_path_writes_what_the_converter_writes(value: Any) -> None:
    for event in (
        StepCompleted(run_id="r", seq=1, at=AT, name="n", output=value),
        RunCompleted(run_id="r", seq=1, at=AT, output=value),
        Thought(run_id="r", seq=1, at=AT, content="c", source=value),
    ):
        assert wire._scalar_payload_json(event) == wire.to_json(wire.event_data(event), "payload")


def test_what_the_scalar_path_leaves_to_the_converter() -> None:
    for value in (float("nan"), float("inf"), 10**5000, [1], {"a": 1}, AT):
        assert wire._scalar_payload_json(StepCompleted(run_id="r", seq=1, at=AT, name="n", output=value)) is None
    # a time field holding text is the converter's to judge, as before
    assert wire._scalar_payload_json(EVENT_TYPES["timer.started"](run_id="r", seq=1, at=AT, timer_id="t", until="soon")) is None


#: Python calls on the SQLite writer thread per batch of one run stepping alone (a batch is one
#: step): 24 before this bound, 18 since the batch's split, its runs' lookup and its check for
#: cancelled writes make no call, and the rows it leaves are remembered after its answer is posted.
MAX_WRITER_CALLS_PER_BATCH = 18.5


@pytest.mark.anyio
async def test_the_sqlite_writer_makes_few_python_calls_per_step_of_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(tmp_path / "runs.db", synchronous="NORMAL")
    engine = RunEngine(store, durability=Durability(park_after=None))
    calls = PythonCalls()
    commit_from = db_thread.DatabaseThread._commit_from

    def counted(self: Any, first: Any) -> Any:  # on the writer thread: a batch, from its first write to its answer
        sys.setprofile(calls)
        try:
            return commit_from(self, first)
        finally:
            sys.setprofile(None)

    monkeypatch.setattr(db_thread.DatabaseThread, "_commit_from", counted)

    @engine.agent("steps")
    async def steps(ctx: RunContext) -> None:
        for i in range(int(ctx.input)):
            await ctx.step("trivial", _trivial, i)

    async with engine:
        await engine.execute("steps", 5)  # the store's first batches, not counted
        calls.count = 0
        store.batch_sizes.clear()
        state = await engine.execute("steps", STEPS)
        batches = len(store.batch_sizes)
    assert state.status.value == "completed" and state.steps == STEPS
    assert batches >= STEPS  # one step a batch
    assert calls.count / batches <= MAX_WRITER_CALLS_PER_BATCH, f"{calls.count / batches:.1f} Python calls per batch"
