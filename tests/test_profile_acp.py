"""The ACP profile end to end over real HTTP: seed 003's sample request, the ACP shapes, SSE ids
and resume by seq, idempotency and session policies, and the published ACP client (acp-sdk,
in its own virtualenv) driving sync, async + poll, stream, events, await/resume and cancel."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from runengine.adapters.profiles.acp import AcpProfile
from runengine.context import RunContext
from runengine.engine import RunEngine
from runengine.http.router import Router

from profile_http import serve_app

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

ROOT = Path(__file__).resolve().parent.parent
ACP_VENV = ROOT / ".venv-acp"
ACP_SDK = "acp-sdk==1.0.3"

SEED_SAMPLE = {
    "agent_name": "chat",
    "session_id": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
    "session": {"id": "3c90c3cc-0d44-4b50-8888-8dd25736052a", "history": ["<string>"], "state": "<string>"},
    "input": [
        {
            "parts": [
                {
                    "name": "<string>",
                    "content_type": "<string>",
                    "content": "<string>",
                    "content_encoding": "plain",
                    "content_url": "<string>",
                }
            ],
            "created_at": "2023-11-07T05:31:56Z",
            "completed_at": "2023-11-07T05:31:56Z",
            "role": "user",
        }
    ],
    "mode": "sync",
}


ANYIO_BACKENDS = ("asyncio",)


def make_engine() -> RunEngine:
    engine = RunEngine("memory://")

    @engine.agent("echo", description="Streams the input back word by word")
    async def echo(ctx: RunContext) -> None:
        for word in str(ctx.input).split():
            await ctx.delta(word + " ")

    @engine.agent("chat")
    async def chat(ctx: RunContext) -> None:
        await ctx.thought("reading the parts")
        await ctx.say(f"got {json.dumps(ctx.input)}")

    @engine.agent("asker")
    async def asker(ctx: RunContext) -> None:
        await ctx.say("hello")
        name = await ctx.ask("what is your name?")
        await ctx.say(f"hi {name}")

    @engine.agent("slow")
    async def slow(ctx: RunContext) -> None:
        await ctx.say("working")
        await anyio.sleep_forever()

    @engine.agent("failing")
    async def failing(ctx: RunContext) -> None:
        raise RuntimeError("boom")

    return engine


@pytest.fixture
async def acp() -> AsyncIterator[str]:
    engine = make_engine()
    async with engine:
        root = Router()
        root.mount("/acp", AcpProfile(engine))
        async with serve_app(root) as base:
            yield base + "/acp"


async def sse_frames(response: httpx.Response) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in current:
                frames.append(current)
            current = {}
        elif line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
    return frames


@pytest.mark.anyio
async def test_seed_sample_request(acp: str) -> None:
    async with httpx.AsyncClient(base_url=acp, timeout=30) as http:
        # The sample as printed has both content and content_url in one part, which ACP forbids.
        refused = await http.post("/runs", json=SEED_SAMPLE)
        assert refused.status_code == 400
        body = refused.json()
        assert body["code"] == "invalid_input" and body["error"]["code"] == "invalid_request"
        assert "content_url" in body["message"]

        sample = json.loads(json.dumps(SEED_SAMPLE))
        del sample["input"][0]["parts"][0]["content_url"]
        response = await http.post("/runs", json=sample)
        assert response.status_code == 200
        run = response.json()
        assert set(run) == {
            "agent_name", "session_id", "run_id", "status", "await_request", "output", "error", "created_at",
            "finished_at",
        }
        assert run["agent_name"] == "chat" and run["status"] == "completed"
        assert run["session_id"] == "3c90c3cc-0d44-4b50-8888-8dd25736052a"
        assert uuid.UUID(run["run_id"]) and response.headers["run-id"] == run["run_id"]
        assert run["await_request"] is None and run["error"] is None and run["finished_at"]
        [message] = run["output"]
        assert message["role"] == "agent/chat"
        # A named part of an unknown content type reaches the agent as the ACP message itself.
        assert '"name": "<string>"' in message["parts"][0]["content"]

        session = (await http.get(f"/sessions/{run['session_id']}")).json()
        assert session["id"] == run["session_id"] and len(session["history"]) == 2
        first = (await http.get(session["history"][0].split("/acp", 1)[1])).json()
        assert first["role"] == "user"


@pytest.mark.anyio
async def test_statuses_events_and_sse_resume(acp: str) -> None:
    async with httpx.AsyncClient(base_url=acp, timeout=30) as http:
        msg = [{"role": "user", "parts": [{"content": "a b c", "content_type": "text/plain"}]}]
        async with http.stream("POST", "/runs", json={"agent_name": "echo", "input": msg, "mode": "stream"}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            frames = await sse_frames(r)
        types = [f["data"]["type"] for f in frames]
        assert types == [
            "run.created", "run.in-progress", "message.created", "message.part", "message.part", "message.part",
            "message.completed", "run.completed",
        ]
        assert frames[0]["data"]["run"]["status"] == "created"
        assert frames[1]["data"]["run"]["status"] == "in-progress"
        ids = [f["id"] for f in frames if "id" in f]
        assert ids == sorted(ids) and ids[-1] == 7  # the engine's seqs; message.created shares its delta's
        run_id = frames[0]["data"]["run"]["run_id"]

        listed = (await http.get(f"/runs/{run_id}/events")).json()["events"]
        assert [e["type"] for e in listed] == types
        # Resume after seq 4 (the second delta): exactly what followed, no second message.created.
        headers = {"accept": "text/event-stream", "last-event-id": "4"}
        async with http.stream("GET", f"/runs/{run_id}/events", headers=headers) as r:
            resumed = await sse_frames(r)
        assert [f["data"]["type"] for f in resumed] == ["message.part", "message.completed", "run.completed"]
        assert resumed[0]["data"]["part"]["content"] == "c "
        after = (await http.get(f"/runs/{run_id}/events", params={"after_seq": 6})).json()["events"]
        assert [e["type"] for e in after] == ["run.completed"]
        hex_id = uuid.UUID(run_id).hex  # the other spelling of the same UUID
        assert (await http.get(f"/runs/{hex_id}")).json()["run_id"] == run_id

        async_run = (await http.post("/runs", json={"agent_name": "slow", "input": msg, "mode": "async"}))
        assert async_run.status_code == 202 and async_run.json()["status"] in ("created", "in-progress")
        cancelled = await http.post(f"/runs/{async_run.json()['run_id']}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        again = await http.post(f"/runs/{async_run.json()['run_id']}/cancel")
        assert again.json()["status"] == "cancelled"

        failed = (await http.post("/runs", json={"agent_name": "failing", "input": msg})).json()
        assert failed["status"] == "failed" and failed["error"]["code"] == "agent_error"

        waiting = (await http.post("/runs", json={"agent_name": "asker", "input": msg})).json()
        assert waiting["status"] == "awaiting"
        assert waiting["await_request"]["type"] == "message"
        assert waiting["await_request"]["message"]["parts"][0]["content"] == "what is your name?"
        resume = {"await_resume": {"type": "message", "message": {"parts": [{"content": "Zoe"}]}}, "mode": "async"}
        resumed_run = await http.post(f"/runs/{waiting['run_id']}", json=resume)
        assert resumed_run.status_code == 202
        wrong = await http.post(f"/runs/{failed['run_id']}", json=resume)
        assert wrong.status_code == 409 and wrong.json()["error"]["code"] == "conflict"


@pytest.mark.anyio
async def test_bad_requests_get_clear_errors(acp: str) -> None:
    async with httpx.AsyncClient(base_url=acp, timeout=30) as http:
        msg = [{"parts": [{"content": "x"}]}]
        cases = [
            ({"input": msg}, 400, "agent_name"),
            ({"agent_name": "echo", "input": "text"}, 400, "input"),
            ({"agent_name": "echo", "input": [{"parts": "no"}]}, 400, "parts"),
            ({"agent_name": "echo", "input": msg, "mode": "later"}, 400, "mode"),
            ({"agent_name": "echo", "input": msg, "session_id": "not-a-uuid"}, 400, "UUID"),
            ({"agent_name": "echo", "input": msg, "bogus": 1}, 400, "bogus"),
            ({"agent_name": "nobody", "input": msg}, 404, "nobody"),
            ({"agent_name": "echo", "input": msg, "session_policy": "sometimes"}, 400, "session_policy"),
        ]
        for body, status, word in cases:
            response = await http.post("/runs", json=body)
            assert response.status_code == status, body
            error = response.json()
            assert word in error["message"] and error["error"]["message"] == error["message"]
        assert (await http.post("/runs", content=b"{nope")).status_code == 400
        missing = await http.get(f"/runs/{uuid.uuid4()}")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        assert (await http.get(f"/sessions/{uuid.uuid4()}")).json()["code"] == "not_found"
        assert (await http.get("/agents/nobody")).status_code == 404
        assert (await http.get("/ping")).json() == {}


@pytest.mark.anyio
async def test_idempotency_key_and_session_policies(acp: str) -> None:
    async with httpx.AsyncClient(base_url=acp, timeout=30) as http:
        msg = [{"parts": [{"content": "once"}]}]
        key = {"idempotency-key": f"k-{uuid.uuid4()}"}
        first = (await http.post("/runs", json={"agent_name": "echo", "input": msg}, headers=key)).json()
        second = (await http.post("/runs", json={"agent_name": "echo", "input": msg}, headers=key)).json()
        assert first["run_id"] == second["run_id"] and second["status"] == "completed"

        session = str(uuid.uuid4())
        body = {"agent_name": "slow", "input": msg, "mode": "async", "session_id": session}
        active = (await http.post("/runs", json=body)).json()
        busy = await http.post("/runs", json={**body, "session_policy": "reject"})
        assert busy.status_code == 409 and busy.json()["error"]["details"]["active_runs"] == [active["run_id"]]
        interrupting = (await http.post("/runs", json={**body, "agent_name": "echo", "mode": "sync",
                                                        "session_policy": "interrupt"})).json()
        assert interrupting["status"] == "completed"
        assert (await http.get(f"/runs/{active['run_id']}")).json()["status"] == "cancelled"

        blocker = (await http.post("/runs", json=body)).json()
        queued = (await http.post("/runs", json={**body, "agent_name": "echo", "session_policy": "enqueue"})).json()
        assert (await http.get(f"/runs/{queued['run_id']}")).json()["status"] == "created"  # waits its turn
        await http.post(f"/runs/{blocker['run_id']}/cancel")
        with anyio.fail_after(30):
            while (await http.get(f"/runs/{queued['run_id']}")).json()["status"] != "completed":
                await anyio.sleep(0.02)


# -- the published ACP client, from its own virtualenv --------------------------------------------


def acp_python() -> Path:
    """A virtualenv with acp-sdk (created once; its dependency pins stay out of the project's)."""
    python = ACP_VENV / "bin" / "python"
    stamp = ACP_VENV / ".installed"
    with open(ROOT / ".venv-acp.lock", "w") as lock:  # two test runs at once build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == ACP_SDK:
            return python
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(ACP_VENV)], check=True)
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        subprocess.run([str(python), "-m", "pip", "install", "-q", ACP_SDK], check=True, env=env)
        stamp.write_text(ACP_SDK)
    return python


@pytest.mark.anyio
async def test_published_acp_client_interoperates(acp: str) -> None:
    python = await anyio.to_thread.run_sync(acp_python)
    driver = Path(__file__).with_name("acp_client_driver.py")
    with anyio.fail_after(240):
        done = await anyio.run_process([str(python), str(driver), acp], check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    seen = json.loads(done.stdout.decode().strip().splitlines()[-1])

    assert seen["agents"] == ["asker", "chat", "echo", "failing", "slow"]
    assert seen["agent"]["name"] == "echo" and seen["agent"]["description"].startswith("Streams")
    assert seen["sync"]["status"] == "completed" and seen["sync"]["text"] == "hello big world "
    assert seen["async_first"] in ("created", "in-progress")
    assert seen["async_final"] == {"status": "completed", "text": "one two "}
    assert seen["stream"][0] == "run.created" and seen["stream"][-1] == "run.completed"
    assert seen["stream"].count("message.part") == 3 and seen["stream_text"] == "stream me now "
    assert seen["events"] == seen["stream"]
    assert seen["awaiting"] == {"status": "awaiting", "await_request": "what is your name?"}
    assert seen["resumed"]["status"] == "completed" and seen["resumed"]["text"] == "hellohi Bob"
    assert seen["stream_until_awaiting"][-1] == "run.awaiting"
    assert seen["resume_stream"][0] == "run.in-progress" and seen["resume_stream"][-1] == "run.completed"
    assert seen["resume_stream_final"] == "hellohi Ann"
    assert seen["cancel"] == {"response": "cancelled", "final": "cancelled"}
    assert seen["failed"] == {"status": "failed", "code": "agent_error"}
    assert seen["session"] == {"same": True, "history": 4, "texts": ["first ", "second "]}
    assert seen["unknown_agent"] == "not_found"


@pytest.mark.anyio
async def test_runs_and_sessions_are_visible_to_their_owner_only() -> None:
    engine = make_engine()

    def users(headers: Any) -> str | None:
        return {"Bearer a": "alice", "Bearer b": "bob"}.get(headers.get("authorization", ""))

    async with engine:
        root = Router()
        root.mount("/acp", AcpProfile(engine, auth=users))
        async with serve_app(root) as base, httpx.AsyncClient(base_url=base + "/acp", timeout=30) as http:
            alice, bob = {"authorization": "Bearer a"}, {"authorization": "Bearer b"}
            assert (await http.get("/agents")).status_code == 401
            assert (await http.get("/ping")).status_code == 200  # liveness needs no credentials
            msg = [{"parts": [{"content": "hi"}]}]
            run = (await http.post("/runs", json={"agent_name": "asker", "input": msg}, headers=alice)).json()
            assert run["status"] == "awaiting"
            assert (await http.get(f"/runs/{run['run_id']}", headers=alice)).status_code == 200
            resume = {"await_resume": {"type": "message", "message": {"parts": [{"content": "x"}]}}, "mode": "sync"}
            for method, path, body in (
                ("GET", f"/runs/{run['run_id']}", None),
                ("GET", f"/runs/{run['run_id']}/events", None),
                ("POST", f"/runs/{run['run_id']}/cancel", None),
                ("POST", f"/runs/{run['run_id']}", resume),
                ("GET", f"/sessions/{run['session_id']}", None),
            ):
                response = await http.request(method, path, json=body, headers=bob)
                assert response.status_code == 404 and response.json()["code"] == "not_found", path
            assert (await engine.status(run["run_id"])).status.value == "waiting_for_input"  # bob changed nothing
            assert (await engine.status(run["run_id"])).owner == "alice"
