"""GET /openapi.json describes what the server really does: every response seen in a tour of
the API (successes and errors) has a documented status and validates against its schema."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from jsonschema import Draft202012Validator

from httpkit import demo_engine, serve, sse_events, wait_status
from runengine.adapters.asgi import engine_asgi_app

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes


ANYIO_BACKENDS = ("asyncio",)  # uvicorn


def operation_for(doc: dict, method: str, path: str) -> dict:
    for template, item in doc["paths"].items():
        pattern = "^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in item:
            return item[method.lower()]
    raise AssertionError(f"{method} {path} is not documented")


def check(doc: dict, response: httpx.Response) -> None:
    request = response.request
    operation = operation_for(doc, request.method, request.url.path)
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{request.method} {request.url.path}: {response.status_code} is not documented"
    if response.status_code == 204:
        assert "content" not in documented
        return
    media = response.headers["content-type"].split(";")[0]
    assert media in documented["content"], f"{media} not documented for {response.status_code}"
    if media == "application/json":
        schema = {"components": doc["components"], **documented["content"][media]["schema"]}
        Draft202012Validator(schema).validate(json.loads(response.content))


@contextlib.asynccontextmanager
async def tour(auth: bool, document: str, prefix: str = "") -> AsyncIterator[tuple[dict, httpx.AsyncClient, list[httpx.Response]]]:
    """A server of the demo engine (with an auth hook or without), its OpenAPI document at
    `document`, and a client at `prefix` that keeps every response it gets, read to its end."""
    hook = (lambda headers: headers.get("authorization", "").removeprefix("Bearer ") or None) if auth else None
    seen: list[httpx.Response] = []

    async def record(response: httpx.Response) -> None:
        await response.aread()
        seen.append(response)

    async with serve(engine_asgi_app(demo_engine(), auth=hook)) as url:
        headers = {"authorization": "Bearer alice"} if auth else {}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as plain:
            doc = (await plain.get(document)).json()
        async with httpx.AsyncClient(
            base_url=url + prefix, headers=headers, timeout=30.0, event_hooks={"response": [record]}
        ) as client:
            yield doc, client, seen


@pytest.mark.anyio
@pytest.mark.parametrize("auth", [False, True])
async def test_every_response_matches_the_document(auth: bool) -> None:
    async with tour(auth, "/openapi.json") as (doc, client, seen):
        assert ("security" in doc) is auth
        done = (await client.post("/runs", json={"agent": "pizza", "input": "cheese", "session_id": "s1"})).json()
        pending = (await client.post("/runs", json={"agent": "approval", "mode": "async"})).json()
        await wait_status(client, pending["run_id"], "waiting_for_input")
        await client.get(f"/runs/{done['run_id']}")
        await client.get(f"/runs/{done['run_id']}/events", params={"limit": 3})
        await client.get(f"/runs/{done['run_id']}/events", headers={"accept": "text/event-stream", "last-event-id": "999"})
        await client.get("/runs", params={"session_id": "s1", "limit": 1})
        await client.get("/runs", params={"status": "completed"})
        await client.get("/sessions/s1/history")
        await client.get("/agents")
        await client.post(f"/runs/{pending['run_id']}/input", json={"content": {"answer": "no"}})
        await client.post(f"/runs/{pending['run_id']}/input", json={"content": "again"})  # 409 once ended
        await client.post(f"/runs/{pending['run_id']}/cancel", json={"reason": "done"})
        listening = (await client.post("/runs", json={"agent": "listener", "mode": "async"})).json()
        await client.post(f"/runs/{listening['run_id']}/signals/msg", json={"payload": {"hi": 1}})
        await client.post(f"/runs/{listening['run_id']}/signals/bad%20name", json={"payload": 1})
        await client.post(f"/runs/{pending['run_id']}/signals/msg")  # 409: ended
        await client.post("/runs/missing/signals/msg")
        fanned = (await client.post("/runs", json={"agent": "fanout", "input": "a b"})).json()
        await client.get(f"/runs/{fanned['run_id']}/children")
        await client.get(f"/runs/{fanned['children'][0]['run_id']}")
        await client.get("/runs/missing/children")
        await client.post("/runs", json={"agent": "echo", "mode": "sometimes"})
        await client.post("/runs", json={"agent": "nobody"})
        await client.post("/runs", content=b"{")
        await client.get("/runs/missing")
        await client.get("/runs/missing/events")
        await client.post("/runs/missing/cancel")
        await client.post("/runs/missing/input", json={"content": 1})
        await client.get("/runs", params={"limit": "-1"})
        await client.get("/sessions/missing/history")
        await client.get("/runs/x/events", params={"after_seq": "abc"})
        if auth:
            client.headers.pop("authorization")
            await client.get("/runs")
            await client.post("/runs", json={"agent": "echo"})
            await client.get(f"/runs/{done['run_id']}")
        streamed = await sse_events(client, "/runs", method="POST", json={"agent": "echo", "input": "a b", "mode": "stream"}) if not auth else []
        assert not auth or streamed == []
    statuses = {r.status_code for r in seen}
    assert {200, 202, 204, 400, 404, 409} <= statuses
    assert (401 in statuses) is auth
    for response in seen:
        check(doc, response)


@pytest.mark.anyio
@pytest.mark.parametrize("auth", [False, True])
async def test_every_v1_response_matches_its_document(auth: bool) -> None:
    """The /v1 profile (seed 004) has its own document at /v1/openapi.json, paths relative to /v1."""
    async with tour(auth, "/v1/openapi.json", "/v1") as (doc, client, seen):
        assert ("security" in doc) is auth and doc["servers"] == [{"url": "/v1"}]
        mounted = {**doc, "paths": {"/v1" + path: item for path, item in doc["paths"].items()}}
        done = (await client.post("/threads/t1/runs", json={"persona_id": "pizza", "input": "cheese"})).json()
        pending = (await client.post("/threads/t1/runs", json={"persona_id": "approval"})).json()
        await wait_status(client, pending["run_id"], "waiting_for_input")
        await wait_status(client, done["run_id"], "completed")
        await client.get("/threads/t1/runs", params={"limit": 1})
        await client.get("/runs", params={"status": "completed", "limit": 1})
        await client.get("/runs", params={"before": done["run_id"]})
        await client.get(f"/runs/{done['run_id']}")
        async with client.stream("GET", f"/runs/{done['run_id']}/events") as stream:
            await stream.aread()
        await client.post(f"/runs/{pending['run_id']}/input", json={"content": "x" * 40_000})
        await client.post(f"/runs/{pending['run_id']}/input", json={"content": "yes"})
        await wait_status(client, pending["run_id"], "completed")
        await client.post(f"/runs/{pending['run_id']}/input", json={"content": "again"})  # 409 once ended
        await client.post(f"/runs/{done['run_id']}:cancel")
        await client.post("/threads/t1/runs", json={"persona_id": "nobody"})
        await client.post("/threads/t1/runs", content=b"{")
        await client.get("/runs/missing")
        await client.get("/threads/missing/runs")
        await client.get("/runs", params={"limit": "-1"})
        await client.get("/runs/x/events", params={"after_seq": "abc"})
        if auth:
            client.headers.pop("authorization")
            await client.get("/runs")
            await client.post("/threads/t1/runs", json={})
    statuses = {r.status_code for r in seen}
    assert {200, 201, 400, 404, 409, 413} <= statuses
    assert (401 in statuses) is auth
    for response in seen:
        check(mounted, response)


@pytest.mark.anyio
@pytest.mark.parametrize("auth", [False, True])
async def test_every_langgraph_response_matches_its_document(auth: bool) -> None:
    """The /langgraph profile's document at /langgraph/openapi.json, paths relative to /langgraph."""
    async with tour(auth, "/langgraph/openapi.json", "/langgraph") as (doc, client, seen):
        assert ("security" in doc) is auth and doc["servers"] == [{"url": "/langgraph"}]
        mounted = {**doc, "paths": {"/langgraph" + path: item for path, item in doc["paths"].items()}}
        human = {"messages": [{"type": "human", "content": "cheese"}]}
        await client.post("/assistants/search", json={"limit": 2})
        await client.get("/assistants/echo")
        await client.get("/assistants/nobody")
        await client.post("/threads", json={"thread_id": "t1", "metadata": {"k": 1}})
        await client.post("/threads", json={"thread_id": "t1"})  # 409: taken
        await client.post("/threads/t1/runs/wait", json={"assistant_id": "pizza", "input": human})
        async with client.stream("POST", "/threads/t1/runs/stream", json={"assistant_id": "echo", "input": human,
                                                                          "stream_mode": ["values", "messages-tuple"]}) as stream:
            await stream.aread()
            run_id = stream.headers["content-location"].rsplit("/", 1)[-1]
        pending = (await client.post("/threads/t1/runs", json={"assistant_id": "approval", "input": "refund"})).json()
        await client.post("/threads/t1/runs", json={"assistant_id": "echo", "input": human})  # 409: reject
        await client.get("/threads/t1")
        await client.get("/threads/t1/state")
        await client.post("/threads/t1/history", json={"limit": 5})
        await client.get(f"/threads/t1/runs/{run_id}")
        async with client.stream("GET", f"/threads/t1/runs/{run_id}/stream", headers={"last-event-id": "-1"}) as stream:
            await stream.aread()
        await client.get(f"/threads/t1/runs/{run_id}/join")
        await client.post(f"/threads/t1/runs/{pending['run_id']}/cancel")
        await client.post("/threads/t1/runs", json={"assistant_id": "echo", "checkpoint_id": "c1"})
        await client.post("/threads/t1/runs", json={"assistant_id": "echo", "input": "x" * 300_000})
        await client.post("/threads/t1/runs", content=b"{")
        await client.get("/threads/missing")
        await client.get("/threads/t1/runs/missing")
        await client.get(f"/threads/t1/runs/{run_id}/stream", headers={"last-event-id": "abc"})
        if auth:
            client.headers.pop("authorization")
            await client.get("/threads/t1")
    statuses = {r.status_code for r in seen}
    assert {200, 400, 404, 409} <= statuses
    assert (401 in statuses) is auth
    for response in seen:
        check(mounted, response)
