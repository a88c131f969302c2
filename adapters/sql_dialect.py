"""What tells one SQL database from another for the SQL log (adapters/sql_log.py): placeholders,
table names, how a time is kept, and the few expressions that are not standard SQL.

Everything else (the statements, the append and summary logic) is written once in sql_log; each
store names its dialect (SQLITE, POSTGRESQL) and brings its driver. The time columns differ
because the schemas made by earlier versions must keep opening: SQLite keeps listing times as
RFC 3339 text and exact instants as µs integers, PostgreSQL both as timestamptz.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from runengine.status import TERMINAL_STATUSES
from runengine.validation import micros
from runengine.wire import format_time

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_MICROSECOND = timedelta(microseconds=1)

#: The terminal statuses as an SQL list: `status IN (...)`.
ENDED_STATUSES = ", ".join(f"'{status.value}'" for status in sorted(TERMINAL_STATUSES))


@attrs.frozen(kw_only=True)
class Dialect:
    """One database's SQL, as the SQL log needs it."""

    name: str
    #: Put before every table name ("" or "runengine_").
    prefix: str
    #: The 1-based parameter number -> its text in the SQL (`?`, `$1`).
    placeholder: Callable[[int], str]
    #: A listing time (run and session times, webhook creation) as a parameter, and back.
    time_param: Callable[[datetime], Any]
    time_value: Callable[[Any], datetime | None]
    #: An exact instant (an event's time, an idempotency record's) as a parameter, and back.
    instant_param: Callable[[datetime], Any]
    instant_value: Callable[[Any], datetime]
    #: The columns holding those instants.
    event_time_column: str
    key_time_column: str
    #: Ended runs: the column ordering them by end time, the condition that a run has ended, and
    #: the end time (from a row's value of that column) as µs, for the listing's cursor.
    ended_column: str
    ended_condition: str
    ended_micros: Callable[[Any], int]
    #: A time as a parameter compared with that column.
    ended_param: Callable[[datetime], Any]
    #: The created_at of the first run (by position) of each GROUP BY group.
    first_created_at: str
    #: What orders an app's webhook registrations oldest first.
    webhook_order: str
    #: The column types of a listing time and of an instant, and what ends the CREATE TABLE of a
    #: table stored in its key's order.
    time_type: str
    instant_type: str
    keyed_table: str
    #: The column type of raw bytes (a Durable Stream's data).
    blob_type: str

    def table(self, name: str) -> str:
        return self.prefix + name

    def marks(self, count: int, start: int = 1) -> list[str]:
        """The placeholders of parameters start .. start+count-1."""
        return [self.placeholder(n) for n in range(start, start + count)]


def _sqlite_time(value: datetime) -> str:
    if value.tzinfo is _UTC:
        return value.isoformat(timespec="microseconds")
    return format_time(value)  # naive (taken as UTC) or another zone: normalised to UTC


def _sqlite_parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=_UTC)


def from_micros(value: int) -> datetime:
    return _EPOCH + value * _MICROSECOND


def _same(value: Any) -> Any:
    return value


SQLITE = Dialect(
    name="sqlite",
    prefix="",
    placeholder=lambda _number: "?",
    time_param=_sqlite_time,
    time_value=_sqlite_parse_time,
    instant_param=micros,
    instant_value=from_micros,
    event_time_column="at_us",
    key_time_column="created_us",
    ended_column="ended_us",
    ended_condition="ended_us IS NOT NULL",
    ended_micros=_same,
    ended_param=micros,
    # SQLite gives the bare column of the row holding MIN(position) (one per status group).
    first_created_at="created_at",
    webhook_order="rowid",
    time_type="TEXT",
    instant_type="INTEGER",
    keyed_table=" WITHOUT ROWID",
    blob_type="BLOB",
)

POSTGRESQL = Dialect(
    name="postgresql",
    prefix="runengine_",
    placeholder=lambda number: f"${number}",
    time_param=_same,
    time_value=_same,
    instant_param=_same,
    instant_value=_same,
    event_time_column="at",
    key_time_column="created_at",
    ended_column="updated_at",
    ended_condition=f"status IN ({ENDED_STATUSES})",
    ended_micros=micros,
    ended_param=_same,
    first_created_at="(array_agg(created_at ORDER BY position))[1]",
    webhook_order="position",
    time_type="timestamptz",
    instant_type="timestamptz",
    keyed_table="",
    blob_type="bytea",
)


__all__ = ["Dialect", "ENDED_STATUSES", "POSTGRESQL", "SQLITE", "from_micros"]
