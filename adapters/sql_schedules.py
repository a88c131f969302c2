"""Schedules in an SQL store (runengine.schedules.ScheduleStore), written once for both dialects.

One row per schedule, by its key (owner and id, runengine.schedules.Schedule.key): what the
scheduler compares and changes in place has a column of its own (paused, last_slot: the
compare-and-set that moves a schedule past a slot), the rest of the schedule is a JSON document.
`SQLSchedules` is a part of `runengine.adapters.sql_log.SQLLog`, on its `_fetch` and `_transaction`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from runengine.adapters.sql_dialect import Dialect
from runengine.schedules import PAGE, Schedule
from runengine.wire import to_json

SCHEDULE_COLUMNS = "schedule_key, owner, paused, created_at, last_slot, spec"
#: The fields kept in the JSON document (the others have columns).
_SPEC = ("schedule_id", "cron", "agent", "input", "timezone", "session_id", "session_policy", "metadata", "missed")


def schedule_table(d: Dialect) -> str:
    """The CREATE TABLE (IF NOT EXISTS) of the schedules table."""
    return f"""CREATE TABLE IF NOT EXISTS {d.table("schedules")} (
    schedule_key TEXT PRIMARY KEY,
    owner TEXT,
    paused INTEGER NOT NULL,
    created_at {d.time_type} NOT NULL,
    last_slot {d.time_type},
    spec TEXT NOT NULL
)"""


def _params(schedule: Schedule, d: Dialect) -> tuple[Any, ...]:
    spec = {name: getattr(schedule, name) for name in _SPEC}
    return (
        schedule.key,
        schedule.owner,
        int(schedule.paused),
        d.time_param(schedule.created_at),
        d.time_param(schedule.last_slot) if schedule.last_slot is not None else None,
        to_json(spec, "schedule"),
    )


def _from_row(row: Sequence[Any], d: Dialect) -> Schedule:
    _key, owner, paused, created_at, last_slot, spec = row
    created = d.time_value(created_at)
    assert created is not None
    return Schedule(owner=owner, paused=bool(paused), created_at=created, last_slot=d.time_value(last_slot),
                    **json.loads(spec))


class ScheduleStatements:
    def __init__(self, d: Dialect) -> None:
        self.dialect = d
        p, table = d.placeholder, d.table("schedules")
        self.table = table
        self.add = f"INSERT INTO {table} ({SCHEDULE_COLUMNS}) VALUES ({', '.join(d.marks(6))}) ON CONFLICT (schedule_key) DO NOTHING"
        self.get = f"SELECT {SCHEDULE_COLUMNS} FROM {table} WHERE schedule_key = {p(1)}"
        self.pause = f"UPDATE {table} SET paused = {p(1)} WHERE schedule_key = {p(2)}"
        self.advance = (
            f"UPDATE {table} SET last_slot = {p(1)} WHERE schedule_key = {p(2)} AND (last_slot IS NULL OR last_slot < {p(3)})"
        )
        self.delete = f"DELETE FROM {table} WHERE schedule_key = {p(1)}"

    def listing(self, *, owner: bool, after: bool) -> str:
        """A page in key order: of one owner's (`owner`), after a key (`after`); the limit last."""
        p = self.dialect.placeholder
        conditions, n = [], 1
        if owner:
            conditions.append(f"owner = {p(n)}")
            n += 1
        if after:
            conditions.append(f"schedule_key > {p(n)}")
            n += 1
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return f"SELECT {SCHEDULE_COLUMNS} FROM {self.table}{where} ORDER BY schedule_key LIMIT {p(n)}"


class SQLSchedules:
    """The ScheduleStore methods of an SQL store."""

    schedule_sql: ScheduleStatements

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def _transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        raise NotImplementedError

    async def add_schedule(self, schedule: Schedule) -> bool:
        (added,) = await self._transaction([(self.schedule_sql.add, _params(schedule, self.schedule_sql.dialect))])
        return added > 0

    async def get_schedule(self, key: str) -> Schedule | None:
        rows = await self._fetch(self.schedule_sql.get, (key,))
        return _from_row(rows[0], self.schedule_sql.dialect) if rows else None

    async def list_schedules(self, *, owner: str | None = None, after: str | None = None, limit: int = PAGE) -> list[Schedule]:
        params = [value for value in (owner, after) if value is not None]
        rows = await self._fetch(self.schedule_sql.listing(owner=owner is not None, after=after is not None), (*params, limit))
        return [_from_row(row, self.schedule_sql.dialect) for row in rows]

    async def set_schedule_paused(self, key: str, paused: bool) -> bool:
        (changed,) = await self._transaction([(self.schedule_sql.pause, (int(paused), key))])
        return changed > 0

    async def advance_schedule(self, key: str, slot: datetime) -> bool:
        at = self.schedule_sql.dialect.time_param(slot)
        (changed,) = await self._transaction([(self.schedule_sql.advance, (at, key, at))])
        return changed > 0

    async def delete_schedule(self, key: str) -> bool:
        (deleted,) = await self._transaction([(self.schedule_sql.delete, (key,))])
        return deleted > 0


__all__ = ["SQLSchedules", "ScheduleStatements", "schedule_table"]
