"""The Agent Platform profile (seed 002) over real HTTP: uvicorn on 127.0.0.1 through the ASGI binding.

Every sample request and response of the seed document is sent and compared, and
the seed's own signature check (recomputed here, not imported) is run against the
deliveries a real local receiver gets.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import httpx
import pytest

from runengine import RunContext, RunEngine
from runengine.adapters.asgi import ASGIApp
from runengine.adapters.profiles.platform import build_platform_app
from runengine.adapters.profiles.platform_webhooks import DELIVERY_AGENT, escalate
from runengine.adapters.webhooks import WebhookSender
from runengine.http import Request, Router

from httpkit import serve
from test_durable_core import DyingStore, crash_then_resume

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

KEY = "sk-app-xxxxxxxxxxxxx"
OTHER_KEY = "sk-app-yyyyyyyyyyyyy"
SECRET = "whsec_xxxxx"
T0 = datetime(2024, 1, 15, 14, 30, 0, tzinfo=timezone.utc)
TIMEOUT = 30.0


ANYIO_BACKENDS = ("asyncio",)  # uvicorn runs on asyncio


class Clock:
    """The engine's clock, set by the test so the seed's timestamps come out exactly."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def ids(first: str, prefix: str) -> Callable[[], str]:
    """An id factory giving the seed's sample id first, then fresh ones."""
    counter = iter(range(1_000_000))

    def make() -> str:
        n = next(counter)
        return first if n == 0 else f"{prefix}_{n:06d}"

    return make


def register_agents(engine: RunEngine, clock: Clock) -> None:
    @engine.agent("support_agent", description="The seed's support agent")
    async def support_agent(ctx: RunContext) -> Any:
        message = ctx.input
        if message == "What's my order status?":
            await ctx.tool_call("get_order_status", {"order": "12345"}, lambda order: {"order": order, "status": "shipped"})
            await ctx.usage(input_tokens=145, output_tokens=52)
            clock.now = clock.now + timedelta(seconds=2)  # the reply comes two seconds later, as in the seed
            await ctx.say("I found your order #12345. It shipped yesterday and should arrive by Friday.")
            return None
        if message == "Explain your return policy":
            for token in ("Our", " return", " policy"):
                await ctx.delta(token)
            await ctx.tool_call("search_knowledge", {"query": "return policy"}, lambda query: ["30 days"])
            await ctx.delta(" allows...")
            await ctx.usage(input_tokens=45, output_tokens=128)
            return None
        if message == "Greet me":
            profile = ctx.session.metadata["userProfile"] if ctx.session else {}
            await ctx.say(f"Welcome back, {profile['name']}!")
            return None
        if message == "I want a human":
            await ctx.say("Connecting you to an agent.")
            await escalate(ctx, reason="user_requested", context={"last_message": message})
            return None
        if message == "Break":
            raise RuntimeError("the model is down")
        await ctx.say(f"echo: {message}")
        return None


class Receiver:
    """A real webhook receiver: an ASGI app that keeps each request's raw body and headers."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        self.calls = 0
        self._news = anyio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls += 1
        status = 503 if self.calls <= self.fail_first else 204
        if status == 204:
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            self.received.append((headers, body))
            self._news.set()
            self._news = anyio.Event()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def wait_for(self, event: str, count: int = 1) -> list[tuple[dict[str, str], bytes]]:
        with anyio.fail_after(TIMEOUT):
            while True:
                found = [(h, b) for h, b in self.received if json.loads(b)["event"] == event]
                if len(found) >= count:
                    return found
                await self._news.wait()


def seed_signature_check(headers: dict[str, str], raw_body: bytes, webhook_secret: str) -> None:
    """The seed's "Verify Signatures" snippet, line for line in Python."""
    signature = headers["x-kore-signature"]
    expected = hmac.new(webhook_secret.encode(), raw_body, hashlib.sha256).hexdigest()
    if signature != expected:
        raise ValueError("Invalid signature")


class Platform:
    def __init__(self, base: str, clock: Clock, engine: RunEngine, receiver: Receiver, receiver_url: str) -> None:
        self.base = base
        self.clock = clock
        self.engine = engine
        self.receiver = receiver
        self.receiver_url = receiver_url
        self.http = httpx.AsyncClient(base_url=base + "/platform", headers={"Authorization": f"Bearer {KEY}"}, timeout=TIMEOUT)


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    clock = Clock(T0)
    engine = RunEngine("memory://", clock=clock)
    register_agents(engine, clock)
    receiver = Receiver()
    sender = WebhookSender(allow_hosts=("127.0.0.1",), max_attempts=3, backoff_base=0.01, backoff_max=0.05, timeout=5.0)
    router = Router()
    router.mount(
        "/platform",
        build_platform_app(
            engine,
            api_keys={KEY: "team-a", OTHER_KEY: "team-b"},
            apps={"app_123": "support_agent"},
            webhook_sender=sender,
            rate_limit=600,  # the seed's Pro plan: 600 requests a minute
            new_session_id=ids("sess_abc123", "sess"),
            new_trace_id=ids("trace_xyz789", "trace"),
        ),
    )
    async with engine, serve(ASGIApp(router)) as base, serve(receiver) as receiver_base:
        p = Platform(base, clock, engine, receiver, receiver_base + "/webhooks/kore")
        try:
            yield p
        finally:
            await p.http.aclose()


async def sse_frames(response: httpx.Response) -> list[dict[str, Any]]:
    """Parse an SSE body into frames {id, event, data} (comments skipped)."""
    frames: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if current:
                frames.append(current)
                current = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(": ")
        if field == "data":
            current["data"] = json.loads(value)
        elif field == "id":
            current["id"] = int(value)
        else:
            current[field] = value
    return frames


# -- the seed's samples -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_seed_samples_sessions_execute_history(platform: Platform) -> None:
    http = platform.http
    created = await http.post(
        "/apps/app_123/sessions",
        json={"user_id": "user_456", "metadata": {"channel": "mobile_app", "language": "en"}},
    )
    assert created.status_code == 201
    # The seed's rate-limit headers sample: X-RateLimit-Limit: 600, X-RateLimit-Remaining: 599, X-RateLimit-Reset.
    assert created.headers["X-RateLimit-Limit"] == "600" and created.headers["X-RateLimit-Remaining"] == "599"
    assert int(created.headers["X-RateLimit-Reset"]) > 1_700_000_000
    assert created.json() == {
        "session_id": "sess_abc123",
        "created_at": "2024-01-15T14:30:00Z",
        "expires_at": "2024-01-15T15:30:00Z",
    }

    executed = await http.post(
        "/apps/app_123/execute",
        json={"message": "What's my order status?", "session_id": "sess_abc123", "metadata": {"user_id": "user_456", "channel": "web"}},
    )
    assert executed.status_code == 200, executed.text
    assert executed.json() == {
        "response": "I found your order #12345. It shipped yesterday and should arrive by Friday.",
        "session_id": "sess_abc123",
        "trace_id": "trace_xyz789",
        "agent": "support_agent",
        "tools_used": ["get_order_status"],
        "usage": {"input_tokens": 145, "output_tokens": 52},
    }
    # trace_id is the engine's run id: the run is there, in the session, with the request's metadata.
    state = await platform.engine.status("trace_xyz789")
    assert state.session_id == "sess_abc123" and state.metadata == {"user_id": "user_456", "channel": "web"}

    history = await http.get("/apps/app_123/sessions/sess_abc123/history")
    assert history.status_code == 200
    body = history.json()
    assert body["session_id"] == "sess_abc123"
    user, assistant = body["messages"]
    assert user == {"role": "user", "content": "What's my order status?", "timestamp": "2024-01-15T14:30:00Z"}
    assert assistant["content"].startswith("I found your order #12345")  # the seed abbreviates it with "..."
    assert assistant == {
        "role": "assistant",
        "content": "I found your order #12345. It shipped yesterday and should arrive by Friday.",
        "timestamp": "2024-01-15T14:30:02Z",
        "agent": "support_agent",
    }

    ended = await http.delete("/apps/app_123/sessions/sess_abc123")
    assert ended.status_code == 204 and ended.content == b""
    again = await http.post("/apps/app_123/execute", json={"message": "Hello?", "session_id": "sess_abc123"})
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "not_found"
    assert again.json()["error"]["details"]["session_id"] == "sess_abc123"
    # Ending is idempotent and the history stays readable.
    assert (await http.delete("/apps/app_123/sessions/sess_abc123")).status_code == 204
    assert len((await http.get("/apps/app_123/sessions/sess_abc123/history")).json()["messages"]) == 2


@pytest.mark.anyio
async def test_seed_sample_streaming_with_named_events_and_resume(platform: Platform) -> None:
    http = platform.http
    await http.post("/apps/app_123/sessions", json={"user_id": "user_456"})
    request = {"message": "Explain your return policy", "session_id": "sess_abc123"}
    async with http.stream("POST", "/apps/app_123/execute/stream", json=request, headers={"Idempotency-Key": "k-1"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = await sse_frames(response)
    seen = [(f["event"], f["data"]) for f in frames]
    assert seen == [
        ("start", {"trace_id": "trace_xyz789", "session_id": "sess_abc123"}),  # the seed's trace_id, plus the session
        ("token", {"content": "Our"}),
        ("token", {"content": " return"}),
        ("token", {"content": " policy"}),
        ("tool_call", {"tool": "search_knowledge", "status": "started"}),
        ("tool_call", {"tool": "search_knowledge", "status": "completed"}),
        ("token", {"content": " allows..."}),
        ("done", {"usage": {"input_tokens": 45, "output_tokens": 128}}),
    ]
    seqs = [f["id"] for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] == 1

    # Resume by seq: everything after the second token, exactly once, by trace or by repeating the POST.
    cut = frames[2]["id"]
    async with http.stream("GET", "/apps/app_123/traces/trace_xyz789/stream", headers={"Last-Event-ID": str(cut)}) as response:
        resumed = await sse_frames(response)
    assert resumed == frames[3:]
    async with http.stream(
        "POST", "/apps/app_123/execute/stream", json=request, headers={"Idempotency-Key": "k-1", "Last-Event-ID": str(cut)}
    ) as response:
        assert await sse_frames(response) == frames[3:]
    async with http.stream("GET", f"/apps/app_123/traces/trace_xyz789/stream?after_seq={frames[-1]['id']}") as response:
        assert await sse_frames(response) == []
    # The idempotent repeats started no second run.
    assert len((await platform.engine.list_runs(session_id="sess_abc123")).runs) == 1

    no_key = await http.post("/apps/app_123/execute/stream", json=request, headers={"Last-Event-ID": "3"})
    assert no_key.status_code == 400 and no_key.json()["error"]["code"] == "invalid_request"


@pytest.mark.anyio
async def test_seed_sample_session_metadata_reaches_the_agent(platform: Platform) -> None:
    http = platform.http
    sample = {"metadata": {"userProfile": {"name": "John", "tier": "premium", "preferences": {"language": "en", "notifications": True}}}}
    created = await http.post("/apps/app_123/sessions", json=sample)
    session_id = created.json()["session_id"]
    executed = await http.post("/apps/app_123/execute", json={"message": "Greet me", "session_id": session_id})
    assert executed.json()["response"] == "Welcome back, John!"  # {{memory.sessionMeta.metadata.userProfile.name}}
    # Metadata sent with execute joins the session's metadata too.
    executed = await http.post("/apps/app_123/execute", json={"message": "Greet me", **sample})
    assert executed.status_code == 200 and executed.json()["response"] == "Welcome back, John!"
    assert executed.json()["session_id"] != session_id  # no session_id: a new session was started
    # A keyed repeat changes nothing: the same run, in the same (single) new session.
    first = await http.post("/apps/app_123/execute", json={"message": "Greet me", **sample}, headers={"Idempotency-Key": "greet-1"})
    repeat = await http.post("/apps/app_123/execute", json={"message": "Greet me", **sample}, headers={"Idempotency-Key": "greet-1"})
    assert first.status_code == repeat.status_code == 200
    assert repeat.json() == first.json()
    assert len((await platform.engine.list_runs(session_id=first.json()["session_id"])).runs) == 1


@pytest.mark.anyio
async def test_seed_error_format_and_codes(platform: Platform) -> None:
    http = platform.http
    # The seed's error sample, exactly.
    missing = await http.post("/apps/app_123/execute", json={"message": "What's my order status?", "session_id": "sess_invalid"})
    assert missing.status_code == 400
    assert missing.json() == {
        "error": {"code": "invalid_request", "message": "Session not found", "details": {"session_id": "sess_invalid"}}
    }
    # invalid_request 400: malformed requests change nothing.
    for body in (b"{not json", b"[]", b'{"message": 5}', b'{"message": "hi", "metadata": "x"}', b'{"message": "hi", "session_id": 7}'):
        bad = await http.post("/apps/app_123/execute", content=body, headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request", body
    assert (await platform.engine.list_runs()).runs == ()
    # authentication_error 401: no key, a wrong key, another scheme.
    for headers in ({}, {"Authorization": "Bearer sk-app-wrong"}, {"Authorization": f"Basic {KEY}"}):
        async with httpx.AsyncClient(base_url=platform.base + "/platform", timeout=TIMEOUT) as anonymous:
            refused = await anonymous.post("/apps/app_123/sessions", json={}, headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "authentication_error"
    # not_found 404: unknown session, unknown app, another principal's session.
    assert (await http.get("/apps/app_123/sessions/sess_nope/history")).json()["error"]["code"] == "not_found"
    assert (await http.post("/apps/no_such_app/execute", json={"message": "hi"})).status_code == 404
    mine = (await http.post("/apps/app_123/sessions", json={})).json()["session_id"]
    async with httpx.AsyncClient(base_url=platform.base + "/platform", headers={"Authorization": f"Bearer {OTHER_KEY}"}, timeout=TIMEOUT) as other:
        theirs = await other.get(f"/apps/app_123/sessions/{mine}/history")
        assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "not_found"
        assert (await other.delete(f"/apps/app_123/sessions/{mine}")).status_code == 404
    # internal_error 500: the agent failed; the trace id says which run.
    broken = await http.post("/apps/app_123/execute", json={"message": "Break", "session_id": mine})
    assert broken.status_code == 500
    error = broken.json()["error"]
    assert error["code"] == "internal_error" and error["details"]["reason"] == "agent_error"
    assert (await platform.engine.status(error["details"]["trace_id"])).status.value == "failed"


@pytest.mark.anyio
async def test_rate_limit_headers_and_429() -> None:
    engine = RunEngine("memory://")
    register_agents(engine, Clock(T0))
    router = Router()
    router.mount("/platform", build_platform_app(engine, api_keys={KEY: "team-a", OTHER_KEY: "team-b"}, default_agent="support_agent", rate_limit=2))
    async with engine, serve(ASGIApp(router)) as base:
        async with httpx.AsyncClient(base_url=base + "/platform", headers={"Authorization": f"Bearer {KEY}"}, timeout=TIMEOUT) as http:
            first = await http.post("/apps/any/sessions", json={})
            assert first.status_code == 201
            assert first.headers["X-RateLimit-Limit"] == "2" and first.headers["X-RateLimit-Remaining"] == "1"
            assert int(first.headers["X-RateLimit-Reset"]) > 1_700_000_000
            assert (await http.post("/apps/any/sessions", json={})).headers["X-RateLimit-Remaining"] == "0"
            limited = await http.post("/apps/any/sessions", json={})
            assert limited.status_code == 429
            assert limited.json()["error"]["code"] == "rate_limited"
            assert limited.headers["X-RateLimit-Remaining"] == "0" and "Retry-After" in limited.headers
            # Per principal: another key has its own budget.
            other = await http.post("/apps/any/sessions", json={}, headers={"Authorization": f"Bearer {OTHER_KEY}"})
            assert other.status_code == 201


# -- webhooks ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_seed_webhooks_signed_deliveries(platform: Platform) -> None:
    http = platform.http
    registration = {"url": platform.receiver_url, "events": ["session.started", "session.ended", "conversation.escalated"], "secret": SECRET}
    registered = await http.post("/apps/app_123/webhooks", json=registration)
    assert registered.status_code == 201, registered.text
    hook = registered.json()
    assert hook["url"] == platform.receiver_url and hook["events"] == registration["events"] and "secret" not in hook
    assert (await http.get("/apps/app_123/webhooks")).json() == {"webhooks": [hook]}

    # Another principal's sessions are not reported to this principal's webhook, nor is its registration listed.
    async with httpx.AsyncClient(base_url=platform.base + "/platform", headers={"Authorization": f"Bearer {OTHER_KEY}"}, timeout=TIMEOUT) as other:
        assert (await other.post("/apps/app_123/sessions", json={"user_id": "someone_else"})).status_code == 201
        assert (await other.get("/apps/app_123/webhooks")).json() == {"webhooks": []}
        assert (await other.delete(f"/apps/app_123/webhooks/{hook['webhook_id']}")).status_code == 404

    session_id = (await http.post("/apps/app_123/sessions", json={"user_id": "user_456"})).json()["session_id"]
    escalated = await http.post("/apps/app_123/execute", json={"message": "I want a human", "session_id": session_id})
    assert escalated.status_code == 200
    await http.delete(f"/apps/app_123/sessions/{session_id}")

    receiver = platform.receiver
    (started_headers, started_body), = await receiver.wait_for("session.started")
    (escalated_headers, escalated_body), = await receiver.wait_for("conversation.escalated")
    (ended_headers, ended_body), = await receiver.wait_for("session.ended")

    payload = json.loads(escalated_body)
    assert set(payload) == {"event", "timestamp", "data"}
    assert payload["event"] == "conversation.escalated"
    assert payload["timestamp"] == "2024-01-15T14:30:00Z"
    assert payload["data"]["session_id"] == session_id
    assert payload["data"]["reason"] == "user_requested"
    assert payload["data"]["context"] == {"last_message": "I want a human"}
    assert payload["data"]["trace_id"] == escalated.json()["trace_id"]
    assert json.loads(started_body)["data"]["session_id"] == session_id
    assert json.loads(ended_body)["data"]["session_id"] == session_id

    # The seed's check accepts every delivery as received ...
    for headers, body in ((started_headers, started_body), (escalated_headers, escalated_body), (ended_headers, ended_body)):
        seed_signature_check(headers, body, SECRET)
    # ... and rejects a tampered body, another secret, a missing-byte body.
    tampered = escalated_body.replace(b"user_requested", b"user_requestee")
    with pytest.raises(ValueError, match="Invalid signature"):
        seed_signature_check(escalated_headers, tampered, SECRET)
    with pytest.raises(ValueError, match="Invalid signature"):
        seed_signature_check(escalated_headers, escalated_body, "whsec_other")
    with pytest.raises(ValueError, match="Invalid signature"):
        seed_signature_check(escalated_headers, escalated_body[:-1], SECRET)

    # Each delivery is a recorded run of the delivery agent (session.started, the escalation watcher,
    # session.ended), created before the request that caused it was answered; one attempt each here.
    deliveries = [r for r in (await platform.engine.list_runs()).runs if r.agent == DELIVERY_AGENT]
    assert len(deliveries) == 3
    with anyio.fail_after(TIMEOUT):
        states = [await platform.engine.wait(r.run_id) for r in deliveries]
    assert [s.status.value for s in states] == ["completed"] * 3
    assert sorted(len(s.tool_calls) for s in states) == [1, 1, 1]
    assert all(SECRET not in json.dumps(s.input) for s in states)  # secrets never enter a run's log

    # Removing the registration stops deliveries.
    assert (await http.delete(f"/apps/app_123/webhooks/{hook['webhook_id']}")).status_code == 204
    assert (await http.get("/apps/app_123/webhooks")).json() == {"webhooks": []}
    assert (await http.delete(f"/apps/app_123/webhooks/{hook['webhook_id']}")).status_code == 404


@pytest.mark.anyio
async def test_webhook_registration_is_validated_and_guarded(platform: Platform) -> None:
    http = platform.http
    good = {"url": platform.receiver_url, "events": ["session.started"], "secret": SECRET}
    cases = [
        {**good, "url": "http://169.254.169.254/latest/meta-data"},  # metadata service: the SSRF guard
        {**good, "url": "http://10.0.0.1/hook"},
        {**good, "url": "ftp://example.com/hook"},
        {**good, "events": ["session.exploded"]},
        {**good, "events": []},
        {**good, "secret": ""},
        {"url": platform.receiver_url, "events": ["session.started"]},
    ]
    for case in cases:
        refused = await http.post("/apps/app_123/webhooks", json=case)
        assert refused.status_code == 400, case
        assert refused.json()["error"]["code"] == "invalid_request"
    assert (await http.get("/apps/app_123/webhooks")).json() == {"webhooks": []}


@pytest.mark.anyio
async def test_webhook_retries_then_delivers_and_survives_a_new_profile(platform: Platform) -> None:
    http = platform.http
    platform.receiver.fail_first = 2  # 503 twice, then accepted
    registered = await http.post("/apps/app_123/webhooks", json={"url": platform.receiver_url, "events": ["session.started"], "secret": SECRET})
    assert registered.status_code == 201
    # A second profile over the same engine (another process on the same store) sees the registration.
    second = build_platform_app(platform.engine, api_keys={KEY: "team-a"}, default_agent="support_agent")
    listed = await second(Request(method="GET", path="/apps/app_123/webhooks", headers={"authorization": f"Bearer {KEY}"}))
    assert json.loads(listed.body)["webhooks"][0]["webhook_id"] == registered.json()["webhook_id"]

    await http.post("/apps/app_123/sessions", json={})
    (headers, body), = await platform.receiver.wait_for("session.started")
    seed_signature_check(headers, body, SECRET)
    assert platform.receiver.calls == 3
    # The webhook-id stays the same across the retries (receivers deduplicate by it).
    assert headers["webhook-id"]


def test_seed_signature_check_is_the_seeds() -> None:
    """Known-answer check of the recomputation itself (HMAC-SHA256 hex, RFC 4231 test case 2)."""
    headers = {"x-kore-signature": "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"}
    seed_signature_check(headers, b"what do ya want for nothing?", "Jefe")
    with pytest.raises(ValueError):
        seed_signature_check(headers, b"what do ya want for nothing!", "Jefe")


@pytest.mark.anyio
async def test_expired_session_is_not_found_and_execute_extends_it(platform: Platform) -> None:
    http = platform.http
    session_id = (await http.post("/apps/app_123/sessions", json={})).json()["session_id"]
    platform.clock.now = T0 + timedelta(minutes=50)
    assert (await http.post("/apps/app_123/execute", json={"message": "hi", "session_id": session_id})).status_code == 200
    platform.clock.now = T0 + timedelta(minutes=100)  # 50 minutes after the last execute: still alive
    assert (await http.post("/apps/app_123/execute", json={"message": "hi", "session_id": session_id})).status_code == 200
    platform.clock.now = T0 + timedelta(minutes=161)
    expired = await http.post("/apps/app_123/execute", json={"message": "hi", "session_id": session_id})
    assert expired.status_code == 404
    assert expired.json()["error"] == {
        "code": "not_found",
        "message": "Session has expired",
        "details": {"session_id": session_id, "expired_at": "2024-01-15T17:10:00Z"},
    }


# -- the same profile without HTTP, on both anyio backends ---------------------------------------


async def _call(app: Any, method: str, path: str, body: Any = None, **headers: str) -> Any:
    raw = b"" if body is None else json.dumps(body).encode()
    return await app(Request(method=method, path=path, body=raw, headers={"authorization": f"Bearer {KEY}", **headers}))


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_profile_app_on_both_backends_with_keepalives(anyio_backend: str) -> None:
    engine = RunEngine("memory://")
    go = anyio.Event()

    @engine.agent("slow")
    async def slow(ctx: RunContext) -> None:
        await ctx.delta("wait")
        await go.wait()
        await ctx.delta("ed")

    app = build_platform_app(engine, api_keys={KEY: "team-a"}, default_agent="slow", keepalive=0.05)
    async with engine:
        response = await _call(app, "POST", "/apps/a/execute/stream", {"message": "x"})
        assert response.status == 200
        chunks: list[bytes] = []
        async with contextlib.aclosing(response.body) as body:
            async for chunk in body:
                chunks.append(chunk)
                if chunk.startswith(b":"):
                    go.set()  # idle long enough for a keep-alive: let the agent finish
        text = b"".join(chunks).decode()
        assert ": keep-alive" in text
        events = [line[len("event: "):] for line in text.splitlines() if line.startswith("event: ")]
        assert events == ["start", "token", "token", "done"]
        trace_id = json.loads(text.split("data: ", 1)[1].split("\n", 1)[0])["trace_id"]
        assert (await engine.status(trace_id)).text == "waited"
        # A session id from the stream works for a sync execute afterwards.
        session_id = (await engine.status(trace_id)).session_id
        done = await _call(app, "POST", "/apps/a/execute", {"message": "again", "session_id": session_id})
        go.set()
        assert done.status == 200 and json.loads(done.body)["response"] == "waited"


@pytest.mark.anyio
async def test_registrations_and_sessions_survive_a_restart_on_sqlite(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    registration = {"url": "http://127.0.0.1:9/kore", "events": ["session.ended"], "secret": SECRET}

    def make() -> tuple[RunEngine, Any]:
        engine = RunEngine(url)
        register_agents(engine, Clock(T0))
        sender = WebhookSender(allow_hosts=("127.0.0.1",))  # nothing is delivered: no session ends here
        return engine, build_platform_app(engine, api_keys={KEY: "team-a"}, default_agent="support_agent", webhook_sender=sender)

    engine, app = make()
    async with engine:
        registered = await _call(app, "POST", "/apps/a/webhooks", registration)
        assert registered.status == 201, registered.body
        session_id = json.loads((await _call(app, "POST", "/apps/a/sessions", {"user_id": "u"})).body)["session_id"]
        assert (await _call(app, "POST", "/apps/a/execute", {"message": "hello", "session_id": session_id})).status == 200
    engine, app = make()
    async with engine:
        listed = json.loads((await _call(app, "GET", "/apps/a/webhooks")).body)["webhooks"]
        assert listed == [json.loads(registered.body)]
        history = json.loads((await _call(app, "GET", f"/apps/a/sessions/{session_id}/history")).body)
        assert [m["role"] for m in history["messages"]] == ["user", "assistant"]


@pytest.mark.anyio
async def test_a_final_delivery_failure_is_recorded(platform: Platform) -> None:
    http = platform.http
    platform.receiver.fail_first = 1_000  # always 503
    await http.post("/apps/app_123/webhooks", json={"url": platform.receiver_url, "events": ["session.started"], "secret": SECRET})
    await http.post("/apps/app_123/sessions", json={})
    # The delivery run was recorded before the session's creation was answered.
    (delivery,) = [r for r in (await platform.engine.list_runs()).runs if r.agent == DELIVERY_AGENT]
    with anyio.fail_after(TIMEOUT):
        state = await platform.engine.wait(delivery.run_id)
    assert state.status.value == "failed" and state.error is not None and state.error.code == "delivery_failed"
    attempts = [call for call in state.tool_calls if call.name == "http.post"]
    assert len(attempts) == 3 and all(call.error is not None for call in attempts)  # the sender's max_attempts
    assert platform.receiver.calls == 3 and platform.receiver.received == []


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_stream_reports_failure_and_a_turn_cancelled_by_ending_its_session(anyio_backend: str) -> None:
    engine = RunEngine("memory://")
    started = anyio.Event()

    @engine.agent("moody")
    async def moody(ctx: RunContext) -> None:
        if ctx.input == "fail":
            raise RuntimeError("no")
        await ctx.delta("thinking")
        started.set()
        await anyio.sleep_forever()

    app = build_platform_app(engine, api_keys={KEY: "team-a"}, default_agent="moody")

    async def frames(response: Any) -> list[tuple[str, Any]]:
        out = []
        async with contextlib.aclosing(response.body) as body:
            async for chunk in body:  # a chunk holds whole frames, one or more (a batch of events)
                for block in chunk.decode().split("\n\n"):
                    lines = block.splitlines()
                    named = dict(line.split(": ", 1) for line in lines if line and not line.startswith(":"))
                    if named:
                        out.append((named["event"], json.loads(named["data"])))
        return out

    async with engine:
        failed = await frames(await _call(app, "POST", "/apps/a/execute/stream", {"message": "fail"}))
        assert [name for name, _ in failed] == ["start", "error"]
        assert failed[1][1]["error"]["code"] == "internal_error"
        assert failed[1][1]["error"]["details"]["reason"] == "agent_error"

        session_id = json.loads((await _call(app, "POST", "/apps/a/sessions", {})).body)["session_id"]
        response = await _call(app, "POST", "/apps/a/execute/stream", {"message": "wait", "session_id": session_id})
        result: list[tuple[str, Any]] = []

        async def read() -> None:
            result.extend(await frames(response))

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            with anyio.fail_after(TIMEOUT):
                await started.wait()
                ended = await _call(app, "DELETE", f"/apps/a/sessions/{session_id}")
            assert ended.status == 204
        assert [name for name, _ in result] == ["start", "token", "error"]
        assert result[2][1]["error"]["code"] == "conflict"
        after = await _call(app, "POST", "/apps/a/execute", {"message": "again", "session_id": session_id})
        assert after.status == 404 and json.loads(after.body)["error"]["code"] == "not_found"


@pytest.mark.anyio
async def test_a_replayed_stream_leaves_out_the_text_a_resume_discarded() -> None:
    """The seed's token frames cannot tell a client to drop text: a trace stream read after a
    crash gives the kept text once, without the deltas of the message the resume discarded."""

    def agents(engine: RunEngine, store: DyingStore) -> None:
        @engine.agent("talk")
        async def talk(ctx: RunContext) -> None:
            await ctx.say("hello")
            async with ctx.message() as m:
                await m.delta("The answer ")
                await ctx.flush()
                if ctx.attempt == 1:
                    store.die()
                    await anyio.sleep_forever()
                await m.delta("is 42.")

    async def platform_session(engine: RunEngine) -> str:
        made = await build_platform_app(engine)(Request(method="POST", path="/apps/talk/sessions", body=b"{}"))
        assert made.status == 201, made.body
        return str(json.loads(made.body)["session_id"])

    run_id, engine = await crash_then_resume(agents, "talk", "hi", session=platform_session)
    async with engine, serve(ASGIApp(build_platform_app(engine))) as base, httpx.AsyncClient(base_url=base) as http:
        state = await engine.wait(run_id)
        assert state.status.value == "completed" and len(state.discarded) == 1
        for after in ("0", "3"):  # from the start, and from a cursor after "hello", before the discarded deltas
            async with http.stream("GET", f"/apps/talk/traces/{run_id}/stream?after_seq={after}") as response:
                assert response.status_code == 200
                frames = await sse_frames(response)
            tokens = "".join(f["data"]["content"] for f in frames if f["event"] == "token")
            assert tokens == ("helloThe answer is 42." if after == "0" else "The answer is 42."), frames
            assert frames[-1]["event"] == "done"
