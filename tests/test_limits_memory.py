"""Memory under the limits: many sessions of many runs, each request as large as the limits allow
(metadata, session metadata, a full rotation of Kore attachments), on every surface of one
`runengine serve` process (SQLite). The server's resident memory stays under a stated bound and
stops growing, and a session read is the same size after 1 run and after all of them.

Scaled to fit ~90 s on 2 shared cores: SESSIONS x RUNS per surface, 30 x 25 (100 x 100 on all
four surfaces is 40,000 sync runs: about 7 minutes here at ~95 runs/s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from runengine.limits import MAX_ACTIVE_ATTACHMENTS, MAX_FILE_ID_LENGTH, MAX_METADATA_BYTES, MAX_SESSION_METADATA_BYTES

from faultkit import ServeProcess, rss_bytes

SESSIONS = 30
RUNS = 25
CONCURRENCY = 8
#: The bound stated in docs/security.md for this load: resident memory of the whole server.
RSS_BOUND = 120 * 1024 * 1024
#: Growth allowed over the second half of the load (caches warming, allocator slack).
GROWTH_BOUND = 16 * 1024 * 1024
KORE = "/kore/apps/echo/environments/draft/runs"


ANYIO_BACKENDS = ("asyncio",)


def most(limit: int, key: str = "m") -> dict[str, str]:
    """Metadata of one key, as large as `limit` allows."""
    return {key: "x" * (limit - len(key) - 8)}


async def native_session(http: httpx.AsyncClient, index: int) -> None:
    created = await http.post("/sessions", json={"metadata": most(MAX_SESSION_METADATA_BYTES)})
    assert created.status_code == 201, created.text
    session_id = created.json()["session_id"]
    for _ in range(RUNS):
        run = await http.post("/runs", json={"agent": "echo", "input": "hi", "session_id": session_id, "metadata": most(MAX_METADATA_BYTES)})
        assert run.status_code == 200 and run.json()["status"] == "completed", run.text


async def platform_session(http: httpx.AsyncClient, index: int) -> None:
    created = await http.post("/platform/apps/echo/sessions", json={"metadata": most(MAX_SESSION_METADATA_BYTES)})
    assert created.status_code == 201, created.text
    session_id = created.json()["session_id"]
    for _ in range(RUNS):
        body = {"message": "hi", "session_id": session_id, "metadata": most(MAX_METADATA_BYTES)}
        response = await http.post("/platform/apps/echo/execute", json=body)
        assert response.status_code == 200, response.text


async def kore_session(http: httpx.AsyncClient, index: int) -> None:
    active: list[str] = []
    for turn in range(RUNS):
        new = [f"s{index}-t{turn}-{i}-".ljust(MAX_FILE_ID_LENGTH, "x") for i in range(MAX_ACTIVE_ATTACHMENTS)]
        body = {
            "sessionIdentity": [{"type": "sessionReference", "value": f"memory-{index}"}],
            "input": [{"type": "text", "content": "hi"}],
            "metadata": most(MAX_METADATA_BYTES),
            "attachments": {"includeFiles": new, "excludeFiles": active},
        }
        response = await http.post(f"{KORE}/execute", json=body)
        assert response.status_code == 200, response.text
        active = new


async def acp_session(http: httpx.AsyncClient, index: int) -> None:
    session_id = f"00000000-0000-4000-8000-{index:012d}"
    for _ in range(RUNS):
        body = {"agent_name": "echo", "session_id": session_id, "input": [{"parts": [{"content": "x" * MAX_METADATA_BYTES}]}]}
        response = await http.post("/acp/runs", json=body)
        assert response.status_code == 200 and response.json()["status"] == "completed", response.text


SURFACES = (native_session, platform_session, kore_session, acp_session)


@pytest.mark.slow
@pytest.mark.anyio
async def test_server_memory_stays_bounded_under_maximal_sessions(tmp_path: Path) -> None:
    server = ServeProcess(["--store", f"sqlite:///{tmp_path / 'memory.db'}", "--delay", "0", "--log-level", "warning", "--rate-limit", "off"], tmp_path / "serve.log")
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=60.0) as http:
            # A session read after one run, to compare with the same read after all of them.
            probe = (await http.post("/sessions", json={"metadata": most(MAX_SESSION_METADATA_BYTES)})).json()["session_id"]
            await http.post("/runs", json={"agent": "echo", "input": "hi", "session_id": probe})
            read_one = await http.get(f"/sessions/{probe}")

            samples: list[tuple[int, int]] = []
            jobs = [(surface, index) for index in range(SESSIONS) for surface in SURFACES]
            done = 0

            async def worker(queue: list[tuple[Any, int]]) -> None:
                nonlocal done
                while queue:
                    surface, index = queue.pop()
                    await surface(http, index)
                    done += 1
                    if done % (len(jobs) // 8) == 0:
                        samples.append((done, rss_bytes(server.pid)))

            queue = list(reversed(jobs))
            async with anyio.create_task_group() as tg:
                for _ in range(CONCURRENCY):
                    tg.start_soon(worker, queue)

            for _ in range(RUNS - 1):
                await http.post("/runs", json={"agent": "echo", "input": "hi", "session_id": probe})
            read_all = await http.get(f"/sessions/{probe}")
            rss_end = rss_bytes(server.pid)
    finally:
        server.kill()

    table = "\n".join(f"| {n} | {n * RUNS} | {rss / 2**20:.1f} |" for n, rss in samples)
    print(
        f"\n{SESSIONS} sessions x {RUNS} runs on each of {len(SURFACES)} surfaces ({len(jobs) * RUNS} runs):\n"
        f"| sessions done | runs done | server RSS (MiB) |\n|---:|---:|---:|\n{table}\n"
        f"end: {rss_end / 2**20:.1f} MiB; session read after 1 run {len(read_one.content)} B, after {RUNS}: {len(read_all.content)} B"
    )
    assert rss_end < RSS_BOUND, rss_end
    half = samples[len(samples) // 2][1]
    assert rss_end - half < GROWTH_BOUND, (half, rss_end)
    assert read_all.json()["runs"]["count"] == RUNS
    # The same object; only the two counts ("1" -> "25") differ, by one digit each.
    assert len(read_all.content) == len(read_one.content) + 2 * (len(str(RUNS)) - 1)
