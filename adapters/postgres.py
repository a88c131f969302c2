"""PostgresStore: the event store and work queue for many engine processes on many machines.

    store = PostgresStore("postgresql://user:pass@db/runs")          # or open_store(url)
    engine = RunEngine(store, worker=True)

- Events live in one table with primary key (run_id, seq): two writers can never both
  write seq N. A run row per run carries its listing fields and last seq; every append
  locks it, so appends to one run are serialised across processes.
- Group commit: appends from every run of this process go to one writer task, which
  commits whatever has queued up in one transaction (a few statements over arrays, never
  one round trip per event). A batch whose expected seq is stale fails alone.
- Live tails: each append NOTIFYs `run_id seq` in its transaction (delivered on commit).
  One listening connection per store fans the wake-ups out to in-process waiters, which
  then read `seq > last`. Waits re-check the database every `recheck` seconds, so a lost
  NOTIFY or a dropped listener (it reconnects) delays a tail, never hangs it.
- The work queue (`store.work_queue`, runengine.adapters.postgres_queue) shares this
  store's pool, writer and listener; its fencing is checked in the append's own transaction.
- Lost connections (a server restart) are retried for up to `reconnect_timeout` seconds.

Needs asyncpg: `pip install '.[postgres]'` from the clone's root. asyncio only.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import attrs
import stamina
import structlog

from runengine import observe
from runengine.adapters.postgres_queue import PostgresWorkQueue
from runengine.adapters.run_listing import dollar, list_runs_query
from runengine.adapters.wakeup import RunWakeups
from runengine.adapters.webhook_rows import COLUMNS as WEBHOOK_COLUMNS
from runengine.adapters.webhook_rows import webhook_from_row, webhook_row
from runengine.errors import ConcurrencyConflict, InvalidRequest, SchemaVersionError, StoreError
from runengine.events import Event
from runengine.ports import (
    DEFAULT_PAGE,
    MAX_PAGE,
    EndedRunPage,
    IdempotencyRecord,
    Lease,
    LeaseLost,
    RunPage,
    RunSummary,
    SessionRecord,
    SessionRuns,
    WebhookRegistration,
)
from runengine.state import RunState
from runengine.status import TERMINAL_STATUSES, Status
from runengine.transitions import status_after
from runengine.validation import (
    check_append,
    check_page,
    decode_cursor,
    decode_ended_cursor,
    encode_cursor,
    encode_ended_cursor,
    micros,
)
from runengine.wire import data_to_json, event_from_stored, loads_stored, state_from_json, state_to_json, to_json

log = structlog.get_logger("runengine.postgres")

#: The schema this version writes. A database at a higher version is refused; one at a lower
#: version is migrated when opened (_MIGRATIONS).
SCHEMA_VERSION = 6
#: How long a session may sit idle inside a transaction before the server ends it (see _server_settings).
IDLE_IN_TRANSACTION_MS = 5_000

_ENDED_STATUSES = ", ".join(f"'{status.value}'" for status in sorted(TERMINAL_STATUSES))
#: Version 3: ended runs by end time (retention sweeps), idempotency records by run (deleting a run).
_ENDED_INDEX = f"CREATE INDEX runengine_runs_ended ON runengine_runs (updated_at, position) WHERE status IN ({_ENDED_STATUSES})"
_IDEMPOTENCY_RUN_INDEX = "CREATE INDEX runengine_idempotency_run ON runengine_idempotency (run_id)"

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")

_IDEMPOTENCY_DDL = """
CREATE TABLE runengine_idempotency (
    principal text NOT NULL,
    scope text NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    run_id text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (principal, scope, key)
);"""

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
        _IDEMPOTENCY_DDL,
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
    last_seq integer NOT NULL
);
CREATE INDEX runengine_runs_session ON runengine_runs (session_id, position);
CREATE INDEX runengine_runs_status ON runengine_runs (status, position);
CREATE INDEX runengine_runs_owner ON runengine_runs (owner, position);
{ended_index};
CREATE TABLE runengine_events (
    run_id text NOT NULL,
    seq integer NOT NULL,
    type text NOT NULL,
    at timestamptz NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE runengine_snapshots (
    run_id text PRIMARY KEY,
    last_seq integer NOT NULL,
    state text NOT NULL
);
%(idempotency)s
{idempotency_run_index};
CREATE TABLE runengine_sessions (
    session_id text PRIMARY KEY,
    owner text,
    created_at timestamptz,
    expires_at timestamptz,
    ended_at timestamptz,
    metadata text NOT NULL,
    data text NOT NULL
);
CREATE TABLE runengine_queue (
    run_id text PRIMARY KEY,
    agent text NOT NULL,
    position bigserial,
    claimed boolean NOT NULL DEFAULT false,
    token uuid,
    worker text,
    lease_until timestamptz,
    claims integer NOT NULL DEFAULT 0,
    after_runs text[] NOT NULL DEFAULT '{}',
    not_before timestamptz
);
CREATE INDEX runengine_queue_waiting ON runengine_queue (position) WHERE NOT claimed;
CREATE INDEX runengine_queue_leases ON runengine_queue (lease_until) WHERE claimed;
{webhooks};
""".replace("%(idempotency)s", _IDEMPOTENCY_DDL).replace("{ended_index}", _ENDED_INDEX).replace(
    "{idempotency_run_index}", _IDEMPOTENCY_RUN_INDEX
).replace("{webhooks}", _WEBHOOKS_DDL.strip().rstrip(";")) + _RATE_WINDOWS_DDL + ";\n"

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

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@attrs.define(eq=False)
class _Append:
    """One append waiting for the writer task."""

    run_id: str
    events: Sequence[Event]
    expected_seq: int
    future: asyncio.Future[None]
    lease: Lease | None = None
    enqueue: bool = False
    after: tuple[str, ...] = ()
    error: BaseException | None = None


@attrs.define(eq=False)
class _RunRow:
    last_seq: int
    status: Status | None
    created: bool = False  # inserted by this batch


class PostgresStore:
    """An EventStore (and WorkQueue, as `.work_queue`) on PostgreSQL through an asyncpg pool."""

    shared = True

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
        self._requests: asyncio.Queue[_Append] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._wakeups = RunWakeups()
        self._lost: dict[str, asyncio.Event] = {}
        self._work = asyncio.Event()
        self._listening = False
        self._closing = False
        self.work_queue = PostgresWorkQueue(self)
        #: Rate-limit counts shared by every process on this database (a WindowCounter).
        self.rate_windows = PostgresRateWindows(self)
        #: The writer's recent transactions: seconds each, and events each (for benchmarks).
        self.commit_times: collections.deque[float] = collections.deque(maxlen=100_000)
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=100_000)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStore:
        """`postgresql://user:password@host:port/database?schema=name&pool_max=10` (also
        `postgres://`). `schema`, `pool_min`, `pool_max`, `recheck` and `reconnect_timeout`
        are this store's; other query parameters go to asyncpg."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise InvalidRequest(f"not a PostgreSQL URL: {url!r}")
        ours: dict[str, Any] = {}
        rest: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "schema":
                ours[key] = value
            elif key in ("pool_min", "pool_max"):
                ours[key] = _parse(key, value, int)
            elif key in ("recheck", "reconnect_timeout"):
                ours[key] = _parse(key, value, float)
            else:
                rest.append((key, value))
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
            self.dsn, min_size=self.pool_min, max_size=self.pool_max, server_settings=settings
        )
        self._requests = asyncio.Queue()
        self._writer_task = asyncio.create_task(self._write_loop(), name="runengine postgres writer")
        self._listener_task = asyncio.create_task(self._listen_loop(), name="runengine postgres listener")

    async def close(self) -> None:
        if self._pool is None:
            return
        self._closing = True
        requests, writer = self._requests, self._writer_task
        if requests is not None and writer is not None:
            await requests.join()  # what was handed to the writer gets committed (or its error)
            writer.cancel()
        for task in (writer, self._listener_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        pool, self._pool = self._pool, None
        self._writer_task = self._listener_task = None
        self._requests = None
        await pool.close()
        self._wakeups.notify_all()

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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
            if version is None:
                await conn.execute(_DDL)
                await conn.execute("INSERT INTO runengine_schema (version) VALUES ($1)", SCHEMA_VERSION)
            elif version < SCHEMA_VERSION:
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[target]:
                        await conn.execute(statement)
                await conn.execute("INSERT INTO runengine_schema (version) VALUES ($1)", SCHEMA_VERSION)
            elif version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"the database schema is version {version}; this runengine knows up to {SCHEMA_VERSION}",
                    found=version,
                    known=SCHEMA_VERSION,
                )

    async def schema_current(self) -> bool:
        """Whether the database's schema is the version this runengine writes (readiness: another
        process of a newer version may have migrated it since this one opened it)."""
        row = await self._fetchrow("SELECT max(version) FROM runengine_schema")
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

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            async with self._require_pool().acquire() as conn:
                return list(await conn.fetch(sql, *args))

        return await self._retry(run)

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async def run() -> asyncpg.Record | None:
            async with self._require_pool().acquire() as conn:
                return await conn.fetchrow(sql, *args)

        return await self._retry(run)

    async def _execute(self, sql: str, *args: Any) -> None:
        async def run() -> None:
            async with self._require_pool().acquire() as conn:
                await conn.execute(sql, *args)

        await self._retry(run)

    # -- events: appends go through the writer task ---------------------------------

    async def append(self, run_id: str, events: Sequence[Event], *, expected_seq: int) -> None:
        check_append(run_id, events, expected_seq)
        _check_json(events)
        await self._submit(_Append(run_id, list(events), expected_seq, self._new_future()))

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
        _check_json(events)
        await self._submit(
            _Append(run_id, list(events), expected_seq, self._new_future(), lease=lease, enqueue=enqueue, after=tuple(after))
        )

    def _new_future(self) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, request: _Append) -> None:
        requests = self._requests
        if requests is None or self._closing:
            raise StoreError("the PostgreSQL store is not open: `await store.open()` first")
        requests.put_nowait(request)
        await request.future

    async def _write_loop(self) -> None:
        requests = self._requests
        assert requests is not None
        while True:
            batch = [await requests.get()]
            while len(batch) < self.max_batch and not requests.empty():
                batch.append(requests.get_nowait())
            started = asyncio.get_running_loop().time()
            try:
                await self._commit(batch)
                self.commit_times.append(asyncio.get_running_loop().time() - started)
                observe.current.store_commit(store="postgresql", seconds=self.commit_times[-1])
                self.batch_sizes.append(sum(len(r.events) for r in batch if r.error is None))
            except Exception as exc:  # the whole batch failed: each caller gets the error
                for request in batch:
                    if request.error is None:
                        request.error = exc
            except BaseException:  # cancelled (the store is closing): tell the callers, then stop
                for request in batch:
                    if request.error is None:
                        request.error = StoreError("the store closed during the append; it may or may not be written")
                raise
            finally:
                for request in batch:
                    if not request.future.done():
                        if request.error is not None:
                            request.future.set_exception(request.error)
                        else:
                            request.future.set_result(None)
                    requests.task_done()
                for request in batch:
                    if request.error is None:
                        self._wakeups.notify(request.run_id, request.events[-1].seq)
                if any(r.enqueue and r.error is None for r in batch):
                    self._work.set()

    async def _commit(self, batch: list[_Append]) -> None:
        attempt = 0

        async def once() -> None:
            nonlocal attempt
            attempt += 1
            for request in batch:
                request.error = None
            async with self._require_pool().acquire() as conn:
                async with conn.transaction():
                    await self._commit_in(conn, batch, retried=attempt > 1)

        await self._retry(once)

    async def _commit_in(self, conn: asyncpg.Connection, batch: list[_Append], *, retried: bool) -> None:
        run_ids = sorted({r.run_id for r in batch})
        runs: dict[str, _RunRow] = {
            row[0]: _RunRow(row[1], Status(row[2]))
            for row in await conn.fetch(
                "SELECT run_id, last_seq, status FROM runengine_runs WHERE run_id = ANY($1::text[])"
                " ORDER BY run_id FOR UPDATE",
                run_ids,
            )
        }
        # New runs: insert their rows now (a concurrent creator elsewhere makes ours conflict).
        firsts: dict[str, _Append] = {}
        for request in batch:
            firsts.setdefault(request.run_id, request)
        new = [r for rid, r in firsts.items() if rid not in runs and r.expected_seq == 0]
        if new:
            created = [r.events[0] for r in new]
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
            for rid in inserted:
                runs[rid] = _RunRow(0, None, created=True)
            lost = [r.run_id for r in new if r.run_id not in inserted]
            if lost:
                for row in await conn.fetch(
                    "SELECT run_id, last_seq, status FROM runengine_runs WHERE run_id = ANY($1::text[])"
                    " ORDER BY run_id FOR UPDATE",
                    lost,
                ):
                    runs[row[0]] = _RunRow(row[1], Status(row[2]))
        leased = [r.run_id for r in batch if r.lease is not None]
        holders: dict[str, str] = {}
        if leased:
            holders = {
                row[0]: row[1]
                for row in await conn.fetch(
                    "SELECT run_id, token::text FROM runengine_queue WHERE run_id = ANY($1::text[])"
                    " AND claimed AND lease_until > clock_timestamp()",
                    leased,
                )
            }
        # Decide each request in order, against the log as the earlier ones leave it.
        accepted: list[_Append] = []
        for request in batch:
            row = runs.get(request.run_id)
            actual = row.last_seq if row is not None else 0
            if request.lease is not None and holders.get(request.run_id) != request.lease.token:
                request.error = LeaseLost(request.run_id, request.lease.worker)
                continue
            if actual != request.expected_seq:
                if retried and await self._already_written(conn, request):
                    continue  # our earlier attempt committed before the connection dropped
                request.error = ConcurrencyConflict(request.run_id, request.expected_seq, actual)
                continue
            if row is None:  # cannot happen for a well-formed batch: first appends create their row
                request.error = ConcurrencyConflict(request.run_id, request.expected_seq, actual)
                continue
            row.status = status_after(row.status if row.last_seq else None, [e.type for e in request.events]) or row.status
            row.last_seq = request.events[-1].seq
            accepted.append(request)
        if not accepted:
            return
        events = [e for r in accepted for e in r.events]
        await conn.execute(
            "INSERT INTO runengine_events (run_id, seq, type, at, data)"
            " SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::text[])",
            [e.run_id for e in events],
            [e.seq for e in events],
            [e.type for e in events],
            [e.at for e in events],
            [data_to_json(e) for e in events],
        )
        touched: dict[str, tuple[_RunRow, datetime]] = {}
        for request in accepted:
            touched[request.run_id] = (runs[request.run_id], request.events[-1].at)
        ids = list(touched)
        await conn.execute(
            "UPDATE runengine_runs AS r SET last_seq = u.last_seq, status = u.status, updated_at = u.updated_at"
            " FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[]) AS u(run_id, last_seq, status, updated_at)"
            " WHERE r.run_id = u.run_id",
            ids,
            [touched[i][0].last_seq for i in ids],
            [(touched[i][0].status or Status.PENDING).value for i in ids],
            [touched[i][1] for i in ids],
        )
        ended = [i for i in ids if (status := touched[i][0].status) is not None and status.terminal]
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
                "INSERT INTO runengine_queue (run_id, agent, not_before)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])",
                [r.run_id for r in plain],
                [getattr(r.events[0], "agent", "") for r in plain],
                [getattr(r.events[0], "start_at", None) for r in plain],
            )
        for r in queued:
            if r.after:  # rare (session policy "enqueue"): one row each
                await conn.execute(
                    "INSERT INTO runengine_queue (run_id, agent, after_runs, not_before) VALUES ($1, $2, $3::text[], $4)",
                    r.run_id,
                    getattr(r.events[0], "agent", ""),
                    list(r.after),
                    getattr(r.events[0], "start_at", None),
                )
        unblocked = False
        if ended:  # runs queued behind one that just ended can be claimed now
            unblocked = bool(
                await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM runengine_queue WHERE after_runs && $1::text[])", ended
                )
            )
        payloads = [f"{i} {touched[i][0].last_seq}" for i in ids]
        await conn.execute(
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", self.events_channel, payloads
        )
        notes = [f"gone {rid}" for rid in gone] + (["work"] if queued or unblocked else [])
        if notes:
            await conn.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", self.queue_channel, notes)

    async def _already_written(self, conn: asyncpg.Connection, request: _Append) -> bool:
        """After a retry: are exactly these events in the log already (an earlier attempt committed)?"""
        rows = await conn.fetch(
            "SELECT seq, type, at, data FROM runengine_events WHERE run_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
            request.run_id,
            request.expected_seq,
            request.events[-1].seq,
        )
        if len(rows) != len(request.events):
            return False
        return all(
            row[0] == e.seq and row[1] == e.type and row[2] == e.at and row[3] == data_to_json(e)
            for row, e in zip(rows, request.events)
        )

    async def read(self, run_id: str, *, after_seq: int = 0, limit: int = DEFAULT_PAGE) -> list[Event]:
        check_page(after_seq, limit)
        rows = await self._fetch(
            "SELECT seq, type, at, data FROM runengine_events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            run_id,
            after_seq,
            min(limit, MAX_PAGE),
        )
        return [event_from_stored(run_id, row[0], row[1], row[2], loads_stored(row[3])) for row in rows]

    async def last_seq(self, run_id: str) -> int:
        row = await self._fetchrow("SELECT last_seq FROM runengine_runs WHERE run_id = $1", run_id)
        return int(row[0]) if row is not None else 0

    # -- live tails -------------------------------------------------------------------

    async def wait(self, run_id: str, *, after_seq: int, timeout: float | None = None) -> bool:
        async def has_news() -> bool:
            try:
                return await self._last_seq_once(run_id) > after_seq
            except _TRANSIENT:
                return False  # the server is away: keep waiting, re-check later

        def recheck() -> float:
            if self._pool is None:
                raise StoreError("the PostgreSQL store is closed")
            return self.recheck if self._listening else min(self.recheck, 0.25)

        return await self._wakeups.wait(
            run_id, after_seq=after_seq, timeout=timeout, has_news=has_news, recheck=recheck
        )

    async def _last_seq_once(self, run_id: str) -> int:
        async with self._require_pool().acquire() as conn:
            value = await conn.fetchval("SELECT last_seq FROM runengine_runs WHERE run_id = $1", run_id)
        return int(value) if value is not None else 0

    def _on_event_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        run_id, _, seq = payload.rpartition(" ")
        try:
            self._wakeups.notify(run_id, int(seq))
        except ValueError:
            log.warning("ignored a malformed notification", payload=payload)

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

    # -- listing ------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunSummary | None:
        row = await self._fetchrow(
            "SELECT run_id, agent, status, session_id, owner, created_at, updated_at, last_seq"
            " FROM runengine_runs WHERE run_id = $1",
            run_id,
        )
        return _summary(row) if row is not None else None

    async def count_session_runs(self, session_id: str, *, owner: str | None = None) -> SessionRuns:
        sql = (
            "SELECT status, count(*) AS n, min(position) AS first,"
            " (array_agg(created_at ORDER BY position))[1] AS created_at"
            " FROM runengine_runs WHERE session_id = $1"
        )
        args: list[Any] = [session_id]
        if owner is not None:
            sql += " AND owner = $2"
            args.append(owner)
        rows = await self._fetch(sql + " GROUP BY status", *args)
        first = min(rows, key=lambda row: row["first"], default=None)
        return SessionRuns(
            by_status={Status(row["status"]): row["n"] for row in rows},
            first_created_at=first["created_at"] if first is not None else None,
        )

    async def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: Status | None = None,
        owner: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> RunPage:
        check_page(0, limit)
        sql, args = list_runs_query(
            "SELECT run_id, agent, status, session_id, owner, created_at, updated_at, last_seq, position"
            " FROM runengine_runs",
            placeholder=dollar,
            session_id=session_id,
            status=status,
            owner=owner,
            before_position=decode_cursor(before),
            limit=limit,
        )
        rows = await self._fetch(sql, *args)
        page = rows[:limit]
        more = len(rows) > limit
        return RunPage(
            runs=tuple(_summary(row) for row in page),
            next_before=encode_cursor(page[-1]["position"]) if more and page else None,
        )

    async def run_cursor(self, run_id: str) -> str | None:
        row = await self._fetchrow("SELECT position FROM runengine_runs WHERE run_id = $1", run_id)
        return encode_cursor(row["position"]) if row is not None else None

    async def list_ended_runs(
        self, *, ended_before: datetime, limit: int = 100, after: str | None = None
    ) -> EndedRunPage:
        check_page(0, limit)
        start = decode_ended_cursor(after)
        args: list[Any] = [ended_before]
        sql = (
            "SELECT run_id, agent, status, session_id, owner, created_at, updated_at, last_seq, position"
            f" FROM runengine_runs WHERE status IN ({_ENDED_STATUSES}) AND updated_at < $1"
        )
        if start is not None:
            args.extend((_EPOCH + timedelta(microseconds=start[0]), start[1]))
            sql += " AND (updated_at, position) > ($2, $3)"
        args.append(limit + 1)
        sql += f" ORDER BY updated_at, position LIMIT ${len(args)}"
        rows = await self._fetch(sql, *args)
        page = rows[:limit]
        return EndedRunPage(
            runs=tuple(_summary(row) for row in page),
            next_after=(
                encode_ended_cursor(micros(page[-1]["updated_at"]), page[-1]["position"]) if len(rows) > limit else None
            ),
        )

    async def delete_run(self, run_id: str) -> bool:
        async def run() -> bool:
            async with self._require_pool().acquire() as conn, conn.transaction():
                # The run row first, as appends lock it first: a concurrent writer waits, never deadlocks.
                found = await conn.fetchval("DELETE FROM runengine_runs WHERE run_id = $1 RETURNING true", run_id)
                for table in ("runengine_events", "runengine_snapshots", "runengine_idempotency", "runengine_queue"):
                    await conn.execute(f"DELETE FROM {table} WHERE run_id = $1", run_id)  # noqa: S608 - our tables
                return bool(found)

        return await self._retry(run)

    # -- snapshots, idempotency keys, sessions ----------------------------------------------

    async def save_snapshot(self, state: RunState) -> None:
        await self._execute(
            "INSERT INTO runengine_snapshots (run_id, last_seq, state) VALUES ($1, $2, $3)"
            " ON CONFLICT (run_id) DO UPDATE SET last_seq = EXCLUDED.last_seq, state = EXCLUDED.state"
            " WHERE runengine_snapshots.last_seq <= EXCLUDED.last_seq",
            state.run_id,
            state.last_seq,
            state_to_json(state),
        )

    async def load_snapshot(self, run_id: str) -> RunState | None:
        row = await self._fetchrow("SELECT state FROM runengine_snapshots WHERE run_id = $1", run_id)
        return state_from_json(row[0]) if row is not None else None

    async def reserve_idempotency_key(
        self, record: IdempotencyRecord, *, ttl: float, pending_for: float
    ) -> IdempotencyRecord | None:
        if not record.key:
            raise InvalidRequest("an idempotency key must not be empty")
        identity = (record.principal, record.scope, record.key)

        async def run() -> IdempotencyRecord | None:
            async with self._require_pool().acquire() as conn, conn.transaction():
                # Replaced only when expired, or when its run never came (its request died).
                stored = await conn.fetchval(
                    "INSERT INTO runengine_idempotency AS i (principal, scope, key, fingerprint, run_id, created_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6)"
                    " ON CONFLICT (principal, scope, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
                    " run_id = EXCLUDED.run_id, created_at = EXCLUDED.created_at"
                    " WHERE i.created_at < EXCLUDED.created_at - $7::interval"
                    " OR (i.created_at < EXCLUDED.created_at - $8::interval"
                    " AND NOT EXISTS (SELECT 1 FROM runengine_runs AS r WHERE r.run_id = i.run_id))"
                    " RETURNING run_id",
                    *identity,
                    record.fingerprint,
                    record.run_id,
                    record.created_at,
                    timedelta(seconds=ttl),
                    timedelta(seconds=pending_for),
                )
                if stored is not None:
                    return None
                row = await conn.fetchrow(
                    "SELECT fingerprint, run_id, created_at FROM runengine_idempotency"
                    " WHERE principal = $1 AND scope = $2 AND key = $3",
                    *identity,
                )
                held = attrs.evolve(record, fingerprint=row[0], run_id=row[1], created_at=row[2])
                # A retry after a lost connection finds its own committed record: still ours.
                return None if held == record else held

        return await self._retry(run)

    async def release_idempotency_key(self, record: IdempotencyRecord) -> None:
        await self._execute(
            "DELETE FROM runengine_idempotency WHERE principal = $1 AND scope = $2 AND key = $3 AND run_id = $4",
            record.principal,
            record.scope,
            record.key,
            record.run_id,
        )

    async def put_session(self, session: SessionRecord) -> None:
        await self._execute(
            "INSERT INTO runengine_sessions (session_id, owner, created_at, expires_at, ended_at, metadata, data)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (session_id) DO UPDATE SET"
            " owner = EXCLUDED.owner, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at,"
            " ended_at = EXCLUDED.ended_at, metadata = EXCLUDED.metadata, data = EXCLUDED.data",
            *_session_params(session),
        )

    async def add_session(self, session: SessionRecord) -> SessionRecord:
        row = await self._fetchrow(
            "INSERT INTO runengine_sessions (session_id, owner, created_at, expires_at, ended_at, metadata, data)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (session_id) DO NOTHING RETURNING session_id",
            *_session_params(session),
        )
        if row is not None:
            return session
        stored = await self.get_session(session.session_id)
        assert stored is not None  # sessions are never deleted here
        return stored

    async def get_session(self, session_id: str) -> SessionRecord | None:
        row = await self._fetchrow(
            "SELECT session_id, owner, created_at, expires_at, ended_at, metadata, data"
            " FROM runengine_sessions WHERE session_id = $1",
            session_id,
        )
        if row is None:
            return None
        return SessionRecord(
            session_id=row[0],
            owner=row[1],
            created_at=row[2],
            expires_at=row[3],
            ended_at=row[4],
            metadata=json.loads(row[5]),
            data=json.loads(row[6]),
        )

    # -- webhook registrations ------------------------------------------------------------

    async def add_webhook(self, webhook: WebhookRegistration) -> None:
        await self._execute(
            f"INSERT INTO runengine_webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            *webhook_row(webhook, webhook.created_at),
        )

    async def list_webhooks(self, app_id: str) -> list[WebhookRegistration]:
        rows = await self._fetch(
            f"SELECT {WEBHOOK_COLUMNS} FROM runengine_webhooks WHERE app_id = $1 ORDER BY position", app_id
        )
        return [webhook_from_row(row, row[5]) for row in rows]

    async def delete_webhook(self, app_id: str, webhook_id: str) -> bool:
        found = await self._fetchrow(
            "DELETE FROM runengine_webhooks WHERE app_id = $1 AND webhook_id = $2 RETURNING true", app_id, webhook_id
        )
        return found is not None


def _summary(row: asyncpg.Record) -> RunSummary:
    return RunSummary(
        run_id=row["run_id"],
        agent=row["agent"],
        status=Status(row["status"]),
        session_id=row["session_id"],
        owner=row["owner"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_seq=row["last_seq"],
    )


def _session_params(session: SessionRecord) -> tuple[Any, ...]:
    """A session record as the sessions table's columns, in order ($1 .. $7)."""
    return (
        session.session_id,
        session.owner,
        session.created_at,
        session.expires_at,
        session.ended_at,
        to_json(session.metadata, "session metadata"),
        to_json(session.data, "session data"),
    )


def _check_json(events: Sequence[Event]) -> None:
    """InvalidRequest, before the append joins a group commit, for an event that cannot be JSON
    (so it fails alone, never the writer's whole batch)."""
    for event in events:
        data_to_json(event)


def _parse(key: str, value: str, kind: Callable[[str], Any]) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise InvalidRequest(f"invalid {key} {value!r} in the store URL") from None


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
