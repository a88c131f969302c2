"""Issue 25 over the native HTTP API: `/schedules` (create, list with the next fire time, get,
pause, resume, delete) and `POST /runs/{id}/fork`, with ownership as on runs (another principal's
is a 404, ids are per principal) and bad input answered in the one error format, changing nothing."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from httpkit import alice_and_bob
from kit import until
from runengine import RunEngine
from runengine.testing.clock import VirtualClock

TOKENS = {"t-alice": "alice", "t-bob": "bob"}
pytestmark = pytest.mark.server
ANYIO_BACKENDS = ("asyncio",)  # uvicorn
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def make_engine(clock: VirtualClock) -> RunEngine:
    engine = RunEngine("memory://", clock=clock)

    @engine.agent("echo")
    async def echo(ctx: Any) -> Any:
        return ctx.input

    @engine.agent("weather")
    async def weather(ctx: Any) -> Any:
        forecast = await ctx.tool_call("lookup", {"city": ctx.input}, lambda city: {"city": city, "temp": 12})
        return {"forecast": forecast, "answer": await ctx.ask("more?")}

    @engine.agent("hidden", metadata={"internal": True})
    async def hidden(ctx: Any) -> None:
        return None

    return engine


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and set(body["error"]) == {"code", "message", "details"}
    return body["error"]  # type: ignore[no-any-return]


@pytest.fixture
async def served():  # type: ignore[no-untyped-def]
    clock = VirtualClock(T0)
    engine = make_engine(clock)
    # One process: its own schedules wake it; no poll for other processes' every 30 virtual seconds.
    engine.schedules.poll = 86400
    async with alice_and_bob(engine, TOKENS) as (alice, bob):
        yield engine, clock, alice, bob


@pytest.mark.anyio
async def test_schedules_over_http(served: Any) -> None:
    engine, clock, alice, bob = served
    body = {"schedule_id": "daily", "cron": "0 9 * * *", "agent": "echo", "input": {"q": 1}, "timezone": "Europe/Paris"}
    created = await alice.post("/schedules", json=body)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "schedules/daily"
    shown = created.json()
    assert shown["next_fire_at"] == "2030-01-01T08:00:00.000000Z" and shown["paused"] is False
    assert shown["missed"] == "skip" and shown["last_slot"] is None and shown["input"] == {"q": 1}
    error(await alice.post("/schedules", json=body), 409, "conflict")
    assert (await bob.post("/schedules", json={**body, "input": "bob's"})).status_code == 201  # his own "daily"

    listed = (await alice.get("/schedules")).json()
    assert [s["schedule_id"] for s in listed["schedules"]] == ["daily"] and listed["next_after"] is None
    assert listed["schedules"][0]["input"] == {"q": 1}
    assert (await bob.get("/schedules/daily")).json()["input"] == "bob's"

    paused = await alice.post("/schedules/daily/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True and paused.json()["next_fire_at"] is None
    resumed = await alice.post("/schedules/daily/resume")
    assert resumed.json()["paused"] is False and resumed.json()["next_fire_at"] == "2030-01-01T08:00:00.000000Z"

    # The 8:00 UTC slot starts alice's run and bob's, each owned by its schedule's owner.
    await clock.advance(8 * 3600)
    runs = await until(lambda: _runs(alice))
    assert [r["metadata"]["schedule_id"] for r in runs] == ["daily"]
    assert (await alice.get("/schedules/daily")).json()["last_slot"] == "2030-01-01T08:00:00.000000Z"
    assert len(await until(lambda: _runs(bob))) == 1

    assert (await alice.delete("/schedules/daily")).status_code == 204
    error(await alice.get("/schedules/daily"), 404, "not_found")
    error(await alice.delete("/schedules/daily"), 404, "not_found")
    assert (await bob.get("/schedules/daily")).status_code == 200  # bob's is another schedule


async def _runs(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    page = (await client.get("/runs")).json()["runs"]
    return [(await client.get(f"/runs/{r['run_id']}")).json() for r in page]


@pytest.mark.anyio
async def test_bad_schedules_are_refused_in_the_one_error_format(served: Any) -> None:
    engine, clock, alice, bob = served
    good = {"schedule_id": "s", "cron": "*/5 * * * *", "agent": "echo"}
    for changes, status, code in [
        ({"cron": "every day"}, 400, "invalid_request"),
        ({"cron": None}, 400, "invalid_request"),
        ({"timezone": "Mars/Olympus"}, 400, "invalid_request"),
        ({"missed": "all"}, 400, "invalid_request"),
        ({"session_policy": "sometimes"}, 400, "invalid_request"),
        ({"schedule_id": "a/b"}, 400, "invalid_request"),
        ({"metadata": [1]}, 400, "invalid_request"),
        ({"extra": 1}, 400, "invalid_request"),
        ({"agent": "nobody"}, 404, "not_found"),
        ({"agent": "hidden"}, 404, "not_found"),
    ]:
        error(await alice.post("/schedules", json={**good, **changes}), status, code)
    error(await alice.post("/schedules", content=b"[1"), 400, "invalid_request")
    error(await alice.get("/schedules?limit=0"), 400, "invalid_request")
    assert (await alice.get("/schedules")).json()["schedules"] == []
    for path in ("/schedules/nope", "/schedules/nope/pause", "/schedules/nope/resume"):
        method = alice.get if path == "/schedules/nope" else alice.post
        error(await method(path), 404, "not_found")


@pytest.mark.anyio
async def test_fork_over_http_with_ownership(served: Any) -> None:
    engine, clock, alice, bob = served
    started = await alice.post("/runs", json={"agent": "weather", "input": "Paris"})
    assert started.status_code == 200 and started.json()["status"] == "waiting_for_input"
    run_id = started.json()["run_id"]
    events = (await alice.get(f"/runs/{run_id}/events")).json()["events"]
    result_seq = next(e["seq"] for e in events if e["type"] == "tool.result")

    forked = await alice.post(f"/runs/{run_id}/fork", json={"at_seq": result_seq, "input": {"city": "Paris", "temp": 30}})
    assert forked.status_code == 201, forked.text
    fork = forked.json()
    assert fork["forked_from"] == {"run_id": run_id, "seq": result_seq} and fork["run_id"] != run_id
    assert forked.headers["location"] == f"runs/{fork['run_id']}"
    answered = await alice.post(f"/runs/{fork['run_id']}/input", json={"content": "hot"})
    assert answered.status_code == 200, answered.text
    done = await until(lambda: _ended(alice, fork["run_id"]))
    assert done["output"] == {"forecast": {"city": "Paris", "temp": 30}, "answer": "hot"}
    fork_events = (await alice.get(f"/runs/{fork['run_id']}/events")).json()["events"]
    assert fork_events[result_seq]["type"] == "run.forked"
    assert fork_events[result_seq]["data"] == {"source_run_id": run_id, "source_seq": result_seq, "replaced": True}

    # Bob cannot fork alice's run: it is not found for him.
    error(await bob.post(f"/runs/{run_id}/fork", json={"at_seq": 1}), 404, "not_found")
    for body in ({}, {"at_seq": 0}, {"at_seq": "2"}, {"at_seq": 1.5}, {"at_seq": True}, {"at_seq": 10**6},
                 {"at_seq": 2, "input": "x"}, {"at_seq": 1, "other": 1}):
        error(await alice.post(f"/runs/{run_id}/fork", json=body), 400, "invalid_request")
    error(await alice.post("/runs/nope/fork", json={"at_seq": 1}), 404, "not_found")
    assert len((await alice.get("/runs")).json()["runs"]) == 2  # the source and the one fork


async def _ended(client: httpx.AsyncClient, run_id: str) -> dict[str, Any] | None:
    run = (await client.get(f"/runs/{run_id}")).json()
    return run if run["status"] in ("completed", "failed", "cancelled") else None
