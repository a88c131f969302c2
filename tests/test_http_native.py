"""The native API over a real uvicorn server and httpx: every endpoint and mode, errors, limits."""

from __future__ import annotations


import httpx
import pytest

from httpkit import demo_engine, full_log, serve, sse_events, wait_status
from runengine.adapters.asgi import engine_asgi_app
from runengine.http.limits import MAX_CONTENT_BYTES, MAX_INPUT_BYTES

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes


ANYIO_BACKENDS = ("asyncio",)  # uvicorn


@pytest.fixture
async def client():
    engine = demo_engine()
    async with serve(engine_asgi_app(engine)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
            yield http


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    return error


@pytest.mark.anyio
async def test_sync_run_returns_the_finished_run(client: httpx.AsyncClient) -> None:
    response = await client.post("/runs", json={"agent": "echo", "input": "hello there world"})
    assert response.status_code == 200
    run = response.json()
    assert run["status"] == "completed"
    assert run["output"] == "hello there world"
    assert run["messages"][0]["content"] == "hello there world"
    assert run["last_seq"] > 3 and run["finished_at"] and run["error"] is None
    again = (await client.get(f"/runs/{run['run_id']}")).json()
    assert again == run


@pytest.mark.anyio
async def test_async_run_is_accepted_at_once_then_completes(client: httpx.AsyncClient) -> None:
    response = await client.post("/runs", json={"agent": "pizza", "input": "something spicy", "mode": "async"})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending" and body["run_id"]
    assert response.headers["location"] == f"runs/{body['run_id']}"
    run = await wait_status(client, body["run_id"], "completed")
    assert run["output"] == {"pizza": "diavola", "price": 9.5}
    assert [c["name"] for c in run["tool_calls"]] == ["get_menu"] and run["tool_calls"][0]["done"]
    assert run["usage"]["output_tokens"] == 11


@pytest.mark.anyio
async def test_stream_mode_sends_every_event_from_seq_1(client: httpx.AsyncClient) -> None:
    events = await sse_events(client, "/runs", method="POST", json={"agent": "pizza", "input": "cheese", "mode": "stream"})
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types[0] == "run.created" and types[-1] == "run.completed"
    assert {"thought", "tool.call", "tool.result", "message.delta", "usage"} <= set(types)
    assert events == await full_log(client, events[0]["run_id"])
    # The log records the mode the run was started with (issue 20), as for the other modes.
    assert events[0]["data"]["mode"] == "stream"
    for mode in ("sync", "async"):
        run = (await client.post("/runs", json={"agent": "echo", "input": "x", "mode": mode})).json()
        assert (await full_log(client, run["run_id"]))[0]["data"]["mode"] == mode


@pytest.mark.anyio
async def test_events_as_json_pages(client: httpx.AsyncClient) -> None:
    run = (await client.post("/runs", json={"agent": "ticker", "input": {"n": 30}})).json()
    first = (await client.get(f"/runs/{run['run_id']}/events", params={"limit": 10})).json()
    assert [e["seq"] for e in first["events"]] == list(range(1, 11))
    assert first["next_after_seq"] == 10 and first["ended"] is False
    rest = (await client.get(f"/runs/{run['run_id']}/events", params={"after_seq": 10, "limit": 1000})).json()
    assert rest["events"][0]["seq"] == 11 and rest["ended"] is True
    assert rest["events"][-1]["type"] == "run.completed" and rest["next_after_seq"] == run["last_seq"]
    past = (await client.get(f"/runs/{run['run_id']}/events", params={"after_seq": run["last_seq"]})).json()
    assert past == {"run_id": run["run_id"], "events": [], "next_after_seq": run["last_seq"], "ended": True}


@pytest.mark.anyio
async def test_sse_after_seq_and_last_event_id(client: httpx.AsyncClient) -> None:
    run = (await client.post("/runs", json={"agent": "ticker", "input": {"n": 20}})).json()
    log = await full_log(client, run["run_id"])
    url = f"/runs/{run['run_id']}/events"
    assert await sse_events(client, url, params={"after_seq": 5}) == log[5:]
    assert await sse_events(client, url, headers={"last-event-id": "7"}) == log[7:]
    # Both: the later cursor wins (an EventSource keeps its URL and adds the header).
    assert await sse_events(client, url, params={"after_seq": 3}, headers={"last-event-id": "9"}) == log[9:]
    # At the end of an ended run: 204, which tells an EventSource to stop reconnecting.
    done = await client.get(url, headers={"accept": "text/event-stream", "last-event-id": str(run["last_seq"])})
    assert done.status_code == 204 and done.content == b""
    assert_error(await client.get(url, headers={"accept": "text/event-stream", "last-event-id": "x1"}), 400, "invalid_request")


@pytest.mark.anyio
async def test_input_while_waiting_and_409_otherwise(client: httpx.AsyncClient) -> None:
    waiting = (await client.post("/runs", json={"agent": "approval", "input": "ship it"})).json()
    assert waiting["status"] == "waiting_for_input"
    assert waiting["await_request"]["options"] == ["yes", "no"]
    run_id = waiting["run_id"]
    assert_error(await client.post(f"/runs/{run_id}/input", json={}), 400, "invalid_request")
    assert_error(await client.post(f"/runs/{run_id}/input", json={"content": "x" * MAX_CONTENT_BYTES}), 400, "invalid_request")
    given = await client.post(f"/runs/{run_id}/input", json={"content": "yes"})
    assert given.status_code == 200
    done = await wait_status(client, run_id, "completed")
    assert done["output"] == {"approved": True, "answer": "yes"}
    error = assert_error(await client.post(f"/runs/{run_id}/input", json={"content": "yes"}), 409, "conflict")
    assert error["details"]["status"] == "completed"


@pytest.mark.anyio
async def test_cancel_is_idempotent(client: httpx.AsyncClient) -> None:
    run = (await client.post("/runs", json={"agent": "approval"})).json()
    first = await client.post(f"/runs/{run['run_id']}/cancel", json={"reason": "changed my mind"})
    assert first.status_code == 200
    assert first.json()["status"] == "cancelled" and first.json()["cancel_reason"] == "changed my mind"
    second = await client.post(f"/runs/{run['run_id']}/cancel")
    assert second.status_code == 200 and second.json() == first.json()
    assert_error(await client.post(f"/runs/{run['run_id']}/input", json={"content": "yes"}), 409, "conflict")
    assert_error(await client.post("/runs/nope/cancel"), 404, "not_found")


@pytest.mark.anyio
async def test_list_runs_filters_and_pages(client: httpx.AsyncClient) -> None:
    ids = []
    for i in range(5):
        body = {"agent": "echo", "input": f"run {i}", "session_id": "s-list" if i % 2 == 0 else None}
        ids.append((await client.post("/runs", json=body)).json()["run_id"])
    waiting = (await client.post("/runs", json={"agent": "approval", "session_id": "s-list"})).json()
    session = (await client.get("/runs", params={"session_id": "s-list"})).json()
    assert [r["run_id"] for r in session["runs"]] == [waiting["run_id"], ids[4], ids[2], ids[0]]
    assert session["next_before"] is None
    only_waiting = (await client.get("/runs", params={"status": "waiting_for_input"})).json()
    assert [r["run_id"] for r in only_waiting["runs"]] == [waiting["run_id"]]
    seen = []
    before = None
    while True:
        page = (await client.get("/runs", params={"limit": 2, **({"before": before} if before else {})})).json()
        assert len(page["runs"]) <= 2
        seen.extend(r["run_id"] for r in page["runs"])
        before = page["next_before"]
        if before is None:
            break
    assert seen == [waiting["run_id"], *reversed(ids)]
    assert_error(await client.get("/runs", params={"status": "sleeping"}), 400, "invalid_request")
    assert_error(await client.get("/runs", params={"limit": "0"}), 400, "invalid_request")
    assert_error(await client.get("/runs", params={"limit": "many"}), 400, "invalid_request")
    assert_error(await client.get("/runs", params={"before": "not-a-cursor"}), 400, "invalid_request")


@pytest.mark.anyio
async def test_session_history(client: httpx.AsyncClient) -> None:
    await client.post("/runs", json={"agent": "echo", "input": "first question", "session_id": "s-h"})
    await client.post("/runs", json={"agent": "echo", "input": "second question", "session_id": "s-h"})
    history = (await client.get("/sessions/s-h/history")).json()
    assert history["session_id"] == "s-h"
    assert [(m["role"], m["content"]) for m in history["messages"]] == [
        ("user", "first question"),
        ("assistant", "first question"),
        ("user", "second question"),
        ("assistant", "second question"),
    ]
    assert all(m["at"] for m in history["messages"])
    assert_error(await client.get("/sessions/none-such/history"), 404, "not_found")


@pytest.mark.anyio
async def test_agents_and_openapi(client: httpx.AsyncClient) -> None:
    agents = (await client.get("/agents")).json()["agents"]
    assert {a["name"] for a in agents} >= {"echo", "pizza", "approval"}
    assert "hidden" not in {a["name"] for a in agents}
    error = assert_error(await client.post("/runs", json={"agent": "hidden"}), 404, "not_found")
    assert "hidden" not in error["details"]["known"] and "echo" in error["details"]["known"]
    assert all(isinstance(a["description"], str) for a in agents)
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/runs", "/runs/{run_id}", "/runs/{run_id}/events", "/runs/{run_id}/cancel",
        "/runs/{run_id}/input", "/runs/{run_id}/signals/{name}", "/runs/{run_id}/children", "/sessions", "/sessions/{session_id}", "/sessions/{session_id}/history", "/agents",
        "/openapi.json",
        # issue 25: fork and schedules
        "/runs/{run_id}/fork", "/schedules", "/schedules/{schedule_id}", "/schedules/{schedule_id}/pause",
        "/schedules/{schedule_id}/resume",
    }


@pytest.mark.anyio
async def test_the_console_page_is_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "runengine console" in page.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "malformed JSON"),
        (b"", "JSON object"),
        (b"[1, 2]", "JSON object"),
        (b'{"input": "x"}', "'agent' is required"),
        (b'{"agent": 42}', "'agent' must be a string"),
        (b'{"agent": "echo", "mode": "later"}', "'mode' must be one of"),
        (b'{"agent": "echo", "timeout": "soon"}', "'timeout' must be a number"),
        (b'{"agent": "echo", "timeout": -1}', "'timeout' must be > 0"),
        (b'{"agent": "echo", "timeout": true}', "'timeout' must be a number"),
        (b'{"agent": "echo", "metadata": [1]}', "'metadata' must be an object"),
        (b'{"agent": "echo", "session_id": 7}', "'session_id' must be a string"),
        (b'{"agent": "echo", "colour": "red"}', "unknown field"),
        (b'{"agent": "echo", "input": NaN}', "malformed JSON"),
        (b'{"agent": "echo", "on_disconnect": "explode"}', "'on_disconnect' must be one of"),
        (b'{"agent": "echo", "session_policy": "maybe"}', "'session_policy' must be one of"),
        (b"\xff\xfe", "malformed JSON"),
        (b'{"agent": "echo", "input": "\\ud800"}', "lone surrogate"),
        (b'{"agent": "echo", "metadata": {"\\udc00": 1}}', "lone surrogate"),
        (b'{"agent": "echo\\u0000"}', "control characters"),
        (b'{"agent": "echo", "session_id": "a\\nb"}', "control characters"),
        (b"[" * 100_000, "malformed JSON"),
    ],
)
async def test_bad_run_bodies_get_clear_400s(client: httpx.AsyncClient, body: bytes, fragment: str) -> None:
    response = await client.post("/runs", content=body, headers={"content-type": "application/json"})
    error = assert_error(response, 400, "invalid_request")
    assert fragment in error["message"]
    assert (await client.get("/runs")).json()["runs"] == []  # nothing was created


@pytest.mark.anyio
async def test_size_limits(client: httpx.AsyncClient) -> None:
    big = "x" * MAX_INPUT_BYTES
    error = assert_error(await client.post("/runs", json={"agent": "echo", "input": big}), 400, "invalid_request")
    assert error["details"]["limit_bytes"] == MAX_INPUT_BYTES
    error = assert_error(await client.post("/runs", content=b" " * 2_000_000), 413, "payload_too_large")
    assert "larger than" in error["message"]
    ok = await client.post("/runs", json={"agent": "echo", "input": "x" * (MAX_INPUT_BYTES - 1000)})
    assert ok.status_code == 200


@pytest.mark.anyio
async def test_not_found_and_method_not_allowed(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/runs/nope"), 404, "not_found")
    assert_error(await client.get("/runs/nope/events"), 404, "not_found")
    assert_error(await client.get("/runs/nope/events", headers={"accept": "text/event-stream"}), 404, "not_found")
    assert_error(await client.post("/runs/nope/input", json={"content": "x"}), 404, "not_found")
    error = assert_error(await client.post("/runs", json={"agent": "ghost"}), 404, "not_found")
    assert "echo" in error["details"]["known"]
    assert_error(await client.get("/nowhere"), 404, "not_found")
    for odd in ("%00", "%ff", "%ed%a0%80", "x" * 300):
        assert_error(await client.get(f"/runs/{odd}"), 404, "not_found")
        assert_error(await client.get(f"/runs/{odd}/events", headers={"accept": "text/event-stream"}), 404, "not_found")
        assert_error(await client.get(f"/sessions/{odd}/history"), 404, "not_found")
    assert_error(await client.get("/runs", params={"session_id": "\x00"}), 400, "invalid_request")
    response = await client.delete("/runs")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"


@pytest.mark.anyio
async def test_idempotency_key_returns_the_same_run(client: httpx.AsyncClient) -> None:
    first = (await client.post("/runs", json={"agent": "echo", "input": "once"}, headers={"idempotency-key": "k1"})).json()
    second = (await client.post("/runs", json={"agent": "echo", "input": "once"}, headers={"idempotency-key": "k1"})).json()
    assert first["run_id"] == second["run_id"]
    streamed = await sse_events(
        client, "/runs", method="POST", json={"agent": "echo", "input": "once", "mode": "stream", "idempotency_key": "k1"}
    )
    assert streamed[0]["run_id"] == first["run_id"] and streamed[-1]["type"] == "run.completed"
    assert len((await client.get("/runs")).json()["runs"]) == 1


@pytest.mark.anyio
async def test_a_delayed_run_is_pending_until_its_start_at(client: httpx.AsyncClient) -> None:
    from datetime import datetime, timedelta, timezone

    start_at = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    body = {"agent": "echo", "input": "later", "mode": "async", "start_at": start_at.isoformat()}
    response = await client.post("/runs", json=body)
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["status"] == "pending" and datetime.fromisoformat(run["start_at"].replace("Z", "+00:00")) == start_at
    assert (await client.get(f"/runs/{run['run_id']}")).json()["status"] == "pending"
    done = await wait_status(client, run["run_id"], "completed")
    assert datetime.fromisoformat(done["started_at"].replace("Z", "+00:00")) >= start_at
    assert done["suspended"] is False and done["discarded_messages"] == [] and done["sleeping_until"] is None
    assert done["waiting_for_agent"] is False  # this engine has the agent


@pytest.mark.anyio
@pytest.mark.parametrize(
    "start_at", ["tomorrow", "2026-01-01T10:00:00", 12, "9999-01-01T00:00:00Z", "2026-13-01T00:00:00Z"]
)
async def test_a_bad_start_at_is_refused(client: httpx.AsyncClient, start_at: object) -> None:
    response = await client.post("/runs", json={"agent": "echo", "input": "x", "start_at": start_at})
    assert_error(response, 400, "invalid_request")
    assert (await client.get("/runs")).json()["runs"] == []
