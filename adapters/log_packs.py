"""A run's rows packed beside its log, for a long resume to read at a third of their cost (SQLite).

Reading a run's rows back costs ~0.65 µs a row in sqlite3 (a Python object per column of each
row: 65 ms for a 100,000-step run, most of a resume's reading); the same rows packed into one
msgpack blob decode in ~0.2 µs a row. So where a run comes to rest (it waits for input, sleeps
or is suspended: where the writer takes its snapshot, and where the next engine takes it up
from), the rows it has not packed yet, PACK_MIN or more, are packed in chunks of PACK_CHUNK rows
at most and committed with that snapshot. A run packs each of its rows once: the next rest packs
only what came after the last chunk.

The log stays the truth: a chunk is the rows `first_seq .. last_seq` exactly as stored (seq,
type, time in µs, payload text), and the rows are never changed once appended (a run's rows,
and its chunks, go only with the run). A reader takes chunks only while each follows on from
the last seq it has and holds exactly the seqs it names (a chunk that does not decode, or
names other seqs, ends the packed part: the log itself is read from there), and never a chunk
past the seq it was asked up to.

These functions run on a store's database thread, with its connection.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

#: A run at rest with at least this many rows not packed yet packs them.
PACK_MIN = 5_000
#: Rows per chunk at most (a resume holds a chunk's rows at once).
PACK_CHUNK = 50_000

TABLE = """CREATE TABLE IF NOT EXISTS log_packs (
    run_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    packed BLOB NOT NULL,
    PRIMARY KEY (run_id, first_seq)
)"""
DELETE = "DELETE FROM log_packs WHERE run_id = ?"
_PACKED_UPTO = "SELECT max(last_seq) FROM log_packs WHERE run_id = ?"
_ROWS = "SELECT seq, type, at_us, data FROM events WHERE run_id = ? AND seq > ? AND seq <= ? ORDER BY seq"
_SAVE = "INSERT OR IGNORE INTO log_packs (run_id, first_seq, last_seq, packed) VALUES (?, ?, ?, ?)"
_CHUNKS = (
    "SELECT first_seq, last_seq, packed FROM log_packs WHERE run_id = ? AND first_seq > ? AND last_seq <= ?"
    " ORDER BY first_seq"
)

_Row = tuple[int, str, int, str]
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[_Row]).decode


def pack_statements(raw: sqlite3.Connection, run_id: str, upto_seq: int) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements that pack `run_id`'s committed rows after its last chunk up to `upto_seq`
    (none: fewer than PACK_MIN of them, or not all there)."""
    (packed,) = raw.execute(_PACKED_UPTO, (run_id,)).fetchone()
    after = packed or 0
    if upto_seq - after < PACK_MIN:
        return []
    rows = raw.execute(_ROWS, (run_id, after, upto_seq)).fetchall()
    if len(rows) != upto_seq - after:  # (seqs are unique: as many rows as seqs is every one)
        return []
    statements = []
    size = -(-len(rows) // -(-len(rows) // PACK_CHUNK))  # chunks of about the same size, none larger
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        statements.append((_SAVE, (run_id, chunk[0][0], chunk[-1][0], _encode(chunk))))
    return statements


def packed_rows(raw: sqlite3.Connection, run_id: str, after_seq: int, upto_seq: int, limit: int) -> list[_Row]:
    """The packed rows of `run_id` right after `after_seq`: whole chunks that follow on from it,
    each holding exactly the seqs it names, ending at `upto_seq` at the latest, until `limit`
    rows or more are had."""
    rows: list[_Row] = []
    expected = after_seq + 1
    for first, last, packed in raw.execute(_CHUNKS, (run_id, after_seq, upto_seq)):
        if first != expected:
            break
        try:
            chunk = _decode(packed)
        except msgspec.DecodeError:
            break
        if not chunk or len(chunk) != last - first + 1 or chunk[0][0] != first or chunk[-1][0] != last:
            break
        rows += chunk
        expected = last + 1
        if len(rows) >= limit:
            break
    return rows


__all__ = ["DELETE", "PACK_CHUNK", "PACK_MIN", "TABLE", "pack_statements", "packed_rows"]
