"""SQLiteStore: the embedded default store. A file, zero set-up.

    store = SQLiteStore("runs.db")                 # or RunEngine("sqlite:///runs.db")

Layout (schema version 4, kept in the `schema_version` table; a file of an earlier version is
migrated when opened, see _MIGRATIONS):

- `events(run_id, seq, type, at_us, data)`, primary key (run_id, seq), WITHOUT ROWID, so
  a run's log is stored in seq order and the key itself is the optimistic
  concurrency check: two writers can never both write seq N.
- `runs`: one row per run (agent, status, session, owner, times, last_seq), kept
  current by every append, so listing runs never folds a log. `position` is the
  creation order and the listing cursor. `ended_us` is the time of the run's terminal event
  (µs since the epoch; NULL while it is active), indexed for retention sweeps (version 3).
- `snapshots`, `idempotency` (keyed by principal, scope and key; indexed by run, so deleting
  a run finds its keys), `sessions`, `webhooks` (the Agent Platform profile's registrations,
  version 4; before, ended sessions `platform.webhooks.<app_id>`).

Group commit. Every write goes through ONE writer task per store, which takes
everything queued (appends of every run, snapshots, keys, sessions) and commits it
as one transaction, run as ONE call into the aiosqlite thread (BEGIN IMMEDIATE, one
SELECT of the runs involved, one executemany of the events, one of the runs, COMMIT,
or ROLLBACK on error): each hop into that thread costs ~100 µs, never one per row
or per statement. A batch is taken when `flush_max` events are
queued, `flush_window` seconds after the first queued append, or at once when an
append holds any event other than `message.delta` (the default window is 0: take
what is queued as soon as the previous commit ends; see DEFAULT_FLUSH_WINDOW). Appends are checked against the
runs table inside the transaction, in queue order, so a stale `expected_seq` fails
alone (ConcurrencyConflict, nothing written) while the rest of the batch commits.
`append` returns once its batch has committed; waiters are woken only then, so a
subscriber never sees an uncommitted event.

Reads go through a second, read-only connection (WAL lets it read while the writer
writes) and are paged: one `fetchall` of one page, using the primary key, so they
cost what lies after the cursor, not the length of the log. The committed tail of
recently written runs is also kept in memory, so the many subscribers of a live
run re-reading after each wake-up cost no database call; so is which runs created
here have no snapshot (short runs never get one), so `load_snapshot` of those costs
none either.

Durability. WAL mode. `synchronous="FULL"` (default): a committed append survives a
process crash and a power loss. `synchronous="NORMAL"`: a committed append survives
a crash of the process, not a power loss or OS crash (the last commits may roll back).

One process writes a given file at a time (`shared = False`; the engine then fails
the runs a dead process left unfinished when it starts). Needs asyncio (aiosqlite).
"""

from __future__ import annotations

import asyncio
import collections
import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import aiosqlite
import anyio

from runengine import observe
from runengine.adapters.run_listing import list_runs_query, qmark
from runengine.adapters.wakeup import RunWakeups
from runengine.adapters.webhook_rows import COLUMNS as WEBHOOK_COLUMNS
from runengine.adapters.webhook_rows import webhook_from_row, webhook_row
from runengine.adapters.profiles.platform_webhook_store import WebhookRegistration
from runengine.errors import ConcurrencyConflict, InvalidRequest, SchemaVersionError, StoreError
from runengine.events import Event, MessageDelta, RunCreated
from runengine.ports import (
    DEFAULT_PAGE,
    EndedRunPage,
    IdempotencyRecord,
    RunPage,
    RunSummary,
    SessionRecord,
    SessionRuns,
)
from runengine.state import RunState
from runengine.status import TERMINAL_STATUSES, Status
from runengine.transitions import status_after
from runengine.validation import (
    check_append,
    check_page,
    decode_listing_start,
    decode_ended_cursor,
    encode_cursor,
    encode_ended_cursor,
)
from runengine.wire import data_to_json, event_from_stored, format_time, loads_stored, state_from_json, state_to_json

SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
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
    ended_us INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_session ON runs (session_id, position);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, position);
CREATE INDEX IF NOT EXISTS runs_by_owner ON runs (owner, position);
CREATE TABLE IF NOT EXISTS snapshots (
    run_id TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    principal TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    PRIMARY KEY (principal, scope, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_by_run ON idempotency (run_id);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    owner TEXT,
    created_at TEXT,
    expires_at TEXT,
    ended_at TEXT,
    metadata TEXT NOT NULL,
    data TEXT NOT NULL
);
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
"""

_ENDED_STATUSES = ", ".join(f"'{status.value}'" for status in sorted(TERMINAL_STATUSES))
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
        f" AND events.seq = runs.last_seq) WHERE status IN ({_ENDED_STATUSES})",
    ),
    4: _MOVE_WEBHOOKS_TO_THEIR_TABLE,
}
#: Indexes on columns a migration adds: created after the migrations, on every file.
_SCHEMA_AFTER_MIGRATIONS = (
    "CREATE INDEX IF NOT EXISTS runs_by_ended ON runs (ended_us, position) WHERE ended_us IS NOT NULL",
)

_INSERT_EVENT = "INSERT INTO events (run_id, seq, type, at_us, data) VALUES (?, ?, ?, ?, ?)"
_UPSERT_RUN = (
    "INSERT INTO runs (run_id, agent, status, session_id, owner, created_at, updated_at, last_seq, ended_us)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (run_id) DO UPDATE SET status = excluded.status,"
    " updated_at = excluded.updated_at, last_seq = excluded.last_seq, ended_us = excluded.ended_us"
)
_RUN_COLUMNS = "run_id, agent, status, session_id, owner, created_at, updated_at, last_seq"
_SYNCHRONOUS = ("FULL", "NORMAL")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_UTC = timezone.utc
_DELTA = MessageDelta.type

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
#: Run summaries kept in memory (written by this store), for get_run / last_seq / wait.
SUMMARY_CACHE = 8192
_IN_CHUNK = 500  # run ids per `IN (...)` query

_T = TypeVar("_T")


async def _on_thread(conn: aiosqlite.Connection, fn: Callable[..., _T], *args: Any) -> _T:
    """Run `fn(raw sqlite3 connection, *args)` on the connection's own thread: one hop.

    aiosqlite (0.17 .. 0.22) has no public call for running a function on its thread;
    `Connection._execute(fn, *args)` is the queue its own methods go through and `_conn`
    its sqlite3 connection. This is the one place that relies on them.
    """
    raw: sqlite3.Connection = conn._conn
    result: _T = await conn._execute(fn, raw, *args)
    return result


# -- encoding ------------------------------------------------------------------


def _time_text(value: datetime) -> str:
    if value.tzinfo is _UTC:
        return value.isoformat(timespec="microseconds")
    return format_time(value)  # naive (taken as UTC) or another zone: normalised to UTC


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=_UTC)


def _micros(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    return (value - _EPOCH) // timedelta(microseconds=1)


def _event_row(event: Event) -> tuple[str, int, str, int, str]:
    """(run_id, seq, type, at, data): what the events table keeps. Raises InvalidRequest."""
    if type(event) is MessageDelta and type(event.content) is str and type(event.message_id) is str:
        # The token hot path: the same text data_to_json gives, without the converter.
        data = '{"message_id":' + encode_basestring(event.message_id) + ',"content":' + encode_basestring(event.content) + "}"
    else:
        try:
            data = data_to_json(event)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidRequest(f"event seq {event.seq} ({event.type}) cannot be stored as JSON: {exc}") from None
    if not data.isascii():
        _check_text(data, event)
    at = event.at
    if not isinstance(at, datetime):
        raise InvalidRequest(f"event seq {event.seq}: `at` must be a datetime")
    if at.tzinfo is None:
        at = at.replace(tzinfo=_UTC)  # naive times are taken as UTC
    return (event.run_id, event.seq, event.type, (at - _EPOCH) // _MICROSECOND, data)


def _check_text(text: str, event: Event) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"event seq {event.seq} ({event.type}) holds text that is not valid Unicode") from None


def _decode(run_id: str, seq: int, event_type: str, at_us: int, data: str) -> Event:
    when = _EPOCH + timedelta(microseconds=at_us)
    if event_type == _DELTA:
        payload = loads_stored(data)
        return MessageDelta(run_id=run_id, seq=seq, at=when, message_id=payload["message_id"], content=payload["content"])
    return event_from_stored(run_id, seq, event_type, when, loads_stored(data))


def _same_after_storing(event: Event) -> bool:
    """True when reading the event back would give an equal event (so the tail cache may keep it)."""
    return (
        type(event) is MessageDelta
        and event.at.tzinfo is _UTC
        and type(event.content) is str
        and type(event.message_id) is str
    )


def _summary(row: Sequence[Any]) -> RunSummary:
    run_id, agent, status, session_id, owner, created_at, updated_at, last_seq = row
    return RunSummary(
        run_id=run_id,
        agent=agent,
        status=Status(status),
        session_id=session_id,
        owner=owner,
        created_at=_parse_time(created_at),
        updated_at=_parse_time(updated_at),
        last_seq=last_seq,
    )


def _session_row(session: SessionRecord) -> tuple[Any, ...]:
    """What the sessions table keeps of a record. Raises InvalidRequest."""
    try:
        return (
            session.session_id,
            session.owner,
            _time_text(session.created_at) if session.created_at else None,
            _time_text(session.expires_at) if session.expires_at else None,
            _time_text(session.ended_at) if session.ended_at else None,
            json.dumps(session.metadata, separators=(",", ":"), allow_nan=False),
            json.dumps(session.data, separators=(",", ":"), allow_nan=False),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"session {session.session_id!r} cannot be stored as JSON: {exc}") from None


def _summary_row(s: RunSummary) -> tuple[Any, ...]:
    return (
        s.run_id,
        s.agent,
        s.status.value,
        s.session_id,
        s.owner,
        _time_text(s.created_at) if s.created_at else None,
        _time_text(s.updated_at) if s.updated_at else None,
        s.last_seq,
        _micros(s.updated_at) if s.updated_at and s.status.terminal else None,
    )


# -- the write queue --------------------------------------------------------------


class _Append:
    __slots__ = ("run_id", "events", "rows", "expected_seq", "future")

    def __init__(self, run_id: str, events: Sequence[Event], rows: list[tuple[Any, ...]], expected_seq: int, future: asyncio.Future[None]) -> None:
        self.run_id = run_id
        self.events = events
        self.rows = rows
        self.expected_seq = expected_seq
        self.future = future


class _Statement:
    """Any other write (snapshot, key, session): run in the batch's transaction, in its own savepoint.

    `run` is called on the database thread with the sqlite3 connection.
    """

    __slots__ = ("run", "future", "snapshot_of", "deletes")

    def __init__(
        self,
        run: Callable[[sqlite3.Connection], Any],
        future: asyncio.Future[Any],
        snapshot_of: str | None = None,
        deletes: str | None = None,
    ) -> None:
        self.run = run
        self.future = future
        #: The run whose snapshot this statement writes, if it writes one.
        self.snapshot_of = snapshot_of
        #: The run this statement deletes, if it deletes one (its caches go at commit).
        self.deletes = deletes


class _Tail:
    """The committed tail of one run's log: events first_seq .. first_seq+len-1."""

    __slots__ = ("first_seq", "events", "keep")

    def __init__(self, first_seq: int, keep: int) -> None:
        self.first_seq = first_seq
        self.events: list[Event] = []
        self.keep = keep

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.events) - 1

    def extend(self, events: Sequence[Event]) -> None:
        self.events.extend(events)
        if len(self.events) > 2 * self.keep:  # trim now and then, not on every append
            drop = len(self.events) - self.keep
            del self.events[:drop]
            self.first_seq += drop


class SQLiteStore:
    """The event store in a SQLite file (or `:memory:`). See the module docstring."""

    shared = False

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
        #: The in-memory committed tail: events kept per run, runs kept (0 turns it off).
        self.tail_events = max(1, tail_events)
        self.tail_runs = max(0, tail_runs)
        self.memory = self.path == ":memory:"
        self._writer_conn: aiosqlite.Connection | None = None
        self._reader_conn: aiosqlite.Connection | None = None
        # With :memory: there is one connection: reads wait for the writer's transaction to end.
        self._txn_lock: asyncio.Lock | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._queue: list[_Append | _Statement] = []
        self._queued_events = 0
        self._wakeup: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._broken: BaseException | None = None
        self._summaries: collections.OrderedDict[str, RunSummary] = collections.OrderedDict()
        #: Runs this store created that have no snapshot row (load_snapshot answers None
        #: without a database call: short runs never get one).
        self._snapshot_free: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._tails: collections.OrderedDict[str, _Tail] = collections.OrderedDict()
        self._wakeups = RunWakeups()
        #: Commit latencies (seconds) of recent batches and their sizes, for benchmarks.
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
        kwargs: dict[str, Any] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            try:
                if name == "synchronous":
                    kwargs[name] = value
                elif name == "flush_max":
                    kwargs[name] = int(value)
                elif name in ("flush_window", "busy_timeout"):
                    kwargs[name] = float(value)
                else:
                    raise InvalidRequest(f"unknown sqlite URL option {name!r}")
            except ValueError:
                raise InvalidRequest(f"bad value for sqlite URL option {name!r}: {value!r}") from None
        kwargs.update(options)
        return cls(path, **kwargs)

    # -- lifecycle --------------------------------------------------------------

    async def open(self) -> None:
        if self._writer_conn is not None:
            return
        self._closing = False
        self._broken = None
        if not self.memory and not Path(self.path).resolve().parent.is_dir():
            raise StoreError(f"cannot open SQLite database {self.path!r}: its directory does not exist")
        pending = aiosqlite.connect(self.path, isolation_level=None)
        try:
            conn = await pending
        except sqlite3.Error as exc:
            # aiosqlite stops its thread in the background; let it finish while our loop runs
            thread = getattr(pending, "_thread", None)
            if thread is not None:
                await asyncio.to_thread(thread.join, 5.0)
            raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if not self.memory:
                await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            await self._create_schema(conn)
            reader = conn
            if not self.memory:
                reader = await aiosqlite.connect(self.path, isolation_level=None)
                await reader.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                await reader.execute("PRAGMA query_only = 1")
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
            raise
        self._writer_conn, self._reader_conn = conn, reader
        self._txn_lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._writer_task = asyncio.get_running_loop().create_task(self._write_loop(), name=f"sqlite writer {self.path}")

    @staticmethod
    async def _create_schema(conn: aiosqlite.Connection) -> None:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            rows = list(await conn.execute_fetchall("SELECT max(version) FROM schema_version"))
            found = rows[0][0] if rows else None
            if found is not None and found > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"this database has schema version {found}; this runengine knows up to {SCHEMA_VERSION}"
                    " (upgrade runengine to open it)",
                    found=found,
                    known=SCHEMA_VERSION,
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    await conn.execute(statement)
            if found is not None:
                for version in range(found + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[version]:
                        await conn.execute(statement)
            for statement in _SCHEMA_AFTER_MIGRATIONS:
                await conn.execute(statement)
            if found != SCHEMA_VERSION:
                await conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._writer_conn is None:
            return
        self._closing = True
        task, self._writer_task = self._writer_task, None
        # Shielded: a cancelled caller still gets every accepted append answered and the
        # connections closed (nothing half-done is left behind).
        with anyio.CancelScope(shield=True):
            if task is not None:
                if self._wakeup is not None:
                    self._wakeup.set()
                try:
                    await task  # drains the queue: whatever was accepted is committed or answered
                except Exception:  # noqa: S110 - the writer had stopped; its error is in self._broken
                    pass
            writer, reader = self._writer_conn, self._reader_conn
            self._writer_conn = self._reader_conn = None
            try:
                if reader is not None and reader is not writer:
                    await reader.close()
            finally:
                if writer is not None:
                    await writer.close()
            self._summaries.clear()
            self._tails.clear()
            self._snapshot_free.clear()

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _require_open(self) -> None:
        if self._writer_conn is None or self._closing:
            raise StoreError("the SQLite store is not open")
        if self._broken is not None:
            raise StoreError(f"the SQLite store's writer stopped: {self._broken!r}")

    # -- writes: queued for the writer task --------------------------------------

    async def append(self, run_id: str, events: Sequence[Event], *, expected_seq: int) -> None:
        if not isinstance(run_id, str):
            raise InvalidRequest(f"run_id must be a string, got {type(run_id).__name__}")
        check_append(run_id, events, expected_seq)
        self._require_open()
        if not run_id.isascii():
            _check_text(run_id, events[0])
        first = events[0]
        if isinstance(first, RunCreated):  # what the runs table needs, checked before the batch
            if not isinstance(first.agent, str):
                raise InvalidRequest("run.created needs an agent name (a string)")
            for name in ("session_id", "owner"):
                value = getattr(first, name)
                if value is not None and not isinstance(value, str):
                    raise InvalidRequest(f"run.created {name} must be a string or null")
        rows = []
        urgent = False  # any event but a token delta is committed at once
        for event in events:
            rows.append(_event_row(event))
            if event.type != _DELTA:
                urgent = True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Append(run_id, events, rows, expected_seq, future))
        self._queued_events += len(rows)
        self._kick(urgent)
        await future

    async def _submit(
        self, run: Callable[[sqlite3.Connection], Any], snapshot_of: str | None = None, deletes: str | None = None
    ) -> Any:
        self._require_open()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Statement(run, future, snapshot_of, deletes))
        self._kick(True)
        return await future

    def _kick(self, urgent: bool) -> None:
        assert self._wakeup is not None
        if urgent or self._queued_events >= self.flush_max or self.flush_window == 0:
            self._wakeup.set()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_window, self._wakeup.set)

    async def _write_loop(self) -> None:
        assert self._wakeup is not None
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                batch, self._queue, self._queued_events = self._queue, [], 0
                batch = [item for item in batch if not item.future.cancelled()]
                if batch:
                    await self._commit(batch)
                if self._closing and not self._queue:
                    return
        except BaseException as exc:
            self._broken = exc
            for item in self._queue:
                if not item.future.done():
                    item.future.set_exception(StoreError("the SQLite store's writer stopped"))
            self._queue = []
            raise

    async def _commit(self, batch: list[_Append | _Statement]) -> None:
        """One transaction for the whole batch; answer every future once it has committed."""
        conn = self._writer_conn
        assert conn is not None and self._txn_lock is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        appends = [item for item in batch if isinstance(item, _Append)]
        statements = [item for item in batch if isinstance(item, _Statement)]
        async with self._txn_lock:
            try:
                written = await _on_thread(conn, _write_batch, appends, statements)
            except Exception as exc:  # the whole batch failed (I/O error, disk full ...): nothing written
                error = exc if isinstance(exc, StoreError) else StoreError(f"SQLite write failed: {exc}")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                return
        self.commit_times.append(loop.time() - started)
        observe.current.store_commit(store="sqlite", seconds=self.commit_times[-1])
        self.batch_sizes.append(sum(len(item.rows) for item in written.accepted))
        # Committed: now (and only now) the caches, the callers and the waiters hear of it.
        summaries = self._summaries
        for run_id, found_seq in written.found.items():
            cached = summaries.get(run_id)
            if cached is not None and cached.last_seq != found_seq:
                self._forget(run_id)  # written by someone else: our caches are stale
        for summary in written.committed.values():
            self._remember(summary)
        snapshot_free = self._snapshot_free
        for run_id in written.snapshot_free:
            snapshot_free[run_id] = None
            if len(snapshot_free) > SUMMARY_CACHE:
                snapshot_free.popitem(last=False)
        for statement in statements:
            if statement.snapshot_of is not None:
                snapshot_free.pop(statement.snapshot_of, None)
        for item in written.accepted:
            self._extend_tail(item)
        for statement in statements:
            if statement.deletes is not None:
                self._forget(statement.deletes)
        for item, outcome in zip(appends, written.outcomes):
            if item.future.done():
                continue
            if outcome is None:
                item.future.set_result(None)
            else:
                item.future.set_exception(outcome)
        for statement, result in zip(statements, written.results):
            if statement.future.done():
                continue
            if isinstance(result, _Failed):
                statement.future.set_exception(result.error)
            else:
                statement.future.set_result(result)
        for run_id in written.committed:
            self._wakeups.notify(run_id)

    # -- caches of what this store committed ---------------------------------------

    def _remember(self, summary: RunSummary) -> None:
        summaries = self._summaries
        summaries[summary.run_id] = summary
        summaries.move_to_end(summary.run_id)
        if len(summaries) > SUMMARY_CACHE:
            summaries.popitem(last=False)

    def _extend_tail(self, item: _Append) -> None:
        tails = self._tails
        tail = tails.get(item.run_id)
        if tail is None or tail.last_seq != item.expected_seq:
            tail = tails[item.run_id] = _Tail(item.expected_seq + 1, self.tail_events)
            tails.move_to_end(item.run_id)
            if len(tails) > self.tail_runs:
                tails.popitem(last=False)
                if not tails:
                    return
        else:
            tails.move_to_end(item.run_id)
        # keep exactly what a database read would give: the event itself when reading it
        # back gives an equal one (token deltas), else the decoded row
        tail.extend([event if _same_after_storing(event) else _decode(*row) for event, row in zip(item.events, item.rows)])

    def _forget(self, run_id: str) -> None:
        self._summaries.pop(run_id, None)
        self._snapshot_free.pop(run_id, None)
        self._tails.pop(run_id, None)

    # -- reads ------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        self._require_open()
        conn = self._reader_conn
        assert conn is not None and self._txn_lock is not None
        try:
            if self.memory:  # one connection: never read inside the writer's open transaction
                async with self._txn_lock:
                    return list(await conn.execute_fetchall(sql, params))
            return list(await conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite read failed: {exc}") from exc

    async def read(self, run_id: str, *, after_seq: int = 0, limit: int = DEFAULT_PAGE) -> list[Event]:
        check_page(after_seq, limit)
        self._require_open()
        tail = self._tails.get(run_id)
        if tail is not None:
            if after_seq >= tail.last_seq:
                return []
            if after_seq + 1 >= tail.first_seq:
                start = after_seq + 1 - tail.first_seq
                return tail.events[start : start + limit]
        rows = await self._fetch(
            "SELECT seq, type, at_us, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (run_id, after_seq, limit),
        )
        return [_decode(run_id, seq, event_type, at, data) for seq, event_type, at, data in rows]

    async def read_heads(self, run_ids: Sequence[str], *, limit: int) -> dict[str, list[Event]]:
        """The first `limit` events of each run, a chunk of runs per query (the HeadReader port)."""
        self._require_open()
        heads: dict[str, list[Event]] = {}
        for start in range(0, len(run_ids), _IN_CHUNK):
            chunk = list(run_ids[start : start + _IN_CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = await self._fetch(
                f"SELECT run_id, seq, type, at_us, data FROM events WHERE run_id IN ({marks}) AND seq <= ?"
                " ORDER BY run_id, seq",
                (*chunk, limit),
            )
            for row in rows:
                heads.setdefault(row[0], []).append(_decode(*row))
        return heads

    async def last_seq(self, run_id: str) -> int:
        summary = await self.get_run(run_id)
        return summary.last_seq if summary is not None else 0

    async def wait(self, run_id: str, *, after_seq: int, timeout: float | None = None) -> bool:
        async def has_news() -> bool:
            return await self.last_seq(run_id) > after_seq

        return await self._wakeups.wait(run_id, after_seq=after_seq, timeout=timeout, has_news=has_news)

    # -- listing ----------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunSummary | None:
        cached = self._summaries.get(run_id)
        if cached is not None:
            return cached
        rows = await self._fetch(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        return _summary(rows[0]) if rows else None

    async def count_session_runs(self, session_id: str, *, owner: str | None = None) -> SessionRuns:
        sql = "SELECT status, COUNT(*), MIN(position), created_at FROM runs WHERE session_id = ?"
        params: list[Any] = [session_id]
        if owner is not None:
            sql += " AND owner = ?"
            params.append(owner)
        # One row per status; SQLite gives the bare created_at of the row holding MIN(position).
        rows = await self._fetch(sql + " GROUP BY status", params)
        first = min(rows, key=lambda row: row[2], default=None)
        return SessionRuns(
            by_status={Status(row[0]): row[1] for row in rows},
            first_created_at=_parse_time(first[3]) if first is not None else None,
        )

    async def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: Status | None = None,
        owner: str | None = None,
        limit: int = 50,
        before: str | None = None,
        before_run: str | None = None,
    ) -> RunPage:
        check_page(0, limit)
        sql, params = list_runs_query(
            f"SELECT position, {_RUN_COLUMNS} FROM runs",
            placeholder=qmark,
            session_id=session_id,
            status=status,
            owner=owner,
            before_position=decode_listing_start(before, before_run),
            before_run=before_run,
            limit=limit,
        )
        rows = await self._fetch(sql, params)
        page = rows[:limit]
        more = len(rows) > limit
        return RunPage(
            runs=tuple(_summary(row[1:]) for row in page),
            next_before=encode_cursor(page[-1][0]) if more and page else None,
        )

    async def list_ended_runs(
        self, *, ended_before: datetime, limit: int = 100, after: str | None = None
    ) -> EndedRunPage:
        check_page(0, limit)
        start = decode_ended_cursor(after)
        sql = f"SELECT ended_us, position, {_RUN_COLUMNS} FROM runs WHERE ended_us IS NOT NULL AND ended_us < ?"
        params: list[Any] = [_micros(ended_before)]
        if start is not None:
            sql += " AND (ended_us, position) > (?, ?)"
            params.extend(start)
        sql += " ORDER BY ended_us, position LIMIT ?"
        params.append(limit + 1)
        rows = await self._fetch(sql, params)
        page = rows[:limit]
        return EndedRunPage(
            runs=tuple(_summary(row[2:]) for row in page),
            next_after=encode_ended_cursor(page[-1][0], page[-1][1]) if len(rows) > limit else None,
        )

    async def delete_run(self, run_id: str) -> bool:
        def run(raw: sqlite3.Connection) -> bool:
            found = raw.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0
            for table in ("events", "snapshots", "idempotency"):
                raw.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))  # noqa: S608 - our table names
            return found

        deleted: bool = await self._submit(run, deletes=run_id)
        return deleted

    # -- snapshots, idempotency keys, sessions -----------------------------------------

    async def save_snapshot(self, state: RunState) -> None:
        text = state_to_json(state)
        params = (state.run_id, state.last_seq, text)

        def run(raw: sqlite3.Connection) -> None:
            raw.execute(
                "INSERT INTO snapshots (run_id, last_seq, state) VALUES (?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET last_seq = excluded.last_seq, state = excluded.state"
                " WHERE excluded.last_seq >= snapshots.last_seq",
                params,
            )

        await self._submit(run, snapshot_of=state.run_id)

    async def load_snapshot(self, run_id: str) -> RunState | None:
        if run_id in self._snapshot_free:
            self._require_open()
            return None
        rows = await self._fetch("SELECT state FROM snapshots WHERE run_id = ?", (run_id,))
        return state_from_json(rows[0][0]) if rows else None

    async def reserve_idempotency_key(
        self, record: IdempotencyRecord, *, ttl: float, pending_for: float
    ) -> IdempotencyRecord | None:
        if not record.key:
            raise InvalidRequest("an idempotency key must not be empty")
        now_us = _micros(record.created_at)
        identity = (record.principal, record.scope, record.key)
        row = (*identity, record.fingerprint, record.run_id, now_us)

        def run(raw: sqlite3.Connection) -> IdempotencyRecord | None:
            # Replaced only when expired, or when its run never came (its request died).
            stored = raw.execute(
                "INSERT INTO idempotency (principal, scope, key, fingerprint, run_id, created_us)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (principal, scope, key) DO UPDATE SET fingerprint = excluded.fingerprint,"
                " run_id = excluded.run_id, created_us = excluded.created_us"
                " WHERE idempotency.created_us < ?"
                " OR (idempotency.created_us < ?"
                " AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.run_id = idempotency.run_id))",
                (*row, now_us - int(ttl * 1_000_000), now_us - int(pending_for * 1_000_000)),
            )
            if stored.rowcount == 1:  # inserted, or replaced an expired or abandoned record
                return None
            held = raw.execute(
                "SELECT fingerprint, run_id, created_us FROM idempotency WHERE principal = ? AND scope = ? AND key = ?",
                identity,
            ).fetchone()
            return IdempotencyRecord(
                principal=record.principal,
                scope=record.scope,
                key=record.key,
                fingerprint=held[0],
                run_id=held[1],
                created_at=_EPOCH + held[2] * _MICROSECOND,
            )

        held: IdempotencyRecord | None = await self._submit(run)
        return held

    async def release_idempotency_key(self, record: IdempotencyRecord) -> None:
        params = (record.principal, record.scope, record.key, record.run_id)

        def run(raw: sqlite3.Connection) -> None:
            raw.execute(
                "DELETE FROM idempotency WHERE principal = ? AND scope = ? AND key = ? AND run_id = ?", params
            )

        await self._submit(run)

    async def put_session(self, session: SessionRecord) -> None:
        params = _session_row(session)

        def run(raw: sqlite3.Connection) -> None:
            raw.execute(
                "INSERT OR REPLACE INTO sessions (session_id, owner, created_at, expires_at, ended_at, metadata, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                params,
            )

        await self._submit(run)

    async def add_session(self, session: SessionRecord) -> SessionRecord:
        params = _session_row(session)

        def run(raw: sqlite3.Connection) -> bool:
            inserted = raw.execute(
                "INSERT INTO sessions (session_id, owner, created_at, expires_at, ended_at, metadata, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
                params,
            )
            return inserted.rowcount == 1

        if await self._submit(run):
            return session
        stored = await self.get_session(session.session_id)
        assert stored is not None  # sessions are never deleted here
        return stored

    async def get_session(self, session_id: str) -> SessionRecord | None:
        rows = await self._fetch(
            "SELECT session_id, owner, created_at, expires_at, ended_at, metadata, data FROM sessions WHERE session_id = ?",
            (session_id,),
        )
        if not rows:
            return None
        sid, owner, created_at, expires_at, ended_at, metadata, data = rows[0]
        return SessionRecord(
            session_id=sid,
            owner=owner,
            created_at=_parse_time(created_at),
            expires_at=_parse_time(expires_at),
            ended_at=_parse_time(ended_at),
            metadata=json.loads(metadata),
            data=json.loads(data),
        )

    # -- webhook registrations -----------------------------------------------------------

    async def add_webhook(self, webhook: WebhookRegistration) -> None:
        params = webhook_row(webhook, _time_text(webhook.created_at))

        def run(raw: sqlite3.Connection) -> None:
            raw.execute(f"INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", params)

        await self._submit(run)

    async def list_webhooks(self, app_id: str) -> list[WebhookRegistration]:
        rows = await self._fetch(f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE app_id = ? ORDER BY rowid", (app_id,))
        return [webhook_from_row(row, datetime.fromisoformat(row[5])) for row in rows]

    async def delete_webhook(self, app_id: str, webhook_id: str) -> bool:
        def run(raw: sqlite3.Connection) -> bool:
            deleted = raw.execute("DELETE FROM webhooks WHERE app_id = ? AND webhook_id = ?", (app_id, webhook_id))
            return deleted.rowcount > 0

        found: bool = await self._submit(run)
        return found


# -- the writer's transaction, run on the database thread ----------------------------


class _Written:
    """What one committed batch did: read back on the event loop once COMMIT returned."""

    __slots__ = ("accepted", "outcomes", "committed", "found", "results", "snapshot_free")

    def __init__(self) -> None:
        self.accepted: list[_Append] = []
        self.outcomes: list[BaseException | None] = []
        #: The runs table rows this batch wrote.
        self.committed: dict[str, RunSummary] = {}
        #: last_seq found in the runs table for every run appended to (0: no row).
        self.found: dict[str, int] = {}
        self.results: list[Any] = []
        #: Runs this batch created that have no snapshot row when it commits.
        self.snapshot_free: list[str] = []


def _write_batch(raw: sqlite3.Connection, appends: list[_Append], statements: list[_Statement]) -> _Written:
    """The whole transaction of one batch, in the database thread (one hop from the loop).

    Touches nothing but `raw` and its arguments' plain data (no futures, no caches): the
    event loop reads the result once this returns. On any error the transaction is
    rolled back and the error raised, so nothing of the batch is written.
    """
    written = _Written()
    raw.execute("BEGIN IMMEDIATE")
    try:
        if appends:
            _write_appends(raw, appends, written)
        for index, statement in enumerate(statements):
            raw.execute(f"SAVEPOINT s{index}")
            try:
                written.results.append(statement.run(raw))
            except Exception as exc:  # this statement fails alone
                raw.execute(f"ROLLBACK TO s{index}")
                written.results.append(_Failed(exc))
            raw.execute(f"RELEASE s{index}")
        created = [item.run_id for item in written.accepted if item.expected_seq == 0]
        if created:  # checked last, so a snapshot written in this batch counts
            with_snapshot: set[str] = set()
            for start in range(0, len(created), _IN_CHUNK):
                chunk = created[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                with_snapshot.update(row[0] for row in raw.execute(f"SELECT run_id FROM snapshots WHERE run_id IN ({marks})", chunk))
            written.snapshot_free = [run_id for run_id in created if run_id not in with_snapshot]
        raw.execute("COMMIT")
    except BaseException:
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        raise
    return written


def _write_appends(raw: sqlite3.Connection, appends: list[_Append], written: _Written) -> None:
    """Check each append against the runs table (in queue order), then write the good ones."""
    run_ids = list(dict.fromkeys(item.run_id for item in appends))
    current: dict[str, RunSummary] = {}
    for start in range(0, len(run_ids), _IN_CHUNK):
        chunk = run_ids[start : start + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        for row in raw.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id IN ({marks})", chunk).fetchall():
            current[row[0]] = _summary(row)
    written.found = {run_id: (current[run_id].last_seq if run_id in current else 0) for run_id in run_ids}
    changed = written.committed
    rows: list[tuple[Any, ...]] = []
    for item in appends:
        summary = changed.get(item.run_id) or current.get(item.run_id)
        actual = summary.last_seq if summary is not None else 0
        if actual != item.expected_seq:
            written.outcomes.append(ConcurrencyConflict(item.run_id, item.expected_seq, actual))
            continue
        events = item.events
        last = events[-1]
        if summary is None:
            first = events[0]
            assert isinstance(first, RunCreated)
            summary = RunSummary(
                run_id=item.run_id,
                agent=first.agent,
                status=Status.PENDING,
                session_id=first.session_id,
                owner=first.owner,
                created_at=first.at,
                updated_at=first.at,
                last_seq=0,
            )
            previous = None
        else:
            previous = summary.status
        status = status_after(previous, [event.type for event in events]) if not _all_deltas(events) else previous
        changed[item.run_id] = RunSummary(
            run_id=item.run_id,
            agent=summary.agent,
            status=status or summary.status,
            session_id=summary.session_id,
            owner=summary.owner,
            created_at=summary.created_at,
            updated_at=last.at,
            last_seq=last.seq,
        )
        rows.extend(item.rows)
        written.accepted.append(item)
        written.outcomes.append(None)
    if rows:
        raw.executemany(_INSERT_EVENT, rows)
        raw.executemany(_UPSERT_RUN, [_summary_row(s) for s in changed.values()])


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _all_deltas(events: Sequence[Event]) -> bool:
    for event in events:
        if event.type != _DELTA:
            return False
    return True


__all__ = ["SQLiteStore", "SCHEMA_VERSION", "DEFAULT_FLUSH_MAX", "DEFAULT_FLUSH_WINDOW"]
