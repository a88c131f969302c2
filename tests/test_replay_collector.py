"""A long replay pauses the cyclic garbage collector while it reads its rows (issue 22, resume4).

The rows a resume reads are kept for the journal's lazy fold until the run goes live: the
collections their allocation triggers walk them for nothing, and bring on the process's first
full collection in the middle of the replay. The pause ends with the reading, when the replay
stops (live, diverged, failed) or after GC_PAUSE_SECONDS; what was allocated meanwhile goes to
the oldest generation unwalked, so no young collection walks it all at once afterwards.
"""

from __future__ import annotations

import gc
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

import runengine.replay as replay
from kit import until
from runengine import RunEngine
from runengine.adapters.memory import MemoryStore
from runengine.adapters.sqlite import SQLiteStore
from runengine.collector import CollectorPause
from runengine.context import RunContext
from runengine.events import StepCompleted
from runengine.options import Durability
from runengine.replay import NOT_AT_HAND, Journal
from runengine.status import Status
from runengine.testing.conformance import created, started

SLEEP = 3600.0


@pytest.fixture(autouse=True)
def _collector_on_after() -> Any:
    """A failing test leaves the process's collector on for the next ones."""
    yield
    gc.enable()


async def _stored_steps(count: int) -> MemoryStore:
    store = MemoryStore()
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    log = [created("r"), started("r")] + [
        StepCompleted(run_id="r", seq=seq, at=at, name="s", output=seq) for seq in range(3, count + 3)
    ]
    await store.append("r", log, expected_seq=0)
    return store


def test_the_objects_of_a_pause_go_to_the_oldest_generation_when_it_ends() -> None:
    assert gc.isenabled() and gc.get_freeze_count() == 0
    pause = CollectorPause()
    pause.start()
    kept = [[i] for i in range(20_000)]  # tracked objects allocated during the pause, kept alive
    assert gc.get_count()[0] >= 20_000
    pause.end()
    assert gc.isenabled()
    assert gc.get_count()[0] < 100  # no young collection is due to walk them
    assert gc.get_freeze_count() == 0  # moved on, not left frozen
    young = {id(o) for o in gc.get_objects(generation=0)}
    assert id(kept[0]) not in young and id(kept[-1]) not in young
    assert any(o is kept[-1] for o in gc.get_objects(generation=2))


def test_objects_the_application_froze_stay_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        pause = CollectorPause()
        pause.start()
        pause.end()
        assert gc.isenabled() and gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_long_journal_pauses_the_collector_until_its_last_row_is_read() -> None:
    rows = replay.GC_PAUSE_ROWS + 3 * replay.PAGE
    journal = Journal(await _stored_steps(rows), "r", end_seq=rows + 2)
    assert gc.isenabled()
    assert journal.returned_step("s") is NOT_AT_HAND  # no page in hand yet
    replayed = [await journal.next()]  # the first page is read: the pause begins
    while journal._read_seq < journal.end_seq:
        assert not gc.isenabled()
        output = journal.returned_step("s")
        replayed.append(output if output is not NOT_AT_HAND else await journal.next())
    assert gc.isenabled()  # the last page read: on again
    while (output := journal.returned_step("s")) is not NOT_AT_HAND or (output := await journal.next()) is not None:
        replayed.append(output)
    assert len(replayed) == rows
    assert gc.isenabled()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_short_journal_leaves_the_collector_alone() -> None:
    rows = replay.GC_PAUSE_ROWS - 10
    journal = Journal(await _stored_steps(rows), "r", end_seq=rows + 2)
    await journal.next()
    assert gc.isenabled()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_journal_left_unread_ends_its_pause_after_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay, "GC_PAUSE_SECONDS", 0.05)
    rows = replay.GC_PAUSE_ROWS + 3 * replay.PAGE
    journal = Journal(await _stored_steps(rows), "r", end_seq=rows + 2)
    await journal.next()
    assert not gc.isenabled()
    await anyio.sleep(0.2)
    assert gc.isenabled()
    journal.release()  # idempotent
    assert gc.isenabled()


def _engine(path: Path, seen: dict[str, Any], fail_at: int | None) -> RunEngine:
    engine = RunEngine(SQLiteStore(path), durability=Durability(delay_horizon=2 * SLEEP, park_after=None))

    @engine.agent("long")
    async def long(ctx: RunContext) -> None:
        for i in range(int(ctx.input)):
            if i == fail_at:
                seen["collector_on"] = gc.isenabled()
                raise RuntimeError("the agent fails in the middle of its replay")
            await ctx.step("s", lambda i=i: i)
        seen["asleep"] = True
        await ctx.sleep(SLEEP)

    return engine


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
@pytest.mark.parametrize("ending", ["failed", "live"])
async def test_a_resume_turns_the_collector_back_on_however_its_replay_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    monkeypatch.setattr(replay, "GC_PAUSE_ROWS", 200)
    monkeypatch.setattr(replay, "PAGE", 100)
    path = tmp_path / "runs.db"
    seen: dict[str, Any] = {}
    async with _engine(path, seen, None) as engine:
        run_id = (await engine.execute("long", 1_000, mode="async")).run_id
        await until(lambda: seen.get("asleep"), timeout=60)

    seen.clear()
    async with _engine(path, seen, 150 if ending == "failed" else None) as engine:
        if ending == "failed":
            state = await engine.wait(run_id)
            assert state.status is Status.FAILED
            assert seen["collector_on"] is False  # paused while the rows were read
        else:
            await until(lambda: seen.get("asleep"), timeout=60)
        assert gc.isenabled()
