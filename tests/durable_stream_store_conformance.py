"""The conformance suite of the Durable Streams profile's DurableStreamStore port (the profile owns
it, as the platform profile owns WebhookStore): mixed into the memory, SQLite and PostgreSQL
stores' conformance tests. Above all: a write is a compare-and-set of every row it changes, and a
lost one writes nothing (no row, no chunk)."""

from __future__ import annotations

import anyio
import attrs
import pytest

from runengine.adapters.profiles.durable_streams_store import Chunk, StreamMeta, StreamWrite
from runengine.testing.conformance import StoreFactory


def row(path: str, stream_id: str, **fields: object) -> StreamMeta:
    return StreamMeta(path=path, stream_id=stream_id, content_type="text/plain", created_us=1, touched_us=1, **fields)  # type: ignore[arg-type]


def bumped(meta: StreamMeta, **fields: object) -> StreamMeta:
    return attrs.evolve(meta, version=meta.version + 1, **fields)  # type: ignore[arg-type]


class DurableStreamStoreConformance:
    """Every behaviour of `DurableStreamStore` (with `store_factory`, as the core's suites)."""

    @pytest.mark.anyio
    async def test_rows_and_chunks(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            assert await store.stream_meta("s") is None
            meta = row("s", "a" * 32, tail=6, owner="alice", ttl=60, fork_of="src", fork_pos=2, writers='{"p":{}}')
            chunks = ((meta.stream_id, Chunk(2, 4, b"\x00\xff")), (meta.stream_id, Chunk(4, 6, b"ok")))
            assert await store.stream_write(StreamWrite(rows=((None, meta),), chunks=chunks)) is True
            assert await store.stream_meta("s") == meta
            read = store.stream_chunks
            assert await read(meta.stream_id, start=0, end=6, limit=10) == [Chunk(2, 4, b"\x00\xff"), Chunk(4, 6, b"ok")]
            assert await read(meta.stream_id, start=3, end=6, limit=10) == [Chunk(2, 4, b"\x00\xff"), Chunk(4, 6, b"ok")]
            assert await read(meta.stream_id, start=4, end=6, limit=10) == [Chunk(4, 6, b"ok")]
            assert await read(meta.stream_id, start=2, end=4, limit=10) == [Chunk(2, 4, b"\x00\xff")]
            assert await read(meta.stream_id, start=2, end=6, limit=1) == [Chunk(2, 4, b"\x00\xff")]
            assert await read(meta.stream_id, start=6, end=6, limit=10) == []
            assert await read("b" * 32, start=0, end=6, limit=10) == []

    @pytest.mark.anyio
    async def test_a_lost_compare_and_set_writes_nothing(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            first = row("s", "a" * 32)
            assert await store.stream_write(StreamWrite(rows=((None, first),))) is True
            assert await store.stream_write(StreamWrite(rows=((None, row("s", "c" * 32)),))) is False  # the path is taken
            won = bumped(first, tail=1)
            assert await store.stream_write(StreamWrite(rows=((first, won),), chunks=((first.stream_id, Chunk(0, 1, b"a")),)))
            # A second writer that read the same version loses, with its chunk.
            lost = bumped(first, tail=2)
            assert await store.stream_write(StreamWrite(rows=((first, lost),), chunks=((first.stream_id, Chunk(0, 2, b"bb")),))) is False
            assert await store.stream_meta("s") == won
            assert await store.stream_chunks(first.stream_id, start=0, end=9, limit=9) == [Chunk(0, 1, b"a")]
            # Two rows at once: one stale, so neither changes (nor the new row is made).
            other = row("t", "d" * 32)
            assert await store.stream_write(StreamWrite(rows=((None, other),)))
            fork = row("f", "e" * 32, fork_of="s")
            stale_pair = StreamWrite(rows=((None, fork), (first, bumped(first, forks=1)), (other, bumped(other, tail=5))))
            assert await store.stream_write(stale_pair) is False
            assert await store.stream_meta("f") is None
            assert await store.stream_meta("s") == won and await store.stream_meta("t") == other
            # A row made again at a path (another stream id) is not the row read before.
            assert await store.stream_write(StreamWrite(rows=((other, None),), drop=(other.stream_id,)))
            again = row("t", "9" * 32)
            assert await store.stream_write(StreamWrite(rows=((None, again),)))
            assert await store.stream_write(StreamWrite(rows=((other, bumped(other)),))) is False
            assert await store.stream_meta("t") == again

    @pytest.mark.anyio
    async def test_delete_and_drop(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            meta = row("s", "a" * 32, tail=1)
            assert await store.stream_write(StreamWrite(rows=((None, meta),), chunks=((meta.stream_id, Chunk(0, 1, b"x")),)))
            assert await store.stream_write(StreamWrite(rows=((meta, None),), drop=(meta.stream_id,)))
            assert await store.stream_meta("s") is None
            assert await store.stream_chunks(meta.stream_id, start=0, end=1, limit=5) == []
            assert await store.stream_write(StreamWrite(rows=((meta, None),))) is False  # already gone

    @pytest.mark.anyio
    async def test_a_touch_is_kept_by_later_writes(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            meta = row("s", "a" * 32, ttl=5)
            assert await store.stream_write(StreamWrite(rows=((None, meta),)))
            await store.stream_touch("s", 500)
            await store.stream_touch("s", 400)  # an earlier time never goes back
            touched = await store.stream_meta("s")
            assert touched is not None and touched.touched_us == 500 and touched.version == meta.version
            assert await store.stream_write(StreamWrite(rows=((meta, bumped(meta, tail=0, closed=True)),)))
            after = await store.stream_meta("s")
            assert after is not None and after.touched_us == 500 and after.closed

    @pytest.mark.anyio
    async def test_a_reader_waits_for_a_write(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            meta = row("s", "a" * 32)
            assert await store.stream_write(StreamWrite(rows=((None, meta),)))
            assert await store.stream_wait(meta, timeout=0.05) is False
            woken: list[bool] = []
            async with anyio.create_task_group() as tg:

                async def reader() -> None:
                    woken.append(await store.stream_wait(meta, timeout=10))

                tg.start_soon(reader)
                await anyio.sleep(0.05)
                assert await store.stream_write(StreamWrite(rows=((meta, bumped(meta, tail=1)),), chunks=((meta.stream_id, Chunk(0, 1, b"x")),)))
            assert woken == [True]
