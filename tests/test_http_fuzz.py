"""Hypothesis-generated bad requests never get a 5xx: always a 4xx in the one error format
(or a success when the generated request happens to be valid)."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from httpkit import demo_engine, serve
from kit import SERVERS
from runengine.adapters.asgi import engine_asgi_app

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes


ANYIO_BACKENDS = ("asyncio",)  # uvicorn


@pytest.fixture(scope="module")
async def client():
    async with serve(engine_asgi_app(demo_engine())) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
            yield http


# Any code point, lone surrogates and control characters included (json.dumps escapes them).
any_text = st.text(st.characters(codec=None, categories=None), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["agent", "input", "mode", "session_id", "metadata", "timeout", "idempotency_key", "session_policy", "on_disconnect", "content", "reason"]
) | any_text
# Values that are right, nearly right and wrong for the known fields.
field_values = (
    json_values
    | st.sampled_from(["echo", "pizza", "ghost", "sync", "async", "stream", "later", "cancel", "reject", ""])
    | st.floats()
    | st.integers(min_value=-(2**70), max_value=2**70)
)
bodies = st.dictionaries(field_names, field_values, max_size=6).map(lambda d: json.dumps(d).encode())
raw_bodies = st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()) | bodies
# What a URL can carry: any character but a lone surrogate, which no client can encode (UTF-8).
url_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
query_values = url_text | st.integers().map(str)


def assert_clean(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message", "details"}


@pytest.mark.anyio
@settings(SERVERS, max_examples=120)
@given(body=bodies | raw_bodies)
async def test_create_run_bodies(client: httpx.AsyncClient, body: bytes) -> None:
    # A generated stream request with an agent that waits for input would stay open: read its head only.
    async with client.stream("POST", "/runs", content=body, headers={"content-type": "application/json"}) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            assert response.status_code == 200
            return
        await response.aread()
    assert_clean(response)


@pytest.fixture(scope="module")
async def waiting(client: httpx.AsyncClient) -> list[str]:
    """A run waiting for input, replaced whenever a generated request ends it."""
    return [(await client.post("/runs", json={"agent": "approval"})).json()["run_id"]]


@pytest.mark.anyio
@settings(SERVERS, max_examples=80)
@given(body=raw_bodies, which=st.sampled_from(["input", "input", "cancel"]))
async def test_input_and_cancel_bodies(client: httpx.AsyncClient, waiting: list[str], body: bytes, which: str) -> None:
    response = await client.post(f"/runs/{waiting[0]}/{which}", content=body)
    assert_clean(response)
    if response.status_code == 200:
        waiting[0] = (await client.post("/runs", json={"agent": "approval"})).json()["run_id"]


@pytest.fixture(scope="module")
async def finished(client: httpx.AsyncClient) -> str:
    return (await client.post("/runs", json={"agent": "echo", "input": "x", "session_id": "s"})).json()["run_id"]


@pytest.mark.anyio
@settings(SERVERS, max_examples=80)
@given(
    params=st.dictionaries(st.sampled_from(["session_id", "status", "limit", "before", "after_seq", "on_disconnect"]), query_values),
    last_event_id=st.none() | query_values,
    path=st.sampled_from(["/runs", "/runs/{id}/events", "/runs/{id}", "/sessions/{id}/history", "/agents"]),
    sse=st.booleans(),
)
async def test_query_strings_and_headers(
    client: httpx.AsyncClient, finished: str, params, last_event_id, path: str, sse: bool
) -> None:
    headers = {"accept": "text/event-stream"} if sse else {}
    if last_event_id is not None and last_event_id.isprintable() and last_event_id.isascii():
        headers["last-event-id"] = last_event_id
    target = path.replace("{id}", finished if "runs" in path else "s")
    async with client.stream("GET", target, params=params, headers=headers) as response:
        await response.aread()
    assert_clean(response)


@pytest.fixture(scope="module")
async def v1_waiting(client: httpx.AsyncClient) -> list[str]:
    """A /v1 run waiting for input, replaced whenever a generated request ends it."""
    return [(await client.post("/v1/threads/fuzz/runs", json={"persona_id": "approval"})).json()["run_id"]]


@pytest.mark.anyio
@settings(SERVERS, max_examples=80)
@given(body=raw_bodies, thread=url_text.filter(bool))
async def test_v1_create_and_input_bodies(client: httpx.AsyncClient, v1_waiting: list[str], body: bytes, thread: str) -> None:
    assert_clean(await client.post(f"/v1/threads/{quote(thread, safe='')}/runs", content=body))
    response = await client.post(f"/v1/runs/{v1_waiting[0]}/input", content=body)
    assert_clean(response)
    if response.status_code == 200:
        v1_waiting[0] = (await client.post("/v1/threads/fuzz/runs", json={"persona_id": "approval"})).json()["run_id"]


@pytest.mark.anyio
@settings(SERVERS, max_examples=80)
@given(
    params=st.dictionaries(st.sampled_from(["limit", "before", "status", "after_seq"]), query_values),
    last_event_id=st.none() | query_values,
    path=st.sampled_from(["/v1/runs", "/v1/runs/{id}/events", "/v1/runs/{id}", "/v1/threads/s/runs"]),
)
async def test_v1_query_strings_and_headers(client: httpx.AsyncClient, finished: str, params, last_event_id, path: str) -> None:
    headers = {"accept": "text/event-stream"}
    if last_event_id is not None and last_event_id.isprintable() and last_event_id.isascii():
        headers["last-event-id"] = last_event_id
    async with client.stream("GET", path.replace("{id}", finished), params=params, headers=headers) as response:
        await response.aread()
    assert_clean(response)
