"""The /v1 profile (seed 004, Threads/Runs API) over real HTTP, written from the seed's text: create
(201 run_id + trace_id) and list runs per thread and globally with every listed field, paging with
`before`, get, `:cancel`, interactive input (32 KB), the SSE stream with seq, after_seq and a client
that reconnects with Last-Event-ID, and authentication (401) and ownership (404) on every route.
Beyond the seed: what a waiting run asks for (`x_runengine_waiting_for`), JSON input (a Pydantic AI
approval), and a persona_id whose version the agent does not have, refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from httpkit import NO_LIFESPAN_H11, demo_engine, serve
from runengine.adapters.asgi import ASGIApp
from runengine.adapters.profiles.threads import ThreadsProfile
from runengine.adapters.server import build_app
from runengine.context import RunContext
from runengine.engine import RunEngine
from runengine.http.auth import Principal
from runengine.integrations.pydantic_ai import agent_from_pydantic_ai

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

#: Every field the seed lists for a row of GET /v1/runs.
SEED_ROW_FIELDS = {
    "run_id", "org_id", "thread_id", "status", "model", "persona_id", "total_input_tokens",
    "total_output_tokens", "total_cost_usd", "duration_ms", "cache_hit_rate", "credits_used",
    "created_at", "completed_at", "failed_at", "created_by_user_id", "created_by_user_name", "created_by_email",
}
#: The extension field (not in the seed) on a run row and detail: what a waiting run asks for.
WAITING_FOR = "x_runengine_waiting_for"
#: The fields the seed lists for GET /v1/runs/{run_id}.
SEED_DETAIL_FIELDS = {"run_id", "org_id", "thread_id", "created_by_user_id", "status", "created_at", "trace_id"}
ALICE = Principal(id="u-alice", org_id="org-1", user_name="alice", email="alice@example.com")
USERS: dict[str, Any] = {"Bearer a": ALICE, "Bearer b": "bob"}  # a rich principal and a plain string


ANYIO_BACKENDS = ("asyncio",)


def users(headers: Any) -> Any:
    return USERS.get(headers.get("authorization", ""))


def make_engine() -> RunEngine:
    engine = demo_engine()

    @engine.agent("meta", version="3")
    async def meta(ctx: RunContext) -> dict[str, Any]:
        await ctx.usage(input_tokens=10, output_tokens=4, cost=0.25)
        return {"input": ctx.input, "route_id": ctx.metadata.get("route_id")}

    @engine.agent("broken")
    async def broken(ctx: RunContext) -> None:
        raise RuntimeError("boom")

    return engine


@asynccontextmanager
async def v1(auth: Any = None, **options: Any) -> AsyncIterator[tuple[RunEngine, httpx.AsyncClient]]:
    """The composed app (`build_app`, as `runengine serve` serves it) over uvicorn; a client on /v1."""
    engine = make_engine()
    async with engine:
        async with serve(ASGIApp(build_app(engine, auth=auth, **options)), **NO_LIFESPAN_H11) as base:
            async with httpx.AsyncClient(base_url=base + "/v1", timeout=30) as client:
                yield engine, client


async def wait_for(client: httpx.AsyncClient, run_id: str, *statuses: str, **kw: Any) -> dict[str, Any]:
    with anyio.fail_after(20):
        while True:
            run = (await client.get(f"/runs/{run_id}", **kw)).json()
            if run["status"] in statuses:
                return run
            await anyio.sleep(0.02)


async def frames(response: httpx.Response, stop_after: int | None = None) -> list[dict[str, Any]]:
    """SSE frames as the seed prints them: an `id: <seq>` line and a `data: {...}` line (no event line)."""
    out: list[dict[str, Any]] = []
    lines: list[str] = []
    async for line in response.aiter_lines():
        if line:
            lines.append(line)
            continue
        if lines and not all(x.startswith(":") for x in lines):  # a keep-alive comment is no frame
            fields = dict(x.split(": ", 1) for x in lines)
            assert set(fields) == {"id", "data"}, lines
            data = json.loads(fields["data"])
            assert set(data) == {"seq", "type", "data", "created_at"} and int(fields["id"]) == data["seq"]
            out.append(data)
            if stop_after is not None and len(out) >= stop_after:
                return out
        lines = []
    return out


async def stream(client: httpx.AsyncClient, run_id: str, stop_after: int | None = None, **kw: Any) -> list[dict[str, Any]]:
    async with client.stream("GET", f"/runs/{run_id}/events", **kw) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        return await frames(response, stop_after)


@pytest.mark.anyio
async def test_create_list_and_get_in_the_seed_shapes() -> None:
    async with v1() as (engine, client):
        created = await client.post("/threads/th-1/runs", json={"input": "hello there"})
        assert created.status_code == 201 and set(created.json()) == {"run_id", "trace_id"}
        run_id = created.json()["run_id"]
        detail = await wait_for(client, run_id, "completed")
        assert SEED_DETAIL_FIELDS <= set(detail) and detail["thread_id"] == "th-1"
        assert detail["trace_id"] == created.json()["trace_id"]
        state = await engine.status(run_id)
        assert state.agent == "echo" and state.input == "hello there"  # the default agent, `input` as ctx.input

        # No body at all: every field is optional.
        bare = await client.post("/threads/th-1/runs")
        assert bare.status_code == 201
        await wait_for(client, bare.json()["run_id"], "completed")
        # persona_id "key@version" runs agent `key`; route_id reaches ctx.metadata; usage fills the figures.
        meta = await client.post("/threads/th-2/runs", json={"persona_id": "meta@3", "route_id": "r-fast", "input": {"x": [1]}})
        meta_id = meta.json()["run_id"]
        await wait_for(client, meta_id, "completed")
        state = await engine.status(meta_id)
        assert state.output == {"input": {"x": [1]}, "route_id": "r-fast"}
        assert state.metadata["persona_version"] == "3"
        keyed = [await client.post("/threads/th-3/runs", json=body, headers={"idempotency-key": "k-1"})
                 for body in ({"input": "once"}, {"input": "once"}, {"input": "other"})]
        assert keyed[0].status_code == keyed[1].status_code == 201 and keyed[0].json() == keyed[1].json()  # a retry
        assert keyed[2].status_code == 422 and keyed[2].json()["error"]["code"] == "idempotency_error"
        assert len((await client.get("/threads/th-3/runs")).json()) == 1
        await wait_for(client, keyed[0].json()["run_id"], "completed")
        failed = (await client.post("/threads/th-2/runs", json={"persona_id": "broken"})).json()["run_id"]
        await wait_for(client, failed, "failed")

        in_thread = (await client.get("/threads/th-1/runs")).json()
        assert [r["run_id"] for r in in_thread] == [bare.json()["run_id"], run_id]
        assert all(set(r) == {"run_id", "status", "created_at"} and r["status"] == "completed" for r in in_thread)
        assert len((await client.get("/threads/th-1/runs", params={"limit": 1})).json()) == 1

        rows = {r["run_id"]: r for r in (await client.get("/runs")).json()}
        assert set(rows) == {run_id, bare.json()["run_id"], meta_id, failed, keyed[0].json()["run_id"]}
        assert all(set(r) == SEED_ROW_FIELDS | {WAITING_FOR} and r[WAITING_FOR] is None for r in rows.values())
        echo, figures, fail = rows[run_id], rows[meta_id], rows[failed]
        assert echo["total_input_tokens"] is None and echo["total_cost_usd"] is None  # no usage reported
        assert (figures["total_input_tokens"], figures["total_output_tokens"], figures["total_cost_usd"]) == (10, 4, 0.25)
        assert figures["persona_id"] == "meta@3" and figures["thread_id"] == "th-2"
        assert echo["completed_at"] is not None and echo["failed_at"] is None and echo["duration_ms"] >= 0
        assert fail["status"] == "failed" and fail["failed_at"] is not None and fail["completed_at"] is None
        assert echo["created_by_user_id"] is None and echo["org_id"] is None  # auth off: nobody
        assert [r["run_id"] for r in (await client.get("/runs", params={"status": "failed"})).json()] == [failed]


@pytest.mark.anyio
async def test_paging_with_before_lists_every_run_once() -> None:
    async with v1() as (_, client):
        ids = [(await client.post(f"/threads/t{i % 3}/runs", json={"input": f"n{i}"})).json()["run_id"] for i in range(7)]
        for run_id in ids:
            await wait_for(client, run_id, "completed")
        for limit in (1, 2, 3, 7, 10):
            seen: list[str] = []
            params: dict[str, Any] = {"limit": limit}
            while True:
                page = (await client.get("/runs", params=params)).json()
                seen += [r["run_id"] for r in page]
                if len(page) < limit:
                    break
                params["before"] = page[-1]["run_id"]
            assert seen == list(reversed(ids)), limit
        waiting = (await client.post("/threads/t9/runs", json={"persona_id": "approval"})).json()["run_id"]
        await wait_for(client, waiting, "waiting_for_input")
        assert [r["run_id"] for r in (await client.get("/runs", params={"status": "waiting_for_input"})).json()] == [waiting]
        completed = (await client.get("/runs", params={"status": "completed", "before": ids[3]})).json()
        assert [r["run_id"] for r in completed] == list(reversed(ids[:3]))
        for bad in ({"status": "sleeping"}, {"limit": "0"}, {"limit": "x"}):
            assert (await client.get("/runs", params=bad)).status_code == 400
        assert (await client.get("/runs", params={"before": "none-such"})).status_code == 404


@pytest.mark.anyio
async def test_input_while_waiting_within_32_kb_and_cancel() -> None:
    async with v1() as (_, client):
        run_id = (await client.post("/threads/t/runs", json={"persona_id": "approval", "input": "ship"})).json()["run_id"]
        await wait_for(client, run_id, "waiting_for_input")
        too_big = await client.post(f"/runs/{run_id}/input", json={"content": "x" * (32 * 1024 + 1)})
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
        for bad in ({"content": None}, {}, {"content": "yes", "extra": 1}):
            response = await client.post(f"/runs/{run_id}/input", json=bad)
            assert response.status_code == 400 and set(response.json()) == {"error"}
        assert (await client.get(f"/runs/{run_id}")).json()["status"] == "waiting_for_input"  # nothing changed
        ok = await client.post(f"/runs/{run_id}/input", json={"content": "y" * (32 * 1024 - 3) + "yes"})
        assert ok.status_code == 200 and ok.json() == {"ok": True}
        await wait_for(client, run_id, "completed")
        assert (await client.post(f"/runs/{run_id}/input", json={"content": "again"})).status_code == 409

        sleeping = (await client.post("/threads/t/runs", json={"persona_id": "sleeper", "input": 3600})).json()["run_id"]
        await wait_for(client, sleeping, "running")
        cancelled = await client.post(f"/runs/{sleeping}:cancel")
        assert cancelled.status_code == 200 and cancelled.json() == {"ok": True}
        assert (await client.get(f"/runs/{sleeping}")).json()["status"] == "cancelled"
        events = await stream(client, sleeping)
        assert events[-1]["type"] == "run.cancelled"
        assert (await client.post(f"/runs/{sleeping}:cancel")).json() == {"ok": True}  # again: as it is
        assert (await client.post("/runs/none-such:cancel")).status_code == 404


@pytest.mark.anyio
async def test_a_waiting_run_says_what_it_asks_for() -> None:
    """The seed has no field for it: `x_runengine_waiting_for` holds what the agent's ctx.ask asked,
    on the run and in the listing, null once it goes on; the document describes it."""
    async with v1() as (_, client):
        run_id = (await client.post("/threads/t/runs", json={"persona_id": "approval", "input": "ship v2"})).json()["run_id"]
        detail = await wait_for(client, run_id, "waiting_for_input")
        asked = {"question": "Approve: ship v2?", "options": ["yes", "no"]}
        assert detail[WAITING_FOR] == asked
        [row] = (await client.get("/runs", params={"status": "waiting_for_input"})).json()
        assert row[WAITING_FOR] == asked
        assert (await client.post(f"/runs/{run_id}/input", json={"content": "yes"})).json() == {"ok": True}
        assert (await wait_for(client, run_id, "completed"))[WAITING_FOR] is None
        schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
        for shape in ("RunRow", "RunDetail"):
            assert WAITING_FOR in schemas[shape]["properties"], shape
            assert "waiting_for_input" in schemas[shape]["properties"][WAITING_FOR]["description"]


@pytest.mark.anyio
async def test_input_may_be_json_as_a_pydantic_ai_approval_takes_it() -> None:
    """docs/integrations.md: an approval is `true`, "yes" or {"approved": true}, a deferred tool's
    input is its result: /v1 takes any JSON value but null as `content` (a string, as the seed has it,
    too), and counts 32 KB of its JSON."""
    from test_integration_pydantic_ai import approval_agent

    ran: list[str] = []
    async with v1() as (engine, client):
        engine.agents.add(agent_from_pydantic_ai(approval_agent(ran), name="guarded"))
        run_id = (await client.post("/threads/t/runs", json={"persona_id": "guarded", "input": "clean up"})).json()["run_id"]
        await wait_for(client, run_id, "waiting_for_input")
        null = await client.post(f"/runs/{run_id}/input", json={"content": None})
        assert null.status_code == 400 and null.json()["error"]["details"]["field"] == "content"
        assert "any JSON value but null" in null.json()["error"]["message"]
        too_big = await client.post(f"/runs/{run_id}/input", json={"content": {"approved": True, "note": "x" * 32 * 1024}})
        assert too_big.status_code == 413 and too_big.json()["error"]["details"]["limit_bytes"] == 32 * 1024
        assert (await client.get(f"/runs/{run_id}")).json()["status"] == "waiting_for_input" and ran == []

        approved = await client.post(f"/runs/{run_id}/input", json={"content": {"approved": True}})
        assert approved.status_code == 200 and approved.json() == {"ok": True}
        weather = {"city": "Oslo", "sky": "rain", "celsius": 3}
        with anyio.fail_after(20):  # the deferred tool's turn: its result comes as JSON too
            while (await client.get(f"/runs/{run_id}")).json()[WAITING_FOR].get("tool") != "weather":
                await anyio.sleep(0.02)
        assert (await client.post(f"/runs/{run_id}/input", json={"content": weather})).status_code == 200
        await wait_for(client, run_id, "completed")
        state = await engine.status(run_id)
        assert ran == ["/tmp/x"] and list(state.inputs) == [{"approved": True}, weather]


@pytest.mark.anyio
async def test_a_persona_version_the_agent_does_not_have_is_refused() -> None:
    """persona_id "key@version" runs the agent `key` at that version only: an agent with no version,
    or another one, is answered 404 with what to send instead, and nothing is created."""
    async with v1() as (engine, client):
        for persona, says in (("approval@1", "has no version"), ("meta@2", "is at version '3'")):
            refused = await client.post("/threads/t/runs", json={"persona_id": persona})
            assert refused.status_code == 404, (persona, refused.text)
            error = refused.json()["error"]
            assert says in error["message"] and error["details"]["field"] == "persona_id", error
        assert (await engine.list_runs()).runs == ()
        for persona in ("meta@3", "meta", "approval"):
            assert (await client.post("/threads/t/runs", json={"persona_id": persona})).status_code == 201, persona


@pytest.mark.anyio
async def test_a_reconnecting_stream_client_sees_every_event_once() -> None:
    async with v1() as (engine, client):
        run_id = (await client.post("/threads/t/runs", json={"persona_id": "approval", "input": "go"})).json()["run_id"]
        # The client drops the stream mid-way through, and again at the wait for input.
        seen = await stream(client, run_id, stop_after=3)
        async with client.stream("GET", f"/runs/{run_id}/events", headers={"last-event-id": str(seen[-1]["seq"])}) as response:
            async for frame in _iter_frames(response):
                seen.append(frame)
                if frame["type"] == "run.waiting_for_input":
                    break
        assert (await client.post(f"/runs/{run_id}/input", json={"content": "yes"})).json() == {"ok": True}
        seen += await stream(client, run_id, headers={"last-event-id": str(seen[-1]["seq"])})
        assert [f["seq"] for f in seen] == list(range(1, len(seen) + 1))  # no gap, no duplicate
        log = [e async for e in engine.events(run_id, follow=False)]
        assert [(f["seq"], f["type"]) for f in seen] == [(e.seq, e.type) for e in log]
        types = [f["type"] for f in seen]
        assert {"run.started", "message.delta", "run.waiting_for_input", "run.completed"} <= set(types)
        assert types[-1] == "run.completed"
        delta = next(f for f in seen if f["type"] == "message.delta")
        assert isinstance(delta["data"]["content"], str) and delta["created_at"].endswith("Z")
        # after_seq resumes too (and wins over Last-Event-ID); an ended run with nothing after the cursor ends at once.
        assert [f["seq"] for f in await stream(client, run_id, params={"after_seq": len(log) - 2})] == [len(log) - 1, len(log)]
        assert await stream(client, run_id, params={"after_seq": len(log)}) == []
        assert await stream(client, run_id, headers={"last-event-id": str(len(log))}) == []
        assert (await client.get(f"/runs/{run_id}/events", params={"after_seq": "-1"})).status_code == 400
        assert (await client.get(f"/runs/{run_id}/events", headers={"last-event-id": "x"})).status_code == 400


async def _iter_frames(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    data: str | None = None
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            data = line[6:]
        elif line == "" and data is not None:
            yield json.loads(data)
            data = None


@pytest.mark.anyio
async def test_bad_input_is_an_error_and_creates_nothing() -> None:
    async with v1() as (engine, client):
        bad_bodies: list[dict[str, Any]] = [
            {"content": b"{"},
            {"content": b"[]"},
            {"json": {"unknown": 1}},
            {"json": {"persona_id": 5}},
            {"json": {"persona_id": "@1"}},
            {"json": {"persona_id": "echo@"}},
            {"json": {"route_id": 7}},
            {"json": {"route_id": ""}},
            {"json": {"input": "x" * (300 * 1024)}},
        ]
        for kwargs in bad_bodies:
            response = await client.post("/threads/t/runs", **kwargs)
            assert response.status_code in (400, 413) and set(response.json()) == {"error"}, kwargs
        assert (await client.post("/threads/t/runs", json={"persona_id": "nobody@1"})).status_code == 404
        assert (await client.post("/threads/t/runs", json={"persona_id": "hidden"})).status_code == 404
        assert (await client.get("/runs")).json() == []
        assert (await client.get("/threads/t/runs")).status_code == 404  # no thread was begun
        assert (await engine.store.list_runs()).runs == ()


@pytest.mark.anyio
async def test_without_a_default_agent_persona_id_is_required() -> None:
    engine = make_engine()
    async with engine:
        profile = ThreadsProfile(engine, default_agent=None)
        async with serve(ASGIApp(profile), **NO_LIFESPAN_H11) as base, httpx.AsyncClient(base_url=base) as client:
            response = await client.post("/threads/t/runs", json={})
            assert response.status_code == 400 and response.json()["error"]["details"]["field"] == "persona_id"
            assert (await client.post("/threads/t/runs", json={"persona_id": "echo"})).status_code == 201


@pytest.mark.anyio
async def test_every_route_needs_credentials_and_runs_are_their_owners() -> None:
    alice, bob = {"authorization": "Bearer a"}, {"authorization": "Bearer b"}
    async with v1(auth=users) as (engine, client):
        run_id = (await client.post("/threads/ta/runs", json={"persona_id": "approval"}, headers=alice)).json()["run_id"]
        await wait_for(client, run_id, "waiting_for_input", headers=alice)
        probes = [
            ("POST", "/threads/ta/runs", {}),
            ("GET", "/threads/ta/runs", None),
            ("GET", "/runs", None),
            ("GET", f"/runs/{run_id}", None),
            ("POST", f"/runs/{run_id}:cancel", None),
            ("POST", f"/runs/{run_id}/input", {"content": "yes"}),
            ("GET", f"/runs/{run_id}/events", None),
        ]
        profile_routes = {(m, p) for m, p in ThreadsProfile(engine).routes()}
        assert len(profile_routes) == len(probes) + 1  # one probe per route, and the document:
        assert (await client.get("/openapi.json")).status_code == 200  # public, as the native API's
        for method, path, body in probes:
            for headers in ({}, {"authorization": "Bearer nobody"}):
                response = await client.request(method, path, json=body, headers=headers)
                assert response.status_code == 401 and response.json()["error"]["code"] == "authentication_error", path
        # Another principal: as if nothing existed.
        for method, path, body in probes[1:2] + probes[3:7]:
            response = await client.request(method, path, json=body, headers=bob)
            assert response.status_code == 404, (method, path)
        assert (await client.get("/runs", headers=bob)).json() == []
        assert (await client.get("/runs", params={"before": run_id}, headers=bob)).status_code == 404
        assert (await client.get(f"/runs/{run_id}", headers=alice)).json()["status"] == "waiting_for_input"
        # The principal's facts are on the run, from the hook's Principal (or the plain string).
        row = (await client.get("/runs", headers=alice)).json()[0]
        assert (row["org_id"], row["created_by_user_id"], row["created_by_user_name"], row["created_by_email"]) == (
            "org-1", "u-alice", "alice", "alice@example.com"
        )
        assert (await engine.status(run_id)).owner == "u-alice"
        mine = (await client.post("/threads/tb/runs", json={}, headers=bob)).json()["run_id"]
        detail = (await client.get(f"/runs/{mine}", headers=bob)).json()
        assert (detail["created_by_user_id"], detail["org_id"], detail["created_by_user_name"]) == ("bob", None, None)


@pytest.mark.anyio
async def test_the_default_agent_is_configurable_and_can_be_turned_off() -> None:
    """`runengine serve --default-agent meta` (build_app's default_agent): a run without persona_id
    runs it; with none, persona_id is required (400) and nothing is created."""
    async with v1(default_agent="meta") as (engine, client):
        created = await client.post("/threads/t-default/runs", json={"input": {"x": 1}})
        assert created.status_code == 201, created.text
        run = await wait_for(client, created.json()["run_id"], "completed")
        assert (await engine.status(run["run_id"])).agent == "meta"
    async with v1(default_agent=None) as (engine, client):
        refused = await client.post("/threads/t-none/runs", json={"input": "hi"})
        assert refused.status_code == 400 and refused.json()["error"]["details"]["field"] == "persona_id"
        assert (await engine.list_runs()).runs == ()
