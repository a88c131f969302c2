"""Issue 20 item 7: a session's history is read a bounded page at a time, over real HTTP on every
surface that lists a session's messages (native, ACP's session object, Platform), and by agents
(`ctx.history()`, the Pydantic AI message history): a `limit` with a default of at most 100
messages, a cursor, `next`; a page never loads the whole session."""

from __future__ import annotations

import tracemalloc
import uuid
from typing import Any

import httpx
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.messages import ModelResponse, TextPart

from httpkit import alice_and_bob, demo_engine
from runengine import RunEngine
from runengine.adapters.sqlite import SQLiteStore
from runengine.integrations.pydantic_ai import agent_from_pydantic_ai
from runengine.limits import DEFAULT_AGENT_HISTORY, DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE

TOKENS = {"t-alice": "alice", "t-bob": "bob"}
ANYIO_BACKENDS = ("asyncio",)  # uvicorn


@pytest.fixture
async def served():
    engine = demo_engine()
    async with alice_and_bob(engine, TOKENS) as (alice, bob):
        yield engine, alice, bob


async def echo_runs(engine: RunEngine, session_id: str, count: int, owner: str = "alice") -> list[str]:
    """`count` echo runs in the session: 2 messages each (the input, the reply)."""
    for i in range(count):
        await engine.execute("echo", f"turn {i}", session_id=session_id, owner=owner)
    return [text for i in range(count) for text in (f"turn {i}", f"turn {i}")]


def bad_request(response: httpx.Response, field: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request", error
    assert error["details"].get("field") == field or repr(field) in error["message"], error


@pytest.mark.server
@pytest.mark.anyio
async def test_native_history_pages_back_in_time_with_a_cursor(served) -> None:
    engine, alice, bob = served
    everything = await echo_runs(engine, "s", 60)  # 120 messages: more than a default page
    first = (await alice.get("/sessions/s/history")).json()
    assert len(first["messages"]) == DEFAULT_HISTORY_PAGE <= 100
    assert [m["content"] for m in first["messages"]] == everything[-DEFAULT_HISTORY_PAGE:]  # the latest, oldest first
    assert first["next"] is not None

    pages, cursor = [], None
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = (await alice.get("/sessions/s/history", params=params)).json()
        assert len(page["messages"]) <= 7
        pages.insert(0, [m["content"] for m in page["messages"]])
        cursor = page["next"]
        if cursor is None:
            break
    assert [text for page in pages for text in page] == everything  # no gap, no duplicate
    assert len(pages) == -(-len(everything) // 7)

    bad_request(await alice.get("/sessions/s/history", params={"limit": MAX_HISTORY_PAGE + 1}), "limit")
    bad_request(await alice.get("/sessions/s/history", params={"limit": 0}), "limit")
    bad_request(await alice.get("/sessions/s/history", params={"cursor": "no-colon"}), "cursor")
    bad_request(await alice.get("/sessions/s/history", params={"cursor": "x:-1"}), "cursor")
    # A cursor naming a run that is not one of this session's runs of the caller's: refused, nothing shown.
    await echo_runs(engine, "s", 1, owner="bob")
    bobs_run = (await bob.get("/runs", params={"session_id": "s"})).json()["runs"][0]["run_id"]
    refused = await alice.get("/sessions/s/history", params={"cursor": f"{bobs_run}:1"})
    bad_request(refused, "cursor")
    assert "turn" not in refused.text
    await echo_runs(engine, "other", 1)
    other_run = (await alice.get("/runs", params={"session_id": "other"})).json()["runs"][0]["run_id"]
    bad_request(await alice.get("/sessions/s/history", params={"cursor": f"{other_run}:1"}), "cursor")


@pytest.mark.server
@pytest.mark.anyio
async def test_acp_session_object_is_a_page_with_a_next_link(served) -> None:
    engine, alice, _ = served
    session_id = str(uuid.uuid4())
    everything = await echo_runs(engine, session_id, 60)
    response = await alice.get(f"/acp/sessions/{session_id}")
    body = response.json()
    assert set(body) == {"id", "history", "state"}  # seed 003's session object, nothing added
    assert len(body["history"]) == DEFAULT_HISTORY_PAGE
    texts = [(await alice.get(url)).json()["parts"][0]["content"] for url in body["history"]]
    assert texts == everything[-DEFAULT_HISTORY_PAGE:]

    collected: list[str] = []
    url: str | None = f"/acp/sessions/{session_id}?limit=45"
    while url is not None:
        response = await alice.get(url)
        history = response.json()["history"]
        assert len(history) <= 45
        collected[:0] = [(await alice.get(u)).json()["parts"][0]["content"] for u in history]
        link = response.headers.get("link")
        url = link[link.index("<") + 1 : link.index(">")] if link else None
        if link:
            assert link.endswith('; rel="next"')
    assert collected == everything
    # A message URL that names nothing of the session: 404 as ACP answers a missing one.
    assert (await alice.get(f"/acp/sessions/{session_id}/history/0")).status_code == 404
    assert (await alice.get(f"/acp/sessions/{session_id}/history/{'f' * 32}:0")).status_code == 404


@pytest.mark.server
@pytest.mark.anyio
async def test_platform_history_is_paged(served) -> None:
    _, alice, _ = served
    session = (await alice.post("/platform/apps/echo/sessions", json={})).json()["session_id"]
    for i in range(6):
        r = await alice.post("/platform/apps/echo/execute", json={"message": f"m{i}", "session_id": session})
        assert r.status_code == 200, r.text
    path = f"/platform/apps/echo/sessions/{session}/history"
    whole = (await alice.get(path)).json()
    assert len(whole["messages"]) == 12 and whole["next"] is None
    page = (await alice.get(path, params={"limit": 5})).json()
    assert page["messages"] == whole["messages"][-5:] and page["next"]
    older = (await alice.get(path, params={"limit": 5, "cursor": page["next"]})).json()
    assert older["messages"] == whole["messages"][-10:-5]
    bad_request(await alice.get(path, params={"limit": MAX_HISTORY_PAGE + 1}), "limit")


@pytest.mark.anyio
async def test_a_page_reads_the_runs_it_shows_not_the_whole_session(tmp_path) -> None:
    engine = RunEngine(SQLiteStore(str(tmp_path / "h.db")))

    @engine.agent("big")
    async def big(ctx: Any) -> None:
        await ctx.say("ok")

    async with engine:
        for i in range(40):  # 40 runs x 200 KB inputs: 8 MB of history
            await engine.execute("big", f"{i:03d}" + "x" * 200_000, session_id="s")
        await engine.session_history("s", limit=2)  # warm caches, compiled statements ...
        tracemalloc.start()
        try:
            page = await engine.session_history("s", limit=3)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert [m.content[:3] for m in page.messages] == ["ok", "039", "ok"]
    assert peak < 2_000_000, f"a 3-message page peaked at {peak} bytes"


@pytest.mark.anyio
async def test_ctx_history_is_the_latest_messages_by_default() -> None:
    seen: list[list[Any]] = []
    engine = RunEngine("memory://")

    @engine.agent("chat")
    async def chat(ctx: Any) -> None:
        seen.append([m.content for m in await ctx.history()])
        seen.append([m.content for m in await ctx.history(limit=3)])
        await ctx.say(ctx.input)

    async with engine:
        for i in range(DEFAULT_AGENT_HISTORY // 2 + 5):
            await engine.execute("chat", f"t{i}", session_id="s")
    everything = [f"t{i}" for i in range(DEFAULT_AGENT_HISTORY // 2 + 4) for _ in (0, 1)]
    assert seen[-2] == everything[-DEFAULT_AGENT_HISTORY:]
    assert seen[-1] == everything[-3:]


@pytest.mark.anyio
async def test_the_pydantic_ai_message_history_is_bounded() -> None:
    requests: list[list[ModelMessage]] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        requests.append(messages)
        return ModelResponse(parts=[TextPart("ok")])

    engine = RunEngine("memory://")
    engine.agents.add(agent_from_pydantic_ai(Agent(FunctionModel(model)), name="default", stream=False))
    engine.agents.add(agent_from_pydantic_ai(Agent(FunctionModel(model)), name="four", stream=False, history_limit=4))
    async with engine:
        for i in range(DEFAULT_AGENT_HISTORY // 2 + 3):
            await engine.execute("default", f"q{i}", session_id="s")
        await engine.execute("four", "last", session_id="s")
    assert len(requests[-2]) == DEFAULT_AGENT_HISTORY + 1  # the history, then this run's prompt
    assert len(requests[-1]) == 4 + 1
