"""Where the Durable Streams profile keeps its streams: the records and the small port a store
implements to keep them (the memory store: dicts; the SQLite and PostgreSQL stores: a stream
table and a chunk table beside the run log, adapters/sql_streams.py).

A stream is a row (`StreamMeta`) and its data, immutable `Chunk`s keyed by the stream's internal
id. Every change goes through `stream_write`: a compare-and-set on the rows' versions, committed
with its chunks in one transaction, or not at all (False: another writer was first; the caller
reads again and decides again). So an idempotent producer's state, a close and the append that
comes with them are committed together, and what is acknowledged is durable.

The core knows nothing of them: the profile reaches the engine's store through this port.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs


@attrs.frozen(kw_only=True)
class StreamMeta:
    """One stream's row. Positions count bytes (JSON streams: messages) from the stream's start."""

    #: The stream's name as stored (per owner when auth is on: runengine.ownership.session_key).
    path: str
    #: Its internal id: a stream deleted and made again at the same path is another stream.
    stream_id: str
    content_type: str
    owner: str | None = None
    created_us: int
    #: The last read or write (µs), for a sliding `ttl` (seconds).
    touched_us: int
    ttl: int | None = None
    expires_us: int | None = None
    #: The position after the last byte (message).
    tail: int = 0
    closed: bool = False
    #: The source stream's path and the position the fork's own data starts at (0: no fork).
    fork_of: str | None = None
    fork_pos: int = 0
    #: How many forks read this stream's data; a deleted stream with forks stays, `deleted`.
    forks: int = 0
    deleted: bool = False
    #: The writers' state as JSON text (idempotent producers, the last Stream-Seq, the closing tuple).
    writers: str = "{}"
    #: Bumped by every write; what `stream_write` compares.
    version: int = 1


@attrs.frozen
class Chunk:
    """The data of one append, positions [start, end): bytes, or a JSON stream's messages joined by ","."""

    start: int
    end: int
    data: bytes


@attrs.frozen(kw_only=True)
class StreamWrite:
    """Rows changed together with their new chunks.

    `rows`: (the row as read, the row to write); (None, new): insert (fails if the path is
    taken); (old, None): delete. Each written row's version is the one read plus one (1 for an
    insert). `chunks`: (stream id, chunk) to add. `drop`: stream ids whose chunks go."""

    rows: tuple[tuple[StreamMeta | None, StreamMeta | None], ...]
    chunks: tuple[tuple[str, Chunk], ...] = ()
    drop: tuple[str, ...] = ()


def wake_key(stream_id: str) -> str:
    """The key a stream's writes wake its readers by, beside the run ids in a store's wake-ups
    (no run id starts with "ds:" followed by a 32-digit hex id the store made)."""
    return "ds:" + stream_id


@runtime_checkable
class DurableStreamStore(Protocol):
    """A store that keeps Durable Streams."""

    async def stream_meta(self, path: str) -> StreamMeta | None:
        """The stream's row, or None."""

    async def stream_chunks(self, stream_id: str, *, start: int, end: int, limit: int) -> list[Chunk]:
        """The stream's chunks holding positions in [start, end), in order, at most `limit`."""

    async def stream_write(self, write: StreamWrite) -> bool:
        """Commit `write` if every row is still as read; False (nothing written) otherwise."""

    async def stream_touch(self, path: str, at_us: int) -> None:
        """Record a read at `at_us` (a sliding TTL starts again); no version change, no wake-up."""

    async def stream_wait(self, meta: StreamMeta, *, timeout: float) -> bool:
        """Whether the stream changed since `meta` (a write, or it went) within `timeout` seconds."""


__all__ = ["Chunk", "DurableStreamStore", "StreamMeta", "StreamWrite", "wake_key"]
