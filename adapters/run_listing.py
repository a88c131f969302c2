"""The SQL of `list_runs` (newest first, filtered, cursor-paged), for every SQL store.

The stores differ only in their parameter placeholders (SQLite `?`, PostgreSQL `$1`), their
table and the columns they select, so those are the builder's parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runengine.status import Status

#: A placeholder style: the 1-based parameter number -> its text in the SQL.
Placeholder = Callable[[int], str]


def qmark(_number: int) -> str:
    return "?"


def dollar(number: int) -> str:
    return f"${number}"


def list_runs_query(
    select: str,
    *,
    placeholder: Placeholder,
    session_id: str | None,
    status: Status | None,
    owner: str | None,
    before_position: int | None,
    limit: int,
    before_run: str | None = None,
    table: str = "runs",
) -> tuple[str, list[Any]]:
    """`select` (a `SELECT ... FROM table`) filtered by the given fields, before a position (or
    before the position of the run `before_run`: none for an unknown run), newest first, one row
    more than `limit` (to tell whether there is a next page): the SQL and its parameters."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("session_id", session_id),
        ("status", Status(status).value if status is not None else None),
        ("owner", owner),
    ):
        if value is not None:
            params.append(value)
            where.append(f"{column} = {placeholder(len(params))}")
    if before_position is not None:
        params.append(before_position)
        where.append(f"position < {placeholder(len(params))}")
    if before_run is not None:
        params.append(before_run)
        where.append(f"position < (SELECT position FROM {table} WHERE run_id = {placeholder(len(params))})")
    params.append(limit + 1)
    sql = (
        select
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY position DESC LIMIT {placeholder(len(params))}"
    )
    return sql, params
