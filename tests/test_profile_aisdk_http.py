"""The /ai profile over real HTTP without Node: the frames (ids, [DONE], header), resuming after
Last-Event-ID, the replay's handling of a message its lost process left half streamed, the
answers to bad input, and a turn that waits for input. (tests/test_profile_aisdk.py drives the
same routes with the real AI SDK client.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from httpkit import demo_engine, serve
from runengine.adapters.asgi import engine_asgi_app
from runengine.adapters.profiles.aisdk_parts import UIMessageParts
from runengine.engine import RunEngine
from runengine.events import (
    Event,
    MessageCompleted,
    MessageDelta,
    MessageDiscarded,
    RunCompleted,
    RunCreated,
    RunResumed,
    RunStarted,
)
from runengine.http.core import MAX_BODY_BYTES
from runengine.http.openstreams import OpenStreams
from runengine.http.ratelimit import Rate
from runengine.limits import MAX_INPUT_BYTES

ANYIO_BACKENDS = ("asyncio",)  # uvicorn
pytestmark = [pytest.mark.anyio, pytest.mark.server]
AT = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
async def app() -> AsyncIterator[tuple[RunEngine, httpx.AsyncClient]]:
    engine = demo_engine()
    async with engine, serve(engine_asgi_app(engine)) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        yield engine, client


def chat_body(chat_id: str, text: str, agent: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": chat_id, "trigger": "submit-message", "messageId": None,
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}], **extra,
    }
    if agent is not None:
        body["agent"] = agent
    return body


def frames(raw: str) -> list[tuple[int, Any]]:
    """(id, data) of each SSE frame (keep-alive comments skipped); data is the part, or "[DONE]"."""
    out = []
    for block in raw.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        assert set(fields) == {"id", "data"}, block
        data = fields["data"]
        out.append((int(fields["id"]), data if data == "[DONE]" else json.loads(data)))
    return out


def assemble(parts: list[Any]) -> str:
    """The text of the parts as readUIMessageStream assembles it: a delta needs its part opened."""
    open_parts: dict[str, list[str]] = {}
    done: list[str] = []
    for part in parts:
        if part == "[DONE]":
            continue
        kind = part["type"]
        if kind == "text-start":
            open_parts[part["id"]] = []
        elif kind == "text-delta":
            open_parts[part["id"]].append(part["delta"])  # KeyError: a delta for a part never opened
        elif kind == "text-end":
            done.append("".join(open_parts.pop(part["id"])))
    return "".join(done) + "".join("".join(p) for p in open_parts.values())


async def test_frames_carry_ids_the_header_and_done(app: tuple[RunEngine, httpx.AsyncClient]) -> None:
    _, client = app
    response = await client.post("/ai/chat", json=chat_body("c-frames", "one two three", "echo"))
    assert response.status_code == 200, response.text
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    got = frames(response.text)
    ids = [seq for seq, _ in got]
    assert ids == sorted(ids) and ids[0] == 1
    assert got[-1][1] == "[DONE]" and got[-2][1] == {"type": "finish", "finishReason": "stop"}
    assert got[0][1]["type"] == "start"
    assert assemble([part for _, part in got]) == "one two three"


async def test_a_stream_resumed_after_any_frame_gives_the_rest(app: tuple[RunEngine, httpx.AsyncClient]) -> None:
    _, client = app
    first = frames((await client.post("/ai/chat", json=chat_body("c-cursor", "refund", "approval"))).text)
    assert assemble([part for _, part in first]) == "I am about to refund."
    # The run waits for input (still active): a client cut off after any frame resumes after its id.
    for cut in range(len(first)):
        seen = [part for _, part in first[: cut + 1]]
        rest = await client.get("/ai/chat/c-cursor/stream", headers={"last-event-id": str(first[cut][0])})
        assert rest.status_code == 200, rest.text
        assert assemble(seen) + assemble([part for _, part in frames(rest.text)]) == "I am about to refund."


def test_a_stream_after_a_cursor_inside_a_message_opens_its_text_part_again() -> None:
    log: list[Event] = [
        RunCreated(run_id="r", seq=1, at=AT, agent="a"),
        RunStarted(run_id="r", seq=2, at=AT),
        *(MessageDelta(run_id="r", seq=3 + i, at=AT, message_id="m", content=f"t{i} ") for i in range(4)),
        MessageCompleted(run_id="r", seq=7, at=AT, message_id="m", content="t0 t1 t2 t3 "),
        RunCompleted(run_id="r", seq=8, at=AT),
    ]
    parts = UIMessageParts("r")
    parts.prime(log[:4])  # the client saw t0 t1 and connects again
    after = frames(parts.frames(log[4:]).decode())
    assert [p["type"] for _, p in after[:2]] == ["text-start", "text-delta"]
    assert assemble([p for _, p in after]) == "t2 t3 "


def crashed_log(then: list[Event]) -> list[Event]:
    """A run whose process was lost while it streamed message m, then `then`."""
    return [
        RunCreated(run_id="r", seq=1, at=AT, agent="a"),
        RunStarted(run_id="r", seq=2, at=AT),
        MessageDelta(run_id="r", seq=3, at=AT, message_id="m", content="half "),
        MessageDelta(run_id="r", seq=4, at=AT, message_id="m", content="said "),
        *then,
    ]


def test_a_replay_holds_back_a_message_a_lost_process_left_open() -> None:
    """The stream begins while the log ends inside message m (its process is gone, but nobody knows
    yet: on PostgreSQL the lease has not expired). When the next process discards m and streams it
    afresh, m's text must not show twice."""
    log = crashed_log([
        RunResumed(run_id="r", seq=5, at=AT, reason="worker_lost"),
        MessageDiscarded(run_id="r", seq=6, at=AT, message_id="m"),
        MessageDelta(run_id="r", seq=7, at=AT, message_id="m2", content="half said, whole"),
        MessageCompleted(run_id="r", seq=8, at=AT, message_id="m2", content="half said, whole"),
        RunCompleted(run_id="r", seq=9, at=AT),
    ])
    parts = UIMessageParts("r", open_message="m", live_after=4)
    replayed = frames(parts.frames(log[:4]).decode())
    live = frames(parts.frames(log[4:]).decode())
    assert assemble([p for _, p in replayed + live]) == "half said, whole"


def test_a_held_message_goes_out_when_its_run_goes_on() -> None:
    log = crashed_log([
        MessageDelta(run_id="r", seq=5, at=AT, message_id="m", content="and more"),
        MessageCompleted(run_id="r", seq=6, at=AT, message_id="m", content="half said and more"),
        RunCompleted(run_id="r", seq=7, at=AT),
    ])
    parts = UIMessageParts("r", open_message="m", live_after=4)
    replayed = frames(parts.frames(log[:4]).decode())
    assert [p["type"] for _, p in replayed] == ["start"]  # held
    live = frames(parts.frames(log[4:5]).decode())
    assert assemble([p for _, p in live]) == "half said and more"
    rest = frames(parts.frames(log[5:]).decode())
    assert assemble([p for _, p in replayed + live + rest]) == "half said and more"


async def test_a_turn_waiting_for_input_ends_its_stream_and_a_message_answers_it(
    app: tuple[RunEngine, httpx.AsyncClient],
) -> None:
    engine, client = app
    first = frames((await client.post("/ai/chat", json=chat_body("c-wait", "deploy", "approval"))).text)
    types = [part if part == "[DONE]" else part["type"] for _, part in first]
    assert types[-5:] == ["tool-input-available", "tool-approval-request", "finish-step", "finish", "[DONE]"]
    ask = first[-5][1]
    assert ask["toolName"] == "ask" and first[-4][1]["approvalId"] == ask["toolCallId"]
    again = frames((await client.get("/ai/chat/c-wait/stream")).text)  # a reload shows the request again
    assert [p for _, p in again] == [p for _, p in first]
    answered = frames((await client.post("/ai/chat", json=chat_body("c-wait", "no"))).text)
    assert answered[0][1] == {"type": "tool-output-available", "toolCallId": ask["toolCallId"], "output": "no"}
    assert assemble([p for _, p in answered]) == "Not approved: nothing was done."
    assert (await client.get("/ai/chat/c-wait/stream")).status_code == 204
    # An approval response that names another request changes nothing.
    await client.post("/ai/chat", json=chat_body("c-wait2", "deploy", "approval"))
    wrong = {"id": "c-wait2", "messages": [{"id": "a", "role": "assistant", "parts": [
        {"type": "tool-ask", "toolCallId": "ask-1", "state": "approval-responded", "approval": {"id": "ask-1", "approved": True}}]}]}
    refused = await client.post("/ai/chat", json=wrong)
    assert refused.status_code == 400 and refused.json()["error"]["details"]["field"] == "messages", refused.text
    page = await engine.list_runs(session_id="c-wait2")
    assert (await engine.status(page.runs[0].run_id)).status.value == "waiting_for_input"


async def test_a_second_turn_while_one_runs_is_refused(app: tuple[RunEngine, httpx.AsyncClient]) -> None:
    engine, client = app
    async with client.stream("POST", "/ai/chat", json=chat_body("c-busy", "30", "sleeper")) as running:
        assert running.status_code == 200
        busy = await client.post("/ai/chat", json=chat_body("c-busy", "again", "echo"))
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "conflict", busy.text
        stopped = await client.post("/ai/chat/c-busy/stop")
        assert stopped.status_code == 200 and stopped.json()["status"] == "cancelled"
        tail = (await running.aread()).decode()
    assert frames(tail)[-2][1] == {"type": "abort", "reason": "stopped by the client"}
    assert (await client.post("/ai/chat/c-busy/stop")).status_code == 204  # nothing active now
    page = await engine.list_runs(session_id="c-busy")
    assert [run.status.value for run in page.runs] == ["cancelled"]  # the refused turn made no run


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"messages": [{"role": "user", "parts": [{"type": "text", "text": "x"}]}]}, 400, "id"),
        ({"id": "c", "messages": []}, 400, "messages"),
        ({"id": "c", "messages": [{"role": "user", "parts": []}]}, 400, "messages"),
        ({"id": "c", "messages": [{"role": "assistant", "parts": [{"type": "text", "text": "x"}]}]}, 400, "messages"),
        ({"id": "c", "messages": [{"role": "user", "parts": [{"type": "text", "text": 3}]}]}, 400, "messages"),
        ({"id": "c\n", "messages": [{"role": "user", "parts": [{"type": "text", "text": "x"}]}]}, 400, "id"),
        ({"id": "c", "trigger": "resume-stream", "messages": [{"role": "user", "parts": [{"type": "text", "text": "x"}]}]}, 400, "trigger"),
        ({"id": "c", "agent": 5, "messages": [{"role": "user", "parts": [{"type": "text", "text": "x"}]}]}, 400, "agent"),
        ({"id": "c", "messages": [{"role": "user", "parts": [{"type": "text", "text": "x" * (MAX_INPUT_BYTES + 1)}]}]}, 413, "messages"),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    app: tuple[RunEngine, httpx.AsyncClient], body: dict[str, Any], status: int, field: str
) -> None:
    engine, client = app
    response = await client.post("/ai/chat", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["details"]["field"] == field
    assert not (await engine.list_runs()).runs


async def test_unknown_and_hidden_agents_are_not_found(app: tuple[RunEngine, httpx.AsyncClient]) -> None:
    engine, client = app
    for agent in ("ghost", "hidden"):
        response = await client.post("/ai/chat", json=chat_body("c-agent", "x", agent))
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", response.text
    assert not (await engine.list_runs()).runs


async def test_the_default_agent_runs_without_agent(app: tuple[RunEngine, httpx.AsyncClient]) -> None:
    engine, client = app
    got = frames((await client.post("/ai/chat", json=chat_body("c-default", "hi there"))).text)
    assert assemble([p for _, p in got]) == "hi there"
    run = (await engine.list_runs(session_id="c-default")).runs[0]
    assert run.agent == "echo" and run.session_id == "c-default"


async def test_every_limit_applies_to_the_ai_routes() -> None:
    """Auth, the rate limit per principal, the open streams per principal and the server's body
    limit: each refuses in the one error format, and a refused turn starts no run."""
    engine = demo_engine()
    keys = {"sk-a": "alice"}
    app = engine_asgi_app(
        engine, auth=lambda headers: keys.get((headers.get("authorization") or "").removeprefix("Bearer ")),
        rate_limit=Rate(6, 60), streams=OpenStreams(limit=1),
    )
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        anonymous = await client.post("/ai/chat", json=chat_body("c-limits", "hi", "echo"))
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "authentication_error"
        alice = {"authorization": "Bearer sk-a"}
        async with client.stream("POST", "/ai/chat", json=chat_body("c-open", "30", "sleeper"), headers=alice) as open_stream:
            assert open_stream.status_code == 200
            second = await client.post("/ai/chat", json=chat_body("c-second", "hi", "echo"), headers=alice)
            assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limited", second.text
            assert (await engine.list_runs(session_id="c-second")).runs == ()
            assert (await client.post("/ai/chat/c-open/stop", headers=alice)).status_code == 200
        big = {**chat_body("c-big", "x"), "padding": "x" * (MAX_BODY_BYTES + 1)}
        too_big = await client.post("/ai/chat", json=big, headers=alice)
        assert too_big.status_code == 413 and set(too_big.json()["error"]) == {"code", "message", "details"}
        statuses = [(await client.get("/ai/chat/c-open/stream", headers=alice)).status_code for _ in range(6)]
        assert statuses[0] == 204 and statuses[-1] == 429, statuses  # at most 6 requests a minute
        limited = await client.get("/ai/openapi.json", headers=alice)
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
        assert limited.headers["x-ratelimit-limit"] == "6"
    assert not (await engine.list_runs(session_id="c-big")).runs
