"""The /langgraph profile with the official `langgraph-sdk` client, against the app under uvicorn
(SQLite and PostgreSQL) and a real `runengine serve` SIGKILLed mid-run: a streamed run's text
assembled from messages-tuple, a dropped stream joined with its last event id (no gap, no
duplicate), runs.wait's values, cancel, thread state and history, multitask strategies, and a
clear 400 for what LangGraph offers and this engine does not (checkpoints, graph interrupts)."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.errors import BadRequestError, ConflictError, NotFoundError

from faultkit import ServeProcess
from httpkit import add_test_agents
from kit import until
from profile_http import serve_app
from runengine.adapters.profiles.langgraph import assistant_id_of
from runengine.adapters.profiles.langgraph_shapes import StreamFrames
from runengine.events import MessageDelta
from runengine.http.apikeys import api_key_auth
from runengine.http.openstreams import OpenStreams
from runengine.http.ratelimit import Rate
from runengine.limits import MAX_BODY_BYTES
from runengine import RunContext, RunEngine
from runengine.adapters.server import build_app
from runengine.demo import register_demo_agents
from runengine.worker import WorkerOptions

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

ANYIO_BACKENDS = ("asyncio",)
TUPLE = ["values", "messages-tuple", "updates"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


@asynccontextmanager
async def langgraph(store: str = "memory://", **app_options: Any) -> AsyncIterator[tuple[Any, str]]:
    """The demo engine on `store` served over real HTTP; a langgraph-sdk client for /langgraph."""
    # On PostgreSQL a run is queued: a worker in this engine takes it.
    engine = register_demo_agents(RunEngine(store, worker=WorkerOptions(poll=0.05) if store.startswith("postgresql") else None), delay=0.0)
    add_test_agents(engine)

    @engine.agent("reporter", description="reports progress, calls a tool, answers")
    async def reporter(ctx: RunContext) -> str:
        await ctx.custom("progress", {"pct": 50})
        found = await ctx.tool_call("lookup", {"q": ctx.input}, lambda q: {"hits": 2})
        await ctx.say(f"found {found['hits']}")
        return "done"
    async with engine:
        async with serve_app(build_app(engine, **app_options)) as base:
            yield get_client(url=base + "/langgraph", timeout=30), base


def human(text: str) -> dict[str, Any]:
    return {"messages": [{"type": "human", "content": text}]}


def ids_of(parts: list[Any]) -> list[int]:
    """The ids the client saw, in order. Only an event's last frame carries an id (an SSE client
    gives the frames before it the previous one), so an id repeats over consecutive parts."""
    seen: list[int] = []
    for part in parts:
        if part.id is not None and (not seen or int(part.id) != seen[-1]):
            seen.append(int(part.id))
    return seen


async def raw_ids(base: str, path: str) -> list[int]:
    """The `id:` fields of a stream as sent, frame by frame."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as raw:
        async with raw.stream("GET", path, headers={"last-event-id": "-1"}) as response:
            return [int(line[4:]) async for line in response.aiter_lines() if line.startswith("id: ")]


def assembled(parts: list[Any]) -> dict[str, str]:
    """messages-tuple chunks joined by message id, as a LangGraph front-end assembles them."""
    text: dict[str, str] = {}
    for part in parts:
        if part.event == "messages":
            chunk, meta = part.data
            if chunk["type"] == "AIMessageChunk":
                text[chunk["id"]] = text.get(chunk["id"], "") + chunk["content"]
    return text


# -- streaming ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_streamed_run_assembles_its_text_and_its_ids_are_the_runs_seqs(store_url: str) -> None:
    async with langgraph(store_url) as (client, base):
        thread = await client.threads.create()
        created: list[Any] = []
        parts = [
            part
            async for part in client.runs.stream(
                thread["thread_id"], "echo", input=human("the quick brown fox"), stream_mode=TUPLE,
                on_run_created=created.append,
            )
        ]
        events = [p.event for p in parts]
        assert events[0] == "metadata" and events[-1] == "end"
        run_id = parts[0].data["run_id"]
        assert created and created[0]["run_id"] == run_id and created[0]["thread_id"] == thread["thread_id"]
        assert list(assembled(parts).values()) == ["the quick brown fox"]
        chunk = next(p.data[0] for p in parts if p.event == "messages")
        assert {"content", "id", "tool_call_chunks"} <= set(chunk)
        # Ids are seqs of the run's log: unique, increasing, each naming a real event.
        ids = ids_of(parts)
        assert ids == sorted(set(ids)) and ids[0] == 1
        async with httpx.AsyncClient(base_url=base) as raw:
            log = (await raw.get(f"/runs/{run_id}/events", params={"limit": 1000})).json()
        assert set(ids) <= {e["seq"] for e in log["events"]}
        sent = await raw_ids(base, f"/langgraph/threads/{thread['thread_id']}/runs/{run_id}/stream?stream_mode=values&stream_mode=messages-tuple&stream_mode=updates")
        assert sent == ids  # one id per event at most, on the wire too
        final = [p.data for p in parts if p.event == "values"][-1]
        assert [(m["type"], m["content"]) for m in final["messages"]] == [
            ("human", "the quick brown fox"), ("ai", "the quick brown fox")]
        assert (await client.runs.get(thread["thread_id"], run_id))["status"] == "success"


@pytest.mark.anyio
async def test_a_dropped_stream_joined_with_its_last_event_id_has_no_gap_and_no_duplicate(store_url: str) -> None:
    async with langgraph(store_url) as (client, _):
        thread = await client.threads.create()
        tid = thread["thread_id"]
        first: list[Any] = []
        stream = client.runs.stream(tid, "ticker", input={"n": 60, "every": 0.01}, stream_mode=TUPLE)
        async for part in stream:
            first.append(part)
            if sum(p.event == "messages" for p in first) == 10:
                break  # the client drops the connection mid-run
        await stream.aclose()
        run_id = first[0].data["run_id"]
        last = [p.id for p in first if p.id is not None][-1]
        rest = [part async for part in client.runs.join_stream(tid, run_id, last_event_id=last, stream_mode=TUPLE)]
        both = first + rest
        ids = ids_of(both)
        assert ids == sorted(set(ids)), "an id came twice or out of order"
        assert int(rest[0].id or ids_of(rest)[0]) > int(last)
        assert list(assembled(both).values()) == ["".join(f"t{i} " for i in range(60))]  # no token lost or doubled
        assert rest[-1].event == "end"
        # -1 joins from the run's start (the whole run, never the thread's earlier runs).
        again = [part async for part in client.runs.join_stream(tid, run_id, last_event_id="-1", stream_mode=TUPLE)]
        assert ids_of(again) == ids and again[0].event == "metadata"


@pytest.mark.anyio
async def test_a_join_replays_only_its_run_and_keeps_the_runs_stream_modes() -> None:
    async with langgraph() as (client, _):
        tid = (await client.threads.create())["thread_id"]
        await client.runs.wait(tid, "echo", input=human("first turn"))
        run = await client.runs.create(tid, "echo", input=human("second turn"), stream_mode=["messages-tuple"])
        await client.runs.join(tid, run["run_id"])
        parts = [part async for part in client.runs.join_stream(tid, run["run_id"], last_event_id="-1")]
        assert {p.event for p in parts} == {"metadata", "messages", "end"}  # the run's own modes
        assert list(assembled(parts).values()) == ["second turn"]


def test_a_token_frame_says_what_the_general_encoding_says() -> None:
    """The per-token fast path of messages-tuple encodes the same JSON as the general one."""
    delta = MessageDelta(run_id="r1", seq=7, message_id='m"1\n', content='tok "quoted"\nline ünï')
    fast = StreamFrames(["messages-tuple"], run_id="r1", thread_id="t1", node="echo").frames(delta)
    general = StreamFrames(["messages-tuple", "events"], run_id="r1", thread_id="t1", node="echo").frames(delta)
    fast_frames, general_frames = fast.decode().split("\n\n"), general.decode().split("\n\n")
    assert fast_frames[0].startswith("id: 7\nevent: messages\ndata: ")
    data = [json.loads(frame.split("data: ", 1)[1]) for frame in (fast_frames[0], general_frames[0])]
    assert data[0] == data[1] and data[0][0]["content"] == delta.content and data[0][0]["id"] == delta.message_id
    assert "id: 7" in general_frames[1] and "id: " not in general_frames[0]  # the event's last frame has its seq


@pytest.mark.anyio
async def test_custom_updates_and_events_modes() -> None:
    async with langgraph() as (client, _):
        tid = (await client.threads.create())["thread_id"]
        parts = [p async for p in client.runs.stream(tid, "reporter", input=human("cats"),
                                                     stream_mode=["custom", "updates", "events", "debug"])]
        by_mode: dict[str, list[Any]] = {}
        for part in parts:
            by_mode.setdefault(part.event, []).append(part.data)
        assert set(by_mode) == {"metadata", "custom", "updates", "events", "end"}  # debug: accepted, nothing sent
        assert by_mode["custom"] == [{"name": "progress", "data": {"pct": 50}}]
        updates = [u["reporter"]["messages"][0] for u in by_mode["updates"]]
        assert [m["type"] for m in updates] == ["ai", "tool", "ai"]
        assert updates[0]["tool_calls"][0]["args"] == {"q": "cats"} and updates[1]["content"] == '{"hits":2}'
        kinds = [e["event"] for e in by_mode["events"]]
        assert kinds[0] == "on_chain_start" and kinds[-1] == "on_chain_end"
        assert {"on_tool_start", "on_tool_end"} <= set(kinds)
        assert by_mode["events"][-1]["data"]["output"] == "done"


@pytest.mark.anyio
async def test_on_disconnect_cancel_cancels_the_run_when_the_client_goes() -> None:
    async with langgraph() as (client, _):
        tid = (await client.threads.create())["thread_id"]
        stream = client.runs.stream(tid, "sleeper", input=30, stream_mode=["values"], on_disconnect="cancel")
        run_id = (await stream.__anext__()).data["run_id"]
        await stream.aclose()
        await until(lambda: _status(client, tid, run_id, "interrupted"))
        kept = client.runs.stream(tid, "sleeper", input=30, stream_mode=["values"])  # continue: the default
        other = (await kept.__anext__()).data["run_id"]
        await kept.aclose()
        await anyio.sleep(0.3)
        assert (await client.runs.get(tid, other))["status"] == "running"
        await client.runs.cancel(tid, other)


# -- wait, join, cancel, state, history -------------------------------------------------------------


@pytest.mark.anyio
async def test_wait_returns_the_threads_values_with_tool_calls_and_results(store_url: str) -> None:
    async with langgraph(store_url) as (client, _):
        tid = (await client.threads.create())["thread_id"]
        values = await client.runs.wait(tid, "pizza", input=human("a pizza please"))
        kinds = [m["type"] for m in values["messages"]]
        assert kinds == ["human", "ai", "tool", "ai"]
        call, result = values["messages"][1], values["messages"][2]
        assert call["tool_calls"][0]["name"] == "get_menu" and result["tool_call_id"] == call["tool_calls"][0]["id"]
        assert values["output"] == {"pizza": "margherita", "price": 8.5}
        # The agent's name and its assistant_id name the same assistant.
        again = await client.runs.wait(tid, assistant_id_of("echo"), input={"text": "plain object"})
        assert again["messages"][-1]["content"] == "plain object"  # not a messages input: ctx.input is the object
        assistant = await client.assistants.get("echo")
        assert assistant["assistant_id"] == assistant_id_of("echo") and assistant["graph_id"] == "echo"
        names = [a["graph_id"] for a in await client.assistants.search(limit=100)]
        assert "echo" in names and "hidden" not in names


@pytest.mark.anyio
async def test_cancel_interrupts_the_run_and_rollback_deletes_it() -> None:
    async with langgraph() as (client, _):
        tid = (await client.threads.create())["thread_id"]
        run = await client.runs.create(tid, "sleeper", input=30)
        await until(lambda: _status(client, tid, run["run_id"], "running"))
        await client.runs.cancel(tid, run["run_id"])
        assert (await client.runs.get(tid, run["run_id"]))["status"] == "interrupted"
        joined = await client.runs.join(tid, run["run_id"])
        assert [m["type"] for m in joined["messages"]] == ["human"]  # its input; no reply
        other = await client.runs.create(tid, "sleeper", input=30)
        await client.runs.cancel(tid, other["run_id"], action="rollback")
        with pytest.raises(NotFoundError):
            await client.runs.get(tid, other["run_id"])


async def _status(client: Any, tid: str, run_id: str, status: str) -> bool:
    return (await client.runs.get(tid, run_id))["status"] == status


@pytest.mark.anyio
async def test_thread_state_and_history_follow_its_runs() -> None:
    async with langgraph() as (client, _):
        thread = await client.threads.create(metadata={"user": "u1"})
        tid = thread["thread_id"]
        assert thread["status"] == "idle" and thread["values"] == {"messages": []}
        await client.runs.wait(tid, "echo", input=human("one"))
        await client.runs.wait(tid, "echo", input=human("two"))
        state = await client.threads.get_state(tid)
        assert [m["content"] for m in state["values"]["messages"]] == ["one", "one", "two", "two"]
        history = await client.threads.get_history(tid)
        assert [len(s["values"]["messages"]) for s in history] == [4, 2]  # newest first
        assert history[0]["parent_checkpoint"]["checkpoint_id"] == history[1]["checkpoint"]["checkpoint_id"]
        assert len(await client.threads.get_history(tid, limit=1)) == 1
        got = await client.threads.get(tid)
        assert got["metadata"] == {"user": "u1"} and got["status"] == "idle"
        with pytest.raises(BadRequestError):
            await client.threads.get_history(tid, before={"configurable": {"checkpoint_id": "x"}})


@pytest.mark.anyio
async def test_a_run_waiting_for_input_interrupts_the_thread_and_a_resume_command_continues_it() -> None:
    async with langgraph() as (client, _):
        tid = (await client.threads.create())["thread_id"]
        parts = [p async for p in client.runs.stream(tid, "approval", input="refund", stream_mode=["values"])]
        assert parts[-1].event == "end"
        interrupt = parts[-2].data["__interrupt__"][0]
        assert interrupt["value"]["options"] == ["yes", "no"]
        assert (await client.threads.get(tid))["status"] == "interrupted"
        resumed = [p async for p in client.runs.stream(tid, "approval", command={"resume": "yes"}, stream_mode=["values"])]
        assert resumed[-1].event == "end" and int(resumed[0].id) > int(parts[-2].id)  # the same run, after its wait
        assert (await client.threads.get(tid))["status"] == "idle"
        with pytest.raises(httpx.HTTPStatusError) as refused:  # runs.wait raises httpx's own
            await client.runs.wait(tid, "approval", command={"resume": "again"})  # nothing waits now
        assert refused.value.response.status_code == 409


# -- multitask strategies, if_not_exists, refusals ---------------------------------------------------


@pytest.mark.anyio
async def test_multitask_strategies_map_to_session_policies() -> None:
    async with langgraph() as (client, _):
        tid = (await client.threads.create())["thread_id"]
        first = await client.runs.create(tid, "sleeper", input=30)
        with pytest.raises(ConflictError):  # reject is the default
            await client.runs.create(tid, "echo", input=human("x"))
        second = await client.runs.create(tid, "sleeper", input=30, multitask_strategy="interrupt")
        assert (await client.runs.get(tid, first["run_id"]))["status"] == "interrupted"
        third = await client.runs.create(tid, "echo", input=human("after"), multitask_strategy="rollback")
        with pytest.raises(NotFoundError):
            await client.runs.get(tid, second["run_id"])  # interrupted, then deleted
        values = await client.runs.join(tid, third["run_id"])
        assert values["messages"][-1]["content"] == "after"
        queued = await client.runs.create(tid, "sleeper", input=0.3)
        after = await client.runs.create(tid, "echo", input=human("queued"), multitask_strategy="enqueue")
        assert (await client.runs.join(tid, after["run_id"]))["messages"][-1]["content"] == "queued"
        assert (await client.runs.get(tid, queued["run_id"]))["status"] == "success"


@pytest.mark.anyio
async def test_a_missing_thread_is_a_404_unless_if_not_exists_creates_it() -> None:
    async with langgraph() as (client, _):
        with pytest.raises(httpx.HTTPStatusError) as missing:
            await client.runs.wait("no-such-thread", "echo", input=human("x"))
        assert missing.value.response.status_code == 404
        values = await client.runs.wait("made-on-demand", "echo", input=human("x"), if_not_exists="create")
        assert values["messages"][-1]["content"] == "x"
        with pytest.raises(ConflictError):
            await client.threads.create(thread_id="made-on-demand")
        assert (await client.threads.create(thread_id="made-on-demand", if_exists="do_nothing"))["thread_id"] == "made-on-demand"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "extra",
    [
        {"checkpoint_id": "abc"},
        {"interrupt_before": ["node"]},
        {"webhook": "http://127.0.0.1:9/hook"},
        {"stream_mode": "telepathy"},
        {"multitask_strategy": "sometimes"},
        {"no_such_field": 1},
        {"metadata": {"langgraph": "mine"}},
        {"command": {"goto": "node"}},
    ],
)
async def test_what_is_not_offered_is_a_clear_400_and_starts_nothing(extra: dict[str, Any]) -> None:
    async with langgraph() as (client, base):
        tid = (await client.threads.create())["thread_id"]
        async with httpx.AsyncClient(base_url=base + "/langgraph") as raw:
            r = await raw.post(f"/threads/{tid}/runs", json={"assistant_id": "echo", "input": human("x"), **extra})
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["code"] == "invalid_request" and error["message"]
        assert (await client.threads.get(tid))["values"] == {"messages": []}
        with pytest.raises(NotFoundError):
            await client.runs.create(tid, "no-such-agent", input=human("x"))


@pytest.mark.anyio
async def test_the_servers_limits_apply_to_langgraph() -> None:
    """Auth (401), the body limit (413), the open streams per principal (429, no run started) and
    the request rate (429), each in the one error format."""
    streams = OpenStreams(limit=1)
    options = {"auth": api_key_auth({"sk-a": "alice"}), "rate_limit": Rate(12, 60.0), "streams": streams}
    async with langgraph(**options) as (_, base):
        async with httpx.AsyncClient(base_url=base + "/langgraph", timeout=30) as anonymous:
            r = await anonymous.post("/threads", json={})
            assert r.status_code == 401 and r.json()["error"]["code"] == "authentication_error", r.text
        client = get_client(url=base + "/langgraph", api_key="sk-a", timeout=30)
        tid = (await client.threads.create())["thread_id"]
        async with httpx.AsyncClient(base_url=base + "/langgraph", headers={"x-api-key": "sk-a"}, timeout=30) as alice:
            big = {"assistant_id": "echo", "input": "x" * (MAX_BODY_BYTES + 1)}
            r = await alice.post(f"/threads/{tid}/runs", json=big)
            assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large", r.text
            body = {"assistant_id": "sleeper", "input": 30, "stream_mode": "values"}
            async with alice.stream("POST", f"/threads/{tid}/runs/stream", json=body) as held:
                assert held.status_code == 200
                second = await alice.post(f"/threads/{tid}/runs/stream", json={**body, "multitask_strategy": "enqueue"})
                assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limited", second.text
            runs = await alice.get(f"/threads/{tid}")
            assert [m["content"] for m in runs.json()["values"]["messages"]] == ["30"]  # the refused stream started nothing
            codes = [(await alice.get(f"/threads/{tid}")).status_code for _ in range(12)]
            assert codes[-1] == 429 and 200 in codes, codes


# -- a real server SIGKILLed mid-run --------------------------------------------------------------


@pytest.mark.slow
def test_a_run_survives_a_sigkill_and_a_join_gets_the_rest(tmp_path: Path) -> None:
    words = [f"w{i}" for i in range(60)]
    server = ServeProcess(
        ["--store", f"sqlite:///{tmp_path / 'runs.db'}", "--delay", "0.05", "--log-level", "warning"], tmp_path / "serve.log"
    )
    server.start()
    try:
        anyio.run(_stream_kill_join, server, words)
    finally:
        server.kill(signal.SIGKILL)


async def _stream_kill_join(server: ServeProcess, words: list[str]) -> None:
    client = get_client(url=server.base + "/langgraph", timeout=30)
    tid = (await client.threads.create())["thread_id"]
    first: list[Any] = []
    stream = client.runs.stream(tid, "echo", input=human(" ".join(words)), stream_mode=TUPLE)
    async for part in stream:
        first.append(part)
        if sum(p.event == "messages" for p in first) == 15:
            break
    await stream.aclose()
    server.kill(signal.SIGKILL)  # before the run ends: nothing of it may be lost
    server.process = None
    server.start()
    run_id = first[0].data["run_id"]
    last = [p.id for p in first if p.id is not None][-1]
    rest = [part async for part in client.runs.join_stream(tid, run_id, last_event_id=last, stream_mode=TUPLE)]
    ids = ids_of(first + rest)
    assert ids == sorted(set(ids)), "an id came twice or out of order"
    assert rest[-1].event == "end"
    final = [p.data for p in rest if p.event == "values"][-1]
    assert final["messages"][-1]["content"] == " ".join(words)  # the run completed on the new server
    # The message the crash cut off was discarded and streamed afresh: the join assembles it whole.
    assert " ".join(words) in assembled(rest).values()
    assert (await client.runs.get(tid, run_id))["status"] == "success"


@pytest.mark.slow
def test_the_clients_own_reconnect_rides_out_a_sigkill(tmp_path: Path) -> None:
    """No join by hand: the stream's `Location` lets langgraph-sdk reconnect by itself, with the
    last id it saw, to the restarted server; the parts it yields have no gap and no duplicate."""
    words = [f"w{i}" for i in range(60)]
    server = ServeProcess(
        ["--store", f"sqlite:///{tmp_path / 'runs.db'}", "--delay", "0.05", "--log-level", "warning"], tmp_path / "serve.log"
    )
    server.start()
    try:
        anyio.run(_stream_through_a_kill, server, words)
    finally:
        server.kill(signal.SIGKILL)


async def _stream_through_a_kill(server: ServeProcess, words: list[str]) -> None:
    client = get_client(url=server.base + "/langgraph", timeout=30)
    tid = (await client.threads.create())["thread_id"]
    parts: list[Any] = []
    killed = False
    async for part in client.runs.stream(tid, "echo", input=human(" ".join(words)), stream_mode=TUPLE):
        parts.append(part)
        if sum(p.event == "messages" for p in parts) == 15 and not killed:
            killed = True
            server.kill(signal.SIGKILL)  # mid-run; the client is told nothing
            server.process = None
            server.start()  # the same port: the client's reconnect finds it
    ids = ids_of(parts)
    assert killed and ids == sorted(set(ids)), "an id came twice or out of order"
    assert parts[-1].event == "end"
    assert [p.data for p in parts if p.event == "values"][-1]["messages"][-1]["content"] == " ".join(words)
    assert " ".join(words) in assembled(parts).values()  # the message cut off, written afresh, whole
