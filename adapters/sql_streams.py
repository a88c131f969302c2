"""Durable Streams in an SQL store: the stream table and the chunk table beside the run log, and
the DurableStreamStore methods on them, written once for SQLite and PostgreSQL (their dialects,
adapters/sql_dialect.py) on the two hooks every SQL store has: `_fetch` and `_transaction`.

A write is a compare-and-set: each row it changes is updated only if its (stream id, version) is
still the one read, and marked with the write's token; inserts are skipped when the path is
taken. A guard statement then counts the rows bearing the token: one short, and it inserts a row
its CHECK refuses, which rolls the whole transaction back (chunks included). The stores run
those statements in one transaction (the SQLite store's writer thread, a PostgreSQL transaction),
so nothing of a lost race is written, and the caller decides again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from runengine.adapters.profiles.durable_streams_store import Chunk, StreamMeta, StreamWrite, wake_key
from runengine.adapters.sql_dialect import Dialect
from runengine.adapters.wakeup import RunWakeups

#: The row columns, in StreamMeta's order.
STREAM_COLUMNS = (
    "path",
    "stream_id",
    "content_type",
    "owner",
    "created_us",
    "touched_us",
    "ttl",
    "expires_us",
    "tail",
    "closed",
    "fork_of",
    "fork_pos",
    "forks",
    "deleted",
    "writers",
    "version",
)
#: The name of the guard's CHECK: its violation is a lost compare-and-set, nothing else.
CONFLICT = "ds_write_conflict"


def stream_tables(d: Dialect) -> list[str]:
    """The CREATE TABLE (IF NOT EXISTS) statements of the stream tables."""
    return [
        f"""CREATE TABLE IF NOT EXISTS {d.table("ds_streams")} (
    path TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    owner TEXT,
    created_us BIGINT NOT NULL,
    touched_us BIGINT NOT NULL,
    ttl BIGINT,
    expires_us BIGINT,
    tail BIGINT NOT NULL,
    closed BIGINT NOT NULL,
    fork_of TEXT,
    fork_pos BIGINT NOT NULL,
    forks BIGINT NOT NULL,
    deleted BIGINT NOT NULL,
    writers TEXT NOT NULL,
    version BIGINT NOT NULL,
    token TEXT
)""",
        f"""CREATE TABLE IF NOT EXISTS {d.table("ds_chunks")} (
    stream_id TEXT NOT NULL,
    start_pos BIGINT NOT NULL,
    end_pos BIGINT NOT NULL,
    data {d.blob_type} NOT NULL,
    PRIMARY KEY (stream_id, start_pos)
){d.keyed_table}""",
        # Never holds a row: the guard's insert fails its CHECK (see the module's doc).
        f"CREATE TABLE IF NOT EXISTS {d.table('ds_guard')} (ok BIGINT NOT NULL CONSTRAINT {CONFLICT} CHECK (ok = 1))",
    ]


class StreamStatements:
    """The statements of one dialect, built once."""

    def __init__(self, d: Dialect) -> None:
        p = d.placeholder
        streams, chunks, guard = d.table("ds_streams"), d.table("ds_chunks"), d.table("ds_guard")
        columns = ", ".join(STREAM_COLUMNS)
        count = len(STREAM_COLUMNS)
        self.get = f"SELECT {columns} FROM {streams} WHERE path = {p(1)}"
        # From the chunk holding `start` (chunks are contiguous), by the primary key.
        self.chunks = (
            f"SELECT start_pos, end_pos, data FROM {chunks} WHERE stream_id = {p(1)} AND start_pos >= COALESCE("
            f"(SELECT max(start_pos) FROM {chunks} WHERE stream_id = {p(2)} AND start_pos <= {p(3)}), 0)"
            f" AND start_pos < {p(4)} ORDER BY start_pos LIMIT {p(5)}"
        )
        self.insert = (
            f"INSERT INTO {streams} ({columns}, token) VALUES ({', '.join(d.marks(count + 1))})"
            " ON CONFLICT (path) DO NOTHING"
        )
        # SET every column but path (the key) and touched_us, then touched_us: a read's touch since
        # the row was read is kept (the later of the two); numbered as they appear (SQLite's `?`).
        numbers = iter(range(1, 100))
        sets = [f"{name} = {p(next(numbers))}" for name in STREAM_COLUMNS[1:] if name != "touched_us"]
        later, touched = p(next(numbers)), p(next(numbers))
        sets.append(f"touched_us = CASE WHEN touched_us < {later} THEN {touched} ELSE touched_us END")
        token, path, stream_id, version = (p(next(numbers)) for _ in range(4))
        self.update = (
            f"UPDATE {streams} SET {', '.join(sets)}, token = {token}"
            f" WHERE path = {path} AND stream_id = {stream_id} AND version = {version}"
        )
        self.guard = f"INSERT INTO {guard} (ok) SELECT 0 WHERE (SELECT count(*) FROM {streams} WHERE token = {p(1)}) <> {p(2)}"
        self.delete = f"DELETE FROM {streams} WHERE path = {p(1)} AND token = {p(2)}"
        self.add_chunk = f"INSERT INTO {chunks} (stream_id, start_pos, end_pos, data) VALUES ({', '.join(d.marks(4))})"
        self.drop_chunks = f"DELETE FROM {chunks} WHERE stream_id = {p(1)}"
        self.mine = f"SELECT 1 FROM {streams} WHERE token = {p(1)} LIMIT 1"
        self.touch = f"UPDATE {streams} SET touched_us = {p(1)} WHERE path = {p(2)} AND touched_us < {p(3)}"

    def update_params(self, new: StreamMeta, old: StreamMeta, token: str) -> tuple[Any, ...]:
        """The update's parameters in the order its placeholders appear (SQLite's `?` are positional)."""
        values = row_values(new)
        ordered = [v for name, v in zip(STREAM_COLUMNS[1:], values[1:]) if name != "touched_us"]
        return (*ordered, new.touched_us, new.touched_us, token, old.path, old.stream_id, old.version)


def row_values(meta: StreamMeta) -> tuple[Any, ...]:
    return (
        meta.path,
        meta.stream_id,
        meta.content_type,
        meta.owner,
        meta.created_us,
        meta.touched_us,
        meta.ttl,
        meta.expires_us,
        meta.tail,
        int(meta.closed),
        meta.fork_of,
        meta.fork_pos,
        meta.forks,
        int(meta.deleted),
        meta.writers,
        meta.version,
    )


def meta_from_row(row: Sequence[Any]) -> StreamMeta:
    values = dict(zip(STREAM_COLUMNS, row))
    values["closed"] = bool(values["closed"])
    values["deleted"] = bool(values["deleted"])
    return StreamMeta(**values)


class SQLStreams:
    """The DurableStreamStore methods of an SQL store (mixed into SQLiteStore and PostgresStore)."""

    stream_sql: StreamStatements
    _wakeups: RunWakeups

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def _transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        raise NotImplementedError

    def _stream_notices(self, woken: Sequence[tuple[str, int]]) -> list[tuple[str, Sequence[Any]]]:
        """Statements telling other processes of the write (PostgreSQL: NOTIFY); none by default."""
        return []

    def _stream_recheck(self) -> float | None:
        """How long a stream's reader may sleep without a wake-up before it looks again: another
        process's writes wake nobody here without NOTIFY, so an SQLite reader looks every second."""
        return 1.0

    async def stream_meta(self, path: str) -> StreamMeta | None:
        rows = await self._fetch(self.stream_sql.get, (path,))
        return meta_from_row(rows[0]) if rows else None

    async def stream_chunks(self, stream_id: str, *, start: int, end: int, limit: int) -> list[Chunk]:
        rows = await self._fetch(self.stream_sql.chunks, (stream_id, stream_id, start, end, limit))
        return [Chunk(int(s), int(e), bytes(data)) for s, e, data in rows if int(e) > start]

    async def stream_write(self, write: StreamWrite) -> bool:
        sql = self.stream_sql
        token = uuid.uuid4().hex
        statements: list[tuple[str, Sequence[Any]]] = []
        deleted: list[str] = []
        woken: list[tuple[str, int]] = []
        for old, new in write.rows:
            if old is None:
                assert new is not None
                statements.append((sql.insert, (*row_values(new), token)))
                woken.append((wake_key(new.stream_id), new.version))
                continue
            # A row to delete is first claimed like an update (so the guard counts it), then deleted.
            target = new if new is not None else old
            statements.append((sql.update, sql.update_params(target, old, token)))
            if new is None:
                deleted.append(old.path)
            woken.append((wake_key(old.stream_id), old.version + 1))
        statements.append((sql.guard, (token, len(write.rows))))
        statements += [(sql.add_chunk, (stream_id, c.start, c.end, c.data)) for stream_id, c in write.chunks]
        statements += [(sql.delete, (path, token)) for path in deleted]
        statements += [(sql.drop_chunks, (stream_id,)) for stream_id in write.drop]
        statements += self._stream_notices(woken)
        try:
            await self._transaction(statements)
        except Exception as exc:
            if CONFLICT not in str(exc):
                raise
            # Lost, unless an earlier try of this very transaction committed before its connection
            # was lost (PostgreSQL retries it on a new one): then its rows bear this token.
            if not write.rows or all(new is None for _, new in write.rows) or not await self._fetch(sql.mine, (token,)):
                return False
        for key, version in woken:
            self._wakeups.notify(key, version)
        return True

    async def stream_touch(self, path: str, at_us: int) -> None:
        await self._transaction([(self.stream_sql.touch, (at_us, path, at_us))])

    async def stream_wait(self, meta: StreamMeta, *, timeout: float) -> bool:
        async def has_news() -> bool:
            current = await self.stream_meta(meta.path)
            return current is None or current.stream_id != meta.stream_id or current.version != meta.version

        return await self._wakeups.wait(
            wake_key(meta.stream_id), after_seq=meta.version, timeout=timeout, has_news=has_news, recheck=self._stream_recheck
        )


__all__ = ["SQLStreams", "StreamStatements", "stream_tables"]
