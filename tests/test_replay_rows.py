"""Replay passes a long log by without building an event per row (issue 22).

A resumed run's journal reads the log as the store keeps it (`RecordedReader.read_recorded`):
a replayed `ctx.step` is compared and answered on its stored payload, so the events built while
resuming are those of the state's fold (the tail after the latest snapshot), not one per step.
What the agent gets back, and what a changed agent is told, stay as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import runengine.adapters.sql_log as sql_log
from kit import until
from runengine import RunEngine
from runengine.adapters.memory import MemoryStore
from runengine.adapters.postgres import PostgresStore
from runengine.adapters.sqlite import SQLiteStore
from runengine.context import RunContext
from runengine.errors import StepFailed
from runengine.options import Durability
from runengine.ports import RecordedReader
from runengine.status import Status

STEPS = 2_500
SLEEP = 3600.0


def test_the_shipped_stores_hand_a_replay_their_rows_undecoded() -> None:
    """Each store the project ships keeps the RecordedReader port (its conformance suite checks it)."""
    for store in (MemoryStore, SQLiteStore, PostgresStore):
        assert issubclass(store, RecordedReader), store


def _engine(path: Path, seen: dict[str, Any], *, step_name: str = "part") -> RunEngine:
    """Steps named `step_name`, a failing step, then a long durable sleep; `seen` gets what the
    agent got back and counts the calls made."""
    engine = RunEngine(SQLiteStore(path), durability=Durability(delay_horizon=2 * SLEEP, park_after=None))

    def part(i: int) -> dict[str, Any]:
        seen["calls"] = seen.get("calls", 0) + 1
        return {"i": i, "of": [i, str(i)], "big": 10**30 + i}

    def boom() -> None:
        seen["calls"] = seen.get("calls", 0) + 1
        raise ValueError("no")

    @engine.agent("long")
    async def long(ctx: RunContext) -> None:
        outputs = [await ctx.step(step_name, part, i) for i in range(int(ctx.input))]
        try:
            await ctx.step("boom", boom)
        except StepFailed as exc:
            seen["failed"] = exc.args
        seen["outputs"] = outputs
        await ctx.sleep(SLEEP)

    return engine


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
async def test_a_resumed_run_builds_no_event_per_replayed_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "runs.db"
    live: dict[str, Any] = {}
    async with _engine(path, live) as engine:
        run_id = (await engine.execute("long", STEPS, mode="async")).run_id
        await until(lambda: "outputs" in live, timeout=120)
    assert live["calls"] == STEPS + 1

    built: list[str] = []
    decode = sql_log.decode_event

    def counted(run_id: str, seq: int, event_type: str, at: Any, data: Any) -> Any:
        built.append(event_type)
        return decode(run_id, seq, event_type, at, data)

    monkeypatch.setattr(sql_log, "decode_event", counted)
    resumed: dict[str, Any] = {}
    async with _engine(path, resumed) as engine:
        await until(lambda: "outputs" in resumed, timeout=120)
        state = await engine.status(run_id)
    assert resumed.get("calls", 0) == 0  # nothing made again
    assert resumed["outputs"] == live["outputs"]  # each step's output as recorded
    assert resumed["failed"] == live["failed"]  # a recorded error raised again
    assert state.status is Status.RUNNING and state.steps == STEPS + 1
    # The state's fold reads the tail after the latest snapshot (every 1,000 events); the journal
    # builds none of the step.completed rows it replays (before: every one of them, once more).
    assert built.count("step.completed") <= 1_000 + 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
async def test_a_renamed_step_still_diverges_where_it_was_recorded(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    seen: dict[str, Any] = {}
    async with _engine(path, seen) as engine:
        run_id = (await engine.execute("long", 3, mode="async")).run_id
        await until(lambda: "outputs" in seen)
    async with _engine(path, {}, step_name="renamed") as engine:
        state = await until(lambda: _ended(engine, run_id))
    assert state.status is Status.FAILED
    assert state.error.code == "replay_divergence"
    assert "called step('renamed'), but it recorded name='part', not 'renamed'" in state.error.message
    assert "replay diverged at seq 3:" in state.error.message  # the first step (after run.created, run.started)


async def _ended(engine: RunEngine, run_id: str) -> Any:
    state = await engine.status(run_id)
    return state if state.terminal else None


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
async def test_a_replayed_step_decodes_its_output_not_its_whole_payload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replayed `ctx.step` that returned takes its output from its stored payload decoded
    into its three fields: no payload decoded whole (a dict made and looked into) per step."""
    import runengine.recording as recording
    import runengine.wire as wire

    path = tmp_path / "runs.db"
    live: dict[str, Any] = {}
    async with _engine(path, live) as engine:
        await engine.execute("long", STEPS, mode="async")  # past the head recovery reads decoded
        await until(lambda: "outputs" in live, timeout=60)

    whole: list[Any] = []
    loads = wire.loads_stored

    def counted(text: Any) -> Any:
        value = loads(text)
        if isinstance(value, dict) and "output" in value:
            whole.append(value)
        return value

    # Wherever the replay would decode a payload with it (the recorder's own name, if it has one).
    monkeypatch.setattr(wire, "loads_stored", counted)
    monkeypatch.setattr(recording, "loads_stored", counted, raising=False)
    resumed: dict[str, Any] = {}
    async with _engine(path, resumed) as engine:
        await until(lambda: "outputs" in resumed, timeout=60)
    assert resumed.get("calls", 0) == 0
    assert resumed["outputs"] == live["outputs"] and resumed["failed"] == live["failed"]
    assert whole == []  # before: every one of the 2,500 steps' payloads


#: Steps enough that a resume reads the log from the store as rows (a log without a snapshot,
#: every 1,000 events, is folded from seq 1 and its events handed over decoded).
PAST_THE_HEAD = 1_200

# Outputs that look like the end of a stored payload, or hold its keys, and names JSON escapes.
TRICKY = [
    ("plain", 'a,"error":null}'),
    ("plain", {"error": None, "output": 1, "name": "other"}),
    ("plain", [1, ',"error":null}', {"x": '"}'}]),
    ("plain", None),
    ('quo"te\\d', "x"),
    ("ünï ✓", 10**40),
    ("plain", 1.5),
]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
async def test_a_replayed_step_gets_back_what_it_returned_whatever_it_looks_like(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken from the stored payload decoded into its fields or not, each output comes back as it was."""
    import runengine.replay as replay

    path = tmp_path / "runs.db"
    seen: list[dict[str, Any]] = [{}, {}]

    def engine_for(run: int) -> RunEngine:
        engine = RunEngine(SQLiteStore(path), durability=Durability(delay_horizon=2 * SLEEP, park_after=None))

        @engine.agent("tricky")
        async def tricky(ctx: RunContext) -> None:
            for i in range(PAST_THE_HEAD):  # the journal reads the log from the store, as rows
                await ctx.step("pad", lambda i=i: i)
            got = [await ctx.step(name, lambda output=output: output) for name, output in TRICKY]
            try:
                await ctx.step("plain", _fails)  # same name as a step that returned: the error comes back
            except StepFailed as exc:
                got.append(exc.args)
            seen[run]["got"] = got
            await ctx.sleep(SLEEP)

        return engine

    async with engine_for(0) as engine:
        await engine.execute("tricky", None, mode="async")
        await until(lambda: "got" in seen[0])
    decoded: list[str] = []
    decode = replay._decode_returned

    def counted(text: str) -> Any:
        decoded.append(text)
        return decode(text)

    monkeypatch.setattr(replay, "_decode_returned", counted)
    async with engine_for(1) as engine:
        await until(lambda: "got" in seen[1])
    assert len(decoded) >= PAST_THE_HEAD  # the outputs were taken from the stored text
    assert seen[1]["got"] == seen[0]["got"]
    assert seen[1]["got"][: len(TRICKY)] == [output for _, output in TRICKY]


def _fails() -> None:
    raise ValueError("no")


#: Calls (Python frames entered, a coroutine's included, and C functions called) per replayed
#: `ctx.step` whose row is in the page in hand: 12.2 before this bound was set (the journal's
#: `take_at_hand`, then the stored text checked and sliced around the output: a dict look-up,
#: startswith, endswith, two len, the decode, a tuple handed back), 4.1 after (`ctx.step`
#: calls the journal's `returned_step` straight, which decodes the payload into its fields).
MAX_CALLS_PER_REPLAYED_STEP = 6


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
async def test_a_replayed_step_makes_few_calls(tmp_path: Path) -> None:
    """Counts, not timings (the same on a busy machine): what replaying one step costs the loop."""
    import sys

    path = tmp_path / "runs.db"
    counted: dict[str, Any] = {}

    def engine_for(count: bool) -> RunEngine:
        engine = RunEngine(SQLiteStore(path), durability=Durability(delay_horizon=2 * SLEEP, park_after=None))
        calls = 0

        def profile(_frame: Any, event: str, _arg: Any) -> None:
            nonlocal calls
            if event in ("call", "c_call"):
                calls += 1

        @engine.agent("steps")
        async def steps(ctx: RunContext) -> None:
            for i in range(PAST_THE_HEAD):  # the journal reads the log from the store, as rows
                await ctx.step("pad", _same, i)
            if count:
                sys.setprofile(profile)
            try:
                for i in range(STEPS):  # 2,500 steps: three pages, read twice in all
                    await ctx.step("counted", _same, i)
            finally:
                sys.setprofile(None)
            counted["calls"] = calls
            await ctx.sleep(SLEEP)

        return engine

    async with engine_for(count=False) as engine:
        run_id = (await engine.execute("steps", None, mode="async")).run_id
        await until(lambda: "calls" in counted, timeout=60)
    counted.clear()
    async with engine_for(count=True) as engine:
        await until(lambda: "calls" in counted, timeout=60)
        state = await engine.status(run_id)
    assert state.steps == PAST_THE_HEAD + STEPS  # replayed, nothing made again
    per_step = counted["calls"] / STEPS
    assert per_step <= MAX_CALLS_PER_REPLAYED_STEP, f"{per_step:.1f} calls per replayed step"


def _same(i: int) -> int:
    return i


#: Events a run makes before it rests in the tests below: past the least a snapshot at rest needs
#: (`TERMINAL_SNAPSHOT_MIN`), far short of the every-1,000-events snapshot.
RESTING_STEPS = 100


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
@pytest.mark.parametrize("rest", ["sleep", "ask"])
async def test_a_long_run_that_comes_to_rest_is_snapshotted_there(tmp_path: Path, rest: str) -> None:
    """A durable wait that begins after many events takes a snapshot of the state at its event:
    the next engine to take the run up loads that state and folds nothing after it; a run
    resumed from there still replays, goes on and ends as it would have."""
    path = tmp_path / "runs.db"
    seen: dict[str, Any] = {}

    def engine_for() -> RunEngine:
        engine = RunEngine(SQLiteStore(path), durability=Durability(delay_horizon=2 * SLEEP, park_after=None))

        @engine.agent("rests")
        async def rests(ctx: RunContext) -> int:
            outputs = [await ctx.step("part", _same, i) for i in range(RESTING_STEPS)]
            if rest == "sleep":
                await ctx.sleep(SLEEP)
            else:
                seen["answer"] = await ctx.ask("more?")
            return sum(outputs)

        return engine

    async with engine_for() as engine:
        run_id = (await engine.execute("rests", None, mode="async")).run_id
        state = await until(lambda: _resting(engine, run_id), timeout=60)
        rested_at = state.last_seq
        snapshot = await until(lambda: _snapshot_at(engine, run_id, rested_at), timeout=20)
    assert snapshot.steps == RESTING_STEPS and snapshot.last_seq == rested_at
    if rest == "ask":  # the next engine resumes it with its input, from the snapshot's state on
        async with engine_for() as engine:
            await engine.resume(run_id, "yes")
            state = await until(lambda: _ended(engine, run_id), timeout=60)
        assert state.status is Status.COMPLETED and state.output == sum(range(RESTING_STEPS))
        assert seen["answer"] == "yes" and state.steps == RESTING_STEPS


async def _resting(engine: RunEngine, run_id: str) -> Any:
    state = await engine.status(run_id)
    waiting = state.status is Status.WAITING_FOR_INPUT or state.sleeping_until is not None
    return state if waiting else None


async def _snapshot_at(engine: RunEngine, run_id: str, seq: int) -> Any:
    snapshot = await engine.store.load_snapshot(run_id)
    return snapshot if snapshot is not None and snapshot.last_seq == seq else None


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_short_run_that_comes_to_rest_takes_no_snapshot() -> None:
    """A wait after a few events costs no snapshot (idle runs cost nothing more than before)."""
    engine = RunEngine(MemoryStore(), durability=Durability(delay_horizon=2 * SLEEP, park_after=None))

    @engine.agent("short")
    async def short(ctx: RunContext) -> None:
        await ctx.step("part", _same, 1)
        await ctx.sleep(SLEEP)

    async with engine:
        run_id = (await engine.execute("short", None, mode="async")).run_id
        await until(lambda: _resting(engine, run_id))
        assert await engine.store.load_snapshot(run_id) is None


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
async def test_a_resumed_run_writes_no_snapshot_before_its_replay(tmp_path: Path) -> None:
    """A resumed run's `run.resumed` is committed before its replay; the state it resumes from
    was just loaded, so no snapshot of it is written then (before: one, for a log of 1,000
    events or more, on the resume's path). Its first live batch takes one."""
    path = tmp_path / "runs.db"
    seen: dict[str, Any] = {}

    def engine_for() -> RunEngine:
        engine = RunEngine(SQLiteStore(path), durability=Durability(delay_horizon=2 * SLEEP, park_after=None))

        @engine.agent("asks")
        async def asks(ctx: RunContext) -> int:
            for i in range(PAST_THE_HEAD):
                await ctx.step("part", _same, i)
            answer = await ctx.ask("go on?")
            if ctx.replaying:  # resumed: what the store holds before anything live is written
                seen["snapshot_when_replayed"] = await engine.store.load_snapshot(ctx.run_id)
            await ctx.step("after", _same, answer)
            return PAST_THE_HEAD

        return engine

    async with engine_for() as engine:
        run_id = (await engine.execute("asks", None, mode="async")).run_id
        rested = await until(lambda: _resting(engine, run_id), timeout=60)
        await until(lambda: _snapshot_at(engine, run_id, rested.last_seq), timeout=20)
    async with engine_for() as engine:
        await engine.resume(run_id, 1)
        state = await until(lambda: _ended(engine, run_id), timeout=60)
        final = await engine.store.load_snapshot(run_id)
    assert state.status is Status.COMPLETED and state.steps == PAST_THE_HEAD + 1
    assert seen["snapshot_when_replayed"].last_seq == rested.last_seq  # the one taken where it rested
    assert final is not None and final.last_seq > rested.last_seq + 2  # past run.input and run.resumed


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
async def test_a_resume_looks_its_store_up_as_a_reader_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal asks whether its store is a RecordedReader (an isinstance check that walks the
    Protocol's members) at its first page, not at every page of a long log."""
    import runengine.replay as replay

    path = tmp_path / "runs.db"
    live: dict[str, Any] = {}
    async with _engine(path, live) as engine:
        await engine.execute("long", STEPS, mode="async")  # three pages of 1,000 rows to replay
        await until(lambda: "outputs" in live, timeout=60)
    looked_up: list[Any] = []
    port_of = replay.port_of

    def counted(store: Any, port: Any) -> Any:
        looked_up.append(port)
        return port_of(store, port)

    monkeypatch.setattr(replay, "port_of", counted)
    resumed: dict[str, Any] = {}
    async with _engine(path, resumed) as engine:
        await until(lambda: "outputs" in resumed, timeout=60)
    assert resumed["outputs"] == live["outputs"]
    assert looked_up == [RecordedReader]  # before: once per page read
