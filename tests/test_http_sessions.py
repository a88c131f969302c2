"""Sessions in the native API over real HTTP: create, read, end; an ended or expired session
refuses runs (409) while its history stays readable; one principal cannot see another's
sessions; bad bodies get 400 in the error format and create nothing. Every response is checked
against the OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from httpkit import add_test_agents, demo_engine, serve, wait_status
from kit import SERVERS
from runengine import RunEngine
from runengine.adapters.asgi import engine_asgi_app
from runengine.demo import register_demo_agents
from runengine.wire import parse_time
from test_http_auth import auth_hook
from test_http_openapi import check

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes


ANYIO_BACKENDS = ("asyncio",)  # uvicorn


class Checked:
    """A client whose every response is validated against the server's OpenAPI document."""

    def __init__(self, url: str, token: str | None = None) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.doc: dict[str, Any] = {}
        self.http = httpx.AsyncClient(
            base_url=url, headers=headers, timeout=30.0, event_hooks={"response": [self._check]}
        )

    async def _check(self, response: httpx.Response) -> None:
        await response.aread()
        if response.request.url.path != "/openapi.json":
            check(self.doc, response)

    async def __aenter__(self) -> httpx.AsyncClient:
        await self.http.__aenter__()
        self.doc = (await self.http.get("/openapi.json")).json()
        return self.http

    async def __aexit__(self, *exc: object) -> None:
        await self.http.__aexit__(*exc)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] == code
    return error


@pytest.fixture(scope="module")
async def url() -> AsyncIterator[str]:
    async with serve(engine_asgi_app(demo_engine())) as base:
        yield base


@pytest.mark.anyio
async def test_create_get_end_and_an_ended_session_refuses_runs(url: str) -> None:
    async with Checked(url) as client:
        created = await client.post(
            "/sessions",
            json={"session_id": "life-1", "metadata": {"channel": "web"}, "ttl": 3600, "user_id": "user_456"},
        )
        assert created.status_code == 201, created.text
        assert created.headers["location"] == "sessions/life-1"
        session = created.json()
        assert session["session_id"] == "life-1" and session["status"] == "active"
        assert session["user_id"] == "user_456" and session["metadata"] == {"channel": "web"}
        assert session["ended_at"] is None
        lifetime = parse_time(session["expires_at"]) - parse_time(session["created_at"])
        assert lifetime == timedelta(seconds=3600)
        assert session["runs"] == {"count": 0, "by_status": {}}

        for text in ("first question", "second question"):
            run = await client.post("/runs", json={"agent": "echo", "input": text, "session_id": "life-1"})
            assert run.json()["status"] == "completed"
        long = (await client.post("/runs", json={"agent": "sleeper", "input": 60, "mode": "async", "session_id": "life-1"})).json()
        await wait_status(client, long["run_id"], "running")
        read = (await client.get("/sessions/life-1")).json()
        assert read["runs"] == {"count": 3, "by_status": {"completed": 2, "running": 1}}
        assert {k: v for k, v in read.items() if k != "runs"} == {k: v for k, v in session.items() if k != "runs"}

        ended = await client.delete("/sessions/life-1")
        assert ended.status_code == 200, ended.text
        assert ended.json()["status"] == "ended" and ended.json()["ended_at"] is not None
        # The engine cancelled the run that was still going.
        assert (await wait_status(client, long["run_id"], "cancelled"))["cancel_reason"] == "session ended"
        again = await client.delete("/sessions/life-1")  # idempotent: the same end
        assert again.status_code == 200 and again.json()["ended_at"] == ended.json()["ended_at"]

        refused = await client.post("/runs", json={"agent": "echo", "input": "too late", "session_id": "life-1"})
        error = assert_error(refused, 409, "conflict")
        assert error["details"] == {"session_id": "life-1", "expired": False}
        runs = (await client.get("/runs", params={"session_id": "life-1"})).json()["runs"]
        assert len(runs) == 3  # the refused request wrote nothing

        history = (await client.get("/sessions/life-1/history")).json()
        assert [m["content"] for m in history["messages"] if m["role"] == "user"] == [
            "first question", "second question", 60,
        ]
        assert (await client.get("/sessions/life-1")).json()["runs"]["by_status"] == {"cancelled": 1, "completed": 2}


@pytest.mark.anyio
async def test_ids_server_picked_taken_and_missing(url: str) -> None:
    async with Checked(url) as client:
        picked = await client.post("/sessions")  # no body at all: every field is optional
        assert picked.status_code == 201, picked.text
        first = picked.json()
        assert first["session_id"].startswith("sess_") and first["expires_at"] is None and first["user_id"] is None
        other = (await client.post("/sessions", json={})).json()
        assert other["session_id"] != first["session_id"]

        taken = await client.post("/sessions", json={"session_id": first["session_id"], "metadata": {"x": 1}})
        assert assert_error(taken, 409, "conflict")["details"] == {"session_id": first["session_id"]}
        assert (await client.get(f"/sessions/{first['session_id']}")).json()["metadata"] == {}  # unchanged

        # A session begun by its runs (never created) is taken too, and can be read and ended.
        await client.post("/runs", json={"agent": "echo", "input": "hi", "session_id": "by-use"})
        assert_error(await client.post("/sessions", json={"session_id": "by-use"}), 409, "conflict")
        implicit = (await client.get("/sessions/by-use")).json()
        assert implicit["status"] == "active" and implicit["runs"] == {"count": 1, "by_status": {"completed": 1}}
        assert implicit["created_at"] is not None
        assert (await client.delete("/sessions/by-use")).json()["status"] == "ended"
        assert_error(await client.post("/runs", json={"agent": "echo", "session_id": "by-use"}), 409, "conflict")
        assert (await client.get("/sessions/by-use")).json()["status"] == "ended"

        # Any Unicode id (no control characters): the Location header carries it percent-encoded.
        unicode = await client.post("/sessions", json={"session_id": "ĸº é/ü"})
        assert unicode.status_code == 201 and unicode.headers["location"] == "sessions/%C4%B8%C2%BA%20%C3%A9%2F%C3%BC"
        spaced = await client.post("/sessions", json={"session_id": "ĸº é"})
        assert (await client.get("/" + spaced.headers["location"])).json()["session_id"] == "ĸº é"

        for missing in ("nope", "x" * 300, "tab%09id"):
            assert_error(await client.get(f"/sessions/{missing}"), 404, "not_found")
            assert_error(await client.delete(f"/sessions/{missing}"), 404, "not_found")
        assert_error(await client.get("/sessions/nope/history"), 404, "not_found")


BAD_BODIES: list[tuple[bytes, str | None]] = [
    (b"{", None),
    (b"[]", None),
    (b'"text"', None),
    (b'{"ttl": NaN}', None),
    (json.dumps({"session_id": "bad-1", "colour": "red"}).encode(), "unknown"),
    (json.dumps({"session_id": ""}).encode(), "session_id"),
    (json.dumps({"session_id": 42}).encode(), "session_id"),
    (json.dumps({"session_id": "x" * 201}).encode(), "session_id"),
    (json.dumps({"session_id": "bad\n2"}).encode(), "session_id"),
    (json.dumps({"session_id": "bad-3", "metadata": ["a"]}).encode(), "metadata"),
    (json.dumps({"session_id": "bad-4", "metadata": {"big": "x" * 20000}}).encode(), "metadata"),
    (json.dumps({"session_id": "bad-5", "ttl": 0}).encode(), "ttl"),
    (json.dumps({"session_id": "bad-6", "ttl": -5}).encode(), "ttl"),
    (json.dumps({"session_id": "bad-7", "ttl": "60"}).encode(), "ttl"),
    (json.dumps({"session_id": "bad-8", "ttl": True}).encode(), "ttl"),
    (json.dumps({"session_id": "bad-9", "ttl": 10**9}).encode(), "ttl"),
    (json.dumps({"session_id": "bad-10", "user_id": 7}).encode(), "user_id"),
    (json.dumps({"session_id": "bad-11", "user_id": ""}).encode(), "user_id"),
]


@pytest.mark.anyio
async def test_bad_bodies_get_400_and_create_nothing(url: str) -> None:
    async with Checked(url) as client:
        for body, field in BAD_BODIES:
            response = await client.post("/sessions", content=body, headers={"content-type": "application/json"})
            error = assert_error(response, 400, "invalid_request")
            if field == "unknown":
                assert error["details"]["unknown"] == ["colour"]
            elif field is not None:
                assert error["details"]["field"] == field, error
        for n in range(1, 12):
            assert_error(await client.get(f"/sessions/bad-{n}"), 404, "not_found")


@pytest.mark.anyio
async def test_generated_bodies_never_get_a_5xx(url: str) -> None:
    values = st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(),
        st.text(st.characters(codec=None, categories=None), max_size=12),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3), st.lists(st.integers(), max_size=3),
    )
    keys = st.sampled_from(["session_id", "metadata", "ttl", "user_id"]) | st.text(max_size=8)
    bodies = st.dictionaries(keys, values, max_size=4)
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        seen: list[bytes] = []

        @settings(SERVERS, max_examples=80, derandomize=True, database=None)
        @given(body=bodies)
        def collect(body: dict[str, Any]) -> None:
            seen.append(json.dumps(body).encode())  # NaN / Infinity included: the API refuses them

        collect()
        for body in seen:
            response = await client.post("/sessions", content=body, headers={"content-type": "application/json"})
            assert response.status_code in (201, 400, 409), response.text
            if response.status_code != 201:
                assert set(response.json()["error"]) == {"code", "message", "details"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.anyio
async def test_an_expired_session_refuses_runs_and_stays_readable() -> None:
    clock = Clock()
    engine = register_demo_agents(RunEngine("memory://", clock=clock), delay=0.0)
    add_test_agents(engine)
    async with serve(engine_asgi_app(engine)) as base, Checked(base) as client:
        session = (await client.post("/sessions", json={"ttl": 60})).json()
        sid = session["session_id"]
        assert (await client.post("/runs", json={"agent": "echo", "input": "in time", "session_id": sid})).status_code == 200
        clock.now += timedelta(seconds=61)
        assert (await client.get(f"/sessions/{sid}")).json()["status"] == "expired"
        error = assert_error(await client.post("/runs", json={"agent": "echo", "session_id": sid}), 409, "conflict")
        assert error["details"] == {"session_id": sid, "expired": True}
        history = (await client.get(f"/sessions/{sid}/history")).json()["messages"]
        assert [m["content"] for m in history if m["role"] == "user"] == ["in time"]
        # Ending an expired session is allowed and says so.
        assert (await client.delete(f"/sessions/{sid}")).json()["status"] == "ended"


@pytest.mark.anyio
async def test_another_principal_cannot_see_read_or_end_a_session() -> None:
    async with serve(engine_asgi_app(demo_engine(), auth=auth_hook)) as base:
        async with Checked(base, "t-alice") as alice, Checked(base, "t-bob") as bob, Checked(base) as nobody:
            assert (await alice.post("/sessions", json={"session_id": "alice-s", "metadata": {"a": 1}})).status_code == 201
            await alice.post("/runs", json={"agent": "echo", "input": "private", "session_id": "alice-s"})
            # A session begun by alice's runs alone is hers too.
            await alice.post("/runs", json={"agent": "echo", "input": "also private", "session_id": "alice-used"})
            for sid in ("alice-s", "alice-used"):
                assert_error(await bob.get(f"/sessions/{sid}"), 404, "not_found")
                assert_error(await bob.delete(f"/sessions/{sid}"), 404, "not_found")
                assert_error(await bob.get(f"/sessions/{sid}/history"), 404, "not_found")
                assert_error(await nobody.get(f"/sessions/{sid}"), 401, "authentication_error")
                assert_error(await nobody.delete(f"/sessions/{sid}"), 401, "authentication_error")
            assert_error(await nobody.post("/sessions", json={}), 401, "authentication_error")
            # Ids are per principal: bob's "alice-s" is a session of his own, alice's stays hers.
            assert (await bob.post("/sessions", json={"session_id": "alice-s"})).status_code == 201
            assert_error(await bob.post("/sessions", json={"session_id": "alice-s"}), 409, "conflict")
            joined = await bob.post("/runs", json={"agent": "echo", "input": "intruder", "session_id": "alice-s"})
            assert joined.status_code == 200, joined.text
            assert [r["run_id"] for r in (await bob.get("/runs", params={"session_id": "alice-s"})).json()["runs"]] == [joined.json()["run_id"]]
            assert "private" not in (await bob.get("/sessions/alice-s/history")).text
            mine = (await alice.get("/sessions/alice-s")).json()
            assert mine["status"] == "active" and mine["metadata"] == {"a": 1} and mine["runs"]["count"] == 1

            ended = (await alice.delete("/sessions/alice-used")).json()
            assert ended["status"] == "ended" and ended["runs"]["count"] == 1
            assert (await alice.get("/sessions/alice-used")).json()["status"] == "ended"
            assert_error(await bob.get("/sessions/alice-used"), 404, "not_found")

            own = (await bob.post("/sessions", json={})).json()
            assert (await bob.get(f"/sessions/{own['session_id']}")).status_code == 200
            assert_error(await alice.get(f"/sessions/{own['session_id']}"), 404, "not_found")
