"""Issue 20 item 8, over real HTTP: what one principal may hold open is bounded per principal.
Sync requests waiting for their run are counted over every surface (native, ACP, Kore,
Platform, and the Durable Streams long-polls) and refused with a 429 in the one error format past `sync_limit`, before any run is
created; another principal is not affected. Webhook registrations are counted per principal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import httpx
import pytest

from httpkit import demo_engine
from profile_http import serve_app
from runengine import RunEngine
from runengine.adapters.server import build_app
from runengine.http.openstreams import OpenStreams
from runengine.limits import MAX_WEBHOOKS_PER_PRINCIPAL

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

ANYIO_BACKENDS = ("asyncio",)  # uvicorn
SYNC_LIMIT = 2
HOOK_URL = "https://93.184.216.34/hook"  # a public literal address: never called here


def principal(headers: Any) -> str | None:
    return headers.get("x-user")


@pytest.fixture
async def served() -> AsyncIterator[tuple[RunEngine, OpenStreams, str]]:
    engine = demo_engine()
    streams = OpenStreams(sync_limit=SYNC_LIMIT)
    async with engine:
        async with serve_app(build_app(engine, auth=principal, streams=streams)) as base:
            yield engine, streams, base


def client(base: str, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers={"x-user": user}, timeout=30.0)


def too_many(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limited" and error["details"] == {"limit": SYNC_LIMIT, "open": SYNC_LIMIT}, error
    assert response.headers["retry-after"] == "1"


async def run_count(engine: RunEngine) -> int:
    return len((await engine.list_runs(limit=200)).runs)


@pytest.mark.anyio
async def test_sync_waits_are_capped_per_principal_on_every_surface(served) -> None:
    engine, streams, base = served
    later = (datetime.now(timezone.utc) + timedelta(days=29)).isoformat()
    held: list[httpx.Response] = []
    async with client(base, "alice") as alice, client(base, "bob") as bob, anyio.create_task_group() as tg:

        async def hold() -> None:  # a sync request for a run 29 days ahead: it waits
            held.append(await alice.post("/runs", json={"agent": "echo", "input": "x", "mode": "sync", "start_at": later}))

        for _ in range(SYNC_LIMIT):
            tg.start_soon(hold)
        with anyio.fail_after(10):
            while streams.waiting_count("alice") < SYNC_LIMIT:
                await anyio.sleep(0.02)
        before = await run_count(engine)

        too_many(await alice.post("/runs", json={"agent": "echo", "input": "x", "mode": "sync"}))
        too_many(await alice.post("/acp/runs", json={"agent_name": "echo", "mode": "sync", "input": [{"parts": [{"content": "x"}]}]}))
        too_many(await alice.post("/kore/apps/echo/environments/dev/runs/execute", json={
            "sessionIdentity": [{"type": "userReference", "value": "u1"}],
            "input": [{"type": "text", "content": "x"}], "invoke": {"tasks": [{"type": "agent", "name": "echo"}]},
        }))
        session = (await alice.post("/platform/apps/echo/sessions", json={})).json()["session_id"]
        too_many(await alice.post("/platform/apps/echo/execute", json={"message": "x", "session_id": session}))
        assert (await alice.put("/ds/v1/stream/quota")).status_code == 201  # a Durable Streams long-poll waits too
        too_many(await alice.get("/ds/v1/stream/quota", params={"offset": "now", "live": "long-poll"}))
        assert await run_count(engine) == before  # a refusal starts nothing
        # What does not wait is not counted: async runs and reads go on.
        assert (await alice.post("/runs", json={"agent": "echo", "input": "x", "mode": "async"})).status_code == 202
        # Another principal has a count of its own.
        ok = await bob.post("/runs", json={"agent": "echo", "input": "bob", "mode": "sync"})
        assert ok.status_code == 200 and ok.json()["status"] == "completed", ok.text

        # A wait that ends gives its place back.
        pending = (await alice.get("/runs", params={"status": "pending"})).json()["runs"]
        await engine.cancel(pending[0]["run_id"])
        with anyio.fail_after(10):
            while streams.waiting_count("alice") >= SYNC_LIMIT:
                await anyio.sleep(0.02)
        ok = await alice.post("/runs", json={"agent": "echo", "input": "again", "mode": "sync"})
        assert ok.status_code == 200 and ok.json()["status"] == "completed", ok.text
        for run in (await alice.get("/runs", params={"status": "pending"})).json()["runs"]:
            await engine.cancel(run["run_id"])
    assert sorted(r.json()["status"] for r in held) == ["cancelled"] * SYNC_LIMIT
    assert streams.waiting_count("alice") == 0


@pytest.mark.anyio
async def test_webhook_registrations_are_counted_per_principal(served) -> None:
    _, _, base = served
    body = {"url": HOOK_URL, "events": ["session.ended"], "secret": "s3cret"}
    async with client(base, "mallory") as mallory, client(base, "alice") as alice:
        for _ in range(MAX_WEBHOOKS_PER_PRINCIPAL):
            assert (await mallory.post("/platform/apps/echo/webhooks", json=body)).status_code == 201
        refused = await mallory.post("/platform/apps/echo/webhooks", json=body)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_request", refused.text
        # Alice's registrations are her own count: mallory filling his tells her nothing and blocks nothing.
        mine = await alice.post("/platform/apps/echo/webhooks", json=body)
        assert mine.status_code == 201, mine.text
        listed = (await alice.get("/platform/apps/echo/webhooks")).json()["webhooks"]
        assert [w["webhook_id"] for w in listed] == [mine.json()["webhook_id"]]
