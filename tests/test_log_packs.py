"""A run's rows packed beside its log where it rests, read back by a long resume (issue 22, resume4).

SQLite keeps a packed copy of a run's rows (adapters.log_packs), written with the snapshot taken
where the run comes to rest, each row once; a resume reads those chunks first and the log after
them as before. The log stays the truth: a chunk that does not fit is not used.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import runengine.adapters.log_packs as log_packs
import runengine.replay as replay
from kit import until
from runengine import RunEngine
from runengine.adapters.sqlite import SQLiteStore
from runengine.context import RunContext
from runengine.options import Durability
from runengine.ports import PackedLog

SLEEP = 3600.0
STEPS = 1_500


@pytest.fixture(autouse=True)
def _small_packs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packs of a few hundred rows, read by a journal of a few hundred, in pages of 100."""
    monkeypatch.setattr(log_packs, "PACK_MIN", 200)
    monkeypatch.setattr(log_packs, "PACK_CHUNK", 500)
    monkeypatch.setattr(replay, "PACKED_FROM", 200, raising=False)
    monkeypatch.setattr(replay, "PACKED_PAGE", 600, raising=False)
    monkeypatch.setattr(replay, "PAGE", 100)


def _engine(path: Path, seen: dict[str, Any]) -> RunEngine:
    """`input` steps, a short sleep (a rest), as many steps again, then a long sleep."""
    engine = RunEngine(SQLiteStore(path), durability=Durability(delay_horizon=2 * SLEEP, park_after=None))

    def part(i: int) -> dict[str, Any]:
        seen["calls"] = seen.get("calls", 0) + 1
        return {"i": i, "text": f"ünï ✓ {i}", "big": 10**30 + i}

    @engine.agent("long")
    async def long(ctx: RunContext) -> None:
        outputs = [await ctx.step("part", part, i) for i in range(int(ctx.input))]
        await ctx.sleep(0.01)
        outputs += [await ctx.step("part", part, i) for i in range(int(ctx.input))]
        seen["outputs"] = outputs
        await ctx.sleep(SLEEP)

    return engine


def _chunks(path: Path) -> list[tuple[str, int, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT run_id, first_seq, last_seq FROM log_packs ORDER BY run_id, first_seq").fetchall()


async def _rested(path: Path) -> tuple[str, dict[str, Any], int]:
    """A run that rested twice (its short sleep, its long one); its id, what it saw, its last seq."""
    live: dict[str, Any] = {}
    async with _engine(path, live) as engine:
        run_id = (await engine.execute("long", STEPS, mode="async")).run_id
        await until(lambda: "outputs" in live, timeout=120)
        await until(lambda: _chunks(path) and _chunks(path)[-1][2] > 2 * STEPS, timeout=60)
        last_seq = (await engine.store.get_run(run_id)).last_seq
    return run_id, live, last_seq


def _read_from(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The seqs after which the log itself (not a pack) is read from now on."""
    reads: list[int] = []
    recorded = SQLiteStore.read_recorded

    async def counted(self: SQLiteStore, run_id: str, **kwargs: Any) -> Any:
        reads.append(kwargs.get("after_seq", 0))
        return await recorded(self, run_id, **kwargs)

    monkeypatch.setattr(SQLiteStore, "read_recorded", counted)
    return reads


def test_the_sqlite_store_keeps_packed_rows() -> None:
    assert issubclass(SQLiteStore, PackedLog)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
async def test_a_run_packs_its_rows_where_it_rests_once_each_and_a_resume_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.db"
    run_id, live, last_seq = await _rested(path)
    chunks = _chunks(path)
    # Contiguous from seq 1, each row once, none past the log; the second rest packed only what
    # followed the first (chunks of at most PACK_CHUNK rows).
    assert chunks[0][1] == 1 and all(a[2] + 1 == b[1] for a, b in zip(chunks, chunks[1:]))
    assert all(last - first < 500 for _, first, last in chunks)
    assert STEPS + 2 < chunks[-1][2] <= last_seq and {c[0] for c in chunks} == {run_id}
    assert any(first > STEPS + 2 for _, first, _ in chunks)  # the second rest packed on from the first

    reads = _read_from(monkeypatch)
    resumed: dict[str, Any] = {}
    async with _engine(path, resumed) as engine:
        await until(lambda: "outputs" in resumed, timeout=60)
        assert (await engine.status(run_id)).status.value == "running"
    assert resumed.get("calls", 0) == 0
    assert resumed["outputs"] == live["outputs"]
    assert reads and min(reads) >= chunks[-1][2]  # the log itself only after the packed rows


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
@pytest.mark.parametrize(
    "spoil",
    [
        "UPDATE log_packs SET packed = x'c1' WHERE first_seq = (SELECT min(first_seq) FROM log_packs)",  # not msgpack
        "UPDATE log_packs SET last_seq = last_seq - 1 WHERE first_seq = (SELECT min(first_seq) FROM log_packs)",  # other seqs
        "UPDATE log_packs SET packed = (SELECT packed FROM log_packs ORDER BY first_seq DESC LIMIT 1)"
        " WHERE first_seq = (SELECT min(first_seq) FROM log_packs)",  # another chunk's rows
        "UPDATE log_packs SET run_id = 'other'",  # another run's
    ],
)
async def test_a_chunk_that_does_not_fit_the_log_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spoil: str
) -> None:
    path = tmp_path / "runs.db"
    run_id, live, _ = await _rested(path)
    with sqlite3.connect(path) as conn:
        conn.execute(spoil)
    reads = _read_from(monkeypatch)
    resumed: dict[str, Any] = {}
    async with _engine(path, resumed):
        await until(lambda: "outputs" in resumed, timeout=60)
    assert resumed.get("calls", 0) == 0
    assert resumed["outputs"] == live["outputs"]
    assert min(reads) <= STEPS  # the log itself from the first chunk on (or before it)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
async def test_a_chunk_past_the_log_a_resume_replays_is_not_used(tmp_path: Path) -> None:
    """Asked for rows up to a seq inside a chunk, the store gives the chunks before it only."""
    path = tmp_path / "runs.db"
    run_id, _, _ = await _rested(path)
    chunks = _chunks(path)
    async with SQLiteStore(path) as store:
        upto = chunks[1][2] - 1
        page = await store.read_packed(run_id, after_seq=0, upto_seq=upto, limit=10_000)
        assert [row[0] for row in page.rows] == list(range(1, chunks[0][2] + 1))
        page = await store.read_packed(run_id, after_seq=5, upto_seq=10_000, limit=10_000)  # not a chunk's start
        assert page.rows == []
        # What it gives is what the log holds, row for row (events decoded alike).
        page = await store.read_packed(run_id, after_seq=0, upto_seq=10_000, limit=1)
        assert page.rows and len(page.rows) == chunks[0][2]
        logged = await store.read_recorded(run_id, after_seq=0, limit=len(page.rows))
        assert [tuple(row) for row in page.rows] == [tuple(row) for row in logged.rows]
        assert [page.event(row) for row in page.rows[:50]] == await store.read(run_id, limit=50)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
async def test_a_deleted_run_leaves_no_packed_rows(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    run_id, _, _ = await _rested(path)
    async with SQLiteStore(path) as store:
        assert await store.delete_run(run_id)
    assert _chunks(path) == []


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite store needs asyncio
async def test_a_rest_that_packed_rows_empties_the_wal(tmp_path: Path) -> None:
    """The megabytes a long run packs are checkpointed by the run entering its wait: the next
    process neither reads them back from the WAL at open nor copies them at its first commit."""
    path = tmp_path / "runs.db"
    live: dict[str, Any] = {}
    wal = Path(f"{path}-wal")
    async with _engine(path, live) as engine:
        await engine.execute("long", STEPS, mode="async")
        await until(lambda: "outputs" in live, timeout=120)
        await until(lambda: _chunks(path) and _chunks(path)[-1][2] > 2 * STEPS, timeout=60)
        await until(lambda: wal.stat().st_size == 0, timeout=10)
