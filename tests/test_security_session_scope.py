"""Issue 20 item 13, over real HTTP: a session or thread id a client chooses is one principal's
name, not a global one. Alice's session "s1" and Bob's session "s1" are two sessions on every
surface that takes such an id (native, ACP, /v1 threads, Kore references; the Platform's ids are
the server's): neither sees the other's, and nobody can squat an id another will use.

The principals are named so that a joined "owner:id" key would collide: ("acme:alice", "s1")
and ("acme", "alice:s1")."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from httpkit import alice_and_bob, demo_engine, wait_status

TOKENS = {"t-alice": "acme:alice", "t-bob": "acme"}
ANYIO_BACKENDS = ("asyncio",)  # uvicorn


@pytest.fixture
async def clients():
    async with alice_and_bob(demo_engine(), TOKENS) as (alice, bob):
        yield alice, bob


def test_the_stored_key_never_joins_two_principals_ids() -> None:
    from runengine.ownership import session_key

    assert session_key("acme:alice", "s1") != session_key("acme", "alice:s1")
    assert session_key("alice", "s1") != session_key("bob", "s1")
    assert session_key(None, "s1") == "s1"  # no principal (auth off): the id as it is


@pytest.mark.server
@pytest.mark.anyio
async def test_native_session_ids_are_per_principal(clients) -> None:
    alice, bob = clients
    # Bob takes the id first: it used to be his alone, and alice's requests for it a 409 / 404.
    assert (await bob.post("/sessions", json={"session_id": "s1", "metadata": {"who": "bob"}})).status_code == 201
    made = await alice.post("/sessions", json={"session_id": "s1", "metadata": {"who": "alice"}})
    assert made.status_code == 201, made.text
    assert made.json()["session_id"] == "s1"
    mine = await alice.post("/runs", json={"agent": "echo", "input": "alice's words", "session_id": "s1"})
    assert mine.status_code == 200 and mine.json()["session_id"] == "s1", mine.text
    theirs = await bob.post("/runs", json={"agent": "echo", "input": "bob's words", "session_id": "s1"})
    assert theirs.status_code == 200, theirs.text
    # "alice:s1" of bob's is not alice's "s1" either (the joined spelling of her key).
    other = await bob.post("/runs", json={"agent": "echo", "input": "bob again", "session_id": "alice:s1"})
    assert other.status_code == 200, other.text

    for client, who, words, run in ((alice, "alice", "alice's words", mine), (bob, "bob", "bob's words", theirs)):
        session = (await client.get("/sessions/s1")).json()
        assert session["metadata"] == {"who": who} and session["runs"]["count"] == 1
        history = (await client.get("/sessions/s1/history")).json()["messages"]
        assert [m["content"] for m in history] == [words, words]
        listed = (await client.get("/runs", params={"session_id": "s1"})).json()["runs"]
        assert [r["run_id"] for r in listed] == [run.json()["run_id"]]
    # Ending bob's session leaves alice's as it was.
    assert (await bob.delete("/sessions/s1")).json()["status"] == "ended"
    assert (await alice.get("/sessions/s1")).json()["status"] == "active"
    again = await alice.post("/runs", json={"agent": "echo", "input": "more", "session_id": "s1"})
    assert again.status_code == 200, again.text


@pytest.mark.server
@pytest.mark.anyio
async def test_v1_thread_ids_are_per_principal(clients) -> None:
    alice, bob = clients
    first = await bob.post("/v1/threads/t1/runs", json={"persona_id": "echo", "input": "bob's"})
    assert first.status_code == 201, first.text
    mine = await alice.post("/v1/threads/t1/runs", json={"persona_id": "approval", "input": "refund"})
    assert mine.status_code == 201, mine.text  # was 404: bob's thread
    await wait_status(alice, mine.json()["run_id"], "waiting_for_input")
    # Bob's interrupting policy on "his" t1 never reaches alice's waiting run.
    assert (await bob.post("/v1/threads/t1/runs", json={"persona_id": "echo", "input": "x"})).status_code == 201
    assert [r["run_id"] for r in (await alice.get("/v1/threads/t1/runs")).json()] == [mine.json()["run_id"]]
    bobs = [r["run_id"] for r in (await bob.get("/v1/threads/t1/runs")).json()]
    assert len(bobs) == 2 and mine.json()["run_id"] not in bobs
    assert (await alice.get(f"/v1/runs/{mine.json()['run_id']}")).json()["thread_id"] == "t1"
    assert (await alice.get(f"/v1/runs/{mine.json()['run_id']}")).json()["status"] == "waiting_for_input"


@pytest.mark.server
@pytest.mark.anyio
async def test_acp_session_ids_are_per_principal(clients) -> None:
    alice, bob = clients
    session_id = str(uuid.uuid4())

    def body(text: str, **extra: Any) -> dict[str, Any]:
        return {"agent_name": "echo", "mode": "sync", "input": [{"parts": [{"content": text}]}], **extra}

    bob_run = await bob.post("/acp/runs", json=body("bob's", session_id=session_id))
    assert bob_run.status_code == 200, bob_run.text
    alice_run = await alice.post("/acp/runs", json=body("alice's", session={"id": session_id, "history": []}))
    assert alice_run.status_code == 200, alice_run.text  # was 404: bob's session
    assert alice_run.json()["session_id"] == session_id
    for client, words in ((alice, "alice's"), (bob, "bob's")):
        session = (await client.get(f"/acp/sessions/{session_id}")).json()
        assert session["id"] == session_id and len(session["history"]) == 2
        texts = [(await client.get(url)).json()["parts"][0]["content"] for url in session["history"]]
        assert texts == [words, words]


@pytest.mark.server
@pytest.mark.anyio
async def test_kore_references_are_per_principal(clients) -> None:
    alice, bob = clients
    path = "/kore/apps/echo/environments/dev/runs/execute"

    def body(text: str) -> dict[str, Any]:
        return {
            "sessionIdentity": [{"type": "userReference", "value": "u1"}, {"type": "sessionReference", "value": "s1"}],
            "input": [{"type": "text", "content": text}],
            "invoke": {"tasks": [{"type": "agent", "name": "echo"}]},
        }

    a = await alice.post(path, json=body("alice's"))
    b = await bob.post(path, json=body("bob's"))
    assert a.status_code == 200 and b.status_code == 200, (a.text, b.text)
    a_session, b_session = a.json()["sessionInfo"]["sessionId"], b.json()["sessionInfo"]["sessionId"]
    assert a_session != b_session
    # Naming the other's engine session directly: as if it did not exist.
    direct = {"sessionIdentity": [{"type": "sessionIdentity", "value": a_session}], "input": [{"type": "text", "content": "x"}],
              "invoke": {"tasks": [{"type": "agent", "name": "echo"}]}}
    assert (await bob.post(path, json=direct)).status_code == 404
    assert (await alice.post(path, json=direct)).status_code == 200


@pytest.mark.server
@pytest.mark.anyio
async def test_platform_session_ids_stay_their_owners(clients) -> None:
    alice, bob = clients
    session = (await alice.post("/platform/apps/echo/sessions", json={})).json()["session_id"]
    assert (await alice.post("/platform/apps/echo/execute", json={"message": "alice's", "session_id": session})).status_code == 200
    named = await bob.post("/platform/apps/echo/execute", json={"message": "bob's", "session_id": session})
    assert named.status_code == 400 and named.json()["error"]["message"] == "Session not found"
    assert (await bob.get(f"/platform/apps/echo/sessions/{session}/history")).status_code == 404
    history = (await alice.get(f"/platform/apps/echo/sessions/{session}/history")).json()["messages"]
    assert "bob's" not in str(history) and "alice's" in str(history)


@pytest.mark.anyio
async def test_a_session_stored_under_its_bare_id_stays_its_owners() -> None:
    """Records written before ids were per principal (e.g. by the schema 1 migration) are kept
    under the bare id: their owner still reaches them, nobody else does."""
    from datetime import datetime, timezone

    from runengine import SessionNotFound
    from runengine.ports import SessionRecord

    engine = demo_engine()
    async with engine:
        legacy = SessionRecord(session_id="old", owner="alice", created_at=datetime.now(timezone.utc), metadata={"v": 1})
        await engine.store.put_session(legacy)
        assert (await engine.get_session("old", owner="alice")).metadata == {"v": 1}
        run = await engine.execute("echo", "hi", session_id="old", owner="alice")
        assert (await engine.status(run.run_id)).session_id == "old"
        with pytest.raises(SessionNotFound):
            await engine.get_session("old", owner="bob")
        await engine.execute("echo", "mine", session_id="old", owner="bob")  # bob's own "old"
        assert (await engine.get_session("old", owner="bob")).metadata == {}
        ended = await engine.end_session("old", owner="alice")
        assert ended.ended and (await engine.get_session("old", owner="alice")).ended
