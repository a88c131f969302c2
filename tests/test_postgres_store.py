"""PostgresStore specifics beyond the conformance suite: URLs, schema versions, group commit,
live tails across store instances (each with its own pool and listener, as separate processes
have), lost notifications and a dropped listener connection."""

from __future__ import annotations

import uuid

import anyio
import asyncpg
import attrs
import pytest

from runengine.adapters.postgres import SCHEMA_VERSION, PostgresStore
from runengine.errors import ConcurrencyConflict, InvalidRequest, SchemaVersionError, StoreError
from runengine.events import MessageDelta, RunCreated, RunStarted
from runengine.ports import LeaseLost
from runengine.stores import open_store
from runengine.testing import conformance

from kit import until

pytestmark = pytest.mark.postgres


ANYIO_BACKENDS = ("asyncio",)


def created(run_id: str) -> RunCreated:
    return RunCreated(run_id=run_id, seq=1, agent="a")


def delta(run_id: str, seq: int) -> MessageDelta:
    return MessageDelta(run_id=run_id, seq=seq, message_id="m", content=f"t{seq}")


#: The transaction id the next write transaction takes (reading it takes none).
NEXT_XID = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"


def schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


async def start_run(store: PostgresStore, run_id: str) -> None:
    await store.append(run_id, [created(run_id), RunStarted(run_id=run_id, seq=2)], expected_seq=0)


async def append_delta(store: PostgresStore, run_id: str, seq: int) -> None:
    await store.append(run_id, [delta(run_id, seq)], expected_seq=seq - 1)


async def until_listening(store: PostgresStore) -> None:
    with anyio.fail_after(10):
        while not store._listening:
            await anyio.sleep(0.01)


async def until_parked(store: PostgresStore, run_id: str) -> None:
    """Until a tail of `run_id` on `store` sleeps: registered for its wake-ups, its first check of
    the log done (the pool idle again), so what comes next can only reach it by a wake-up."""

    def parked() -> bool:
        pool = store._pool
        return run_id in store._wakeups._signals and pool is not None and pool.get_idle_size() == pool.get_size()

    await until(parked, timeout=10)


async def assert_append_wakes_tail(writer: PostgresStore, reader: PostgresStore) -> None:
    """A tail on `reader` past seq 2 of run "r" wakes within 5 s of `writer` appending seq 3."""
    results: list[bool] = []

    async def tail() -> None:
        results.append(await reader.wait("r", after_seq=2, timeout=20))

    async with anyio.create_task_group() as tg:
        tg.start_soon(tail)
        await until_parked(reader, "r")
        with anyio.fail_after(5):  # far below the stores' 30 s re-check: the NOTIFY woke it
            await writer.append("r", [delta("r", 3)], expected_seq=2)
            while not results:
                await anyio.sleep(0.01)
    assert results == [True]


def test_urls_name_the_store_and_its_options() -> None:
    store = open_store("postgres://u:p@127.0.0.1:5999/db?schema=abc&pool_max=3&recheck=0.5&sslmode=disable")
    assert isinstance(store, PostgresStore)
    assert (store.schema, store.pool_max, store.recheck) == ("abc", 3, 0.5)
    assert store.dsn == "postgresql://u:p@127.0.0.1:5999/db?sslmode=disable"  # the rest goes to asyncpg
    assert store.shared is True
    assert isinstance(open_store("postgresql://127.0.0.1/db"), PostgresStore)
    for bad in ("postgresql://h/db?pool_max=many", "postgresql://h/db?schema=Robert;drop", "postgresql://h/db?pool_max=0"):
        with pytest.raises(InvalidRequest):
            open_store(bad)


@pytest.mark.anyio
async def test_a_closed_store_says_so(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn, schema=schema())
    with pytest.raises(StoreError):
        await store.append("r", [created("r")], expected_seq=0)
    async with store:
        await store.open()  # idempotent
    await store.close()  # idempotent
    with pytest.raises(StoreError):
        await store.read("r")


@pytest.mark.anyio
async def test_schema_is_versioned_and_a_newer_one_is_refused(pg_dsn: str) -> None:
    name = schema()
    async with PostgresStore(pg_dsn, schema=name) as store:
        await start_run(store, "r1")
    async with PostgresStore(pg_dsn, schema=name) as store:  # reopening keeps the data
        assert await store.last_seq("r1") == 2
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval(f'SELECT max(version) FROM "{name}".runengine_schema') == SCHEMA_VERSION
        await conn.execute(f'INSERT INTO "{name}".runengine_schema VALUES ($1)', SCHEMA_VERSION + 1)
    finally:
        await conn.close()
    with pytest.raises(SchemaVersionError):
        await PostgresStore(pg_dsn, schema=name).open()


@pytest.mark.anyio
async def test_a_version_1_database_is_migrated_when_opened(pg_dsn: str) -> None:
    name = schema()
    async with PostgresStore(pg_dsn, schema=name) as store:
        await store.append("r1", [conformance.created("r1", session_id="implicit", owner="alice")], expected_seq=0)
        await store.append("r2", [conformance.created("r2", session_id="implicit", owner="bob")], expected_seq=0)
    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": name})
    try:  # back to what version 1 wrote
        await conn.execute("DROP TABLE runengine_idempotency")
        await conn.execute("CREATE TABLE runengine_idempotency (key text PRIMARY KEY, run_id text NOT NULL, bound_at timestamptz NOT NULL)")
        await conn.execute("INSERT INTO runengine_idempotency VALUES ('acme:alice:k', 'r1', now())")
        await conn.execute("DELETE FROM runengine_sessions")
        await conn.execute("DROP INDEX runengine_runs_ended")  # version 3's
        await conn.execute("DROP TABLE runengine_rate_windows")  # version 4's
        await conn.execute("DROP TABLE runengine_webhooks")  # version 5's
        await conn.execute("ALTER TABLE runengine_queue DROP COLUMN not_before")  # version 6's
        await conn.execute("DROP INDEX runengine_runs_wake")  # version 7's
        await conn.execute("DROP INDEX runengine_runs_busy")
        await conn.execute("ALTER TABLE runengine_runs DROP COLUMN wake_at")
        await conn.execute("DELETE FROM runengine_schema")
        await conn.execute("INSERT INTO runengine_schema VALUES (1)")
    finally:
        await conn.close()
    async with PostgresStore(pg_dsn, schema=name) as store:
        implicit = await store.get_session("implicit")
        assert implicit is not None and implicit.owner == "alice"
        assert await store.reserve_idempotency_key(conformance.key_record("k", "r9", principal="acme:alice"), ttl=60, pending_for=10) is None
        assert [r.run_id for r in (await store.list_runs()).runs] == ["r2", "r1"]
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval(f'SELECT max(version) FROM "{name}".runengine_schema') == SCHEMA_VERSION
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_many_processes_opening_a_new_database_at_once_create_it_once(pg_dsn: str) -> None:
    name = schema()
    stores = [PostgresStore(pg_dsn, schema=name, pool_max=2) for _ in range(5)]
    async with anyio.create_task_group() as tg:
        for store in stores:
            tg.start_soon(store.open)
    try:
        await start_run(stores[0], "r")
        assert [await s.last_seq("r") for s in stores] == [2] * 5
    finally:
        for store in stores:
            await store.close()


@pytest.mark.anyio
async def test_appends_from_many_runs_share_transactions(pg_dsn: str) -> None:
    """Group commit: 200 concurrent appends take far fewer than 200 transactions, and a stale
    append in the same batches fails alone."""
    async with PostgresStore(pg_dsn, schema=schema(), pool_max=4) as store:
        runs = [f"r{i}" for i in range(200)]
        async with anyio.create_task_group() as tg:
            for run_id in runs:
                tg.start_soon(start_run, store, run_id)
        conn = await asyncpg.connect(pg_dsn)
        try:
            # Each write transaction takes the next transaction id: counted at once, where the
            # pg_stat counters are published late (up to a second).
            before = await conn.fetchval(NEXT_XID)
            failures: list[BaseException] = []

            async def append(run_id: str, expected: int) -> None:
                try:
                    await store.append(run_id, [delta(run_id, expected + 1)], expected_seq=expected)
                except ConcurrencyConflict as exc:
                    failures.append(exc)

            async with anyio.create_task_group() as tg:
                for run_id in runs:
                    tg.start_soon(append, run_id, 2)
                tg.start_soon(append, "r7", 1)  # stale: fails alone
            after = await conn.fetchval(NEXT_XID)
        finally:
            await conn.close()
        assert len(failures) == 1 and failures[0].run_id == "r7"  # type: ignore[attr-defined]
        assert [await store.last_seq(r) for r in runs] == [3] * 200
        assert after - before < 100, f"{after - before} transactions for 200 appends"


@pytest.mark.anyio
async def test_a_tail_in_another_process_is_woken_by_notify(pg_dsn: str) -> None:
    name = schema()
    async with PostgresStore(pg_dsn, schema=name, recheck=30.0) as writer, PostgresStore(
        pg_dsn, schema=name, recheck=30.0
    ) as reader:
        await start_run(writer, "r")
        await until_listening(reader)
        await assert_append_wakes_tail(writer, reader)
        assert [e.seq for e in await reader.read("r", after_seq=2)] == [3]


@pytest.mark.anyio
async def test_a_lost_notify_delays_a_tail_but_never_hangs_it(pg_dsn: str) -> None:
    name = schema()
    async with PostgresStore(pg_dsn, schema=name, recheck=0.5) as store:
        await start_run(store, "r")
        conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": name})
        try:
            async with anyio.create_task_group() as tg:
                results: list[bool] = []

                async def tail() -> None:
                    results.append(await store.wait("r", after_seq=2, timeout=30))

                tg.start_soon(tail)
                await until_parked(store, "r")
                # A commit whose NOTIFY never arrives (written behind the store's back).
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO runengine_events VALUES ('r', 3, 'message.delta', now(), '{\"message_id\":\"m\",\"content\":\"x\"}')"
                    )
                    await conn.execute("UPDATE runengine_runs SET last_seq = 3 WHERE run_id = 'r'")
                with anyio.fail_after(10):
                    while not results:
                        await anyio.sleep(0.02)
            assert results == [True]
        finally:
            await conn.close()


@pytest.mark.anyio
async def test_a_dropped_listener_reconnects_and_tails_go_on(pg_dsn: str) -> None:
    name = schema()
    async with PostgresStore(pg_dsn, schema=name, recheck=30.0) as writer, PostgresStore(
        pg_dsn, schema=name, recheck=30.0
    ) as reader:
        await start_run(writer, "r")
        admin = await asyncpg.connect(pg_dsn)
        try:
            await until_listening(reader)
            # Kill every listening connection (both stores'): the server side of a network drop.
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
            assert killed >= 1
            with anyio.fail_after(10):
                while reader._listening:
                    await anyio.sleep(0.01)
                while not reader._listening:  # it re-listens by itself
                    await anyio.sleep(0.01)
            await assert_append_wakes_tail(writer, reader)
        finally:
            await admin.close()


@pytest.mark.anyio
async def test_appends_survive_killed_pool_connections(pg_dsn: str) -> None:
    """A connection dropped under the pool is replaced and the append retried, exactly once."""
    async with PostgresStore(pg_dsn, schema=schema(), pool_min=2, pool_max=2) as store:
        await start_run(store, "r")
        admin = await asyncpg.connect(pg_dsn)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'runengine' AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        for seq in range(3, 13):
            await store.append("r", [delta("r", seq)], expected_seq=seq - 1)
        assert [e.seq for e in await store.read("r")] == list(range(1, 13))


class StatementLog:
    """Every statement asyncpg sends (on any connection, pooled or not), with its connection:
    a count of round trips, the figure a PostgreSQL append or read costs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[tuple[int, str]] = []
        for name in ("execute", "fetch", "fetchval", "fetchrow"):
            original = getattr(asyncpg.connection.Connection, name)

            def logged(conn: asyncpg.Connection, query: str, *args: object, _original=original, **kwargs: object):  # type: ignore[no-untyped-def]
                self.sent.append((id(conn), query))
                return _original(conn, query, *args, **kwargs)

            monkeypatch.setattr(asyncpg.connection.Connection, name, logged)

    def transaction(self) -> list[str]:
        """The statements of the one transaction sent, BEGIN to COMMIT, on its connection."""
        begins = [i for i, (_conn, query) in enumerate(self.sent) if query.strip().rstrip(";").upper() == "BEGIN"]
        assert len(begins) == 1, self.sent
        conn = self.sent[begins[0]][0]
        on_it = [query for c, query in self.sent[begins[0]:] if c == conn]
        ends = [i for i, query in enumerate(on_it) if query.strip().rstrip(";").upper() == "COMMIT"]
        return on_it[: ends[0] + 1]


@pytest.mark.anyio
async def test_a_pooled_read_is_one_round_trip(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool connection goes back without asyncpg's reset query (a second round trip per read)."""
    async with PostgresStore(pg_dsn, schema=schema()) as store:
        await start_run(store, "r")
        statements = StatementLog(monkeypatch)
        for _ in range(5):
            assert (await store.get_run("r")) is not None
        reads = [query for _conn, query in statements.sent if "pg_notify" not in query]  # (start_run's notice, sent meanwhile)
        assert len(reads) == 5, reads


@pytest.mark.anyio
async def test_a_leased_step_commits_in_four_statements_without_notify(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's append (fenced by its lease) is BEGIN, one statement locking the run and reading
    its lease, one writing the events and the run row, COMMIT; the NOTIFY goes after the commit,
    outside it (inside, PostgreSQL's notify lock would be held through the commit's WAL flush)."""
    async with PostgresStore(pg_dsn, schema=schema(), recheck=30.0) as writer, PostgresStore(
        pg_dsn, schema=writer.schema, recheck=30.0
    ) as reader:
        queue = writer.work_queue
        await queue.enqueue("r", [created("r")])
        [lease] = await queue.claim("w", agents=["a"], limit=1, lease=30)
        await queue.append_leased(lease, [RunStarted(run_id="r", seq=2)], expected_seq=1)
        await until_listening(reader)
        statements = StatementLog(monkeypatch)
        woken: list[bool] = []

        async def tail() -> None:
            woken.append(await reader.wait("r", after_seq=2, timeout=20))

        async with anyio.create_task_group() as tg:
            tg.start_soon(tail)
            await until_parked(reader, "r")
            statements.sent.clear()
            await queue.append_leased(lease, [delta("r", 3)], expected_seq=2)
            with anyio.fail_after(5):  # far below the re-check: the notice after the commit woke it
                while not woken:
                    await anyio.sleep(0.01)
        assert woken == [True]
        commit = statements.transaction()
        assert len(commit) == 4, commit
        assert not any("pg_notify" in query for query in commit), commit
        # The lease is still checked: a stale token is refused and writes nothing.
        with pytest.raises(LeaseLost):
            await queue.append_leased(attrs.evolve(lease, token=str(uuid.uuid4())), [delta("r", 4)], expected_seq=3)
        assert await writer.last_seq("r") == 3


@pytest.mark.anyio
async def test_a_batch_sends_one_notification_for_all_its_runs(pg_dsn: str) -> None:
    """The runs of one commit are named in one NOTIFY payload (a line each), not one NOTIFY per run:
    every listening process handles one notification per commit."""
    async with PostgresStore(pg_dsn, schema=schema()) as store:
        runs = [f"r{i}" for i in range(100)]
        async with anyio.create_task_group() as tg:
            for run_id in runs:
                tg.start_soon(start_run, store, run_id)
        listener = await asyncpg.connect(pg_dsn)
        payloads: list[str] = []
        try:
            await listener.add_listener(store.events_channel, lambda *args: payloads.append(args[-1]))
            commits_before = len(store.batch_sizes)
            async with anyio.create_task_group() as tg:
                for run_id in runs:
                    tg.start_soon(append_delta, store, run_id, 3)
            commits = len(store.batch_sizes) - commits_before
            with anyio.fail_after(5):
                while sum(len(p.split("\n")) for p in payloads) < len(runs):
                    await anyio.sleep(0.01)
        finally:
            await listener.close()
        assert sorted(line for p in payloads for line in p.split("\n")) == sorted(f"{r} 3:running" for r in runs)  # `run_id seq:status`
        assert len(payloads) <= commits < len(runs), (len(payloads), commits)


@pytest.mark.anyio
async def test_a_claim_and_a_look_for_work_are_one_statement_each(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every idle worker claims on each "work" notice: a claim is one statement (its own
    transaction, no BEGIN/COMMIT round trips), and so is the look at the timers before a wait."""
    async with PostgresStore(pg_dsn, schema=schema()) as store:
        queue = store.work_queue
        await queue.enqueue("r", [created("r")])
        statements = StatementLog(monkeypatch)

        def sent() -> list[str]:
            return [query for _conn, query in statements.sent if "pg_notify" not in query]  # (notices, sent meanwhile)

        [lease] = await queue.claim("w", agents=["a"], limit=4, lease=30)
        assert len(sent()) == 1, sent()
        assert await queue.held(lease)
        assert await queue.claim("w2", agents=["a"], limit=4, lease=30) == []  # claimed: nobody else gets it
        statements.sent.clear()
        await queue.wait_for_work(0.01)
        assert len(sent()) == 1, sent()


@pytest.mark.anyio
async def test_queued_runs_are_created_in_one_statement_and_a_taken_id_fails_alone(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An API process enqueueing: new queued runs are one statement (run rows, events and queue
    rows, no BEGIN/COMMIT); a run id already taken fails as a conflict and changes nothing."""
    async with PostgresStore(pg_dsn, schema=schema()) as store:
        queue = store.work_queue
        await queue.enqueue("taken", [created("taken"), RunStarted(run_id="taken", seq=2)])
        statements = StatementLog(monkeypatch)
        await queue.enqueue("r", [created("r")])
        assert len([q for _c, q in statements.sent if "pg_notify" not in q]) == 1, statements.sent
        results: dict[str, BaseException | None] = {}

        async def enqueue(run_id: str) -> None:
            try:
                await queue.enqueue(run_id, [created(run_id)])
                results[run_id] = None
            except ConcurrencyConflict as exc:
                results[run_id] = exc

        async with anyio.create_task_group() as tg:
            for run_id in ("a1", "taken", "a2"):
                tg.start_soon(enqueue, run_id)
        assert results["a1"] is None and results["a2"] is None
        assert isinstance(results["taken"], ConcurrencyConflict) and results["taken"].actual_seq == 2  # type: ignore[attr-defined]
        assert [e.seq for e in await store.read("taken")] == [1, 2]
        assert await store.last_seq("a1") == 1 and (await store.get_run("a2")) is not None
        leases = await queue.claim("w", agents=["a"], limit=10, lease=30)
        assert sorted(lease.run_id for lease in leases) == ["a1", "a2", "r", "taken"]
