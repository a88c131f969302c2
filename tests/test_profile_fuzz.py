"""Hypothesis-generated requests to the ACP, Kore, /v1 (seed 004), /ai (AI SDK) and /langgraph profiles, over real HTTP: never a 5xx, and
every error in the one error format (ACP errors also carry ACP's top-level fields)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runengine.adapters.profiles.acp import AcpProfile
from runengine.adapters.profiles.aisdk import TRIGGERS, AiSdkProfile
from runengine.adapters.profiles.kore import KoreProfile
from runengine.adapters.profiles.langgraph import LangGraphProfile
from runengine.adapters.profiles.threads import ThreadsProfile
from runengine.context import RunContext
from runengine.engine import RunEngine
from runengine.http.router import Router

from profile_http import serve_app
from kit import SERVERS

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes


ANYIO_BACKENDS = ("asyncio",)


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    engine = RunEngine("memory://")

    @engine.agent("echo")
    async def echo(ctx: RunContext) -> None:
        await ctx.thought("t")
        await ctx.delta(json.dumps(ctx.input)[:50])

    async with engine:
        root = Router()
        root.mount("/acp", AcpProfile(engine))
        root.mount("/kore", KoreProfile(engine, tools={"tool": lambda **kw: kw}))
        root.mount("/v1", ThreadsProfile(engine))  # default agent: echo
        root.mount("/ai", AiSdkProfile(engine, default_agent="echo"))
        root.mount("/langgraph", LangGraphProfile(engine))
        async with serve_app(root) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
            yield client


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
parts = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "content": json_values | st.text(max_size=10),
            "content_type": st.sampled_from(["text/plain", "image/png", None]) | json_values,
            "content_url": st.sampled_from(["http://x/y", None]) | json_values,
            "name": st.text(max_size=5) | st.none(),
        },
    ),
    max_size=3,
)
messages = st.lists(st.fixed_dictionaries({"parts": parts}, optional={"role": st.text(max_size=8)}) | json_values, max_size=2)
uuids = st.uuids().map(str) | st.text(max_size=10)
acp_bodies = st.fixed_dictionaries(
    {},
    optional={
        "agent_name": st.sampled_from(["echo", "ghost", "webhook.delivery", "kore.tool"]) | json_values,
        "input": messages | json_values,
        "mode": st.sampled_from(["sync", "async", "stream", "later"]) | json_values,
        "session_id": uuids | json_values,
        "session": st.fixed_dictionaries({"id": uuids}) | json_values,
        "session_policy": st.sampled_from(["reject", "enqueue", "interrupt", "allow", "never"]) | json_values,
        "extra": json_values,
    },
)
identities = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["userReference", "sessionReference", "sessionIdentity", "email"]),
            "value": st.text(min_size=0, max_size=8) | json_values,
        }
    ),
    max_size=3,
) | json_values
kore_inputs = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "tool_input", "image"]), "content": st.text(max_size=10) | json_values}
    ),
    max_size=3,
) | json_values
flags = st.booleans() | st.sampled_from(["true", "false", "yes"]) | json_values
kore_bodies = st.fixed_dictionaries(
    {},
    optional={
        "sessionIdentity": identities,
        "input": kore_inputs,
        "debug": st.fixed_dictionaries({}, optional={"enable": flags, "debugMode": st.sampled_from(["thoughts", "all", "x"])})
        | json_values,
        "stream": st.fixed_dictionaries(
            {}, optional={"enable": flags, "streamMode": st.sampled_from(["tokens", "messages", "custom", "x"])}
        )
        | json_values,
        "isAsync": flags,
        "metadata": json_values,
        "attachments": st.fixed_dictionaries(
            {}, optional={"includeFiles": json_values | st.text(max_size=8), "excludeFiles": json_values}
        )
        | json_values,
        "invoke": st.fixed_dictionaries(
            {"tasks": st.lists(st.fixed_dictionaries({"type": st.sampled_from(["agent", "tool", "x"]),
                                                       "name": st.sampled_from(["echo", "tool", "ghost"]) | json_values}),
                               max_size=2)}
        )
        | json_values,
        "callbackUrl": st.sampled_from(["http://127.0.0.1/x", "https://10.0.0.1/", "nope"]) | json_values,
        "multitaskStrategy": st.sampled_from(["reject", "enqueue", "x"]) | json_values,
    },
)


def check(response: httpx.Response, *, acp: bool) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body["error"]) == {"code", "message", "details"}
        if acp:
            assert body["code"] and body["message"] == body["error"]["message"]


async def send(http: httpx.AsyncClient, path: str, body: bytes, *, acp: bool) -> None:
    async with http.stream("POST", path, content=body, headers={"content-type": "application/json"}) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            assert response.status_code == 200
            await response.aread()  # the echo agent ends at once: the stream ends too
            return
        await response.aread()
        check(response, acp=acp)


@pytest.mark.anyio
@settings(SERVERS, max_examples=100)
@given(body=acp_bodies.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=60))
async def test_acp_create_run(http: httpx.AsyncClient, body: bytes) -> None:
    await send(http, "/acp/runs", body, acp=True)


@pytest.mark.anyio
@settings(SERVERS, max_examples=40)
@given(run_id=uuids, body=st.dictionaries(st.sampled_from(["await_resume", "mode"]), json_values).map(json.dumps))
async def test_acp_run_paths(http: httpx.AsyncClient, run_id: str, body: str) -> None:
    for method, path in (("GET", "/runs/{}"), ("GET", "/runs/{}/events"), ("POST", "/runs/{}"), ("POST", "/runs/{}/cancel"),
                         ("GET", "/sessions/{}"), ("GET", "/agents/{}")):
        url = "/acp" + path.format(quote(run_id, safe="") or "x")
        check(await http.request(method, url, content=body.encode()), acp=True)


@pytest.mark.anyio
@settings(SERVERS, max_examples=100)
@given(body=kore_bodies.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=60))
async def test_kore_execute(http: httpx.AsyncClient, body: bytes) -> None:
    await send(http, "/kore/apps/echo/environments/draft/runs/execute", body, acp=False)


@pytest.mark.anyio
@settings(SERVERS, max_examples=40)
@given(run_id=st.text(min_size=1, max_size=12),
       body=st.fixed_dictionaries({}, optional={"sessionIdentity": identities}).map(json.dumps))
async def test_kore_status(http: httpx.AsyncClient, run_id: str, body: str) -> None:
    path = f"/kore/apps/echo/environments/draft/runs/{quote(run_id, safe='')}/status"
    response = await http.post(path, content=body.encode())
    check(response, acp=False)


v1_bodies = st.fixed_dictionaries(
    {},
    optional={
        "route_id": st.sampled_from(["r1", ""]) | json_values,
        "persona_id": st.sampled_from(["echo", "echo@2", "ghost@1", "@", "echo@", "", "webhook.delivery"]) | json_values,
        "input": json_values,
        "extra": json_values,
    },
)
query_values = st.text(max_size=8) | st.integers(-5, 300).map(str) | st.sampled_from(["completed", "running", ""])


@pytest.mark.anyio
@settings(SERVERS, max_examples=100)
@given(thread=st.text(min_size=1, max_size=10), body=v1_bodies.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=60))
async def test_v1_create_run(http: httpx.AsyncClient, thread: str, body: bytes) -> None:
    await send(http, f"/v1/threads/{quote(thread, safe='')}/runs", body, acp=False)


@pytest.mark.anyio
@settings(SERVERS, max_examples=60)
@given(
    run_id=st.text(min_size=1, max_size=12),
    body=st.fixed_dictionaries({}, optional={"content": json_values, "x": json_values}).map(json.dumps),
    query=st.dictionaries(st.sampled_from(["limit", "before", "status", "after_seq"]), query_values, max_size=3),
)
async def test_v1_paths(http: httpx.AsyncClient, run_id: str, body: str, query: dict[str, str]) -> None:
    quoted = quote(run_id, safe="")
    for method, path in (("GET", "/v1/runs"), ("GET", f"/v1/runs/{quoted}"), ("POST", f"/v1/runs/{quoted}:cancel"),
                         ("POST", f"/v1/runs/{quoted}/input"), ("GET", f"/v1/runs/{quoted}/events"),
                         ("GET", f"/v1/threads/{quoted}/runs")):
        check(await http.request(method, path, params=query, content=body.encode()), acp=False)


ui_parts = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "reasoning", "tool-ask", "step-start"]) | json_values},
        optional={
            "text": st.text(max_size=10) | json_values,
            "toolCallId": st.sampled_from(["ask-1", "ask-4"]) | json_values,
            "approval": st.fixed_dictionaries({}, optional={"id": st.sampled_from(["ask-1", "ask-4"]) | json_values,
                                                            "approved": st.booleans() | json_values}) | json_values,
        },
    )
    | json_values,
    max_size=3,
)
ui_messages = st.lists(
    st.fixed_dictionaries({}, optional={"id": st.text(max_size=6), "role": st.sampled_from(["user", "assistant", "system"])
                                        | json_values, "parts": ui_parts | json_values}) | json_values,
    max_size=3,
)
chat_bodies = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["c1", "c2", "", "c\n"]) | st.text(max_size=8) | json_values,
        "messages": ui_messages | json_values,
        "trigger": st.sampled_from([*TRIGGERS, "resume-stream", ""]) | json_values,
        "messageId": st.text(max_size=6) | json_values,
        "agent": st.sampled_from(["echo", "ghost", "webhook.delivery", ""]) | json_values,
        "extra": json_values,
    },
)


@pytest.mark.anyio
@settings(SERVERS, max_examples=100)
@given(body=chat_bodies.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=60))
async def test_ai_chat(http: httpx.AsyncClient, body: bytes) -> None:
    await send(http, "/ai/chat", body, acp=False)


@pytest.mark.anyio
@settings(SERVERS, max_examples=60)
@given(chat_id=st.text(min_size=1, max_size=12), query=st.dictionaries(st.sampled_from(["after_seq", "x"]), query_values, max_size=2),
       last_event_id=st.none() | st.text(st.sampled_from("0123456789-+ab"), max_size=22))
async def test_ai_paths(http: httpx.AsyncClient, chat_id: str, query: dict[str, str], last_event_id: str | None) -> None:
    quoted = quote(chat_id, safe="")
    headers = {} if last_event_id is None else {"last-event-id": last_event_id}
    for method, path in (("GET", f"/ai/chat/{quoted}/stream"), ("POST", f"/ai/chat/{quoted}/stop")):
        response = await http.request(method, path, params=query, headers=headers)
        check(response, acp=False)
        assert response.status_code in (204, 400, 404), response.text  # no chat of these is active


lg_messages = st.lists(
    st.fixed_dictionaries({}, optional={"type": st.sampled_from(["human", "ai", "user"]) | json_values,
                                        "role": st.sampled_from(["user", "x"]), "id": uuids | json_values,
                                        "content": st.text(max_size=10) | json_values})
    | st.text(max_size=5) | json_values,
    max_size=3,
)
lg_run_bodies = st.fixed_dictionaries(
    {},
    optional={
        "assistant_id": st.sampled_from(["echo", "ghost", "webhook.delivery", ""]) | json_values,
        "input": st.fixed_dictionaries({"messages": lg_messages}) | json_values,
        "command": st.fixed_dictionaries({}, optional={"resume": json_values, "goto": json_values}) | json_values,
        "metadata": json_values,
        "stream_mode": st.sampled_from(["values", "messages-tuple", "updates", "custom", "events", "debug", "x"])
        | st.lists(st.sampled_from(["values", "messages-tuple", "events", "x"]), max_size=3) | json_values,
        "multitask_strategy": st.sampled_from(["reject", "interrupt", "rollback", "enqueue", "x"]) | json_values,
        "if_not_exists": st.sampled_from(["create", "reject", "x"]) | json_values,
        "on_disconnect": st.sampled_from(["cancel", "continue", "x"]) | json_values,
        "after_seconds": st.sampled_from([0, 0.0, -1, 10**9]) | json_values,
        "checkpoint_id": st.none() | json_values,
        "config": json_values,
        "extra": json_values,
    },
)


@pytest.mark.anyio
@settings(SERVERS, max_examples=100)
@given(
    thread=st.sampled_from(["t1", "t2"]) | st.text(min_size=1, max_size=10),
    suffix=st.sampled_from(["", "/stream", "/wait"]),
    body=lg_run_bodies.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=60),
)
async def test_langgraph_runs(http: httpx.AsyncClient, thread: str, suffix: str, body: bytes) -> None:
    await send(http, f"/langgraph/threads/{quote(thread, safe='')}/runs{suffix}", body, acp=False)


@pytest.mark.anyio
@settings(SERVERS, max_examples=60)
@given(
    thread=st.sampled_from(["t1", "t2"]) | st.text(min_size=1, max_size=10),
    run_id=st.text(min_size=1, max_size=12),
    body=st.dictionaries(st.sampled_from(["thread_id", "metadata", "if_exists", "limit", "before", "graph_id", "offset", "x"]),
                         json_values, max_size=3).map(json.dumps),
    query=st.dictionaries(st.sampled_from(["stream_mode", "cancel_on_disconnect", "action", "wait"]),
                          query_values | st.sampled_from(["values", "rollback", "true"]), max_size=3),
    last_event_id=st.sampled_from(["-1", "0", "3", "-2", "x", ""]),
)
async def test_langgraph_paths(
    http: httpx.AsyncClient, thread: str, run_id: str, body: str, query: dict[str, str], last_event_id: str
) -> None:
    t, r = quote(thread, safe=""), quote(run_id, safe="")
    for method, path in (("POST", "/assistants/search"), ("GET", f"/assistants/{r}"), ("POST", "/threads"),
                         ("GET", f"/threads/{t}"), ("GET", f"/threads/{t}/state"), ("POST", f"/threads/{t}/history"),
                         ("GET", f"/threads/{t}/runs/{r}"), ("GET", f"/threads/{t}/runs/{r}/stream"),
                         ("GET", f"/threads/{t}/runs/{r}/join"), ("POST", f"/threads/{t}/runs/{r}/cancel")):
        response = await http.request(method, "/langgraph" + path, params=query, content=body.encode(),
                                      headers={"last-event-id": last_event_id})
        check(response, acp=False)
