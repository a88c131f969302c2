"""Issue 11, findings 1 and 2, over real HTTP: a session begun by a run belongs to that run's
principal (native and ACP), and an Idempotency-Key is one principal's (no joined-string
collision). The principals are named so that the old joined key "owner:key" collides:
("acme", "alice:order-1001") and ("acme:alice", "order-1001")."""

from __future__ import annotations

import uuid

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from httpkit import demo_engine, serve, sse_events, wait_status
from runengine import RunEngine, SessionNotFound
from runengine.adapters.asgi import engine_asgi_app

TOKENS = {"t-alice": "acme:alice", "t-bob": "acme"}


def auth_hook(headers: object) -> str | None:
    scheme, _, token = (headers.get("authorization") or "").partition(" ")  # type: ignore[attr-defined]
    return TOKENS.get(token) if scheme.lower() == "bearer" else None


ANYIO_BACKENDS = ("asyncio",)  # uvicorn


@pytest.fixture
async def clients():
    async with serve(engine_asgi_app(demo_engine(), auth=auth_hook)) as url:
        async with (
            httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer t-alice"}, timeout=30.0) as alice,
            httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer t-bob"}, timeout=30.0) as bob,
        ):
            yield alice, bob


def not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"


# -- finding 1: implicit sessions have an owner; issue 20 item 13: and a namespace per principal --


@pytest.mark.server
@pytest.mark.anyio
async def test_an_implicit_session_is_its_first_runs_principals(clients) -> None:
    alice, bob = clients
    waiting = await alice.post(
        "/runs", json={"agent": "approval", "input": "refund", "session_id": "support-ticket-1", "mode": "async"}
    )
    run_id = waiting.json()["run_id"]
    await wait_status(alice, run_id, "waiting_for_input")

    # Bob naming the same id gets a session of his own: no policy of his reaches alice's runs.
    for policy in ("reject", "interrupt", "enqueue", "allow"):
        r = await bob.post("/runs", json={"agent": "echo", "input": "x", "session_id": "support-ticket-1", "session_policy": policy})
        assert r.status_code == 200 and r.json()["status"] == "completed", r.text
        assert run_id not in r.text
    bobs = (await bob.get("/sessions/support-ticket-1")).json()
    assert bobs["runs"]["count"] == 4 and bobs["status"] == "active"
    history = (await bob.get("/sessions/support-ticket-1/history")).json()["messages"]
    assert "refund" not in str(history) and run_id not in str(history)
    bob_runs = (await bob.get("/runs", params={"session_id": "support-ticket-1"})).json()["runs"]
    assert len(bob_runs) == 4 and run_id not in str(bob_runs)
    assert (await bob.delete("/sessions/support-ticket-1")).json()["status"] == "ended"

    # Nothing bob did reached her: her run still waits, her session is active and hers to use.
    assert (await alice.get(f"/runs/{run_id}")).json()["status"] == "waiting_for_input"
    session = (await alice.get("/sessions/support-ticket-1")).json()
    assert session["status"] == "active" and session["runs"]["count"] == 1
    again = await alice.post("/runs", json={"agent": "echo", "input": "more", "session_id": "support-ticket-1"})
    assert again.status_code == 200 and again.json()["status"] == "completed", again.text
    ended = await alice.delete("/sessions/support-ticket-1")
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    assert (await alice.get(f"/runs/{run_id}")).json()["status"] == "cancelled"


@pytest.mark.server
@pytest.mark.anyio
async def test_an_acp_session_is_its_first_runs_principals(clients) -> None:
    alice, bob = clients
    session_id = str(uuid.uuid4())
    body = {"agent_name": "approval", "session_id": session_id, "mode": "async", "input": [{"parts": [{"content": "refund"}]}]}
    run_id = (await alice.post("/acp/runs", json=body)).json()["run_id"]
    await wait_status(alice, run_id, "waiting_for_input")
    for policy in ("reject", "interrupt"):  # bob's session of that id is his own, and empty
        r = await bob.post("/acp/runs", json={**body, "agent_name": "echo", "session_policy": policy, "mode": "sync", "input": [{"parts": [{"content": "bob's"}]}]})
        assert r.status_code == 200 and r.json()["status"] == "completed", r.text
        assert run_id not in r.text
    bobs = (await bob.get(f"/acp/sessions/{session_id}")).json()
    assert len(bobs["history"]) == 4  # his two runs: each its input and its reply
    assert "refund" not in (await bob.get(bobs["history"][0])).text
    assert (await alice.get(f"/acp/runs/{run_id}")).json()["status"] == "awaiting"
    for url in (await alice.get(f"/acp/sessions/{session_id}")).json()["history"]:
        assert "bob's" not in (await alice.get(url)).text


@pytest.mark.anyio
async def test_principals_racing_for_a_new_session_id_each_get_their_own() -> None:
    engine = demo_engine()

    async def run(owner: str) -> None:
        await engine.execute("echo", owner, mode="async", session_id="contested", owner=owner)

    async with engine:
        async with anyio.create_task_group() as tg:
            for owner in ("alice", "bob", "carol", "dave"):
                tg.start_soon(run, owner)
        for owner in ("alice", "bob", "carol", "dave"):
            session = await engine.get_session("contested", owner=owner)
            assert (session.owner, session.session_id) == (owner, "contested")
            runs = (await engine.list_runs(session_id="contested", owner=owner)).runs
            assert [r.owner for r in runs] == [owner]


@pytest.mark.anyio
async def test_engine_session_calls_check_the_owner() -> None:
    engine: RunEngine = demo_engine()
    async with engine:
        await engine.execute("echo", "hi", session_id="s", owner="alice")
        for call in (
            engine.get_session("s", owner="bob"),
            engine.end_session("s", owner="bob"),
            engine.session_history("s", owner="bob"),
        ):
            with pytest.raises(SessionNotFound):
                await call
        assert not (await engine.get_session("s", owner="alice")).ended
        with pytest.raises(SessionNotFound):  # no owner (auth off) is a namespace of its own
            await engine.get_session("s")


# -- finding 2: idempotency keys are per principal ---------------------------------------------------


@pytest.mark.server
@pytest.mark.anyio
async def test_a_key_that_spells_another_principals_key_gets_its_own_run(clients) -> None:
    alice, bob = clients
    mine = await alice.post("/runs", json={"agent": "approval", "input": "pay", "mode": "async"}, headers={"idempotency-key": "order-1001"})
    alice_run = mine.json()["run_id"]
    await wait_status(alice, alice_run, "waiting_for_input")
    colliding = {"idempotency-key": "alice:order-1001"}

    theirs = await bob.post("/runs", json={"agent": "echo", "input": "x", "mode": "async"}, headers=colliding)
    assert theirs.status_code == 202 and theirs.json()["run_id"] != alice_run
    # A stream with the same key is bob's own run too, and cancelling on disconnect reaches only it.
    async with aconnect_sse(bob, "POST", "/runs", json={"agent": "echo", "input": "x", "mode": "stream", "on_disconnect": "cancel"},
                            headers=colliding) as source:
        first = await anext(source.aiter_sse())
        assert source.response.headers["x-run-id"] == theirs.json()["run_id"] != alice_run
        assert alice_run not in first.data
    acp = await bob.post("/acp/runs", json={"agent_name": "echo", "mode": "async", "input": [{"parts": [{"content": "x"}]}]},
                         headers=colliding)
    assert acp.status_code == 202 and acp.json()["run_id"] != alice_run
    streamed = await sse_events(bob, f"/runs/{theirs.json()['run_id']}/events")
    assert {e["run_id"] for e in streamed} == {theirs.json()["run_id"]}
    assert (await alice.get(f"/runs/{alice_run}")).json()["status"] == "waiting_for_input"
