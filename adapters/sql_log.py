"""The SQL log: what the SQLite and PostgreSQL stores share, written once.

- the rows: how an event, a run summary, a session, an idempotency record and a webhook
  registration are kept as SQL values (the times as the dialect keeps them);
- the statements (`Statements`, one set per dialect, built once);
- the append decision (`decide`): a batch of appends checked in order against the runs'
  summaries as the earlier ones leave them, each stale one failing alone, and the summaries
  (status by the transition table) each accepted one leaves;
- `SQLLog`, the store methods that are only statements and rows (reads, listing, snapshots,
  sessions, idempotency records, webhook registrations) on two hooks each store provides:
  `_fetch` (a read) and `_transaction` (statements committed together).

Each store keeps what only it does: its schema and migrations, its driver, its write path (the
SQLite store's group commit on its thread, the PostgreSQL store's locking, fencing and NOTIFY).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any, Self

import attrs

from runengine.adapters.profiles.platform_webhook_store import WebhookRegistration
from runengine.adapters.sql_dialect import Dialect, from_micros
from runengine.adapters.sql_schedules import SQLSchedules
from runengine.adapters.wakeup import RunWakeups
from runengine.errors import ConcurrencyConflict, InvalidRequest, SchemaVersionError
from runengine.events import NO_DEADLINE, Event, MessageDelta, RunCreated, data_fields, wake_after
from runengine.ports import (
    DEFAULT_PAGE,
    MAX_PAGE,
    EndedRunPage,
    IdempotencyRecord,
    RecordedPage,
    RunPage,
    RunSummary,
    SessionRecord,
    SessionRuns,
)
from runengine.state import RunState
from runengine.status import Status
from runengine.transitions import status_after
from runengine.validation import (
    check_page,
    decode_ended_cursor,
    decode_listing_start,
    encode_cursor,
    encode_ended_cursor,
    micros,
)
from runengine.wire import JSON_SCALARS, data_to_json, event_from_stored, loads_stored, state_from_json, state_to_json, to_json

_DELTA = MessageDelta.type
RUN_COLUMNS = "run_id, agent, status, session_id, owner, created_at, updated_at, last_seq, wake_at"
SESSION_COLUMNS = "session_id, owner, created_at, expires_at, ended_at, metadata, data"
WEBHOOK_COLUMNS = "webhook_id, app_id, url, events, secret, created_at, owner"
#: A run at work or about to start: unfinished, with no wake time (the partial index of busy runs says the same).
BUSY_CONDITION = "wake_at IS NULL AND status IN ({})".format(", ".join(f"'{s.value}'" for s in Status if not s.terminal))
#: How long a statement list may be: run ids per `IN (...)` query.
IN_CHUNK = 500


# -- rows ------------------------------------------------------------------------------


def event_data(event: Event) -> str:
    """The event's data as the JSON text the events table keeps. Raises InvalidRequest."""
    if type(event) is MessageDelta and type(event.content) is str and type(event.message_id) is str:
        # The token hot path: the same text data_to_json gives, without the converter.
        data = '{"message_id":' + encode_basestring(event.message_id) + ',"content":' + encode_basestring(event.content) + "}"
    else:
        try:
            data = data_to_json(event)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidRequest(f"event seq {event.seq} ({event.type}) cannot be stored as JSON: {exc}") from None
    if not data.isascii():
        check_text(data, f"event seq {event.seq} ({event.type})")
    if not isinstance(event.at, datetime):
        raise InvalidRequest(f"event seq {event.seq}: `at` must be a datetime")
    return data


def check_text(text: str, what: str) -> None:
    """InvalidRequest when `text` cannot be stored (a lone surrogate is no UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{what} holds text that is not valid Unicode") from None


def json_text(value: Any, what: str) -> str:
    text = to_json(value, what)
    if not text.isascii():
        check_text(text, what)
    return text


def check_created(events: Sequence[Event]) -> None:
    """What the runs table needs of a run.created, checked before the append joins a batch."""
    first = events[0]
    if isinstance(first, RunCreated):
        if not isinstance(first.agent, str):
            raise InvalidRequest("run.created needs an agent name (a string)")
        for name in ("session_id", "owner"):
            value = getattr(first, name)
            if value is not None and not isinstance(value, str):
                raise InvalidRequest(f"run.created {name} must be a string or null")


def decode_event(run_id: str, seq: int, event_type: str, at: datetime, data: str | bytes) -> Event:
    if event_type == _DELTA:
        payload = loads_stored(data)
        return MessageDelta(run_id=run_id, seq=seq, at=at, message_id=payload["message_id"], content=payload["content"])
    return event_from_stored(run_id, seq, event_type, at, loads_stored(data))


#: The payload's fields of each event class (all but run_id, seq and at), made on first use.
_PAYLOAD_FIELDS: dict[type[Event], tuple[str, ...]] = {}


def _reads_back_as_itself(event: Event) -> bool:
    """Whether a read of `event`'s stored row gives back an event equal to it that may be shared:
    its time in UTC and every field of its payload an immutable JSON scalar (a container is
    decoded afresh on a read: the agent may hold and change the one in the event)."""
    if event.at.tzinfo is not timezone.utc:
        return False
    cls = type(event)
    names = _PAYLOAD_FIELDS.get(cls)
    if names is None:
        names = _PAYLOAD_FIELDS[cls] = data_fields(cls)
    for name in names:
        if type(getattr(event, name)) not in JSON_SCALARS:
            return False
    return True


def _decode_as_read(dialect: Dialect, run_id: str, event: Event, data: str | bytes) -> Event:
    """`event` as a read of its stored row gives it back."""
    return decode_event(run_id, event.seq, event.type, dialect.instant_value(dialect.instant_param(event.at)), data)


def summary_from_row(row: Sequence[Any], dialect: Dialect, start: int = 0) -> RunSummary:
    """A run summary from the RUN_COLUMNS of a row, from its column `start` on."""
    return RunSummary(
        run_id=row[start],
        agent=row[start + 1],
        status=Status(row[start + 2]),
        session_id=row[start + 3],
        owner=row[start + 4],
        created_at=dialect.time_value(row[start + 5]),
        updated_at=dialect.time_value(row[start + 6]),
        last_seq=row[start + 7],
        wake_at=_wake_value(row[start + 8], dialect),
    )


def _wake_value(value: Any, dialect: Dialect) -> datetime | None:
    if value is None:
        return None
    wake = dialect.instant_value(value)
    # NO_DEADLINE is PostgreSQL's 'infinity', which asyncpg reads back without its zone.
    return wake if wake.tzinfo is not None else wake.replace(tzinfo=timezone.utc)


def new_summary(created: Event) -> RunSummary:
    """The summary of a run before its first append: what its run.created says."""
    assert isinstance(created, RunCreated)
    return RunSummary(
        run_id=created.run_id,
        agent=created.agent,
        status=Status.PENDING,
        session_id=created.session_id,
        owner=created.owner,
        created_at=created.at,
        updated_at=created.at,
        last_seq=0,
    )


def _optional_time(value: datetime | None, dialect: Dialect) -> Any:
    return dialect.time_param(value) if value is not None else None


def session_params(session: SessionRecord, dialect: Dialect) -> tuple[Any, ...]:
    """A session record as SESSION_COLUMNS values. Raises InvalidRequest."""
    return (
        session.session_id,
        session.owner,
        _optional_time(session.created_at, dialect),
        _optional_time(session.expires_at, dialect),
        _optional_time(session.ended_at, dialect),
        json_text(session.metadata, "session metadata"),
        json_text(session.data, "session data"),
    )


def session_from_row(row: Sequence[Any], dialect: Dialect) -> SessionRecord:
    sid, owner, created_at, expires_at, ended_at, metadata, data = row
    return SessionRecord(
        session_id=sid,
        owner=owner,
        created_at=dialect.time_value(created_at),
        expires_at=dialect.time_value(expires_at),
        ended_at=dialect.time_value(ended_at),
        metadata=json.loads(metadata),
        data=json.loads(data),
    )


def webhook_params(webhook: WebhookRegistration, dialect: Dialect) -> tuple[Any, ...]:
    """A registration as WEBHOOK_COLUMNS values."""
    return (
        webhook.webhook_id,
        webhook.app_id,
        webhook.url,
        json.dumps(list(webhook.events)),
        webhook.secret,
        dialect.time_param(webhook.created_at),
        webhook.owner,
    )


def webhook_from_row(row: Sequence[Any], dialect: Dialect) -> WebhookRegistration:
    created_at = dialect.time_value(row[5])
    assert created_at is not None
    return WebhookRegistration(
        webhook_id=row[0],
        app_id=row[1],
        url=row[2],
        events=tuple(json.loads(row[3])),
        secret=row[4],
        created_at=created_at,
        owner=row[6],
    )


def log_tables(d: Dialect) -> dict[str, str]:
    """The CREATE TABLE (IF NOT EXISTS) of the tables every SQL store has alike, by name; each
    store adds its runs table, its indexes and its own tables."""
    return {
        "events": f"""CREATE TABLE IF NOT EXISTS {d.table("events")} (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    {d.event_time_column} {d.instant_type} NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
){d.keyed_table}""",
        "snapshots": f"""CREATE TABLE IF NOT EXISTS {d.table("snapshots")} (
    run_id TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    state TEXT NOT NULL
)""",
        "idempotency": f"""CREATE TABLE IF NOT EXISTS {d.table("idempotency")} (
    principal TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    run_id TEXT NOT NULL,
    {d.key_time_column} {d.instant_type} NOT NULL,
    PRIMARY KEY (principal, scope, key)
){d.keyed_table}""",
        "sessions": f"""CREATE TABLE IF NOT EXISTS {d.table("sessions")} (
    session_id TEXT PRIMARY KEY,
    owner TEXT,
    created_at {d.time_type},
    expires_at {d.time_type},
    ended_at {d.time_type},
    metadata TEXT NOT NULL,
    data TEXT NOT NULL
)""",
    }


def schema_steps(
    found: int | None,
    known: int,
    *,
    fresh: Sequence[str] = (),
    migrations: Mapping[int, Sequence[str]],
    every_time: Sequence[str] = (),
    after: Sequence[str] = (),
) -> list[str]:
    """The statements that bring a schema at version `found` (None: none yet) to `known`:
    `every_time`, then `fresh` for a new one or the migrations to each later version, then
    `after`. SchemaVersionError for a schema newer than this runengine."""
    if found is not None and found > known:
        raise SchemaVersionError(
            f"the database schema is version {found}; this runengine knows up to {known} (upgrade runengine to open it)",
            found=found,
            known=known,
        )
    steps = list(every_time)
    if found is None:
        steps += fresh
    else:
        for version in range(found + 1, known + 1):
            steps += migrations[version]
    return steps + list(after)


# -- statements ----------------------------------------------------------------------------


class Statements:
    """Every statement of the SQL log in one dialect (built once per store class)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = d = dialect
        p = d.placeholder
        self.runs, self.events, self.snapshots = d.table("runs"), d.table("events"), d.table("snapshots")
        self.sessions, self.keys, self.webhooks = d.table("sessions"), d.table("idempotency"), d.table("webhooks")
        self.get_run = f"SELECT {RUN_COLUMNS} FROM {self.runs} WHERE run_id = {p(1)}"
        self.last_seq = f"SELECT last_seq FROM {self.runs} WHERE run_id = {p(1)}"
        self.read = (
            f"SELECT seq, type, {d.event_time_column}, data FROM {self.events}"
            f" WHERE run_id = {p(1)} AND seq > {p(2)} ORDER BY seq LIMIT {p(3)}"
        )
        self.insert_event = (
            f"INSERT INTO {self.events} (run_id, seq, type, {d.event_time_column}, data)"
            f" VALUES ({', '.join(d.marks(5))})"
        )
        self.count_session_runs = (
            f"SELECT status, COUNT(*), MIN(position), {d.first_created_at} FROM {self.runs} WHERE session_id = {p(1)}"
        )
        self.save_snapshot = (
            f"INSERT INTO {self.snapshots} (run_id, last_seq, state) VALUES ({', '.join(d.marks(3))})"
            " ON CONFLICT (run_id) DO UPDATE SET last_seq = excluded.last_seq, state = excluded.state"
            f" WHERE excluded.last_seq >= {self.snapshots}.last_seq"
        )
        self.load_snapshot = f"SELECT state FROM {self.snapshots} WHERE run_id = {p(1)}"
        #: The run row first: appends lock it first, so a concurrent writer waits, never deadlocks.
        self.delete_run = [f"DELETE FROM {self.runs} WHERE run_id = {p(1)}"] + [
            f"DELETE FROM {table} WHERE run_id = {p(1)}"  # noqa: S608 - our table names
            for table in (self.events, self.snapshots, self.keys)
        ]
        # Replaced only when expired, or when its run never came (its request died).
        key_time = d.key_time_column
        self.reserve_key = (
            f"INSERT INTO {self.keys} (principal, scope, key, fingerprint, run_id, {key_time})"
            f" VALUES ({', '.join(d.marks(6))})"
            f" ON CONFLICT (principal, scope, key) DO UPDATE SET fingerprint = excluded.fingerprint,"
            f" run_id = excluded.run_id, {key_time} = excluded.{key_time}"
            f" WHERE {self.keys}.{key_time} < {p(7)}"
            f" OR ({self.keys}.{key_time} < {p(8)}"
            f" AND NOT EXISTS (SELECT 1 FROM {self.runs} AS r WHERE r.run_id = {self.keys}.run_id))"
        )
        identity = f"principal = {p(1)} AND scope = {p(2)} AND key = {p(3)}"
        self.held_key = f"SELECT fingerprint, run_id, {key_time} FROM {self.keys} WHERE {identity}"
        self.release_key = f"DELETE FROM {self.keys} WHERE {identity} AND run_id = {p(4)}"
        session_values = ", ".join(d.marks(7))
        self.put_session = (
            f"INSERT INTO {self.sessions} ({SESSION_COLUMNS}) VALUES ({session_values})"
            " ON CONFLICT (session_id) DO UPDATE SET owner = excluded.owner, created_at = excluded.created_at,"
            " expires_at = excluded.expires_at, ended_at = excluded.ended_at, metadata = excluded.metadata,"
            " data = excluded.data"
        )
        self.add_session = (
            f"INSERT INTO {self.sessions} ({SESSION_COLUMNS}) VALUES ({session_values}) ON CONFLICT (session_id) DO NOTHING"
        )
        self.get_session = f"SELECT {SESSION_COLUMNS} FROM {self.sessions} WHERE session_id = {p(1)}"
        self.add_webhook = f"INSERT INTO {self.webhooks} ({WEBHOOK_COLUMNS}) VALUES ({', '.join(d.marks(7))})"
        self.list_webhooks = (
            f"SELECT {WEBHOOK_COLUMNS} FROM {self.webhooks} WHERE app_id = {p(1)} ORDER BY {d.webhook_order}"
        )
        self.delete_webhook = f"DELETE FROM {self.webhooks} WHERE app_id = {p(1)} AND webhook_id = {p(2)}"

    def list_runs(
        self,
        *,
        session_id: str | None,
        status: Status | None,
        owner: str | None,
        before_position: int | None,
        before_run: str | None,
        limit: int,
    ) -> tuple[str, list[Any]]:
        """Runs filtered by the given fields, before a position (or before the position of the run
        `before_run`: none for an unknown run), newest first, one row more than `limit` (to tell
        whether there is a next page): the SQL (position, then RUN_COLUMNS) and its parameters."""
        p = self.dialect.placeholder
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("session_id", session_id),
            ("status", Status(status).value if status is not None else None),
            ("owner", owner),
        ):
            if value is not None:
                params.append(value)
                where.append(f"{column} = {p(len(params))}")
        if before_position is not None:
            params.append(before_position)
            where.append(f"position < {p(len(params))}")
        if before_run is not None:
            params.append(before_run)
            where.append(f"position < (SELECT position FROM {self.runs} WHERE run_id = {p(len(params))})")
        params.append(limit + 1)
        sql = (
            f"SELECT position, {RUN_COLUMNS} FROM {self.runs}"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY position DESC LIMIT {p(len(params))}"
        )
        return sql, params

    def list_ended_runs(self, ended_before: datetime, start: tuple[int, int] | None, limit: int) -> tuple[str, list[Any]]:
        """Ended runs before `ended_before`, after the cursor `start` (end µs, position), oldest
        ended first, one more than `limit`: the SQL (end column, position, RUN_COLUMNS), parameters."""
        d = self.dialect
        return self._by_time(d.ended_column, d.ended_condition, d.ended_param, ended_before, start, limit)

    def list_waking(self, start: tuple[int, int] | None, limit: int) -> tuple[str, list[Any]]:
        """Unfinished runs with a wake time before NO_DEADLINE after `start` (wake µs, position),
        earliest first, one more than `limit`: the SQL (wake_at, position, RUN_COLUMNS), parameters."""
        return self._by_time("wake_at", None, self.dialect.instant_param, NO_DEADLINE, start, limit)

    def _by_time(
        self, column: str, condition: str | None, param: Callable[[datetime], Any], before: datetime,
        start: tuple[int, int] | None, limit: int,
    ) -> tuple[str, list[Any]]:
        """Runs meeting `condition` (if any) whose time `column` is before `before`, after the cursor
        `start` (µs, position), in (time, position) order, one more than `limit`."""
        p = self.dialect.placeholder
        params: list[Any] = [param(before)]
        where = f"{condition} AND " if condition else ""
        sql = f"SELECT {column}, position, {RUN_COLUMNS} FROM {self.runs} WHERE {where}{column} < {p(1)}"
        if start is not None:
            params.extend((param(from_micros(start[0])), start[1]))
            sql += f" AND ({column}, position) > ({p(2)}, {p(3)})"
        params.append(limit + 1)
        return sql + f" ORDER BY {column}, position LIMIT {p(len(params))}", params

    def list_busy(self, before_position: int | None, limit: int) -> tuple[str, list[Any]]:
        """Unfinished runs without a wake time before a position, newest first, one more than
        `limit`: the SQL (position, RUN_COLUMNS) and its parameters."""
        p = self.dialect.placeholder
        params: list[Any] = []
        sql = f"SELECT position, {RUN_COLUMNS} FROM {self.runs} WHERE {BUSY_CONDITION}"
        if before_position is not None:
            params.append(before_position)
            sql += f" AND position < {p(1)}"
        params.append(limit + 1)
        return sql + f" ORDER BY position DESC LIMIT {p(len(params))}", params

    def heads(self, count: int) -> str:
        """The first events (seq <= the last parameter) of `count` runs given by id, by run and seq."""
        return (
            f"SELECT run_id, seq, type, {self.dialect.event_time_column}, data FROM {self.events}"
            f" WHERE run_id IN ({', '.join(self.dialect.marks(count))}) AND seq <= {self.dialect.placeholder(count + 1)}"
            " ORDER BY run_id, seq"
        )

    def runs_in(self, count: int, *, lock: str = "") -> str:
        """The RUN_COLUMNS of `count` runs given by id (`lock`: appended, e.g. FOR UPDATE)."""
        return f"SELECT {RUN_COLUMNS} FROM {self.runs} WHERE run_id IN ({', '.join(self.dialect.marks(count))}){lock}"


# -- the append decision ------------------------------------------------------------------------


class Append:
    """One append waiting for a store's writer: its events and their rows' data."""

    __slots__ = ("run_id", "events", "data", "expected_seq", "future", "error")

    def __init__(self, run_id: str, events: Sequence[Event], expected_seq: int, future: Any = None) -> None:
        if isinstance(events[0], RunCreated):  # (asked here: a call only for a run.created)
            check_created(events)
        self.run_id = run_id
        self.events = events
        #: Each event's data as stored (encoded before the append joins a batch, so a bad event fails alone).
        self.data = [event_data(events[0])] if len(events) == 1 else [event_data(event) for event in events]
        self.expected_seq = expected_seq
        self.future = future
        self.error: BaseException | None = None

    def as_read(self, dialect: Dialect) -> list[Event | Callable[[], Event]]:
        """Its events exactly as a read of the stored rows gives them back (to cache them): the
        event itself when it reads back as itself, else a call that decodes its row (made only
        if the cached event is ever read: most are not)."""
        if len(self.events) == 1:  # (a step's append: no comprehension called)
            event = self.events[0]
            return [event if _reads_back_as_itself(event) else functools.partial(_decode_as_read, dialect, self.run_id, event, self.data[0])]
        return [
            event if _reads_back_as_itself(event) else functools.partial(_decode_as_read, dialect, self.run_id, event, data)
            for event, data in zip(self.events, self.data)
        ]

    def written_as(self, rows: Sequence[Sequence[Any]], dialect: Dialect) -> bool:
        """Whether `rows` (Statements.read of its run after expected_seq, as many as its events)
        are exactly this append's events: after a retry, an earlier attempt committed it."""
        return len(rows) == len(self.events) and all(
            row[0] == e.seq and row[1] == e.type and dialect.instant_value(row[2]) == e.at and row[3] == data
            for row, e, data in zip(rows, self.events, self.data)
        )


@attrs.define
class Decision:
    """What a batch of appends does: the accepted ones, each one's outcome, the summaries after."""

    accepted: list[Append] = attrs.field(factory=list)
    #: One per append, in order: None (accepted) or the error it fails with.
    outcomes: list[BaseException | None] = attrs.field(factory=list)
    #: The summary of each run appended to, after the batch.
    changed: dict[str, RunSummary] = attrs.field(factory=dict)


def decide(
    appends: Sequence[Append],
    current: Mapping[str, RunSummary],
    refused: Callable[[Append], BaseException | None] | None = None,
) -> Decision:
    """Check each append, in order, against its run's summary as the earlier ones leave it
    (`current`: the stored summaries; a run without one, or with last_seq 0, is new). An append
    `refused` names an error for (a lost lease), or whose expected seq is stale, fails alone."""
    decision = Decision()
    changed = decision.changed
    for item in appends:
        error = refused(item) if refused is not None else None
        summary = changed.get(item.run_id) or current.get(item.run_id)
        actual = summary.last_seq if summary is not None else 0
        if error is None and actual != item.expected_seq:
            error = ConcurrencyConflict(item.run_id, item.expected_seq, actual)
        if error is not None:
            decision.outcomes.append(error)
            continue
        events = item.events
        if summary is None:
            summary = new_summary(events[0])
        previous = summary.status if summary.last_seq else None
        last = events[-1]
        if len(events) == 1:  # most appends (a step, an input ...): one event, no loop over them
            if last.type == _DELTA:
                status, wake = summary.status, summary.wake_at
            else:
                status, wake = status_after(previous, [last.type]), last.wake_after(summary.wake_at)
        elif all_deltas(events):  # the token hot path: status and wake time stay as they were
            status, wake = summary.status, summary.wake_at
        else:
            status = status_after(previous, [event.type for event in events])
            wake = wake_after(summary.wake_at, events)
        changed[item.run_id] = _moved_on(summary, last, status or summary.status, wake)
        decision.accepted.append(item)
        decision.outcomes.append(None)
    return decision


_SUMMARY_FIELDS = ("run_id", "agent", "status", "session_id", "owner", "created_at", "updated_at", "last_seq", "wake_at")
if tuple(field.name for field in attrs.fields(RunSummary)) != _SUMMARY_FIELDS:  # a field added and not carried below
    raise TypeError(f"_moved_on does not carry every RunSummary field: {attrs.fields(RunSummary)}")


def _moved_on(summary: RunSummary, last: Event, status: Status, wake_at: datetime | None) -> RunSummary:
    """`summary` after an append ending with `last` (`attrs.evolve`, without its per-field lookups:
    the writer makes one per run in every batch)."""
    return RunSummary(
        run_id=summary.run_id, agent=summary.agent, status=status, session_id=summary.session_id, owner=summary.owner,
        created_at=summary.created_at, updated_at=last.at, last_seq=last.seq, wake_at=wake_at,
    )


def all_deltas(events: Sequence[Event]) -> bool:
    for event in events:
        if event.type != _DELTA:
            return False
    return True


# -- the store methods that are statements and rows ------------------------------------------------


class SQLLog(SQLSchedules):
    """The part of an SQL store that is the same in every dialect. A store sets `sql` (its
    Statements) and `_wakeups` (woken by its commits), and provides `open`, `close`, `_fetch`
    and `_transaction`."""

    sql: Statements
    _wakeups: RunWakeups

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        """The rows of one read."""
        raise NotImplementedError

    async def _transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run `statements` in one transaction; the rows each changed."""
        raise NotImplementedError

    async def _fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Any] | None:
        rows = await self._fetch(sql, params)
        return rows[0] if rows else None

    # -- the log -----------------------------------------------------------------------------

    async def read(self, run_id: str, *, after_seq: int = 0, limit: int = DEFAULT_PAGE) -> list[Event]:
        check_page(after_seq, limit)
        rows = await self._fetch(self.sql.read, (run_id, after_seq, min(limit, MAX_PAGE)))
        instant = self.sql.dialect.instant_value
        return [decode_event(run_id, seq, event_type, instant(at), data) for seq, event_type, at, data in rows]

    async def read_recorded(self, run_id: str, *, after_seq: int = 0, limit: int = DEFAULT_PAGE) -> RecordedPage:
        """`read` undecoded, for a replay (the RecordedReader port): the rows as fetched, each
        keeping its stored time and payload text until its event is asked for."""
        check_page(after_seq, limit)
        rows = await self._fetch(self.sql.read, (run_id, after_seq, min(limit, MAX_PAGE)))
        return RecordedPage(rows, self._row_decoder(run_id))

    def _row_decoder(self, run_id: str) -> Callable[[Sequence[Any]], Event]:
        """Builds the event of a row `(seq, type, at, payload)` of `run_id` read by this store (the
        payload its text, or that text decoded)."""
        instant = self.sql.dialect.instant_value

        def decode(row: Sequence[Any]) -> Event:
            seq, event_type, at, data = row
            if type(data) is dict:  # decoded already, shared with the row: the event gets a copy
                return event_from_stored(run_id, seq, event_type, instant(at), dict(data))
            return decode_event(run_id, seq, event_type, instant(at), data)

        return decode

    async def read_heads(self, run_ids: Sequence[str], *, limit: int) -> dict[str, list[Event]]:
        """The first `limit` events of each run, a chunk of runs per query (the HeadReader port)."""
        heads: dict[str, list[Event]] = {}
        instant = self.sql.dialect.instant_value
        for start in range(0, len(run_ids), IN_CHUNK):
            chunk = list(run_ids[start : start + IN_CHUNK])
            for run_id, seq, event_type, at, data in await self._fetch(self.sql.heads(len(chunk)), (*chunk, limit)):
                heads.setdefault(run_id, []).append(decode_event(run_id, seq, event_type, instant(at), data))
        return heads

    async def wait(self, run_id: str, *, after_seq: int, timeout: float | None = None) -> bool:
        async def has_news() -> bool:
            return await self._has_news(run_id, after_seq)

        return await self._wakeups.wait(run_id, after_seq=after_seq, timeout=timeout, has_news=has_news, recheck=self._recheck)

    async def wait_settled(self, run_id: str, *, after_seq: int, timeout: float | None = None) -> bool:
        """SettledWait: woken only by commits that settled the run (where the store's notify says
        so; PostgreSQL's NOTIFY does not, so there every commit wakes as for `wait`)."""

        async def has_news() -> bool:
            summary = await self.get_run(run_id)
            return summary is not None and summary.last_seq > after_seq and summary.status.settled

        return await self._wakeups.wait(
            run_id, after_seq=after_seq, timeout=timeout, has_news=has_news, recheck=self._recheck, settled=True
        )

    async def _has_news(self, run_id: str, after_seq: int) -> bool:
        return await self.last_seq(run_id) > after_seq

    def _recheck(self) -> float | None:
        """How long a waiter may sleep before it looks again without a wake-up (None: no limit)."""
        return None

    async def get_run(self, run_id: str) -> RunSummary | None:
        rows = await self._fetch(self.sql.get_run, (run_id,))
        return summary_from_row(rows[0], self.sql.dialect) if rows else None

    async def last_seq(self, run_id: str) -> int:
        summary = await self.get_run(run_id)
        return summary.last_seq if summary is not None else 0

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
        sql, params = self.sql.list_runs(
            session_id=session_id,
            status=status,
            owner=owner,
            before_position=decode_listing_start(before, before_run),
            before_run=before_run,
            limit=limit,
        )
        rows = await self._fetch(sql, params)
        page = rows[:limit]
        return RunPage(
            runs=tuple(summary_from_row(row, self.sql.dialect, 1) for row in page),
            next_before=encode_cursor(page[-1][0]) if len(rows) > limit and page else None,
        )

    async def list_ended_runs(
        self, *, ended_before: datetime, limit: int = 100, after: str | None = None
    ) -> EndedRunPage:
        check_page(0, limit)
        sql, params = self.sql.list_ended_runs(ended_before, decode_ended_cursor(after), limit)
        rows = await self._fetch(sql, params)
        page = rows[:limit]
        dialect = self.sql.dialect
        return EndedRunPage(
            runs=tuple(summary_from_row(row, dialect, 2) for row in page),
            next_after=encode_ended_cursor(dialect.ended_micros(page[-1][0]), page[-1][1]) if len(rows) > limit else None,
        )

    async def list_waking(self, *, limit: int, after: str | None = None) -> RunPage:
        check_page(0, limit)
        sql, params = self.sql.list_waking(decode_ended_cursor(after), limit)
        rows = await self._fetch(sql, params)
        page = rows[:limit]
        dialect = self.sql.dialect
        return RunPage(
            runs=tuple(summary_from_row(row, dialect, 2) for row in page),
            next_before=encode_ended_cursor(micros(dialect.instant_value(page[-1][0])), page[-1][1]) if len(rows) > limit else None,
        )

    async def list_busy(self, *, limit: int, before: str | None = None) -> RunPage:
        check_page(0, limit)
        sql, params = self.sql.list_busy(decode_listing_start(before, None), limit)
        rows = await self._fetch(sql, params)
        page = rows[:limit]
        return RunPage(
            runs=tuple(summary_from_row(row, self.sql.dialect, 1) for row in page),
            next_before=encode_cursor(page[-1][0]) if len(rows) > limit and page else None,
        )

    async def count_session_runs(self, session_id: str, *, owner: str | None = None) -> SessionRuns:
        sql = self.sql.count_session_runs
        params: list[Any] = [session_id]
        if owner is not None:
            params.append(owner)
            sql += f" AND owner = {self.sql.dialect.placeholder(2)}"
        rows = await self._fetch(sql + " GROUP BY status", params)
        first = min(rows, key=lambda row: row[2], default=None)
        return SessionRuns(
            by_status={Status(row[0]): row[1] for row in rows},
            first_created_at=self.sql.dialect.time_value(first[3]) if first is not None else None,
        )

    async def delete_run(self, run_id: str) -> bool:
        counts = await self._transaction([(sql, (run_id,)) for sql in self.sql.delete_run])
        return counts[0] > 0

    # -- snapshots -----------------------------------------------------------------------------

    async def save_snapshot(self, state: RunState) -> None:
        await self._transaction([(self.sql.save_snapshot, (state.run_id, state.last_seq, state_to_json(state)))])

    async def load_snapshot(self, run_id: str) -> RunState | None:
        rows = await self._fetch(self.sql.load_snapshot, (run_id,))
        return state_from_json(rows[0][0]) if rows else None

    # -- idempotency records (runengine.idempotency.IdempotencyStore) ---------------------------------

    async def reserve_idempotency_key(
        self, record: IdempotencyRecord, *, ttl: float, pending_for: float
    ) -> IdempotencyRecord | None:
        if not record.key:
            raise InvalidRequest("an idempotency key must not be empty")
        instant = self.sql.dialect.instant_param
        identity = (record.principal, record.scope, record.key)
        row = (*identity, record.fingerprint, record.run_id, instant(record.created_at))
        expired = instant(record.created_at - timedelta(seconds=ttl))
        abandoned = instant(record.created_at - timedelta(seconds=pending_for))
        while True:
            (stored,) = await self._transaction([(self.sql.reserve_key, (*row, expired, abandoned))])
            if stored:  # inserted, or replaced an expired or abandoned record
                return None
            rows = await self._fetch(self.sql.held_key, identity)
            if not rows:  # released (or its run deleted) meanwhile: try again
                continue
            fingerprint, run_id, created = rows[0]
            held = attrs.evolve(record, fingerprint=fingerprint, run_id=run_id, created_at=self.sql.dialect.instant_value(created))
            # A retry after a lost connection finds its own committed record: still ours.
            return None if held == record else held

    async def release_idempotency_key(self, record: IdempotencyRecord) -> None:
        await self._transaction([(self.sql.release_key, (record.principal, record.scope, record.key, record.run_id))])

    # -- sessions (runengine.ports.SessionStore) ---------------------------------------------------

    async def put_session(self, session: SessionRecord) -> None:
        await self._transaction([(self.sql.put_session, session_params(session, self.sql.dialect))])

    async def add_session(self, session: SessionRecord) -> SessionRecord:
        (inserted,) = await self._transaction([(self.sql.add_session, session_params(session, self.sql.dialect))])
        if inserted:
            return session
        stored = await self.get_session(session.session_id)
        assert stored is not None  # sessions are never deleted here
        return stored

    async def get_session(self, session_id: str) -> SessionRecord | None:
        rows = await self._fetch(self.sql.get_session, (session_id,))
        return session_from_row(rows[0], self.sql.dialect) if rows else None

    # -- webhook registrations (the platform profile's WebhookStore) ------------------------------------

    async def add_webhook(self, webhook: WebhookRegistration) -> None:
        await self._transaction([(self.sql.add_webhook, webhook_params(webhook, self.sql.dialect))])

    async def list_webhooks(self, app_id: str) -> list[WebhookRegistration]:
        rows = await self._fetch(self.sql.list_webhooks, (app_id,))
        return [webhook_from_row(row, self.sql.dialect) for row in rows]

    async def delete_webhook(self, app_id: str, webhook_id: str) -> bool:
        (deleted,) = await self._transaction([(self.sql.delete_webhook, (app_id, webhook_id))])
        return deleted > 0


__all__ = [
    "Append",
    "Decision",
    "BUSY_CONDITION",
    "IN_CHUNK",
    "RUN_COLUMNS",
    "SQLLog",
    "Statements",
    "decide",
    "decode_event",
    "log_tables",
    "schema_steps",
    "event_data",
    "new_summary",
    "summary_from_row",
]
