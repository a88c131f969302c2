"""The Kore profile end to end over real HTTP (uvicorn): every sample request of seeds 000 and 001,
the status call's session check, completion callbacks to a real local receiver, multitask
strategies (session policies), Idempotency-Key, and clear errors for bad input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import attrs
import httpx
import pytest

from runengine.adapters.profiles.kore import KoreProfile
from runengine.adapters.webhook_deliveries import WebhookDeliveries
from runengine.adapters.webhooks import WebhookSender
from runengine.context import RunContext
from runengine.engine import RunEngine
from runengine.http.router import Router
from runengine.status import Status

from profile_http import Receiver, Reply, receiver, serve_app

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

APP = "aa-2d38a297-6c74-4ec4-bf72-3b3ee5d326f2"
BASE = f"/kore/apps/{APP}/environments/draft/runs"
PIZZA = "Order me a thick crust medium-sized pizza with extra cheese "


ANYIO_BACKENDS = ("asyncio",)


def make_engine() -> RunEngine:
    engine = RunEngine("memory://")

    @engine.agent("orchestrator", description="Answers, thinking aloud")
    async def orchestrator(ctx: RunContext) -> None:
        await ctx.thought("The user wants something; reading the request.", source="Orchestrator")
        await ctx.thought("Preparing the answer.", source="Orchestrator")
        text = str(ctx.input)
        if text == "attachments?":
            await ctx.say(json.dumps(ctx.metadata.get("attachments")))
            return
        if text == "meta?":
            await ctx.say(json.dumps(ctx.session.metadata if ctx.session else None))
            return
        await ctx.custom("progress", {"step": 1})
        async with ctx.message() as message:
            for word in f"You said: {text}".split(" "):
                await message.delta(word + " ")

    @engine.agent("PolicyFinder")
    async def policy_finder(ctx: RunContext) -> str:
        await ctx.say("Policy P-7 covers that.")
        return "P-7"

    @engine.agent("Clarifier")
    async def clarifier(ctx: RunContext) -> None:
        await ctx.thought("The crust type is missing.", source="Orchestrator")
        crust = await ctx.ask("Could you please specify the exact crust type you would like for your thick crust pizza?")
        await ctx.thought("Placing the order.", source="Orchestrator")
        await ctx.say(f"Ordered a {crust} crust pizza.")

    @engine.agent("Waiter")
    async def waiter(ctx: RunContext) -> None:
        await ctx.say("waiting")
        await anyio.sleep_forever()

    return engine


def check_balance_tool(accountId: str) -> str:  # noqa: N803 (the tool's parameter name in the seed)
    return f"Your balance is 100$ for account {accountId}"


@attrs.define
class Kore:
    http: httpx.AsyncClient
    engine: RunEngine
    hook: Receiver


@pytest.fixture
async def kore() -> AsyncIterator[Kore]:
    engine = make_engine()
    with receiver() as hook:
        sender = WebhookSender(allow_hosts=["127.0.0.1"], max_attempts=2, backoff_base=0.01)
        deliveries = WebhookDeliveries(engine, sender)
        async with engine:
            root = Router()
            root.mount("/kore", KoreProfile(engine, tools={"check_balance_tool": check_balance_tool}, deliveries=deliveries))
            async with serve_app(root) as base:
                async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                    yield Kore(http=http, engine=engine, hook=hook)


def identity(**refs: str) -> list[dict[str, str]]:
    return [{"type": kind, "value": value} for kind, value in refs.items()]


async def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    events = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
    return events


async def wait_status(kore: Kore, run_id: str, ident: list[dict[str, str]], want: str) -> dict[str, Any]:
    with anyio.fail_after(30):
        while True:
            response = await kore.http.post(f"{BASE}/{run_id}/status", json={"sessionIdentity": ident})
            assert response.status_code == 200, response.text
            run = response.json()["run"]
            if run["status"] == want:
                return run
            assert run["status"] in ("pending", "running")
            await anyio.sleep(0.02)


# -- seed 000 / 001: execute ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sync_samples(kore: Kore) -> None:
    sample = {  # seed 000/001 "Sample Request" (comments removed)
        "sessionIdentity": [
            {"type": "sessionReference", "value": "s-a302e3c6-308b-4a0a-9a5f-a01a5846fae1"},
            {"type": "userReference", "value": "usr_1a2b3c4d5e"},
        ],
        "input": [{"type": "text", "content": PIZZA}],
        "debug": {"enable": False},
        "stream": {"enable": False, "streamMode": "tokens"},
        "isAsync": False,
    }
    response = await kore.http.post(f"{BASE}/execute", json=sample)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"messageId", "output", "sessionInfo"}
    assert body["output"] == [{"type": "text", "content": f"You said: {PIZZA} "}]
    info = body["sessionInfo"]
    assert info["status"] == "idle" and info["conversationState"] == "COMPLETED"
    assert info["userReference"] == "usr_1a2b3c4d5e"
    assert info["sessionReference"] == "s-a302e3c6-308b-4a0a-9a5f-a01a5846fae1"
    assert info["sessionId"].startswith("s-") and info["userId"].startswith("u-") and info["runId"].startswith("r-")
    assert info["appId"] == APP and info["attachments"] == []
    state = await kore.engine.status(info["runId"])
    assert state.session_id == info["sessionId"] and state.agent == "orchestrator"

    debug = await kore.http.post(f"{BASE}/execute", json={**sample, "debug": {"enable": True}})
    body = debug.json()
    assert body["debug"] == [
        {"type": "thought", "content": "The user wants something; reading the request.", "source": "Orchestrator"},
        {"type": "thought", "content": "Preparing the answer.", "source": "Orchestrator"},
    ]
    assert body["sessionInfo"]["sessionId"] == info["sessionId"]  # same identity, same session

    hi = {  # "Synchronous Execution" sample
        "sessionIdentity": [{"type": "sessionReference", "value": "s_c234234mf4x"}],
        "input": [{"type": "text", "content": "Hi!"}],
        "stream": {"enable": False, "streamMode": "tokens"},
        "isAsync": False,
    }
    body = (await kore.http.post(f"{BASE}/execute", json=hi)).json()
    assert body["output"][0]["content"] == "You said: Hi! "
    assert body["sessionInfo"]["sessionReference"] == "s_c234234mf4x" and "userReference" not in body["sessionInfo"]


@pytest.mark.anyio
async def test_async_sample_then_status_sample(kore: Kore) -> None:
    sample = {
        "sessionIdentity": [{"type": "sessionReference", "value": "xxxx"}],
        "input": [{"type": "text", "content": "Place an order for a thin crust pizza with bell peppers."}],
        "stream": {"enable": False, "streamMode": "tokens"},
        "isAsync": True,
    }
    response = await kore.http.post(f"{BASE}/execute", json=sample)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "processing" and body["message"] == "Request is being processed asynchronously"
    run = await wait_status(kore, body["runId"], identity(sessionReference="xxxx"), "success")
    assert run["_id"] == body["runId"] and run["sessionId"].startswith("s-")
    assert run["kwargs"]["output"] == [
        {"type": "text", "content": "You said: Place an order for a thin crust pizza with bell peppers. "}
    ]
    assert run["kwargs"]["input"] == sample["input"] and run["kwargs"]["stream"]["streamMode"] == "tokens"
    context = run["metadata"]["runtimeContext"]
    assert context["sessionReference"] == "xxxx" and context["asyncConfig"]["isAsync"] is True
    assert run["createdAt"] and run["updatedAt"]


@pytest.mark.anyio
async def test_stream_samples(kore: Kore) -> None:
    messages = {
        "sessionIdentity": identity(sessionReference="s-1", userReference="u-1"),
        "input": [{"type": "text", "content": PIZZA}],
        "stream": {"enable": True, "streamMode": "messages"},
    }
    async with kore.http.stream("POST", f"{BASE}/execute", json=messages) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = await sse_events(response)
    assert [e["eventIndex"] for e in events] == list(range(len(events)))
    first, middle, last = events[0], events[1:-1], events[-1]
    assert first["sessionInfo"]["status"] == "busy" and first["sessionInfo"]["userReference"] == "u-1"
    assert [e["output"] for e in middle] == [[{"type": "text", "content": f"You said: {PIZZA} "}]]
    assert middle[0]["sessionInfo"] == {"runId": first["sessionInfo"]["runId"]}
    assert last["isLastEvent"] is True and last["sessionInfo"]["status"] == "idle"
    assert last["sessionInfo"]["output"] == middle[0]["output"]
    assert all("isLastEvent" not in e for e in events[:-1])

    # Thought streaming: debug thoughts as their own events, output token by token.
    tokens = {**messages, "stream": {"enable": True, "streamMode": "tokens"}, "debug": {"enable": True, "debugMode": "thoughts"}}
    async with kore.http.stream("POST", f"{BASE}/execute", json=tokens) as response:
        events = await sse_events(response)
    thoughts = [e["debug"][0]["content"] for e in events if "debug" in e]
    assert thoughts == ["The user wants something; reading the request.", "Preparing the answer."]
    streamed = "".join(e["output"][0]["content"] for e in events if "output" in e)
    assert streamed == f"You said: {PIZZA} "
    assert len([e for e in events if "output" in e]) > 5  # token by token, not one message
    assert events[-1]["isLastEvent"] is True

    custom = {**messages, "stream": {"enable": True, "streamMode": "custom"}}
    async with kore.http.stream("POST", f"{BASE}/execute", json=custom) as response:
        events = await sse_events(response)
    assert [e["custom"] for e in events if "custom" in e] == [{"name": "progress", "data": {"step": 1}}]


@pytest.mark.anyio
async def test_attachments_sample(kore: Kore) -> None:
    sample = {  # seed 000's sample: string-valued flags, "Attachments", the "exludeFiles" spelling
        "sessionIdentity": [{"type": "sessionReference", "value": "your-session-reference"}],
        "input": [{"type": "text", "content": "attachments?"}],
        "debug": {"enable": "false"},
        "stream": {"enable": "false", "streamMode": "tokens"},
        "Attachments": {"enable": True, "includeFiles": "[f-123]", "exludeFiles": "[f-456]"},
        "isAsync": False,
    }
    body = (await kore.http.post(f"{BASE}/execute", json=sample)).json()
    assert body["sessionInfo"]["attachments"] == [
        {"fileId": "f-123", "isActive": True},
        {"fileId": "f-456", "isActive": False},
    ]
    assert json.loads(body["output"][0]["content"]) == ["f-123"]  # what the agent was given
    # Seed 001's spelling; files stay with the session until excluded.
    later = {**sample, "Attachments": None, "attachments": {"enable": True, "includeFiles": ["f-789"]}}
    del later["Attachments"]
    body = (await kore.http.post(f"{BASE}/execute", json=later)).json()
    assert json.loads(body["output"][0]["content"]) == ["f-123", "f-789"]
    dropped = {**later, "attachments": {"excludeFiles": ["f-123"]}}
    body = (await kore.http.post(f"{BASE}/execute", json=dropped)).json()
    assert {f["fileId"]: f["isActive"] for f in body["sessionInfo"]["attachments"]} == {
        "f-123": False, "f-456": False, "f-789": True,
    }

    # The status sample (seed 000/001) for a run of this session.
    status = await kore.http.post(
        f"{BASE}/{body['sessionInfo']['runId']}/status", json={"sessionIdentity": identity(sessionReference="your-session-reference")}
    )
    assert status.status_code == 200 and status.json()["run"]["status"] == "success"


@pytest.mark.anyio
async def test_metadata_and_invoke_samples(kore: Kore) -> None:
    sample = {  # seed 001's sample with the "{...}" / "[...]" placeholders filled in
        "sessionIdentity": [
            {"type": "sessionReference", "value": "s-a302e3c6-308b-4a0a-9a5f-a01a5846fae1"},
            {"type": "userReference", "value": "usr_1a2b3c4d5e"},
        ],
        "input": [{"type": "text", "content": "meta?"}],
        "debug": {"enable": False},
        "stream": {"enable": False, "streamMode": "tokens"},
        "metadata": {
            "userProfile": {"userId": "user123", "preferences": {"language": "en"}},
            "chatHistory": [],
            "sourceSystem": "MyApp",
        },
        "isAsync": False,
    }
    body = (await kore.http.post(f"{BASE}/execute", json=sample)).json()
    assert json.loads(body["output"][0]["content"]) == sample["metadata"]
    del sample["metadata"]  # kept for the session's duration
    body = (await kore.http.post(f"{BASE}/execute", json=sample)).json()
    assert json.loads(body["output"][0]["content"])["sourceSystem"] == "MyApp"
    session = await kore.engine.get_session(body["sessionInfo"]["sessionId"])
    assert session.metadata["userProfile"]["userId"] == "user123"

    invoke_agent = {
        "sessionIdentity": identity(sessionReference="test-session-value"),
        "invoke": {"tasks": [{"type": "agent", "name": "PolicyFinder"}, {"type": "agent", "name": "Waiter"}]},
        "input": [{"type": "text", "content": "find my policy"}],
    }
    body = (await kore.http.post(f"{BASE}/execute", json=invoke_agent)).json()
    assert body["output"] == [{"type": "text", "content": "Policy P-7 covers that."}]  # the first task only
    assert (await kore.engine.status(body["sessionInfo"]["runId"])).agent == "PolicyFinder"

    invoke_tool = {  # seed 001's "Invoking a Tool" curl body
        "sessionIdentity": [{"type": "sessionReference", "value": "test-session-value"}],
        "invoke": {"tasks": [{"type": "tool", "name": "check_balance_tool", "toolType": "code", "agentName": "Balance_agent"}]},
        "input": [{"type": "tool_input", "content": {"accountId": "123"}}],
        "debug": {"enable": True},
        "stream": {"enable": False},
    }
    response = await kore.http.post(f"{BASE}/execute", json=invoke_tool)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == [{"type": "text", "content": "Your balance is 100$ for account 123"}]
    assert body["sessionInfo"]["envName"] == "draft" and body["sessionInfo"]["status"] == "idle"
    state = await kore.engine.status(body["sessionInfo"]["runId"])
    [call] = state.tool_calls
    assert call.name == "check_balance_tool" and call.arguments == {"accountId": "123"} and call.done
    calls = await kore.http.post(f"{BASE}/execute", json={**invoke_tool, "debug": {"enable": True, "debugMode": "function-call"}})
    assert calls.json()["debug"] == [
        {"type": "function-call", "name": "check_balance_tool", "arguments": {"accountId": "123"},
         "output": "Your balance is 100$ for account 123"}
    ]


# -- callbacks ------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_callback_sample_delivers_signed_result(kore: Kore) -> None:
    sample = {  # seed 001 "Sample Request with Callback URL", the URL pointing at the local receiver
        "sessionIdentity": [{"type": "sessionReference", "value": "xxxx"}],
        "input": [{"type": "text", "content": "Place an order for a thin crust pizza with bell peppers."}],
        "stream": {"enable": False, "streamMode": "tokens"},
        "isAsync": True,
        "callbackUrl": kore.hook.url("/api/response"),
        "callbackToken": "my-token",
    }
    response = await kore.http.post(f"{BASE}/execute", json=sample)
    assert response.status_code == 202
    run_id = response.json()["runId"]
    [got] = await kore.hook.wait_for("/api/response", 1)
    assert got.headers["authorization"] == "Bearer my-token"
    signed = f"{got.headers['webhook-id']}.{got.headers['webhook-timestamp']}.".encode() + got.body
    mac = base64.b64encode(hmac.new(b"my-token", signed, hashlib.sha256).digest()).decode()
    assert got.headers["webhook-signature"] == f"v1,{mac}"
    payload = got.json()
    assert payload["sessionInfo"]["runId"] == run_id
    assert payload["output"][0]["content"].startswith("You said: Place an order")

    run = await wait_status(kore, run_id, identity(sessionReference="xxxx"), "success")
    config = run["metadata"]["runtimeContext"]["asyncConfig"]
    assert config["post_url"] == sample["callbackUrl"] and "my-token" not in json.dumps(run)
    delivery = await kore.engine.wait(config["deliveryRunId"])
    assert delivery.status is Status.COMPLETED and delivery.metadata == {"webhook_for": run_id}


@pytest.mark.anyio
async def test_failed_callback_is_recorded_and_unsafe_callback_refused(kore: Kore) -> None:
    kore.hook.script("/down", Reply(503), Reply(500))
    body = {
        "sessionIdentity": identity(sessionReference="cb"),
        "input": [{"type": "text", "content": "x"}],
        "isAsync": True,
        "callbackUrl": kore.hook.url("/down"),
    }
    run_id = (await kore.http.post(f"{BASE}/execute", json=body)).json()["runId"]
    run = await wait_status(kore, run_id, identity(sessionReference="cb"), "success")
    delivery = await kore.engine.wait(run["metadata"]["runtimeContext"]["asyncConfig"]["deliveryRunId"])
    assert delivery.status is Status.FAILED and delivery.error is not None and delivery.error.code == "delivery_failed"
    assert len(delivery.tool_calls) == 2
    status = await kore.http.post(f"{BASE}/{run_id}/status", json={"sessionIdentity": identity(sessionReference="cb")})
    assert status.json()["run"]["metadata"]["runtimeContext"]["asyncConfig"]["deliveryStatus"] == "failed"

    before = len((await kore.engine.list_runs(limit=200)).runs)
    for url in ("http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/", "http://[::1]:8080/", "ftp://example.org/x"):
        refused = await kore.http.post(f"{BASE}/execute", json={**body, "callbackUrl": url})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_request", url
    assert len((await kore.engine.list_runs(limit=200)).runs) == before  # nothing ran


# -- status: the session check ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_status_answers_only_the_runs_session(kore: Kore) -> None:
    mine = identity(sessionReference="alpha", userReference="user-a")
    body = {"sessionIdentity": mine, "input": [{"type": "text", "content": "hello"}]}
    run_id = (await kore.http.post(f"{BASE}/execute", json=body)).json()["sessionInfo"]["runId"]
    session_id = (await kore.engine.status(run_id)).session_id
    for ok in (mine, identity(sessionReference="alpha"), identity(userReference="user-a"), identity(sessionIdentity=session_id)):
        response = await kore.http.post(f"{BASE}/{run_id}/status", json={"sessionIdentity": ok})
        assert response.status_code == 200, ok
    for other in (identity(sessionReference="beta"), identity(userReference="user-b"), identity(sessionIdentity="s-other")):
        response = await kore.http.post(f"{BASE}/{run_id}/status", json={"sessionIdentity": other})
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", other
    other_app = f"/kore/apps/aa-other/environments/draft/runs/{run_id}/status"
    assert (await kore.http.post(other_app, json={"sessionIdentity": mine})).status_code == 404
    assert (await kore.http.post(f"{BASE}/r-missing/status", json={"sessionIdentity": mine})).status_code == 404
    # A bare sessionIdentity continues the session it names.
    body = {"sessionIdentity": identity(sessionIdentity=session_id), "input": [{"type": "text", "content": "again"}]}
    again = (await kore.http.post(f"{BASE}/execute", json=body)).json()
    assert again["sessionInfo"]["sessionId"] == session_id and again["sessionInfo"]["userReference"] == "user-a"
    unknown = {**body, "sessionIdentity": identity(sessionIdentity="s-nope")}
    assert (await kore.http.post(f"{BASE}/execute", json=unknown)).status_code == 404


# -- multitask strategy (session policy) and idempotency ---------------------------------------------------


@pytest.mark.anyio
async def test_multitask_strategies_and_idempotency_key(kore: Kore) -> None:
    ident = identity(sessionReference=f"busy-{uuid.uuid4()}")
    wait = {"sessionIdentity": ident, "input": [{"type": "text", "content": "x"}], "isAsync": True,
            "invoke": {"tasks": [{"type": "agent", "name": "Waiter"}]}}
    hello = {"sessionIdentity": ident, "input": [{"type": "text", "content": "hello"}]}
    first = (await kore.http.post(f"{BASE}/execute", json=wait)).json()["runId"]
    rejected = await kore.http.post(f"{BASE}/execute", json={**hello, "multitaskStrategy": "reject"})
    assert rejected.status_code == 409 and rejected.json()["error"]["details"]["active_runs"] == [first]

    interrupted = await kore.http.post(f"{BASE}/execute", json={**hello, "multitaskStrategy": "interrupt"})
    assert interrupted.status_code == 200 and interrupted.json()["output"][0]["content"] == "You said: hello "
    assert (await kore.engine.status(first)).status is Status.CANCELLED
    run = (await kore.http.post(f"{BASE}/{first}/status", json={"sessionIdentity": ident})).json()["run"]
    assert run["status"] == "failed" and run["kwargs"]["output"][0]["type"] == "error"

    blocker = (await kore.http.post(f"{BASE}/execute", json=wait)).json()["runId"]
    queued = (await kore.http.post(f"{BASE}/execute", json={**hello, "isAsync": True, "multitaskStrategy": "enqueue"})).json()["runId"]
    assert (await kore.engine.status(queued)).status is Status.PENDING
    await kore.engine.cancel(blocker)
    assert (await wait_status(kore, queued, ident, "success"))["multitaskStrategy"] == "enqueue"

    key = {"idempotency-key": f"k-{uuid.uuid4()}"}
    async_hello = {**hello, "isAsync": True}
    one = (await kore.http.post(f"{BASE}/execute", json=async_hello, headers=key)).json()["runId"]
    two = (await kore.http.post(f"{BASE}/execute", json=async_hello, headers=key)).json()["runId"]
    assert one == two
    three = (await kore.http.post(f"{BASE}/execute", json=async_hello)).json()["runId"]
    assert three != one


@pytest.mark.anyio
async def test_status_reports_the_effective_multitask_strategy() -> None:
    engine = make_engine()
    engine.session_policy = "reject"  # the seed's sample status shows "reject"
    async with engine:
        root = Router()
        root.mount("/kore", KoreProfile(engine))
        async with serve_app(root) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
            ident = identity(sessionReference=f"strategy-{uuid.uuid4()}")
            hello = {"sessionIdentity": ident, "input": [{"type": "text", "content": "hello"}]}
            plain = (await http.post(f"{BASE}/execute", json=hello)).json()["sessionInfo"]["runId"]
            named = (await http.post(f"{BASE}/execute", json={**hello, "multitaskStrategy": "enqueue"})).json()
            for run_id, strategy in ((plain, "reject"), (named["sessionInfo"]["runId"], "enqueue")):
                status = await http.post(f"{BASE}/{run_id}/status", json={"sessionIdentity": ident})
                assert status.json()["run"]["multitaskStrategy"] == strategy
        profiled = KoreProfile(engine, session_policy="interrupt")  # the profile's own default wins
        root = Router()
        root.mount("/kore", profiled)
        async with serve_app(root) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
            ident = identity(sessionReference=f"strategy-{uuid.uuid4()}")
            hello = {"sessionIdentity": ident, "input": [{"type": "text", "content": "hello"}]}
            run_id = (await http.post(f"{BASE}/execute", json=hello)).json()["sessionInfo"]["runId"]
            status = await http.post(f"{BASE}/{run_id}/status", json={"sessionIdentity": ident})
            assert status.json()["run"]["multitaskStrategy"] == "interrupt"


# -- bad input --------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_bad_requests_get_clear_errors_and_run_nothing(kore: Kore) -> None:
    good = {"sessionIdentity": identity(sessionReference="bad"), "input": [{"type": "text", "content": "x"}]}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"input": good["input"]}, "sessionIdentity"),
        ({**good, "sessionIdentity": [{"type": "email", "value": "a@b"}]}, "sessionIdentity"),
        ({**good, "sessionIdentity": [{"type": "sessionReference", "value": ""}]}, "sessionIdentity"),
        ({**good, "input": []}, "input"),
        ({**good, "input": [{"type": "image", "content": "x"}]}, "input"),
        ({**good, "input": [{"type": "text", "content": 5}]}, "input"),
        ({**good, "stream": {"enable": True, "streamMode": "bytes"}}, "streamMode"),
        ({**good, "stream": {"enable": "maybe"}}, "stream.enable"),
        ({**good, "debug": {"enable": True, "debugMode": "everything"}}, "debugMode"),
        ({**good, "invoke": {"tasks": [{"type": "tool", "name": "no_such_tool"}]}}, "no_such_tool"),
        ({**good, "invoke": {"tasks": [{"type": "robot", "name": "x"}]}}, "type"),
        ({**good, "invoke": {"tasks": []}}, "invoke.tasks"),
        ({**good, "metadata": "nope"}, "metadata"),
        ({**good, "multitaskStrategy": "sometimes"}, "multitaskStrategy"),
        ({**good, "attachments": {"includeFiles": [1]}}, "includeFiles"),
        ({**good, "isAsync": "soon"}, "isAsync"),
        ({**good, "callbackUrl": 7}, "callbackUrl"),
        ({**good, "surprise": True}, "surprise"),
    ]
    before = len((await kore.engine.list_runs(limit=200)).runs)
    for body, word in cases:
        response = await kore.http.post(f"{BASE}/execute", json=body)
        assert response.status_code == 400, body
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and word in error["message"] + json.dumps(error["details"]), body
    missing_agent = {**good, "invoke": {"tasks": [{"type": "agent", "name": "Nobody"}]}}
    assert (await kore.http.post(f"{BASE}/execute", json=missing_agent)).status_code == 404
    assert (await kore.http.post(f"{BASE}/execute", content=b"[1, 2")).status_code == 400
    assert (await kore.http.post(f"{BASE}/r-x/status", content=b"")).status_code == 400
    assert (await kore.http.get(f"{BASE}/execute")).status_code == 405
    assert len((await kore.engine.list_runs(limit=200)).runs) == before


@pytest.mark.anyio
async def test_api_key_principals_see_only_their_runs_and_sessions() -> None:
    engine = make_engine()

    def api_keys(headers: Any) -> str | None:  # the seeds authenticate with x-api-key
        return {"key-a": "alice", "key-b": "bob"}.get(headers.get("x-api-key", ""))

    async with engine:
        root = Router()
        root.mount("/kore", KoreProfile(engine, auth=api_keys))
        async with serve_app(root) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
            alice, bob = {"x-api-key": "key-a"}, {"x-api-key": "key-b"}
            ident = identity(sessionReference="shared-name")
            body = {"sessionIdentity": ident, "input": [{"type": "text", "content": "hi"}]}
            assert (await http.post(f"{BASE}/execute", json=body)).status_code == 401
            mine = (await http.post(f"{BASE}/execute", json=body, headers=alice)).json()
            run_id = mine["sessionInfo"]["runId"]
            status = await http.post(f"{BASE}/{run_id}/status", json={"sessionIdentity": ident}, headers=bob)
            assert status.status_code == 404
            # Bob naming the same session reference gets a session of his own, not Alice's.
            theirs = (await http.post(f"{BASE}/execute", json=body, headers=bob)).json()
            assert theirs["sessionInfo"]["sessionId"] != mine["sessionInfo"]["sessionId"]
            assert (await engine.status(theirs["sessionInfo"]["runId"])).owner == "bob"
            by_id = {**body, "sessionIdentity": identity(sessionIdentity=mine["sessionInfo"]["sessionId"])}
            assert (await http.post(f"{BASE}/execute", json=by_id, headers=bob)).status_code == 404
            ok = await http.post(f"{BASE}/{run_id}/status", json={"sessionIdentity": ident}, headers=alice)
            assert ok.status_code == 200 and ok.json()["run"]["status"] == "success"


@pytest.mark.anyio
async def test_the_app_id_names_the_agent_when_none_is_invoked(kore: Kore) -> None:
    body = {"sessionIdentity": identity(sessionReference="by-app"), "input": [{"type": "text", "content": "x"}]}
    response = await kore.http.post("/kore/apps/PolicyFinder/environments/draft/runs/execute", json=body)
    assert response.json()["output"] == [{"type": "text", "content": "Policy P-7 covers that."}]
    internal = await kore.http.post("/kore/apps/webhook.delivery/environments/draft/runs/execute", json=body)
    assert internal.json()["output"][0]["content"] == "You said: x "  # internal agents are never chosen


@pytest.mark.anyio
async def test_the_next_execute_answers_a_run_waiting_for_input(kore: Kore) -> None:
    ident = identity(sessionReference=f"clarify-{uuid.uuid4()}", userReference="u-1")
    url = "/kore/apps/Clarifier/environments/draft/runs/execute"
    first = (await kore.http.post(url, json={"sessionIdentity": ident, "input": [{"type": "text", "content": PIZZA}]})).json()
    assert first["output"] == [
        {"type": "text", "content": "Could you please specify the exact crust type you would like for your thick crust pizza?"}
    ]
    assert first["sessionInfo"]["conversationState"] == "WAITING_FOR_INPUT"
    run_id = first["sessionInfo"]["runId"]
    answer = {"sessionIdentity": ident, "input": [{"type": "text", "content": "thin"}], "debug": {"enable": True}}
    second = (await kore.http.post(url, json=answer)).json()
    assert second["sessionInfo"]["runId"] == run_id  # the same run, answered
    assert second["output"] == [{"type": "text", "content": "Ordered a thin crust pizza."}]  # this turn's output only
    assert second["debug"] == [{"type": "thought", "content": "Placing the order.", "source": "Orchestrator"}]
    assert second["sessionInfo"]["conversationState"] == "COMPLETED"
    assert (await kore.engine.status(run_id)).inputs == ("thin",)

    # Streamed: the first stream ends when the run waits, the answer's stream carries the rest.
    stream = {"enable": True, "streamMode": "messages"}
    body = {"sessionIdentity": ident, "input": [{"type": "text", "content": PIZZA}], "stream": stream}
    async with kore.http.stream("POST", url, json=body) as response:
        asked = await sse_events(response)
    assert asked[-1]["isLastEvent"] is True and asked[-1]["sessionInfo"]["conversationState"] == "WAITING_FOR_INPUT"
    assert asked[-1]["sessionInfo"]["output"][0]["content"].startswith("Could you please")
    body = {**body, "input": [{"type": "text", "content": "stuffed"}]}
    async with kore.http.stream("POST", url, json=body) as response:
        answered = await sse_events(response)
    assert [e["output"] for e in answered if "output" in e] == [[{"type": "text", "content": "Ordered a stuffed crust pizza."}]]
    assert answered[-1]["sessionInfo"]["output"] == [{"type": "text", "content": "Ordered a stuffed crust pizza."}]
    assert answered[-1]["sessionInfo"]["runId"] == asked[0]["sessionInfo"]["runId"]
