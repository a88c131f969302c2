"""Rate limits on a PostgreSQL store hold across processes: two real `runengine serve` processes on
one real PostgreSQL allow a principal the limit once between them, not once each."""

from __future__ import annotations

from pathlib import Path

import anyio
import asyncpg
import httpx
import pytest

from faultkit import serve_process
from runengine.adapters.postgres import PostgresStore

pytestmark = pytest.mark.postgres

LIMIT = 5


ANYIO_BACKENDS = ("asyncio",)


@pytest.mark.anyio
async def test_two_serve_processes_share_one_limit(pg_schema_url: str, tmp_path: Path) -> None:
    args = ["--store", pg_schema_url, "--rate-limit", f"{LIMIT}/day", "--api-key", "alice=sk-a", "--api-key", "bob=sk-b"]
    with serve_process(args, tmp_path / "one.log") as one, serve_process(args, tmp_path / "two.log") as two:
        alice = {"authorization": "Bearer sk-a"}
        async with httpx.AsyncClient(timeout=30) as http:
            remaining = []
            for index in range(LIMIT):  # alternating between the processes
                base = (one, two)[index % 2].base
                response = await http.get(f"{base}/acp/agents" if index % 2 else f"{base}/runs", headers=alice)
                assert response.status_code == 200, response.text
                remaining.append(int(response.headers["x-ratelimit-remaining"]))
            assert remaining == [4, 3, 2, 1, 0]
            for server in (one, two):
                refused = await http.get(f"{server.base}/runs", headers={"x-api-key": "sk-a"})
                assert refused.status_code == 429 and refused.headers["retry-after"]
            bob = await http.get(f"{two.base}/runs", headers={"authorization": "Bearer sk-b"})
            assert bob.status_code == 200 and bob.headers["x-ratelimit-remaining"] == str(LIMIT - 1)


@pytest.mark.anyio
async def test_concurrent_takes_allow_exactly_the_limit_and_a_new_window_starts_again(pg_schema_url: str) -> None:
    async with PostgresStore.from_url(pg_schema_url, pool_max=8) as first, PostgresStore.from_url(pg_schema_url, pool_max=8) as second:
        results: list[int | None] = []

        async def take(store: PostgresStore) -> None:
            results.append(await store.rate_windows.take("alice", 1_000.0, 10))

        async with anyio.create_task_group() as tg:
            for index in range(40):
                tg.start_soon(take, (first, second)[index % 2])
        assert sorted(r for r in results if r is not None) == list(range(1, 11))
        assert results.count(None) == 30
        assert await first.rate_windows.take("bob", 1_000.0, 10) == 1  # per key
        assert await second.rate_windows.take("alice", 1_060.0, 10) == 1  # the next window
        assert await first.rate_windows.take("alice", 1_000.0, 10) == 2  # a clock behind counts in the row's window
        # Each process drops ended windows once per window: only the current ones stay.
        assert await first.rate_windows.take("carol", 1_120.0, 10) == 1
        conn = await asyncpg.connect(first.dsn, server_settings={"search_path": first.schema})
        try:
            assert await conn.fetchval("SELECT count(*) FROM runengine_rate_windows") == 1
        finally:
            await conn.close()
