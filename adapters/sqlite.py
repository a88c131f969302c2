"""SQLiteStore: the embedded default store. A file, zero set-up (docs/sqlite.md: layout, group
commit, reads, durability).

    store = SQLiteStore("runs.db")                 # or RunEngine("sqlite:///runs.db")

The statements, rows and append decision are the SQL log's (adapters/sql_log.py, shared with
PostgreSQL), the writer task is adapters/group_commit.py; this module is SQLite's schema and
migrations (version in `schema_version`) and its transaction: appends go straight into the
writer connection's thread (adapters/db_thread.py), which commits everything queued as one batch
(BEGIN IMMEDIATE, one executemany of the events, one of the runs rows each checked against the
last seq this writer committed (a SELECT only for runs it has not written since it opened), the
other writes each in a savepoint, COMMIT), never a hop per row nor an event-loop turn per write. Reads go through a second, read-only connection (WAL);
what this store committed is also kept in memory (adapters/log_cache.py). WAL mode;
`synchronous="FULL"` (default) survives a power loss, `"NORMAL"` a process crash. One process
writes a given file at a time (`shared = False`). Needs asyncio.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio

from runengine import observe
from runengine.adapters import log_packs
from runengine.adapters.db_thread import DatabaseThread
from runengine.adapters.log_cache import SUMMARIES, CommittedCache
from runengine.adapters.sql_dialect import ENDED_STATUSES, SQLITE
from runengine.adapters.sql_streams import SQLStreams, StreamStatements, stream_tables
from runengine.adapters.sql_schedules import ScheduleStatements, schedule_table
from runengine.adapters.sql_log import (
    BUSY_CONDITION,
    IN_CHUNK,
    Append,
    SQLLog,
    Statements,
    all_deltas,
    check_text,
    decide,
    log_tables,
    schema_steps,
    summary_from_row,
)
from runengine.adapters.url_options import url_options
from runengine.adapters.wakeup import RunWakeups
from runengine.errors import InvalidRequest, StoreError
from runengine.events import Event, MessageDelta
from runengine.ports import DEFAULT_PAGE, RecordedPage, RunSummary
from runengine.state import RunState
from runengine.status import TERMINAL_STATUSES
from runengine.validation import check_append, check_page, micros
from runengine.wire import state_to_json

SCHEMA_VERSION = 8

_TABLES = log_tables(SQLITE)
_STREAM_TABLES = ";\n".join(stream_tables(SQLITE))
_SCHEMA = f"""
{_TABLES["events"]};
CREATE TABLE IF NOT EXISTS runs (
    position INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    agent TEXT NOT NULL,
    status TEXT NOT NULL,
    session_id TEXT,
    owner TEXT,
    created_at TEXT,
    updated_at TEXT,
    last_seq INTEGER NOT NULL,
    ended_us INTEGER,
    wake_at INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_session ON runs (session_id, position);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, position);
CREATE INDEX IF NOT EXISTS runs_by_owner ON runs (owner, position);
{_TABLES["snapshots"]};
{_TABLES["idempotency"]};
CREATE INDEX IF NOT EXISTS idempotency_by_run ON idempotency (run_id);
{_TABLES["sessions"]};
CREATE TABLE IF NOT EXISTS webhooks (
    webhook_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at TEXT NOT NULL,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS webhooks_by_app ON webhooks (app_id);
{_STREAM_TABLES};
{schedule_table(SQLITE)};
{log_packs.TABLE};
"""

#: Webhook registrations used to be kept as ended sessions `platform.webhooks.<app_id>` whose data
#: listed them: each becomes a row of the webhooks table (made by _SCHEMA), and the session goes.
_MOVE_WEBHOOKS_TO_THEIR_TABLE = (
    "INSERT OR IGNORE INTO webhooks (webhook_id, app_id, url, events, secret, created_at, owner)"
    " SELECT json_extract(w.value, '$.webhook_id'), json_extract(s.data, '$.app_id'), json_extract(w.value, '$.url'),"
    " json_extract(w.value, '$.events'), json_extract(w.value, '$.secret'), json_extract(w.value, '$.created_at'),"
    " json_extract(w.value, '$.owner')"
    " FROM sessions AS s, json_each(s.data, '$.webhooks') AS w"
    " WHERE s.session_id LIKE 'platform.webhooks.%' AND json_extract(s.data, '$.kind') = 'platform.webhooks'"
    " ORDER BY s.session_id, w.key",
    "DELETE FROM sessions WHERE session_id LIKE 'platform.webhooks.%' AND json_extract(data, '$.kind') = 'platform.webhooks'",
)
#: Run after _SCHEMA to bring a file of the previous version up to this one, by target version.
_MIGRATIONS = {
    2: (
        # Schema 1 kept keys as one joined "owner:key" string, which cannot be told apart by
        # principal: those records (24 h of retry protection) are dropped, not guessed at.
        "DROP TABLE IF EXISTS idempotency_keys",
        # Sessions begun by a run had no record (and so no owner): their first run's owner owns them.
        "INSERT OR IGNORE INTO sessions (session_id, owner, created_at, metadata, data)"
        " SELECT r.session_id, r.owner, r.created_at, '{}', '{}' FROM runs AS r"
        " WHERE r.session_id IS NOT NULL"
        " AND r.position = (SELECT min(position) FROM runs AS f WHERE f.session_id = r.session_id)",
    ),
    3: (
        "ALTER TABLE runs ADD COLUMN ended_us INTEGER",
        "UPDATE runs SET ended_us = (SELECT at_us FROM events WHERE events.run_id = runs.run_id"
        f" AND events.seq = runs.last_seq) WHERE status IN ({ENDED_STATUSES})",
    ),
    4: _MOVE_WEBHOOKS_TO_THEIR_TABLE,
    # The timer index (RunSummary.wake_at, µs). Runs idle since before it have none: they are
    # taken up once as runs at work (as before), and the index knows them from their next wait on.
    5: ("ALTER TABLE runs ADD COLUMN wake_at INTEGER",),
    6: (),  # the Durable Streams tables: new tables only, made by _SCHEMA
    7: (schedule_table(SQLITE),),  # schedules (runengine.schedules): a table of their own
    8: (),  # packed rows beside the log (adapters.log_packs): a new table, made by _SCHEMA; runs packed from their next rest
}
#: Indexes on columns a migration adds: created after the migrations, on every file.
_SCHEMA_AFTER_MIGRATIONS = (
    "CREATE INDEX IF NOT EXISTS runs_by_ended ON runs (ended_us, position) WHERE ended_us IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS runs_by_wake ON runs (wake_at, position) WHERE wake_at IS NOT NULL",
    f"CREATE INDEX IF NOT EXISTS runs_busy ON runs (position) WHERE {BUSY_CONDITION}",
)

#: A run this writer wrote before: its row moves on only from the last seq it left there (the
#: status, end and wake columns, and their indexes, are written only when one of them changes).
_MOVE_RUN = "UPDATE runs SET updated_at = ?, last_seq = ? WHERE run_id = ? AND last_seq = ?"
_MOVE_RUN_STATUS = (
    "UPDATE runs SET status = ?, updated_at = ?, last_seq = ?, ended_us = ?, wake_at = ?"
    " WHERE run_id = ? AND last_seq = ?"
)
_UPSERT_RUN = (
    "INSERT INTO runs (run_id, agent, status, session_id, owner, created_at, updated_at, last_seq, ended_us, wake_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (run_id) DO UPDATE SET status = excluded.status,"
    " updated_at = excluded.updated_at, last_seq = excluded.last_seq, ended_us = excluded.ended_us,"
    " wake_at = excluded.wake_at"
)
_SQL = Statements(SQLITE)
_DELTA = MessageDelta.type
_SYNCHRONOUS = ("FULL", "NORMAL")

#: Defaults chosen from benchmarks/bench_sqlite.py (see docs/sqlite.md): no extra wait.
#: The engine's RunWriter already waits its own window per run, so appends arrive as
#: batches; the writer takes everything queued as soon as the previous commit ends, and
#: batches form by themselves while a commit (its fsync) is in flight. In the sweep a
#: store window only cost throughput once appends were batches (5-10 ms: -30..-50% for
#: one run). With a window set, `flush_max` lets an already-large append go at once.
DEFAULT_FLUSH_MAX = 256
DEFAULT_FLUSH_WINDOW = 0.0
#: The committed tail kept in memory: events per run (up to twice that between trims),
#: and how many runs (at ~200 bytes a delta, at most ~50 MB).
TAIL_EVENTS = 1024
TAIL_RUNS = 128


def _fetchall(raw: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return raw.execute(sql, params).fetchall()


def _checkpoint(raw: sqlite3.Connection) -> None:
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _summary_row(s: RunSummary) -> tuple[Any, ...]:
    time = SQLITE.time_param
    return (
        s.run_id,
        s.agent,
        s.status.value,
        s.session_id,
        s.owner,
        time(s.created_at) if s.created_at else None,
        time(s.updated_at) if s.updated_at else None,
        s.last_seq,
        micros(s.updated_at) if s.updated_at and s.status.terminal else None,
        micros(s.wake_at) if s.wake_at is not None else None,
    )


# -- the write queue --------------------------------------------------------------


class _Statement:
    """Any other write (snapshot, key, session ...): its statements, run in the batch's
    transaction in a savepoint of their own (so they fail alone); answered with their row counts."""

    __slots__ = ("statements", "future", "snapshot_of", "deletes")

    def __init__(
        self,
        statements: Sequence[tuple[str, Sequence[Any]]],
        future: asyncio.Future[Any],
        snapshot_of: str | None = None,
        deletes: str | None = None,
    ) -> None:
        self.statements = statements
        self.future = future
        #: The run whose snapshot this statement writes, if it writes one.
        self.snapshot_of = snapshot_of
        #: The run this statement deletes, if it deletes one (its caches go at commit).
        self.deletes = deletes


class SQLiteStore(SQLStreams, SQLLog):
    """The event store in a SQLite file (or `:memory:`). See the module docstring."""

    shared = False
    sql = _SQL
    stream_sql = StreamStatements(SQLITE)
    schedule_sql = ScheduleStatements(SQLITE)

    def __init__(
        self,
        path: str | Path = "runengine.db",
        *,
        synchronous: str = "FULL",
        flush_max: int = DEFAULT_FLUSH_MAX,
        flush_window: float = DEFAULT_FLUSH_WINDOW,
        busy_timeout: float = 5.0,
        tail_events: int = TAIL_EVENTS,
        tail_runs: int = TAIL_RUNS,
    ) -> None:
        sync = str(synchronous).upper()
        if sync not in _SYNCHRONOUS:
            raise InvalidRequest(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {synchronous!r}")
        if not isinstance(flush_max, int) or flush_max < 1:
            raise InvalidRequest(f"flush_max must be a positive integer, got {flush_max!r}")
        if not isinstance(flush_window, (int, float)) or not 0 <= flush_window <= 0.010:
            raise InvalidRequest(f"flush_window must be between 0 and 0.010 seconds, got {flush_window!r}")
        self.path = str(path)
        self.synchronous = sync
        self.flush_max = flush_max
        self.flush_window = float(flush_window)
        self.busy_timeout = busy_timeout
        self.memory = self.path == ":memory:"
        # With :memory: there is one connection, the writer's: reads queue behind its batches.
        self._writer_db: DatabaseThread[Append | _Statement] | None = None
        self._reader_db: DatabaseThread[Any] | None = None
        self._closing = False
        #: What this store committed (the sole writer): summaries, snapshot-free runs, log tails
        #: (`tail_events` per run for `tail_runs` runs; 0 runs turns tails off).
        self._cache = CommittedCache(tail_events, tail_runs)
        self._wakeups = RunWakeups()
        #: Commit latencies (seconds) of recent batches and their sizes (events), for benchmarks.
        self.commit_times: collections.deque[float] = collections.deque(maxlen=100_000)
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=100_000)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        """`sqlite:///relative.db`, `sqlite:////absolute/path.db`, `sqlite://:memory:`.

        Query parameters set options: `?synchronous=NORMAL&flush_max=1024&flush_window=0.002`.
        """
        parts = urlsplit(url)
        if parts.scheme != "sqlite":
            raise InvalidRequest(f"not a sqlite URL: {url!r}")
        if parts.netloc == ":memory:" or (parts.netloc == "" and parts.path in ("/:memory:", ":memory:")):
            path = ":memory:"
        elif parts.netloc:
            raise InvalidRequest(
                f"sqlite URL {url!r} names a host; use sqlite:///relative.db or sqlite:////absolute/path.db"
            )
        else:
            path = parts.path[1:] if parts.path.startswith("/") else parts.path
            if not path:
                raise InvalidRequest(f"sqlite URL {url!r} names no file; try sqlite:///runengine.db")
        kwargs = url_options(parts.query, {"synchronous": str, "flush_max": int, "flush_window": float, "busy_timeout": float})
        kwargs.update(options)
        return cls(path, **kwargs)

    # -- lifecycle --------------------------------------------------------------

    async def open(self) -> None:
        if self._writer_db is not None:
            return
        if not self.memory and not Path(self.path).resolve().parent.is_dir():
            raise StoreError(f"cannot open SQLite database {self.path!r}: its directory does not exist")
        busy = f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}"
        opened: list[DatabaseThread[Any]] = []
        try:
            writer = await self._connect("writer", opened)
            await writer.call(_prepare_writer, busy, self.synchronous, not self.memory)
            reader = writer
            if not self.memory:
                reader = await self._connect("reader", opened)
                await reader.call(_prepare_reader, busy)
        except BaseException as exc:
            for db in reversed(opened):
                await db.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
            raise
        self._writer_db, self._reader_db = writer, reader
        self._closing = False
        batches = _BatchWriter()
        writer.start_writes(
            batches.commit, self._committed, flush_max=self.flush_max, window=self.flush_window, after=batches.remember
        )

    async def _connect(self, role: str, opened: list[DatabaseThread[Any]]) -> DatabaseThread[Any]:
        db: DatabaseThread[Any] = DatabaseThread(f"sqlite {role} {self.path}")
        await db.connect(lambda: sqlite3.connect(self.path, isolation_level=None, check_same_thread=False))
        opened.append(db)
        return db

    async def close(self) -> None:
        if self._writer_db is None:
            return
        # Shielded: a cancelled caller still gets every accepted append answered and the
        # connections closed (nothing half-done is left behind).
        with anyio.CancelScope(shield=True):
            self._closing = True  # no new work; what was accepted is committed (queued before the close)
            writer, reader = self._writer_db, self._reader_db
            try:
                if reader is not None and reader is not writer:
                    await reader.close()
            finally:
                await writer.close()
                self._writer_db = self._reader_db = None
            self._cache.clear()

    def _require_open(self) -> None:
        if self._writer_db is None or self._closing:
            raise StoreError("the SQLite store is not open")

    # -- writes: queued for the writer task --------------------------------------

    async def append(self, run_id: str, events: Sequence[Event], *, expected_seq: int) -> None:
        if not isinstance(run_id, str):
            raise InvalidRequest(f"run_id must be a string, got {type(run_id).__name__}")
        check_append(run_id, events, expected_seq)
        writer = self._writer_db
        if writer is None or self._closing:
            self._require_open()  # raises
        if not run_id.isascii():
            check_text(run_id, "the run id")
        item = Append(run_id, events, expected_seq, asyncio.get_running_loop().create_future())
        assert writer is not None
        # any event but a token delta is committed at once (one event, a step's: no call to tell)
        urgent = events[0].type != _DELTA if len(events) == 1 else not all_deltas(events)
        writer.write(item, urgent=urgent, size=len(events))
        await item.future

    async def _transaction(
        self, statements: Sequence[tuple[str, Sequence[Any]]], *, snapshot_of: str | None = None, deletes: str | None = None
    ) -> list[int]:
        self._require_open()
        assert self._writer_db is not None
        item = _Statement(statements, asyncio.get_running_loop().create_future(), snapshot_of, deletes)
        self._writer_db.write(item)
        counts: list[int] = await item.future
        return counts

    def _committed(self, batch: list[Append | _Statement], outcome: _Written | Exception, seconds: float) -> None:
        """On the loop, once the writer thread is done with `batch`: answer every write."""
        try:
            if isinstance(outcome, Exception):  # the whole batch failed (I/O error, disk full ...): nothing written
                error = outcome if isinstance(outcome, StoreError) else StoreError(f"SQLite write failed: {outcome}")
                for item in batch:
                    _answer(item, error)
                return
            self._answer_committed(outcome)
            self.commit_times.append(seconds)
            self.batch_sizes.append(outcome.events)
            observe.current.store_commit(store="sqlite", seconds=seconds)
        except BaseException as exc:  # never leave a caller waiting
            for item in batch:
                _answer(item, StoreError(f"SQLite write failed: {exc!r}"))
            raise

    def _answer_committed(self, written: _Written) -> None:
        appends, statements = written.appends, written.statements
        # Committed: now (and only now) the caches, the callers and the waiters hear of it.
        self._cache.committed(
            found=written.found,
            summaries=written.committed.values(),
            snapshot_free=written.snapshot_free,
            snapshots=[s.snapshot_of for s in statements if s.snapshot_of is not None] if statements else (),
            tails=[(item.run_id, item.expected_seq + 1, item.as_read(SQLITE)) for item in written.accepted],
            deleted=[s.deletes for s in statements if s.deletes is not None] if statements else (),
        )
        for item, outcome in zip(appends, written.outcomes):  # (_answer, inlined: a call per append)
            future = item.future
            if not future.done():  # the caller may have been cancelled meanwhile
                if outcome is None:
                    future.set_result(None)
                else:
                    future.set_exception(outcome)
        for item, outcome in zip(statements, written.results):
            _answer(item, outcome)
        for run_id, summary in written.committed.items():
            self._wakeups.notify(run_id, summary.last_seq, status=summary.status)

    # -- reads ------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return await self._call_reader(_fetchall, sql, params)  # type: ignore[no-any-return]

    async def _call_reader(self, fn: Any, *args: Any) -> Any:
        """`fn(connection, *args)` on the reading connection's thread."""
        self._require_open()
        db = self._reader_db
        assert db is not None
        try:
            return await db.call(fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite read failed: {exc}") from exc

    async def read(self, run_id: str, *, after_seq: int = 0, limit: int = DEFAULT_PAGE) -> list[Event]:
        check_page(after_seq, limit)
        self._require_open()
        cached = self._cache.read(run_id, after_seq, limit)
        if cached is not None:
            return cached
        return await super().read(run_id, after_seq=after_seq, limit=limit)

    async def read_recorded(self, run_id: str, *, after_seq: int = 0, limit: int = DEFAULT_PAGE) -> RecordedPage:
        check_page(after_seq, limit)
        self._require_open()
        cached = self._cache.read(run_id, after_seq, limit)
        if cached is not None:
            return RecordedPage.of(cached)
        return await super().read_recorded(run_id, after_seq=after_seq, limit=limit)

    async def get_run(self, run_id: str) -> RunSummary | None:
        cached = self._cache.summary(run_id)
        if cached is not None:
            return cached
        return await super().get_run(run_id)

    async def delete_run(self, run_id: str) -> bool:
        statements = [(sql, (run_id,)) for sql in (*_SQL.delete_run, log_packs.DELETE)]
        counts = await self._transaction(statements, deletes=run_id)
        return counts[0] > 0

    async def save_snapshot(self, state: RunState) -> None:
        statements: list[tuple[str, Sequence[Any]]] = [(_SQL.save_snapshot, (state.run_id, state.last_seq, state_to_json(state)))]
        packs = []
        if state.at_rest:
            # At rest, where the next engine takes it up: its rows packed for that resume (log_packs).
            packs = await self._call_reader(log_packs.pack_statements, state.run_id, state.last_seq)
        await self._transaction([*statements, *packs], snapshot_of=state.run_id)
        if packs and self._writer_db is not None:
            # The packed rows (megabytes for a long run) copied from the WAL into the file now, and
            # the WAL emptied, by the run entering its wait: not by whichever commit comes next (a
            # resume's first), nor read again by the WAL's recovery when the next process opens it.
            await self._writer_db.call(_checkpoint)

    async def read_packed(self, run_id: str, *, after_seq: int, upto_seq: int, limit: int) -> RecordedPage:
        """The PackedLog port (adapters.log_packs): rows as `read_recorded` gives them."""
        rows = await self._call_reader(log_packs.packed_rows, run_id, after_seq, upto_seq, limit)
        return RecordedPage(rows, self._row_decoder(run_id))

    async def load_snapshot(self, run_id: str) -> RunState | None:
        if self._cache.snapshot_free(run_id):
            self._require_open()
            return None
        return await super().load_snapshot(run_id)


# -- opening: on the database thread ------------------------------------------------------


def _prepare_writer(raw: sqlite3.Connection, busy: str, synchronous: str, wal: bool) -> None:
    raw.execute(busy)
    if wal:
        raw.execute("PRAGMA journal_mode = WAL")
    raw.execute(f"PRAGMA synchronous = {synchronous}")
    _create_schema(raw)


def _prepare_reader(raw: sqlite3.Connection, busy: str) -> None:
    raw.execute(busy)
    raw.execute("PRAGMA query_only = 1")


def _create_schema(raw: sqlite3.Connection) -> None:
    raw.execute("BEGIN IMMEDIATE")
    try:
        raw.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        found = raw.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        every_time = [statement for statement in _SCHEMA.split(";") if statement.strip()]  # IF NOT EXISTS
        for statement in schema_steps(
            found, SCHEMA_VERSION, migrations=_MIGRATIONS, every_time=every_time, after=_SCHEMA_AFTER_MIGRATIONS
        ):
            raw.execute(statement)
        if found != SCHEMA_VERSION:
            raw.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        raw.execute("COMMIT")
    except BaseException:
        raw.execute("ROLLBACK")
        raise


# -- the writer's transaction, run on the database thread ----------------------------


class _Written:
    """What one committed batch did: read back on the event loop once COMMIT returned."""

    __slots__ = ("appends", "statements", "accepted", "events", "outcomes", "committed", "found", "results", "snapshot_free")

    def __init__(self, appends: list[Append], statements: list[_Statement]) -> None:
        self.appends, self.statements = appends, statements
        self.accepted: list[Append] = []
        #: Events written (of the accepted appends).
        self.events = 0
        self.outcomes: list[BaseException | None] = []
        #: The runs table rows this batch wrote.
        self.committed: dict[str, RunSummary] = {}
        #: last_seq found in the runs table for every run appended to (0: no row).
        self.found: dict[str, int] = {}
        self.results: list[Any] = []
        #: Runs this batch created that have no snapshot row when it commits.
        self.snapshot_free: list[str] = []


class _StaleRow(Exception):
    """A runs row was not as this writer left it: someone else wrote the file."""


def _answer(item: Append | _Statement, outcome: Any) -> None:
    if not item.future.done():  # the caller may have been cancelled meanwhile
        if isinstance(outcome, BaseException):
            item.future.set_exception(outcome)
        else:
            item.future.set_result(outcome)


class _BatchWriter:
    """The writer thread's side: commits batches, and remembers the runs rows it committed (it is
    the sole writer of its file), so an append to a run it wrote needs no SELECT of the row: its
    UPDATE moves the row on only from the last seq this writer left there. Touched only by the
    writer thread."""

    def __init__(self) -> None:
        self._rows: collections.OrderedDict[str, RunSummary] = collections.OrderedDict()

    def commit(self, raw: sqlite3.Connection, batch: list[Append | _Statement]) -> _Written:
        """The whole transaction of one batch, on the database thread.

        Touches nothing but `raw`, its own rows and the batch's plain data (no futures, no
        caches): the event loop reads the result. On any error the transaction is rolled back and
        the error raised, so nothing of the batch is written.
        """
        appends: list[Append] = []
        statements: list[_Statement] = []
        for item in batch:  # (a loop, not two comprehensions: no call made per batch)
            if type(item) is Append:
                appends.append(item)
            else:
                statements.append(item)  # type: ignore[arg-type]
        try:
            written = _write_batch(raw, appends, statements, self._rows)
        except _StaleRow:  # not as this writer left it: read every row involved, once more
            self._rows.clear()
            written = _write_batch(raw, appends, statements, self._rows)
        except BaseException:
            self._rows.clear()  # what a failed batch would have left is unknown
            raise
        return written

    def remember(self, written: _Written) -> None:
        """The rows a committed batch left, for the next batches: on the database thread, after
        the batch's callers are on their way to be answered (none of them waits for this)."""
        rows = self._rows
        try:
            for run_id, summary in written.committed.items():
                rows[run_id] = summary
                rows.move_to_end(run_id)
            for statement in written.statements:
                if statement.deletes is not None:
                    rows.pop(statement.deletes, None)
            while len(rows) > SUMMARIES:
                rows.popitem(last=False)
        except BaseException:
            rows.clear()  # half noted: the next batch reads its rows from the file
            raise


def _write_batch(
    raw: sqlite3.Connection, appends: list[Append], statements: list[_Statement], rows: collections.OrderedDict[str, RunSummary]
) -> _Written:
    written = _Written(appends, statements)
    raw.execute("BEGIN IMMEDIATE")
    try:
        if appends:
            _write_appends(raw, appends, written, rows)
        for index, statement in enumerate(statements):
            raw.execute(f"SAVEPOINT s{index}")
            try:
                written.results.append([raw.execute(sql, params).rowcount for sql, params in statement.statements])
            except Exception as exc:  # this write fails alone
                raw.execute(f"ROLLBACK TO s{index}")
                written.results.append(exc)
            raw.execute(f"RELEASE s{index}")
        created = [item.run_id for item in written.accepted if item.expected_seq == 0]
        if created:  # checked last, so a snapshot written in this batch counts
            with_snapshot: set[str] = set()
            for start in range(0, len(created), IN_CHUNK):
                chunk = created[start : start + IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                with_snapshot.update(row[0] for row in raw.execute(f"SELECT run_id FROM snapshots WHERE run_id IN ({marks})", chunk))
            written.snapshot_free = [run_id for run_id in created if run_id not in with_snapshot]
        raw.execute("COMMIT")
    except BaseException:
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        raise
    return written


def _write_appends(
    raw: sqlite3.Connection, appends: list[Append], written: _Written, rows: collections.OrderedDict[str, RunSummary]
) -> None:
    """Check each append against its run's row (in queue order: sql_log.decide), then write the
    good ones: the rows this writer left (`rows`), read only for the runs it has not written."""
    current: dict[str, RunSummary] = {}
    #: last_seq of each run's row, in the order the runs first come (0: none, or not read yet).
    found: dict[str, int] = {}
    unknown: list[str] = []
    for item in appends:  # (loops, not comprehensions: no call made per batch)
        run_id = item.run_id
        if run_id not in found:
            known = rows.get(run_id)
            if known is not None:
                current[run_id] = known
                found[run_id] = known.last_seq
            else:
                found[run_id] = 0
                unknown.append(run_id)
    for start in range(0, len(unknown), IN_CHUNK):
        chunk = unknown[start : start + IN_CHUNK]
        for row in raw.execute(_SQL.runs_in(len(chunk)), chunk).fetchall():
            summary = current[row[0]] = summary_from_row(row, SQLITE)
            found[row[0]] = summary.last_seq
    written.found = found
    decision = decide(appends, current)
    written.accepted, written.outcomes, written.committed = decision.accepted, decision.outcomes, decision.changed
    if not decision.accepted:
        return
    new: list[tuple[Any, ...]] = []
    moved: list[tuple[Any, ...]] = []
    changed: list[tuple[Any, ...]] = []
    for run_id, after in decision.changed.items():
        before = current.get(run_id)
        if before is None:
            new.append(_summary_row(after))
        elif before.status is after.status and after.status not in TERMINAL_STATUSES and before.wake_at == after.wake_at:
            moved.append((SQLITE.time_param(after.updated_at), after.last_seq, run_id, before.last_seq))
        else:
            _, _, status, _, _, _, updated_at, last_seq, ended_us, wake_at = _summary_row(after)
            changed.append((status, updated_at, last_seq, ended_us, wake_at, run_id, before.last_seq))
    # The rows first: a row not as this writer left it stops the batch before any event is written.
    for sql, params in ((_MOVE_RUN, moved), (_MOVE_RUN_STATUS, changed)):
        if params and raw.executemany(sql, params).rowcount != len(params):
            raise _StaleRow()
    if new:
        raw.executemany(_UPSERT_RUN, new)
    # (run_id, seq, type, at µs, data): what the events table keeps (a naive time is taken as UTC)
    events = [
        (item.run_id, event.seq, event.type, micros(event.at), data)
        for item in decision.accepted
        for event, data in zip(item.events, item.data)
    ]
    raw.executemany(_SQL.insert_event, events)
    written.events = len(events)


__all__ = ["SQLiteStore", "SCHEMA_VERSION", "DEFAULT_FLUSH_MAX", "DEFAULT_FLUSH_WINDOW"]
