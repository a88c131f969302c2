"""Data lifecycle on PostgreSQL: deleting a run takes its work-queue row too, a version 2 schema
is migrated when opened (by one of several processes opening it at once), and an engine with a
worker sweeps expired runs in the background."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import anyio
import asyncpg
import pytest

from runengine import RunEngine, Status
from runengine.adapters.postgres import SCHEMA_VERSION, PostgresStore
from runengine.demo import register_demo_agents
from runengine.events import RunCompleted, RunCreated, RunStarted
from runengine.adapters.profiles.platform_webhook_store import WebhookRegistration
from runengine.ports import SessionRecord
from runengine.worker import WorkerOptions
from runengine.options import Retention

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


ANYIO_BACKENDS = ("asyncio",)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.anyio
async def test_delete_run_takes_the_queue_row_with_it(pg_schema_url: str) -> None:
    store = PostgresStore.from_url(pg_schema_url)
    async with store:
        queue = store.work_queue
        await queue.enqueue("queued", [RunCreated(run_id="queued", seq=1, at=T0, agent="echo")])
        await queue.enqueue("other", [RunCreated(run_id="other", seq=1, at=T0, agent="echo")])
        assert await store.delete_run("queued") is True
        leases = await queue.claim("w1", agents=["echo"], limit=10, lease=30)
        assert [lease.run_id for lease in leases] == ["other"]  # the deleted run is not claimed
        assert await store.get_run("queued") is None


@pytest.mark.anyio
async def test_a_version_2_schema_is_migrated_once_by_concurrent_openers(pg_dsn: str) -> None:
    schema = f"v2_{uuid.uuid4().hex[:12]}"
    async with PostgresStore(pg_dsn, schema=schema) as store:
        await store.append("done", [RunCreated(run_id="done", seq=1, at=T0, agent="a"), RunStarted(run_id="done", seq=2, at=T0),
                                    RunCompleted(run_id="done", seq=3, at=T0)], expected_seq=0)
    conn = await asyncpg.connect(pg_dsn)
    try:  # back to what version 2 created
        await conn.execute(f'DROP INDEX "{schema}".runengine_runs_ended')
        await conn.execute(f'DROP INDEX "{schema}".runengine_idempotency_run')
        await conn.execute(f'DROP TABLE "{schema}".runengine_rate_windows')
        await conn.execute(f'DROP TABLE "{schema}".runengine_webhooks')
        await conn.execute(f'ALTER TABLE "{schema}".runengine_queue DROP COLUMN not_before')
        await conn.execute(f'DROP INDEX "{schema}".runengine_runs_wake')  # version 7's timer index
        await conn.execute(f'DROP INDEX "{schema}".runengine_runs_busy')
        await conn.execute(f'ALTER TABLE "{schema}".runengine_runs DROP COLUMN wake_at')
        await conn.execute(f'DROP INDEX "{schema}".runengine_queue_next')
        await conn.execute(f'ALTER TABLE "{schema}".runengine_queue DROP COLUMN priority, DROP COLUMN flow_key, DROP COLUMN queued_at')
        await conn.execute(f'DROP TABLE "{schema}".runengine_flow_buckets')
        await conn.execute(f'DELETE FROM "{schema}".runengine_schema')
        await conn.execute(f'INSERT INTO "{schema}".runengine_schema VALUES (2)')
    finally:
        await conn.close()
    stores = [PostgresStore(pg_dsn, schema=schema, pool_max=2) for _ in range(4)]
    async with anyio.create_task_group() as tg:
        for store in stores:
            tg.start_soon(store.open)
    try:
        for store in stores:
            page = await store.list_ended_runs(ended_before=T0 + timedelta(seconds=1))
            assert [r.run_id for r in page.runs] == ["done"]
    finally:
        for store in stores:
            await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval(f'SELECT max(version) FROM "{schema}".runengine_schema') == SCHEMA_VERSION == 10
        indexes = {r[0] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = $1", schema)}
        queue_columns = {
            r[0]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'runengine_queue'",
                schema,
            )
        }
        tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)}
    finally:
        await conn.close()
    assert {"runengine_runs_ended", "runengine_idempotency_run", "runengine_runs_wake", "runengine_runs_busy",
            "runengine_queue_next"} <= indexes
    assert {"not_before", "priority", "flow_key", "queued_at"} <= queue_columns
    assert "runengine_flow_buckets" in tables


@pytest.mark.anyio
async def test_an_engine_with_a_worker_sweeps_expired_runs(pg_schema_url: str) -> None:
    clock = Clock()
    engine = register_demo_agents(
        RunEngine(pg_schema_url, clock=clock, worker=WorkerOptions(poll=0.05), retention=Retention(runs=60, sweep_interval=0.02)),
        delay=0,
    )
    async with engine:
        done = await engine.execute("echo", "hello")
        assert done.status is Status.COMPLETED
        waiting = await engine.execute("approval", None)
        assert waiting.status is Status.WAITING_FOR_INPUT
        clock.now = T0 + timedelta(minutes=5)
        with anyio.fail_after(30):
            while await engine.store.get_run(done.run_id) is not None:
                await anyio.sleep(0.01)
        assert (await engine.status(waiting.run_id)).status is Status.WAITING_FOR_INPUT


@pytest.mark.anyio
async def test_a_version_3_schema_moves_webhook_registrations_to_their_table(pg_dsn: str) -> None:
    from test_lifecycle import MIGRATED_REGISTRATIONS, OLD_REGISTRATIONS

    schema = f"v3_{uuid.uuid4().hex[:12]}"
    async with PostgresStore(pg_dsn, schema=schema) as store:
        await store.put_session(OLD_REGISTRATIONS)
        await store.put_session(SessionRecord(session_id="platform.webhooks.mine", created_at=T0, data={"a": 1}))
    conn = await asyncpg.connect(pg_dsn)
    try:  # back to what version 3 created
        await conn.execute(f'DROP TABLE "{schema}".runengine_rate_windows')
        await conn.execute(f'DROP TABLE "{schema}".runengine_webhooks')
        await conn.execute(f'DELETE FROM "{schema}".runengine_schema')
        await conn.execute(f'INSERT INTO "{schema}".runengine_schema VALUES (3)')
    finally:
        await conn.close()
    async with PostgresStore(pg_dsn, schema=schema) as store:
        assert await store.list_webhooks("app1") == MIGRATED_REGISTRATIONS
        assert await store.get_session("platform.webhooks.app1") is None
        assert (await store.get_session("platform.webhooks.mine")).data == {"a": 1}  # type: ignore[union-attr]
        await store.add_webhook(WebhookRegistration(
            webhook_id="wh_c", app_id="app1", url="https://example.com/3", events=("session.started",), secret="s",
            created_at=T0, owner=None))
        assert [w.webhook_id for w in await store.list_webhooks("app1")] == ["wh_b", "wh_a", "wh_c"]

