"""A database made by the stores before the SQL log was shared (tests/schemas/: a SQLite file the
old store wrote, dumped as SQL; the old PostgreSQL store's DDL and rows) opens with today's
stores, which read everything in it and go on writing to it."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest

from runengine.adapters.postgres import PostgresStore
from runengine.adapters.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from runengine.adapters.sqlite import SQLiteStore
from runengine.schedules import Schedule
from runengine.events import MessageDelta, RunCompleted, RunStarted
from runengine.ports import IdempotencyRecord, SessionRecord
from runengine.status import Status

ANYIO_BACKENDS = ("asyncio",)
SCHEMAS = Path(__file__).parent / "schemas"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


async def reads_and_writes_what_the_old_store_wrote(store: SQLiteStore | PostgresStore) -> None:
    log = await store.read("r1")
    assert [(e.seq, e.type) for e in log] == [
        (1, "run.created"), (2, "run.started"), (3, "message.delta"), (4, "message.completed"), (5, "run.completed"),
    ]
    assert log[0].input == {"q": "hé"} and isinstance(log[2], MessageDelta) and log[2].content == "hi "  # type: ignore[attr-defined]
    r1 = await store.get_run("r1")
    assert r1 is not None and (r1.status, r1.last_seq, r1.owner, r1.session_id) == (Status.COMPLETED, 5, "alice", "s1")
    assert [r.run_id for r in (await store.list_runs(session_id="s1")).runs] == ["r2", "r1"]
    assert [r.run_id for r in (await store.list_runs(before_run="r2")).runs] == ["r1"]
    assert [r.run_id for r in (await store.list_ended_runs(ended_before=T0 + timedelta(days=1))).runs] == ["r1"]
    assert (await store.count_session_runs("s1")).by_status == {Status.COMPLETED: 1, Status.PENDING: 1}
    session = await store.get_session("s1")
    assert session == SessionRecord(session_id="s1", owner="alice", created_at=T0, metadata={"k": "v"})
    later = IdempotencyRecord(principal="alice", scope="native", key="k1", fingerprint="f", run_id="new", created_at=T0 + timedelta(seconds=1))
    held = await store.reserve_idempotency_key(later, ttl=3600, pending_for=10)
    assert held is not None and held.run_id == "r1" and held.created_at == T0
    assert [w.webhook_id for w in await store.list_webhooks("app")] == ["wh_1"]
    # and it goes on: an append to the old run, a new run after the old ones
    await store.append("r2", [RunStarted(run_id="r2", seq=2, at=T0), RunCompleted(run_id="r2", seq=3, at=T0)], expected_seq=1)
    r2 = await store.get_run("r2")
    assert r2 is not None and (r2.status, r2.last_seq) == (Status.COMPLETED, 3)
    assert await store.delete_run("r1") is True
    assert await store.read("r1") == [] and await store.load_snapshot("r1") is None
    # the schedules table a migration added (runengine.schedules)
    daily = Schedule(schedule_id="daily", cron="0 9 * * *", agent="a", owner="alice", created_at=T0)
    assert await store.add_schedule(daily) is True and await store.list_schedules() == [daily]


@pytest.mark.anyio
async def test_a_sqlite_file_of_the_old_store_opens(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((SCHEMAS / "sqlite_v4_by_the_old_store.sql").read_text())
    async with SQLiteStore(path) as store:
        snapshot = await store.load_snapshot("r1")
        assert snapshot is not None and snapshot.last_seq == 3
        await reads_and_writes_what_the_old_store_wrote(store)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (SQLITE_SCHEMA_VERSION,)


@pytest.mark.postgres
@pytest.mark.anyio
async def test_a_postgresql_schema_of_the_old_store_opens(pg_dsn: str) -> None:
    schema = f"old_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"; SET search_path TO "{schema}"')
        await conn.execute((SCHEMAS / "postgres_v6_by_the_old_store.sql").read_text())
    finally:
        await conn.close()
    async with PostgresStore(pg_dsn, schema=schema) as store:
        assert await store.schema_current()
        await reads_and_writes_what_the_old_store_wrote(store)
