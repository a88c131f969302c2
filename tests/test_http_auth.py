"""The auth hook: no or bad credentials get 401 in the error format; one principal's runs are
invisible (404) to another, in every endpoint."""

from __future__ import annotations

import httpx
import pytest

from httpkit import demo_engine, serve, sse_events
from runengine.adapters.asgi import engine_asgi_app
from runengine.http.auth import AuthenticationFailed, Principal

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

TOKENS = {"t-alice": "alice", "t-bob": "bob"}


async def auth_hook(headers):  # an async hook: awaited by the API
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    if token == "t-revoked":
        raise AuthenticationFailed("this token was revoked")
    return TOKENS.get(token)


ANYIO_BACKENDS = ("asyncio",)  # uvicorn


@pytest.fixture
async def url():
    async with serve(engine_asgi_app(demo_engine(), auth=auth_hook)) as base:
        yield base


def as_user(url: str, token: str | None) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0)


@pytest.mark.anyio
async def test_missing_or_bad_credentials_get_401(url: str) -> None:
    for token in (None, "t-nobody", "t-revoked"):
        async with as_user(url, token) as client:
            for response in (
                await client.get("/runs"),
                await client.post("/runs", json={"agent": "echo"}),
                await client.get("/agents"),
                await client.get("/runs/x/events", headers={"accept": "text/event-stream"}),
            ):
                assert response.status_code == 401
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json()["error"]["code"] == "authentication_error"
        if token == "t-revoked":
            assert response.json()["error"]["message"] == "this token was revoked"
    async with as_user(url, None) as client:  # the page and the document stay public
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200
        assert (await client.get("/runs")).status_code == 401


@pytest.mark.anyio
async def test_runs_are_invisible_to_other_principals(url: str) -> None:
    async with as_user(url, "t-alice") as alice, as_user(url, "t-bob") as bob:
        done = (await alice.post("/runs", json={"agent": "echo", "input": "mine", "session_id": "s-a"})).json()
        waiting = (await alice.post("/runs", json={"agent": "approval"})).json()
        bobs = (await bob.post("/runs", json={"agent": "echo", "input": "bob's"})).json()
        for run_id in (done["run_id"], waiting["run_id"]):
            for response in (
                await bob.get(f"/runs/{run_id}"),
                await bob.get(f"/runs/{run_id}/events"),
                await bob.get(f"/runs/{run_id}/events", headers={"accept": "text/event-stream"}),
                await bob.post(f"/runs/{run_id}/cancel"),
                await bob.post(f"/runs/{run_id}/input", json={"content": "yes"}),
            ):
                assert response.status_code == 404, response.text
                assert response.json()["error"]["code"] == "not_found"
        assert (await bob.get("/sessions/s-a/history")).status_code == 404
        assert [r["run_id"] for r in (await bob.get("/runs")).json()["runs"]] == [bobs["run_id"]]
        assert {r["run_id"] for r in (await alice.get("/runs")).json()["runs"]} == {done["run_id"], waiting["run_id"]}
        # Bob's attempts changed nothing; Alice still sees and drives her runs.
        assert (await alice.get(f"/runs/{waiting['run_id']}")).json()["status"] == "waiting_for_input"
        assert (await alice.post(f"/runs/{waiting['run_id']}/input", json={"content": "yes"})).status_code == 200
        events = await sse_events(alice, f"/runs/{done['run_id']}/events")
        assert events[-1]["type"] == "run.completed"
        history = (await alice.get("/sessions/s-a/history")).json()
        assert [m["content"] for m in history["messages"]] == ["mine", "mine"]


@pytest.mark.anyio
async def test_a_hook_may_return_a_principal_whose_id_owns_the_runs() -> None:
    people = {"t-carol": Principal(id="carol", org_id="org-9", user_name="Carol", email="c@example.com"), "t-bob": "bob"}
    engine = demo_engine()
    async with serve(engine_asgi_app(engine, auth=lambda headers: people.get(headers.get("authorization", "")[7:]))) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            carol, bob = {"authorization": "Bearer t-carol"}, {"authorization": "Bearer t-bob"}
            run = (await client.post("/runs", json={"agent": "echo", "input": "hi"}, headers=carol)).json()
            assert (await engine.status(run["run_id"])).owner == "carol"  # the id, not the whole object
            assert (await client.get(f"/runs/{run['run_id']}", headers=carol)).status_code == 200
            assert (await client.get(f"/runs/{run['run_id']}", headers=bob)).status_code == 404
            assert [r["run_id"] for r in (await client.get("/runs", headers=carol)).json()["runs"]] == [run["run_id"]]
            assert (await client.get("/runs", headers=bob)).json()["runs"] == []
