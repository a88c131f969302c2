"""PostgresStore: the event store and work queue for many engine processes on many machines
(docs/postgres.md: tables, group commit, live tails, the queue, reconnects).

    store = PostgresStore("postgresql://user:pass@db/runs")          # or open_store(url)
    engine = RunEngine(store, worker=True)

The statements, rows and append decision are the SQL log's (adapters/sql_log.py, shared with
SQLite), the writer task is adapters/group_commit.py; this module is PostgreSQL's schema and
migrations, its batch transaction (each run row locked, so appends to one run are serialised
across processes; statements over arrays, never a round trip per event; fencing for the work
queue, runengine.adapters.postgres_queue, checked in it), NOTIFY of `run_id seq` lines after each
commit (outside it: see _notice_loop) with one LISTENing connection per store waking in-process waiters (who re-check every `recheck`
seconds, so a lost NOTIFY delays a tail, never hangs it), and retries of lost connections for
up to `reconnect_timeout` seconds. Needs asyncpg: `pip install '.[postgres]'` from the clone's root. asyncio only.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
import stamina
import structlog

from runengine.adapters.group_commit import GroupCommit
from runengine.adapters.postgres_flow import BUCKETS_DDL, QUEUE_COLUMNS, QUEUE_INDEX, take_tokens_in
from runengine.adapters.postgres_queue import PostgresWorkQueue
from runengine.adapters.sql_dialect import ENDED_STATUSES, POSTGRESQL
from runengine.adapters.sql_streams import SQLStreams, StreamStatements, stream_tables
from runengine.adapters.sql_schedules import ScheduleStatements, schedule_table
from runengine.adapters.sql_log import (
    BUSY_CONDITION,
    RUN_COLUMNS,
    Append,
    SQLLog,
    Statements,
    decide,
    log_tables,
    new_summary,
    schema_steps,
    summary_from_row,
)
from runengine.adapters.url_options import url_options
from runengine.adapters.wakeup import RunWakeups
from runengine.errors import ConcurrencyConflict, InvalidRequest, StoreError
from runengine.events import Event
from runengine.flow import Rate
from runengine.ports import Lease, LeaseLost, RunSummary
from runengine.status import Status
from runengine.validation import check_append

log = structlog.get_logger("runengine.postgres")

#: The schema this version writes. A database at a higher version is refused; one at a lower
#: version is migrated when opened (_MIGRATIONS).
SCHEMA_VERSION = 10
#: How long a session may sit idle inside a transaction before the server ends it (see _server_settings).
IDLE_IN_TRANSACTION_MS = 5_000

#: Version 3: ended runs by end time (retention sweeps), idempotency records by run (deleting a run).
_ENDED_INDEX = f"CREATE INDEX runengine_runs_ended ON runengine_runs (updated_at, position) WHERE status IN ({ENDED_STATUSES})"
_IDEMPOTENCY_RUN_INDEX = "CREATE INDEX runengine_idempotency_run ON runengine_idempotency (run_id)"

#: Version 7: idle runs by wake time (the timer index), and the runs at work.
_WAKE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS runengine_runs_wake ON runengine_runs (wake_at, position) WHERE wake_at IS NOT NULL",
    f"CREATE INDEX IF NOT EXISTS runengine_runs_busy ON runengine_runs (position) WHERE {BUSY_CONDITION}",
)

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")

_TABLES = log_tables(POSTGRESQL)

#: Version 4: the Agent Platform profile's webhook registrations in a table of their own.
_WEBHOOKS_DDL = """
CREATE TABLE runengine_webhooks (
    position bigserial,
    webhook_id text PRIMARY KEY,
    app_id text NOT NULL,
    url text NOT NULL,
    events text NOT NULL,
    secret text NOT NULL,
    created_at timestamptz NOT NULL,
    owner text
);
CREATE INDEX runengine_webhooks_app ON runengine_webhooks (app_id, position);"""
#: They used to be kept as ended sessions `platform.webhooks.<app_id>` whose data listed them:
#: each becomes a row, and the session goes.
_MOVE_WEBHOOKS_TO_THEIR_TABLE = (
    "INSERT INTO runengine_webhooks (webhook_id, app_id, url, events, secret, created_at, owner)"
    " SELECT w.item->>'webhook_id', s.data::jsonb->>'app_id', w.item->>'url', (w.item->'events')::text,"
    " w.item->>'secret', (w.item->>'created_at')::timestamptz, w.item->>'owner'"
    " FROM runengine_sessions AS s, jsonb_array_elements(s.data::jsonb->'webhooks') WITH ORDINALITY AS w(item, n)"
    " WHERE s.session_id LIKE 'platform.webhooks.%' AND s.data::jsonb->>'kind' = 'platform.webhooks'"
    " ORDER BY s.session_id, w.n ON CONFLICT (webhook_id) DO NOTHING",
    "DELETE FROM runengine_sessions WHERE session_id LIKE 'platform.webhooks.%'"
    " AND data::jsonb->>'kind' = 'platform.webhooks'",
)

#: Statements bringing a database of the previous version up to each version.
#: Rate-limit windows (a schema version of its own: this table alone, created by one statement):
#: one count per key (a principal) in its current fixed window, shared by every process, so N
#: processes allow a limit once, not N times (PostgresRateWindows).
_RATE_WINDOWS_DDL = """
CREATE TABLE runengine_rate_windows (
    key text PRIMARY KEY,
    window_start double precision NOT NULL,
    count integer NOT NULL
)"""
_RATE_WINDOWS_VERSION = 4

_MIGRATIONS = {
    2: (
        # Version 1 kept keys as one joined "owner:key" string, which cannot be told apart by
        # principal: those records (24 h of retry protection) are dropped, not guessed at.
        "DROP TABLE runengine_idempotency",
        _TABLES["idempotency"],
        # Sessions begun by a run had no record (and so no owner): their first run's owner owns them.
        "INSERT INTO runengine_sessions (session_id, owner, created_at, metadata, data)"
        " SELECT DISTINCT ON (session_id) session_id, owner, created_at, '{}', '{}' FROM runengine_runs"
        " WHERE session_id IS NOT NULL ORDER BY session_id, position ON CONFLICT (session_id) DO NOTHING",
    ),
    3: (_ENDED_INDEX, _IDEMPOTENCY_RUN_INDEX),
    _RATE_WINDOWS_VERSION: (_RATE_WINDOWS_DDL,),
    5: (_WEBHOOKS_DDL, *_MOVE_WEBHOOKS_TO_THEIR_TABLE),
    # A delayed run is claimable from its start_at on, not before (a worker does not hold it meanwhile).
    6: ("ALTER TABLE runengine_queue ADD COLUMN IF NOT EXISTS not_before timestamptz",),
    # The timer index (RunSummary.wake_at). Runs idle since before it have none: they are taken
    # up once as runs at work (as before), and the index knows them from their next wait on.
    7: ("ALTER TABLE runengine_runs ADD COLUMN IF NOT EXISTS wake_at timestamptz", *_WAKE_INDEXES),
    # The Durable Streams profile's streams: a stream table and a chunk table (adapters/sql_streams.py).
    8: tuple(stream_tables(POSTGRESQL)),
    9: (schedule_table(POSTGRESQL),),  # schedules (runengine.schedules): a table of their own
    # Flow control (adapters/postgres_flow.py): a queued run's priority and key, shared token buckets.
    10: (QUEUE_COLUMNS, QUEUE_INDEX, BUCKETS_DDL),
}

_DDL = """
CREATE TABLE runengine_runs (
    position bigserial UNIQUE,
    run_id text PRIMARY KEY,
    agent text NOT NULL,
    status text NOT NULL,
    session_id text,
    owner text,
    created_at timestamptz,
    updated_at timestamptz,
    last_seq integer NOT NULL,
    wake_at timestamptz
);
{wake_indexes};
CREATE INDEX runengine_runs_session ON runengine_runs (session_id, position);
CREATE INDEX runengine_runs_status ON runengine_runs (status, position);
CREATE INDEX runengine_runs_owner ON runengine_runs (owner, position);
{ended_index};
{events};
{snapshots};
{idempotency};
{idempotency_run_index};
{sessions};
CREATE TABLE runengine_queue (
    run_id text PRIMARY KEY,
    agent text NOT NULL,
    position bigserial,
    claimed boolean NOT NULL DEFAULT false,
    token uuid,
    worker text,
    lease_until timestamptz,
    claims integer NOT NULL DEFAULT 0,
    after_runs text[] NOT NULL DEFAULT '{{}}',
    not_before timestamptz,
    priority integer NOT NULL DEFAULT 0,
    flow_key text,
    queued_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
{queue_index};
{buckets};
CREATE INDEX runengine_queue_waiting ON runengine_queue (position) WHERE NOT claimed;
CREATE INDEX runengine_queue_leases ON runengine_queue (lease_until) WHERE claimed;
{webhooks};
{rate_windows};
{streams};
{schedules};
""".format(
    streams=";\n".join(stream_tables(POSTGRESQL)),
    ended_index=_ENDED_INDEX,
    wake_indexes=";\n".join(_WAKE_INDEXES),
    idempotency_run_index=_IDEMPOTENCY_RUN_INDEX,
    webhooks=_WEBHOOKS_DDL.strip().rstrip(";"),
    rate_windows=_RATE_WINDOWS_DDL,
    schedules=schedule_table(POSTGRESQL),
    queue_index=QUEUE_INDEX,
    buckets=BUCKETS_DDL.strip(),
    **_TABLES,
)

#: Errors after which the operation is retried on a fresh connection (server restart, network).
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.TransactionRollbackError,  # deadlock, serialisation failure
    asyncpg.InterfaceError,
    # A connection the server dropped mid-operation can be left in a state asyncpg refuses
    # to use; the pool replaces it on release.
    asyncpg.exceptions.InternalClientError,
)

T = TypeVar("T")

_SQL = Statements(POSTGRESQL)
_SQL.delete_run.append("DELETE FROM runengine_queue WHERE run_id = $1")  # and its queue row
_LOCK_RUNS = (
    f"SELECT {RUN_COLUMNS} FROM runengine_runs WHERE run_id = ANY($1::text[]) ORDER BY run_id FOR UPDATE"
)
#: The batch's first statement: its runs locked, with the token of each one's live lease beside it
#: (read for fencing in the same round trip; NULL when the run is not claimed or its lease ran out).
_LOCK_RUNS_AND_LEASES = (
    f"SELECT {', '.join('r.' + c.strip() for c in RUN_COLUMNS.split(','))}, q.token::text FROM runengine_runs AS r"
    " LEFT JOIN runengine_queue AS q ON q.run_id = r.run_id AND q.claimed AND q.lease_until > clock_timestamp()"
    " WHERE r.run_id = ANY($1::text[]) ORDER BY r.run_id FOR UPDATE OF r"
)
#: The accepted events and their runs' new summaries: one statement, one round trip.
_WRITE_EVENTS_AND_RUNS = (
    "WITH written AS (INSERT INTO runengine_events (run_id, seq, type, at, data)"
    " SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::text[]))"
    " UPDATE runengine_runs AS r SET last_seq = u.last_seq, status = u.status, updated_at = u.updated_at,"
    " wake_at = u.wake_at"
    " FROM unnest($6::text[], $7::int[], $8::text[], $9::timestamptz[], $10::timestamptz[])"
    " AS u(run_id, last_seq, status, updated_at, wake_at)"
    " WHERE r.run_id = u.run_id"
)
#: New queued runs in one statement, its own transaction (one round trip): their rows, events and
#: queue rows, each run only if its row was not there (a run created elsewhere meanwhile: returned
#: missing, and its append fails as a conflict).
_CREATE_QUEUED_RUNS = (
    "WITH runs AS (INSERT INTO runengine_runs (run_id, agent, status, session_id, owner, created_at, updated_at,"
    " last_seq, wake_at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
    " $6::timestamptz[], $7::timestamptz[], $8::int[], $9::timestamptz[])"
    " ON CONFLICT (run_id) DO NOTHING RETURNING run_id),"
    " written AS (INSERT INTO runengine_events (run_id, seq, type, at, data) SELECT e.* FROM"
    " unnest($10::text[], $11::int[], $12::text[], $13::timestamptz[], $14::text[]) AS e(run_id, seq, type, at, data)"
    " WHERE e.run_id IN (SELECT run_id FROM runs)),"
    " queued AS (INSERT INTO runengine_queue (run_id, agent, not_before, priority, flow_key) SELECT q.* FROM"
    " unnest($1::text[], $2::text[], $15::timestamptz[], $16::integer[], $17::text[])"
    " AS q(run_id, agent, not_before, priority, flow_key) WHERE q.run_id IN (SELECT run_id FROM runs))"
    " SELECT run_id FROM runs"
)
#: The longest NOTIFY payload we send (PostgreSQL refuses 8000 bytes and more).
_NOTIFY_PAYLOAD_MAX = 7_000


class _PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pool connection released without asyncpg's reset query (a round trip on every release):
    ours hold no session state to undo (settings are fixed at connect, LISTEN is on a connection
    of its own, advisory locks are transaction-scoped, no cursor outlives its transaction). An
    open transaction is still rolled back on release."""

    def get_reset_query(self) -> str:
        return ""


class _Append(Append):
    """An append for the writer task; for the work queue, a queued run's first one or a leased one."""

    __slots__ = ("lease", "enqueue", "after", "settled")

    def __init__(
        self,
        run_id: str,
        events: Sequence[Event],
        expected_seq: int,
        *,
        lease: Lease | None = None,
        enqueue: bool = False,
        after: Sequence[str] = (),
    ) -> None:
        super().__init__(run_id, events, expected_seq, asyncio.get_running_loop().create_future())
        self.lease = lease
        self.enqueue = enqueue
        self.after = tuple(after)
        #: The status this append left its run at, if it was the run's last in its batch (its
        #: wake-up carries it, so a waiter for the run to settle sleeps through the rest).
        self.settled: Status | None = None


class PostgresStore(SQLStreams, SQLLog):
    """An EventStore (and WorkQueue, as `.work_queue`) on PostgreSQL through an asyncpg pool."""

    shared = True
    sql = _SQL
    stream_sql = StreamStatements(POSTGRESQL)
    schedule_sql = ScheduleStatements(POSTGRESQL)

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        pool_min: int = 1,
        pool_max: int = 10,
        recheck: float = 1.0,
        reconnect_timeout: float = 30.0,
        max_batch: int = 256,
    ) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise InvalidRequest(f"invalid schema name {schema!r} (lower-case letters, digits, _)")
        if pool_min < 0 or pool_max < 1 or pool_min > pool_max:
            raise InvalidRequest("need 0 <= pool_min <= pool_max and pool_max >= 1")
        if recheck <= 0 or reconnect_timeout < 0 or max_batch < 1:
            raise InvalidRequest("recheck and max_batch must be positive, reconnect_timeout >= 0")
        self.dsn = dsn
        self.schema = schema
        self.pool_min, self.pool_max = pool_min, pool_max
        self.recheck = recheck
        self.reconnect_timeout = reconnect_timeout
        self.max_batch = max_batch
        prefix = "runengine" if schema == "public" else f"runengine_{schema}"
        self.events_channel = f"{prefix}_events"
        self.queue_channel = f"{prefix}_queue"
        self._pool: asyncpg.Pool | None = None
        self._writer: GroupCommit[_Append] = GroupCommit(
            self._commit, store="postgresql", name="runengine postgres writer", closed=self._closed, max_batch=max_batch
        )
        self._listener_task: asyncio.Task[None] | None = None
        #: Notices of committed batches, for the notice task to send (channel, payload).
        self._notices: list[tuple[str, str]] = []
        self._notices_queued = asyncio.Event()
        self._notice_task: asyncio.Task[None] | None = None
        self._notices_ending = False
        self._wakeups = RunWakeups()
        self._lost: dict[str, asyncio.Event] = {}
        self._work = asyncio.Event()
        self._listening = False
        self._closing = False
        self.work_queue = PostgresWorkQueue(self)
        #: Rate-limit counts shared by every process on this database (a WindowCounter).
        self.rate_windows = PostgresRateWindows(self)
        #: The writer's recent transactions: seconds each, and events each (for benchmarks).
        self.commit_times, self.batch_sizes = self._writer.commit_times, self._writer.batch_sizes

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStore:
        """`postgresql://user:password@host:port/database?schema=name&pool_max=10` (also
        `postgres://`). `schema`, `pool_min`, `pool_max`, `recheck` and `reconnect_timeout`
        are this store's; other query parameters go to asyncpg."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise InvalidRequest(f"not a PostgreSQL URL: {url!r}")
        rest: list[tuple[str, str]] = []  # asyncpg's
        ours = url_options(
            parts.query,
            {"schema": str, "pool_min": int, "pool_max": int, "recheck": float, "reconnect_timeout": float},
            others=rest,
        )
        ours.update(options)
        dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), parts.fragment))
        return cls(dsn, **ours)

    # -- lifecycle ----------------------------------------------------------------

    def _server_settings(self) -> dict[str, str]:
        # A process paused or frozen inside a transaction (SIGSTOP, a VM pause) must not hold its
        # row locks for ever: the server ends such a session, the worker taking the run over goes
        # on, and fencing keeps the paused one from appending when it wakes. Our transactions
        # hold no await on anything but the database, so a live one is never idle this long.
        return {
            "search_path": self.schema,
            "application_name": "runengine",
            "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS),
        }

    async def open(self) -> None:
        if self._pool is not None:
            return
        self._closing = False
        settings = self._server_settings()
        conn = await self._connect()
        try:
            await self._create_schema(conn)
        finally:
            await conn.close()
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=self.pool_min, max_size=self.pool_max, server_settings=settings,
            connection_class=_PooledConnection,
        )
        self._writer.start()
        self._notices_ending = False
        self._notice_task = asyncio.create_task(self._notice_loop(), name="runengine postgres notices")
        self._listener_task = asyncio.create_task(self._listen_loop(), name="runengine postgres listener")

    async def close(self) -> None:
        if self._pool is None:
            return
        self._closing = True
        await self._writer.stop()  # what was handed to the writer gets committed (or its error)
        notices, self._notice_task = self._notice_task, None
        if notices is not None:  # the committed batches' notices are sent (while the server answers), then it ends
            self._notices_ending = True
            self._notices_queued.set()
            try:
                await asyncio.wait_for(notices, 5.0)
            except (asyncio.TimeoutError, Exception):  # noqa: S110 - the waiters' re-checks stand in for them
                pass
        task, self._listener_task = self._listener_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        pool, self._pool = self._pool, None
        await pool.close()
        self._wakeups.notify_all()

    async def _connect(self) -> asyncpg.Connection:
        settings = self._server_settings()
        return await self._retry(lambda: asyncpg.connect(self.dsn, server_settings=settings, timeout=10))

    async def _create_schema(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            # Several processes may open a new database at once: one creates, the others wait.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"runengine schema {self.schema}")
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute("CREATE TABLE IF NOT EXISTS runengine_schema (version integer NOT NULL)")
            version = await conn.fetchval("SELECT max(version) FROM runengine_schema")
            for statement in schema_steps(version, SCHEMA_VERSION, fresh=[_DDL], migrations=_MIGRATIONS):
                await conn.execute(statement)
            if version != SCHEMA_VERSION:
                await conn.execute("INSERT INTO runengine_schema (version) VALUES ($1)", SCHEMA_VERSION)

    async def schema_current(self) -> bool:
        """Whether the database's schema is the version this runengine writes (readiness: another
        process of a newer version may have migrated it since this one opened it)."""
        row = await self._fetch_one("SELECT max(version) FROM runengine_schema")
        return row is not None and row[0] == SCHEMA_VERSION

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open: `await store.open()` first")
        return self._pool

    async def _retry(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run `operation`, retrying on a lost connection until `reconnect_timeout` has passed."""
        try:
            return await operation()  # the common case, without setting up a retry loop
        except _TRANSIENT as exc:
            if not self._retryable(exc) or self.reconnect_timeout == 0:
                raise self._gave_up(exc) from exc
        try:
            async for attempt in stamina.retry_context(
                on=self._retryable,
                attempts=None,
                timeout=self.reconnect_timeout,
                wait_initial=0.05,
                wait_max=1.0,
                wait_jitter=0.05,
            ):
                with attempt:
                    return await operation()
        except _TRANSIENT as exc:
            raise self._gave_up(exc) from exc
        raise AssertionError("unreachable: stamina returns or raises")  # pragma: no cover

    def _retryable(self, exc: Exception) -> bool:
        # A closed pool's connections raise InterfaceError: retrying cannot help.
        return isinstance(exc, _TRANSIENT) and not (self._closing and isinstance(exc, asyncpg.InterfaceError))

    def _gave_up(self, exc: BaseException) -> StoreError:
        if self._closing and isinstance(exc, asyncpg.InterfaceError):
            return StoreError("the PostgreSQL store is closed")
        return StoreError(f"PostgreSQL unreachable: {type(exc).__name__}: {exc}")

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            async with self._require_pool().acquire() as conn:
                return list(await conn.fetch(sql, *params))

        return await self._retry(run)

    async def _transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        async def run() -> list[int]:
            async with self._require_pool().acquire() as conn, conn.transaction():
                # asyncpg answers each with its status tag ("INSERT 0 1", "DELETE 3"): the last word counts rows
                return [int((await conn.execute(sql, *params)).rsplit(" ", 1)[-1]) for sql, params in statements]

        return await self._retry(run)

    # -- events: appends go through the writer task ---------------------------------

    async def append(self, run_id: str, events: Sequence[Event], *, expected_seq: int) -> None:
        check_append(run_id, events, expected_seq)
        await self._writer.submit(_Append(run_id, list(events), expected_seq))

    async def _append_for_queue(
        self,
        run_id: str,
        events: Sequence[Event],
        expected_seq: int,
        *,
        lease: Lease | None = None,
        enqueue: bool = False,
        after: Sequence[str] = (),
    ) -> None:
        """An append through the writer for the work queue: a queued run's first events
        (`enqueue`), or a leased run's next ones (fenced by `lease`). Checked by the caller."""
        await self._writer.submit(_Append(run_id, list(events), expected_seq, lease=lease, enqueue=enqueue, after=after))

    async def take_tokens(self, key: str, rate: Rate, cost: float, *, force: bool = False) -> float:
        """TokenBuckets: a bucket every process on the database takes from (adapters/postgres_flow.py)."""

        async def run() -> float:
            async with self._require_pool().acquire() as conn, conn.transaction():
                return await take_tokens_in(conn, key, rate, cost, force=force)

        return await self._retry(run)

    def _closed(self) -> StoreError:
        if self._pool is None or self._closing:
            return StoreError("the PostgreSQL store is not open: `await store.open()` first")
        return StoreError("the store closed during the append; it may or may not be written")

    async def _commit(self, batch: list[_Append]) -> int:
        """The writer's batch in one transaction (retried on a lost connection); then its callers and
        waiters hear of it."""
        attempt = 0
        notices: list[tuple[str, str]] = []

        async def once() -> None:
            nonlocal attempt, notices
            attempt += 1
            for request in batch:
                request.error = None
            async with self._require_pool().acquire() as conn:
                if attempt == 1 and _only_new_queued_runs(batch):  # (a retry decides in a transaction)
                    notices = await self._create_queued_runs(conn, batch)
                    return
                async with conn.transaction():
                    notices = await self._commit_in(conn, batch, retried=attempt > 1)

        failed: Exception | None = None
        try:
            await self._retry(once)
        except Exception as exc:  # the whole batch failed: each caller gets the error
            failed = exc
            for request in batch:
                request.error = request.error or exc
        for request in batch:
            if not request.future.done():
                if request.error is not None:
                    request.future.set_exception(request.error)
                else:
                    request.future.set_result(None)
        for request in batch:
            if request.error is None:
                self._wakeups.notify(request.run_id, request.events[-1].seq, status=request.settled)
        if any(r.enqueue and r.error is None for r in batch):
            self._work.set()
        if failed is None and notices:
            self._notify_after_commit(notices)
        if failed is not None:
            raise failed  # (every caller has its answer)
        return sum(len(r.events) for r in batch if r.error is None)

    async def _create_queued_runs(self, conn: asyncpg.Connection, batch: list[_Append]) -> list[tuple[str, str]]:
        """A batch of new queued runs (the burst of an API process enqueueing) in one statement."""
        decision = decide(batch, {})
        summaries = [decision.changed[r.run_id] for r in batch]
        created = [r.events[0] for r in batch]
        inserted = {
            row[0]
            for row in await conn.fetch(
                _CREATE_QUEUED_RUNS,
                [r.run_id for r in batch],
                [getattr(e, "agent", "") for e in created],
                [s.status.value for s in summaries],
                [s.session_id for s in summaries],
                [s.owner for s in summaries],
                [s.created_at for s in summaries],
                [s.updated_at for s in summaries],
                [s.last_seq for s in summaries],
                [s.wake_at for s in summaries],
                [r.run_id for r in batch for _ in r.events],
                [e.seq for r in batch for e in r.events],
                [e.type for r in batch for e in r.events],
                [e.at for r in batch for e in r.events],
                [data for r in batch for data in r.data],
                [getattr(e, "start_at", None) for e in created],
                [getattr(e, "priority", 0) for e in created],
                [getattr(e, "concurrency_key", None) for e in created],
            )
        }
        there = [r.run_id for r in batch if r.run_id not in inserted]
        if there:  # created elsewhere meanwhile: each such append fails as the conflict it is
            actual = dict(await conn.fetch("SELECT run_id, last_seq FROM runengine_runs WHERE run_id = ANY($1::text[])", there))
            for request in batch:
                if request.run_id not in inserted:
                    request.error = ConcurrencyConflict(request.run_id, 0, actual.get(request.run_id, 0))
        if not inserted:
            return []
        return [
            *((self.events_channel, payload) for payload in _joined(_notice(decision.changed[i]) for i in inserted)),
            (self.queue_channel, "work"),
        ]

    async def _commit_in(self, conn: asyncpg.Connection, batch: list[_Append], *, retried: bool) -> list[tuple[str, str]]:
        """The batch's transaction: lock its runs (reading their leases), create the new ones, decide
        (sql_log.decide, with the leases checked here), write the accepted events and summaries, keep
        the queue. Returns the notices to send once it has committed (channel, payload)."""
        current: dict[str, RunSummary] = {}
        holders: dict[str, str] = {}
        for row in await conn.fetch(_LOCK_RUNS_AND_LEASES, sorted({r.run_id for r in batch})):
            current[row[0]] = summary_from_row(row, POSTGRESQL)
            if row[-1] is not None:
                holders[row[0]] = row[-1]
        # New runs: insert their rows now (a concurrent creator elsewhere makes ours conflict).
        new: dict[str, Event] = {}
        for request in batch:
            if request.expected_seq == 0 and request.run_id not in current:
                new.setdefault(request.run_id, request.events[0])
        if new:
            created = list(new.values())
            inserted = {
                row[0]
                for row in await conn.fetch(
                    "INSERT INTO runengine_runs (run_id, agent, status, session_id, owner, created_at, updated_at, last_seq)"
                    " SELECT u.run_id, u.agent, 'pending', u.session_id, u.owner, u.at, u.at, 0"
                    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])"
                    " AS u(run_id, agent, session_id, owner, at)"
                    " ON CONFLICT (run_id) DO NOTHING RETURNING run_id",
                    [e.run_id for e in created],
                    [getattr(e, "agent", "") for e in created],
                    [getattr(e, "session_id", None) for e in created],
                    [getattr(e, "owner", None) for e in created],
                    [e.at for e in created],
                )
            }
            current.update((run_id, new_summary(new[run_id])) for run_id in inserted)
            lost = sorted(set(new) - inserted)
            if lost:  # created elsewhere meanwhile: decided against that run as it is now
                current.update((row[0], summary_from_row(row, POSTGRESQL)) for row in await conn.fetch(_LOCK_RUNS, lost))
        created_leased = [r.run_id for r in batch if r.lease is not None and r.run_id in new]
        if created_leased:  # (a run created in this batch had no row to join its lease to: never in practice)
            holders.update(
                (row[0], row[1])
                for row in await conn.fetch(
                    "SELECT run_id, token::text FROM runengine_queue WHERE run_id = ANY($1::text[])"
                    " AND claimed AND lease_until > clock_timestamp()",
                    created_leased,
                )
            )

        def fenced(request: Append) -> BaseException | None:
            lease = request.lease if isinstance(request, _Append) else None
            if lease is not None and holders.get(request.run_id) != lease.token:
                return LeaseLost(request.run_id, lease.worker)
            return None

        decision = decide(batch, current, fenced)
        for request, outcome in zip(batch, decision.outcomes):
            if isinstance(outcome, ConcurrencyConflict) and retried and request.written_as(
                await conn.fetch(_SQL.read, request.run_id, request.expected_seq, len(request.events)), POSTGRESQL
            ):
                continue  # our earlier attempt committed before the connection dropped
            request.error = outcome
        accepted = [r for r in decision.accepted if isinstance(r, _Append)]
        if not accepted:
            return []
        changed = decision.changed
        ids = list(changed)
        for request in accepted:
            if request.events[-1].seq == changed[request.run_id].last_seq:
                request.settled = changed[request.run_id].status
        await conn.execute(
            _WRITE_EVENTS_AND_RUNS,
            [r.run_id for r in accepted for _ in r.events],
            [e.seq for r in accepted for e in r.events],
            [e.type for r in accepted for e in r.events],
            [e.at for r in accepted for e in r.events],
            [data for r in accepted for data in r.data],
            ids,
            [changed[i].last_seq for i in ids],
            [changed[i].status.value for i in ids],
            [changed[i].updated_at for i in ids],
            [changed[i].wake_at for i in ids],
        )
        ended = [i for i in ids if changed[i].status.terminal]
        woken = [i for i in ids if i in current and current[i].wake_at is not None and changed[i].wake_at is None
                 and current[i].status is Status.WAITING_FOR_INPUT]
        gone: list[str] = []
        if ended:
            gone = [
                row[0]
                for row in await conn.fetch(
                    "DELETE FROM runengine_queue WHERE run_id = ANY($1::text[]) RETURNING run_id, claimed", ended
                )
                if row[1]
            ]
        queued = [r for r in accepted if r.enqueue and r.run_id not in ended]
        plain = [r for r in queued if not r.after]
        if plain:
            await conn.execute(
                "INSERT INTO runengine_queue (run_id, agent, not_before, priority, flow_key)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::integer[], $5::text[])",
                [r.run_id for r in plain],
                [getattr(r.events[0], "agent", "") for r in plain],
                [getattr(r.events[0], "start_at", None) for r in plain],
                [getattr(r.events[0], "priority", 0) for r in plain],
                [getattr(r.events[0], "concurrency_key", None) for r in plain],
            )
        for r in queued:
            if r.after:  # rare (session policy "enqueue"): one row each
                await conn.execute(
                    "INSERT INTO runengine_queue (run_id, agent, after_runs, not_before, priority, flow_key)"
                    " VALUES ($1, $2, $3::text[], $4, $5, $6)",
                    r.run_id,
                    getattr(r.events[0], "agent", ""),
                    list(r.after),
                    getattr(r.events[0], "start_at", None),
                    getattr(r.events[0], "priority", 0),
                    getattr(r.events[0], "concurrency_key", None),
                )
        unblocked = False
        if ended:  # runs queued behind one that just ended can be claimed now
            unblocked = bool(
                await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM runengine_queue WHERE after_runs && $1::text[])", ended
                )
            )
        # An input came to a parked run, a run was queued or unblocked: the workers waiting for work hear of it.
        work = bool(woken or queued or unblocked)
        return [
            *((self.events_channel, payload) for payload in _joined(_notice(changed[i]) for i in ids)),
            *((self.queue_channel, f"gone {run_id}") for run_id in gone),
            *([(self.queue_channel, "work")] if work else []),
        ]

    # -- live tails -------------------------------------------------------------------

    def _stream_notices(self, woken: Sequence[tuple[str, int]]) -> list[tuple[str, Sequence[Any]]]:
        # On the run log's channel: every process's listener wakes its readers of the stream.
        return [("SELECT pg_notify($1, $2)", (self.events_channel, f"{key} {version}")) for key, version in woken]

    def _stream_recheck(self) -> float | None:
        return self._recheck()

    async def _has_news(self, run_id: str, after_seq: int) -> bool:
        try:
            return await self._last_seq_once(run_id) > after_seq
        except _TRANSIENT:
            return False  # the server is away: keep waiting, re-check later

    def _recheck(self) -> float:
        if self._pool is None:
            raise StoreError("the PostgreSQL store is closed")
        return self.recheck if self._listening else min(self.recheck, 0.25)

    async def _last_seq_once(self, run_id: str) -> int:
        async with self._require_pool().acquire() as conn:
            value = await conn.fetchval("SELECT last_seq FROM runengine_runs WHERE run_id = $1", run_id)
        return int(value) if value is not None else 0

    def _on_event_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        # A line per run a commit wrote to, `run_id seq:status` (a stream's, `key version`).
        for line in payload.split("\n"):
            key, _, position = line.rpartition(" ")
            seq, _, status = position.partition(":")
            try:
                self._wakeups.notify(key, int(seq), status=Status(status) if status else None)
            except ValueError:
                log.warning("ignored a malformed notification", payload=line)

    def _notify_after_commit(self, notices: Sequence[tuple[str, str]]) -> None:
        """Queue (channel, payload) notices of something committed, for the notice task to send."""
        self._notices.extend(notices)
        self._notices_queued.set()

    async def _notice_loop(self) -> None:
        """Send the notices of committed batches, after each commit and outside it: a NOTIFY in a
        transaction holds PostgreSQL's database-wide notify lock until that transaction's WAL flush
        is done, which would make every process's durable commits wait for each other's fsyncs (no
        group commit across processes). Here one statement sends all pending notices, committed
        without waiting for its flush (nothing durable is in it). A notice lost in a crash delays a
        tail until its re-check, as a lost NOTIFY always could."""
        while True:
            await self._notices_queued.wait()
            self._notices_queued.clear()
            while self._notices:
                notices, self._notices = self._notices, []
                try:
                    await self._retry(lambda: self._send_notices(notices))
                except Exception as exc:  # the waiters' re-checks find what the notices would have said
                    log.warning("notifications not sent", error=repr(exc), count=len(notices))
            if self._notices_ending:
                return

    async def _send_notices(self, notices: Sequence[tuple[str, str]]) -> None:
        async with self._require_pool().acquire() as conn:
            await conn.execute(
                "SELECT set_config('synchronous_commit', 'off', true), pg_notify(n.channel, n.payload)"
                " FROM unnest($1::text[], $2::text[]) AS n(channel, payload)",
                [channel for channel, _ in notices],
                [payload for _, payload in notices],
            )

    def _on_queue_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == "work":
            self._work.set()
        elif payload.startswith("gone "):
            event = self._lost.pop(payload[5:], None)
            if event is not None:
                event.set()

    def _wake_everyone(self) -> None:
        """After (re)listening: notifications may have been missed, so every waiter re-checks."""
        self._wakeups.notify_all()
        for event in self._lost.values():
            event.set()
        self._work.set()

    async def _listen_loop(self) -> None:
        """Keep one connection LISTENing; reconnect when it drops."""
        delay = 0.05
        while not self._closing:
            conn: asyncpg.Connection | None = None
            try:
                conn = await self._connect()
                dropped = asyncio.Event()
                conn.add_termination_listener(lambda _c: dropped.set())
                await conn.add_listener(self.events_channel, self._on_event_notify)
                await conn.add_listener(self.queue_channel, self._on_queue_notify)
                self._listening = True
                delay = 0.05
                self._wake_everyone()
                while not dropped.is_set():
                    try:
                        await asyncio.wait_for(dropped.wait(), 5.0)
                    except asyncio.TimeoutError:  # a half-open connection never says it dropped
                        await asyncio.wait_for(conn.execute("SELECT 1"), 5.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("listener connection lost; reconnecting", error=repr(exc))
            finally:
                self._listening = False
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            if not self._closing:
                self._wake_everyone()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)


def _only_new_queued_runs(batch: Sequence[_Append]) -> bool:
    """Whether the batch only creates and queues runs, each run once (no lease, no run to wait
    behind, none ended at once): then it is one statement (PostgresStore._create_queued_runs)."""
    return len({r.run_id for r in batch}) == len(batch) and all(
        r.enqueue and r.expected_seq == 0 and r.lease is None and not r.after and not r.events[-1].terminal for r in batch
    )


def _notice(run: RunSummary) -> str:
    """A run's line in a commit's notification: where its log ends and the status it is at."""
    return f"{run.run_id} {run.last_seq}:{run.status.value}"


def _joined(lines: Iterable[str]) -> list[str]:
    """`lines` joined by newlines into as few NOTIFY payloads as fit (one per commit, as a rule)."""
    payloads: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        if current and size + len(line) + 1 > _NOTIFY_PAYLOAD_MAX:
            payloads.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        payloads.append("\n".join(current))
    return payloads


class PostgresRateWindows:
    """Request counts per key in fixed windows (runengine.http.ratelimit.WindowCounter), in the
    database: one row per key, counted by one atomic upsert, so every process shares the count."""

    #: The upsert: a later window starts the count again at 1; the same window counts up to the
    #: limit; a row already at the limit is not updated, and nothing is returned (refused).
    #: An earlier window (a process whose clock is behind) counts in the row's window.
    TAKE = """
        INSERT INTO runengine_rate_windows AS w (key, window_start, count) VALUES ($1, $2, 1)
        ON CONFLICT (key) DO UPDATE SET
            count = CASE WHEN EXCLUDED.window_start > w.window_start THEN 1 ELSE w.count + 1 END,
            window_start = GREATEST(w.window_start, EXCLUDED.window_start)
        WHERE EXCLUDED.window_start > w.window_start OR w.count < $3
        RETURNING count"""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._pruned_window = 0.0

    async def take(self, key: str, window_start: float, limit: int) -> int | None:
        store = self._store
        prune = window_start > self._pruned_window
        self._pruned_window = max(self._pruned_window, window_start)

        async def run() -> int | None:
            async with store._require_pool().acquire() as conn:
                if prune:  # once per window in each process: rows of ended windows go (bounded by keys active now)
                    await conn.execute("DELETE FROM runengine_rate_windows WHERE window_start < $1", window_start)
                # A count lost in a crash costs at most a few requests of leeway: the commit does
                # not wait for its WAL flush (a flush per request would cost milliseconds).
                async with conn.transaction():
                    await conn.execute("SET LOCAL synchronous_commit TO off")
                    count = await conn.fetchval(self.TAKE, key, window_start, limit)
                return None if count is None else int(count)

        return await store._retry(run)


__all__ = ["PostgresRateWindows", "PostgresStore", "PostgresWorkQueue", "SCHEMA_VERSION"]
