"""SQLiteStore specifics: schema versioning, URLs, durability settings, reopening, the engine on SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from runengine.adapters.sqlite import SCHEMA_VERSION, SQLiteStore
from runengine.engine import RunEngine
from runengine.errors import ConcurrencyConflict, InvalidRequest, SchemaVersionError, StoreError
from runengine.events import MessageDelta
from runengine.ports import SessionRecord
from runengine.reducer import Fold
from runengine.status import Status
from runengine.stores import open_store
from runengine.testing.conformance import T0, deltas, key_record, new_log, read_all
from runengine.testing.conformance import created as created_run
from runengine.options import Durability


ANYIO_BACKENDS = ("asyncio",)  # the SQLite store needs asyncio


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# -- schema -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_schema_is_created_on_first_use_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(path):
        pass
    assert {"schema_version", "events", "runs", "snapshots", "idempotency", "sessions"} <= tables(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    async with SQLiteStore(path):  # opening again changes nothing
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


@pytest.mark.anyio
async def test_a_version_1_file_is_migrated_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    async with SQLiteStore(path) as store:
        await store.append("r1", [created_run("r1", session_id="implicit", owner="alice")], expected_seq=0)
        await store.append("r2", [created_run("r2", session_id="implicit", owner="bob")], expected_seq=0)
        await store.append("r3", [created_run("r3", session_id="explicit", owner="carol")], expected_seq=0)
        await store.put_session(SessionRecord(session_id="explicit", owner="carol", created_at=T0, metadata={"m": 1}))
    with sqlite3.connect(path) as conn:  # back to what version 1 wrote
        conn.execute("DROP TABLE idempotency")
        conn.execute("CREATE TABLE idempotency_keys (key TEXT PRIMARY KEY, run_id TEXT NOT NULL, reserved_us INTEGER NOT NULL)")
        conn.execute("INSERT INTO idempotency_keys VALUES ('acme:alice:k', 'r1', 0)")
        conn.execute("DELETE FROM sessions WHERE session_id = 'implicit'")
        conn.execute("DROP INDEX runs_by_ended")  # version 3's
        conn.execute("ALTER TABLE runs DROP COLUMN ended_us")
        conn.execute("DROP INDEX runs_by_wake")  # version 5's
        conn.execute("DROP INDEX runs_busy")
        conn.execute("ALTER TABLE runs DROP COLUMN wake_at")
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version VALUES (1)")
    async with SQLiteStore(path) as store:
        # A session begun by runs is now recorded, owned by its first run's principal.
        implicit = await store.get_session("implicit")
        assert implicit is not None and implicit.owner == "alice" and implicit.created_at == T0
        assert (await store.get_session("explicit")) == SessionRecord(
            session_id="explicit", owner="carol", created_at=T0, metadata={"m": 1}
        )
        assert [r.run_id for r in (await store.list_runs()).runs] == ["r3", "r2", "r1"]
        # Joined keys could not say whose they were: dropped, and the key is free.
        record = key_record("k", "r9", principal="acme:alice")
        assert await store.reserve_idempotency_key(record, ttl=60, pending_for=10) is None
    assert "idempotency_keys" not in tables(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)


@pytest.mark.anyio
async def test_a_newer_schema_is_a_clear_error_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaVersionError) as caught:
        await SQLiteStore(path).open()
    assert caught.value.code == "schema_version"
    assert str(SCHEMA_VERSION + 1) in caught.value.message
    assert tables(path) == {"schema_version"}  # nothing of ours was created in it


@pytest.mark.anyio
async def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a sqlite database, just some bytes" * 100)
    with pytest.raises(StoreError):
        await SQLiteStore(path).open()
    with pytest.raises(StoreError):
        await SQLiteStore(tmp_path / "no" / "such" / "dir" / "x.db").open()


# -- URLs and settings ------------------------------------------------------------------


def test_urls(tmp_path: Path) -> None:
    relative = SQLiteStore.from_url("sqlite:///runs.db")
    assert relative.path == "runs.db" and not relative.memory
    absolute = SQLiteStore.from_url(f"sqlite:///{tmp_path}/runs.db")
    assert absolute.path == f"{tmp_path}/runs.db"
    assert SQLiteStore.from_url("sqlite:////abs/path.db").path == "/abs/path.db"
    assert SQLiteStore.from_url("sqlite://:memory:").memory
    assert SQLiteStore.from_url("sqlite:///:memory:").memory
    tuned = SQLiteStore.from_url("sqlite:///x.db?synchronous=normal&flush_max=64&flush_window=0.004")
    assert (tuned.synchronous, tuned.flush_max, tuned.flush_window) == ("NORMAL", 64, 0.004)
    store = open_store("sqlite:///runs.db")
    assert isinstance(store, SQLiteStore) and store.synchronous == "FULL"
    assert isinstance(RunEngine("sqlite://:memory:").store, SQLiteStore)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite://somehost/runs.db",
        "sqlite:///x.db?synchronous=OFF",
        "sqlite:///x.db?flush_max=zero",
        "sqlite:///x.db?flush_max=0",
        "sqlite:///x.db?flush_window=0.5",
        "sqlite:///x.db?colour=blue",
        "postgresql:///x",
    ],
)
def test_bad_urls_are_invalid_requests(url: str) -> None:
    with pytest.raises(InvalidRequest):
        SQLiteStore.from_url(url)


@pytest.mark.parametrize(
    "options",
    [{"synchronous": "OFF"}, {"synchronous": 2}, {"flush_max": 0}, {"flush_window": -1}, {"flush_window": 0.02}],
)
def test_bad_settings_are_invalid_requests(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        SQLiteStore("x.db", **options)


@pytest.mark.anyio
@pytest.mark.parametrize("synchronous, level", [("FULL", 2), ("NORMAL", 1)])
async def test_durability_settings_reach_sqlite(tmp_path: Path, synchronous: str, level: int) -> None:
    async with SQLiteStore(tmp_path / "d.db", synchronous=synchronous) as store:
        writer = store._writer_db  # the writer's own connection, on its thread
        assert writer is not None
        assert await writer.call(lambda raw: raw.execute("PRAGMA synchronous").fetchall()) == [(level,)]
        assert await writer.call(lambda raw: raw.execute("PRAGMA journal_mode").fetchall()) == [("wal",)]
        await store.append("r", new_log("r", 3), expected_seq=0)
    with sqlite3.connect(tmp_path / "d.db") as raw:  # committed, visible to any other connection
        assert raw.execute("SELECT count(*) FROM events").fetchone() == (3,)


# -- persistence, failures, group commit ----------------------------------------------------


@pytest.mark.anyio
async def test_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "keep.db"
    log = new_log("r", 700, session_id="s", owner="o")
    fold = Fold()
    fold.apply_all(log[:400])
    session = SessionRecord(session_id="s", owner="o", created_at=T0, metadata={"a": 1})
    async with SQLiteStore(path) as store:
        await store.append("r", log[:400], expected_seq=0)
        await store.append("r", log[400:], expected_seq=400)
        assert fold.state is not None
        await store.save_snapshot(fold.state)
        await store.put_session(session)
        assert await store.reserve_idempotency_key(key_record("k", "r"), ttl=60, pending_for=10) is None
        summary = await store.get_run("r")
    async with SQLiteStore(path) as store:
        assert await read_all(store, "r", page=64) == log
        assert await store.get_run("r") == summary
        assert [r.run_id for r in (await store.list_runs(session_id="s")).runs] == ["r"]
        assert await store.load_snapshot("r") == fold.state
        assert await store.get_session("s") == session
        assert await store.reserve_idempotency_key(key_record("k", "other"), ttl=60, pending_for=10) == key_record("k", "r")
        await store.append("r", deltas("r", 701, 2), expected_seq=700)
        assert await store.last_seq("r") == 702


@pytest.mark.anyio
async def test_a_failed_commit_raises_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with SQLiteStore(path, busy_timeout=0.05) as store:
        await store.append("r", new_log("r", 2), expected_seq=0)
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(StoreError):
                await store.append("r", deltas("r", 3, 5), expected_seq=2)
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        assert await store.read("r", after_seq=2) == []
        assert await store.last_seq("r") == 2
        await store.append("r", deltas("r", 3, 5), expected_seq=2)  # and the store carries on
        assert await store.last_seq("r") == 7


@pytest.mark.anyio
async def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    await store.open()
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError):
        await store.append("r", new_log("r", 2), expected_seq=0)
    with pytest.raises(StoreError):
        await store.read("r")


@pytest.mark.anyio
async def test_close_answers_every_queued_append(tmp_path: Path) -> None:
    path = tmp_path / "drain.db"
    store = SQLiteStore(path, flush_window=0.010, flush_max=10_000)
    await store.open()
    for i in range(20):
        await store.append(f"r{i}", new_log(f"r{i}", 2), expected_seq=0)
    answered: list[int] = []

    async def one(i: int) -> None:
        await store.append(f"r{i}", deltas(f"r{i}", 3, 3), expected_seq=2)
        answered.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(one, i)
        await anyio.wait_all_tasks_blocked()  # all 20 are queued, waiting for the window
        await store.close()
    assert sorted(answered) == list(range(20))
    async with SQLiteStore(path) as reopened:
        assert [await reopened.last_seq(f"r{i}") for i in range(20)] == [5] * 20


@pytest.mark.anyio
async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "g.db", flush_window=0.005) as store:
        for i in range(50):
            await store.append(f"r{i}", new_log(f"r{i}", 2), expected_seq=0)
        commits_before = len(store.commit_times)

        async def one(i: int) -> None:
            await store.append(f"r{i}", [MessageDelta(run_id=f"r{i}", seq=3, at=T0, message_id="m", content="x")], expected_seq=2)

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
        commits = len(store.commit_times) - commits_before
        assert 1 <= commits <= 10, commits  # 50 appends, queued together, share a few transactions
        assert all([await store.last_seq(f"r{i}") == 3 for i in range(50)])


@pytest.mark.anyio
async def test_a_write_reaches_the_disk_while_the_event_loop_is_busy(tmp_path: Path) -> None:
    """A write goes straight to the writer thread: no turn of the event loop is needed between the
    caller queuing it and its COMMIT (the loop is busy here, never yielding, until the row is on disk)."""
    import asyncio
    import time

    path = tmp_path / "hop.db"
    async with SQLiteStore(path) as store:
        await store.append("r", new_log("r", 2), expected_seq=0)
        append = asyncio.ensure_future(store.append("r", deltas("r", 3, 1), expected_seq=2))
        await asyncio.sleep(0)  # the append runs up to its wait for the commit
        deadline = time.monotonic() + 10.0
        committed = 0
        with sqlite3.connect(path) as other:
            while time.monotonic() < deadline and committed < 3:  # the loop thread never yields in here
                committed = other.execute("SELECT count(*) FROM events WHERE run_id = 'r'").fetchone()[0]
                time.sleep(0.001)
        await append
    assert committed == 3


@pytest.mark.anyio
async def test_appending_to_a_run_this_store_wrote_reads_no_runs_row(tmp_path: Path) -> None:
    """The sole writer knows the row it left: an append's commit updates the run's row checked on its
    last seq, with no SELECT of it first (one statement fewer on the hot path of every step)."""
    async with SQLiteStore(tmp_path / "rows.db") as store:
        await store.append("r", new_log("r", 2), expected_seq=0)
        writer = store._writer_db
        assert writer is not None
        statements: list[str] = []
        await writer.call(lambda raw: raw.set_trace_callback(statements.append))
        await store.append("r", deltas("r", 3, 1), expected_seq=2)
        await store.append("r", deltas("r", 4, 2), expected_seq=3)
        await writer.call(lambda raw: raw.set_trace_callback(None))
        assert not [sql for sql in statements if sql.lstrip().upper().startswith("SELECT")], statements
        assert await store.last_seq("r") == 5


@pytest.mark.anyio
async def test_a_runs_row_changed_behind_the_writer_is_a_conflict_not_overwritten(tmp_path: Path) -> None:
    """If another connection moved a run on (it should not: one writer per file), the row check
    notices, the batch is decided again on what the file holds, and nothing is overwritten."""
    path = tmp_path / "stale.db"
    async with SQLiteStore(path) as store:
        await store.append("r", new_log("r", 2), expected_seq=0)
        with sqlite3.connect(path, isolation_level=None) as other:
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO events SELECT run_id, 3, type, at_us, data FROM events WHERE run_id = 'r' AND seq = 2")
            other.execute("UPDATE runs SET last_seq = 3 WHERE run_id = 'r'")
            other.execute("COMMIT")
        with pytest.raises(ConcurrencyConflict):
            await store.append("r", deltas("r", 3, 1), expected_seq=2)
        await store.append("r", deltas("r", 4, 1), expected_seq=3)  # decided on the file's row from now on
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT last_seq FROM runs WHERE run_id = 'r'").fetchone() == (4,)
        assert [row[0] for row in raw.execute("SELECT seq FROM events WHERE run_id = 'r' ORDER BY seq")] == [1, 2, 3, 4]


@pytest.mark.anyio
async def test_unstorable_payloads_are_invalid_requests(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "p.db") as store:
        await store.append("r", new_log("r", 2), expected_seq=0)
        bad = [
            MessageDelta(run_id="r", seq=3, at=T0, message_id="m", content="lone \ud800 surrogate"),
        ]
        with pytest.raises(InvalidRequest):
            await store.append("r", bad, expected_seq=2)
        assert await store.last_seq("r") == 2


# -- the engine on SQLite --------------------------------------------------------------------


@pytest.mark.anyio
async def test_engine_end_to_end_on_a_sqlite_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    engine = RunEngine("sqlite:///runs.db")

    @engine.agent("words")
    async def words(ctx: Any) -> None:
        for word in str(ctx.input).split():
            await ctx.delta(word + " ")

    @engine.agent("ask")
    async def ask(ctx: Any) -> str:
        answer = await ctx.ask({"question": "name?"})
        await ctx.say(f"hello {answer}")
        return f"done {answer}"

    text = " ".join(f"w{i}" for i in range(3000))
    with anyio.fail_after(60):
        async with engine:
            done = await engine.execute("words", text, session_id="s1")
            assert done.status is Status.COMPLETED and done.text == text + " "
            streamed = [e async for e in await engine.execute("words", "a b c", mode="stream")]
            assert [e.seq for e in streamed] == list(range(1, len(streamed) + 1))
            assert streamed[-1].type == "run.completed"
            waiting = await engine.execute("ask", None)
            assert waiting.status is Status.WAITING_FOR_INPUT
            resumed = await engine.resume(waiting.run_id, "ada")
            assert resumed.inputs == ("ada",)
            finished = await engine.wait(waiting.run_id, after_seq=resumed.last_seq)
            assert finished.status is Status.COMPLETED and finished.output == "done ada"
            listed = (await engine.list_runs(session_id="s1")).runs
            assert [r.run_id for r in listed] == [done.run_id]
    assert (tmp_path / "runs.db").exists()
    again = RunEngine("sqlite:///runs.db")
    async with again:
        assert await again.status(done.run_id) == done
        assert await again.store.load_snapshot(done.run_id) == done  # the terminal snapshot
        events = [e async for e in again.events(done.run_id, after_seq=3000)]
        assert [e.seq for e in events] == list(range(3001, done.last_seq + 1))
        assert (await again.list_runs(status="completed")).runs[0].run_id == finished.run_id


@pytest.mark.anyio
async def test_engine_status_uses_the_snapshot_not_the_whole_log(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "snap.db")
    engine = RunEngine(store, durability=Durability(snapshot_every=100))

    @engine.agent("long")
    async def long(ctx: Any) -> None:
        for i in range(2500):
            await ctx.delta(f"{i} ")

    async with engine:
        state = await engine.execute("long")
    # once the run's driver has finished, the terminal state is the snapshot
    async with SQLiteStore(tmp_path / "snap.db") as reopened:
        assert await reopened.load_snapshot(state.run_id) == state
        assert await RunEngine(reopened).status(state.run_id) == state


@pytest.mark.anyio
async def test_read_heads_gives_the_start_of_each_log_in_order(tmp_path: Path) -> None:
    from runengine.events import StepCompleted, TimerStarted
    from runengine.ports import HeadReader

    logs = {
        "a": new_log("a", 5),
        "b": [*new_log("b", 2), StepCompleted(run_id="b", seq=3, at=T0, name="s", output={"x": [1]}),
              TimerStarted(run_id="b", seq=4, at=T0, timer_id="t1", until=T0)],
    }
    async with SQLiteStore(tmp_path / "heads.db") as store:
        assert isinstance(store, HeadReader)
        for run_id, events in logs.items():
            await store.append(run_id, events, expected_seq=0)
    async with SQLiteStore(tmp_path / "heads.db") as store:  # fresh: nothing cached, all from the file
        heads = await store.read_heads(["b", "a", "missing"], limit=3)
        assert heads == {"a": logs["a"][:3], "b": logs["b"][:3]}
        whole = await store.read_heads(["a", "b"], limit=100)
        assert whole == logs
