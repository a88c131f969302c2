"""The native API of child runs and signals, over real HTTP with two principals:
`POST /runs/{id}/signals/{name}` and `GET /runs/{id}/children` answer another principal's run
exactly as a missing one (404), refuse bad input in the one error format (and record nothing),
and the run object links a parent and its children both ways."""

from __future__ import annotations

import pytest

from httpkit import alice_and_bob, demo_engine, full_log, wait_status

pytestmark = [pytest.mark.server, pytest.mark.anyio]
ANYIO_BACKENDS = ("asyncio",)  # uvicorn
TOKENS = {"t-alice": "alice", "t-bob": "bob"}


@pytest.fixture
async def clients():
    async with alice_and_bob(demo_engine(), TOKENS) as (alice, bob):
        yield alice, bob


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


async def test_a_signal_reaches_the_owners_run_only(clients) -> None:
    alice, bob = clients
    run = (await alice.post("/runs", json={"agent": "listener", "input": "go", "mode": "async"})).json()
    run_id = run["run_id"]
    _error(await bob.post(f"/runs/{run_id}/signals/go", json={"payload": "from bob"}), 404, "not_found")
    _error(await alice.post(f"/runs/{run_id}/signals/-go", json={"payload": 1}), 400, "invalid_request")
    _error(await alice.post(f"/runs/{run_id}/signals/go", json={"payload": 1, "extra": 2}), 400, "invalid_request")
    _error(await alice.post(f"/runs/{run_id}/signals/go", content=b"{"), 400, "invalid_request")
    _error(await alice.post("/runs/nope/signals/go", json={}), 404, "not_found")
    assert (await alice.get(f"/runs/{run_id}")).json()["signals"] == []  # nothing recorded by refusals
    sent = await alice.post(f"/runs/{run_id}/signals/go", json={"payload": {"from": "alice"}})
    assert sent.status_code == 202, sent.text
    receipt = sent.json()
    assert receipt["name"] == "go" and receipt["run_id"] == run_id
    done = await wait_status(alice, run_id, "completed")
    assert done["output"] == {"from": "alice"}
    assert done["signals"] == [{"signal_id": receipt["signal_id"], "name": "go", "taken": True}]
    log = await full_log(alice, run_id)
    assert [e["seq"] for e in log if e["type"] == "signal.received"] == [receipt["seq"]]
    _error(await alice.post(f"/runs/{run_id}/signals/go", json={"payload": 2}), 409, "conflict")


async def test_children_are_listed_for_their_owner_and_link_back(clients) -> None:
    alice, bob = clients
    parent = (await alice.post("/runs", json={"agent": "fanout", "input": "x y z"})).json()
    assert parent["status"] == "completed", parent
    children = (await alice.get(f"/runs/{parent['run_id']}/children")).json()["runs"]
    assert [c["run_id"] for c in children] == [c["run_id"] for c in parent["children"]]
    assert [c["status"] for c in parent["children"]] == ["completed"] * 3
    assert parent["output"] == [c["output"] for c in parent["children"]]
    child = (await alice.get(f"/runs/{children[0]['run_id']}")).json()
    assert child["parent_run_id"] == parent["run_id"] and parent["parent_run_id"] is None
    _error(await bob.get(f"/runs/{parent['run_id']}/children"), 404, "not_found")
    _error(await bob.get(f"/runs/{children[0]['run_id']}"), 404, "not_found")  # the child is alice's too
    _error(await alice.get("/runs/nope/children"), 404, "not_found")
