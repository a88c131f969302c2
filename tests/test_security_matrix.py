"""The authorization matrix: two principals x every route of every surface (native, /acp, /kore,
/platform, /v1, /ai, /langgraph, /ds), over real HTTP. Alice creates one object of each kind on each surface; Bob then calls
every route naming Alice's objects and must be told they do not exist (404), see none of them in
a listing, and change nothing. A session or thread id a client chooses names a session in the
caller's own namespace (issue 20 item 13): Bob naming Alice's "support-ticket-1" reaches his own
session of that id, never hers, so those ids are no secrets.

The routes come from the composed app's Router (`Router.routes()`), not from a list kept here: a
new route fails `test_every_route_is_classified` until it gets a probe below.

The principals are named so that the old joined idempotency key (f"{owner}:{key}") collides:
("acme", "alice:order-1") and ("acme:alice", "order-1") were the same string.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import httpx
import pytest

from httpkit import demo_engine, serve, wait_status
from runengine.adapters.asgi import engine_asgi_app
from runengine.adapters.server import build_app

ALICE, BOB = "acme:alice", "acme"
TOKENS = {"t-alice": ALICE, "t-bob": BOB}
#: Alice's Idempotency-Key on each surface (distinct, so this test does not depend on per-surface key spaces).
KEYS = {"native": "order-1", "acp": "order-2", "kore": "order-3", "platform": "order-4", "v1": "order-5"}
APP = "echo"  # the platform and Kore app id (the platform runs the agent named like the app)
HOOK_URL = "https://93.184.216.34/hook"  # a public literal address: no DNS lookup, never called here


def auth_hook(headers: Any) -> str | None:
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    return TOKENS.get(token) if scheme.lower() == "bearer" else None


ANYIO_BACKENDS = ("asyncio",)  # uvicorn


@attrs.define
class World:
    """Alice's objects on every surface, and both principals' clients."""

    alice: httpx.AsyncClient
    bob: httpx.AsyncClient
    native_run: str = ""
    native_session: str = "support-ticket-1"  # implicit: begun by Alice's first run naming it
    explicit_session: str = "alice-explicit"  # created with POST /sessions
    acp_run: str = ""
    acp_session: str = ""
    kore_run: str = ""
    kore_session: str = ""
    platform_session: str = ""
    platform_trace: str = ""
    webhook_id: str = ""
    v1_run: str = ""
    v1_trace: str = ""
    v1_thread: str = "alice-thread"  # begun by Alice's first /v1 run naming it
    ai_chat: str = "alice-chat"  # begun by Alice's first /ai turn naming it
    ai_run: str = ""
    lg_thread: str = "alice-lg-thread"  # created with POST /langgraph/threads
    lg_run: str = ""
    ds_stream: str = "alice-notes"  # a Durable Stream Alice made: a name in her own namespace
    schedule: str = "alice-digest"  # a schedule Alice made (its input names her "refund"): a name in her own namespace

    def secrets(self) -> set[str]:
        """Every id of Alice's that Bob must never be shown (those she chose are names in her own
        namespace, which Bob may use in his)."""
        return {
            self.native_run, self.acp_run, self.kore_run, self.kore_session, self.platform_session,
            self.platform_trace, self.webhook_id, self.v1_run, self.v1_trace, self.ai_run, self.lg_run,
        }


def kore_execute_body(reference: str, text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {
        "sessionIdentity": [{"type": "userReference", "value": reference}],
        "input": [{"type": "text", "content": text}],
        "invoke": {"tasks": [{"type": "agent", "name": "approval"}]},
        "isAsync": True,
        **extra,
    }


async def build_world(alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> World:
    w = World(alice=alice, bob=bob)
    # native: a run waiting for input in an implicit session, and an explicit session
    r = await alice.post(
        "/runs",
        json={"agent": "approval", "input": "refund", "session_id": w.native_session, "mode": "async"},
        headers={"idempotency-key": KEYS["native"]},
    )
    assert r.status_code == 202, r.text
    w.native_run = r.json()["run_id"]
    assert (await alice.post("/sessions", json={"session_id": w.explicit_session})).status_code == 201
    # ACP: a run awaiting input in its session
    w.acp_session = str(uuid.uuid4())
    r = await alice.post(
        "/acp/runs",
        json={"agent_name": "approval", "session_id": w.acp_session, "mode": "async",
              "input": [{"parts": [{"content": "refund"}]}]},
        headers={"idempotency-key": KEYS["acp"]},
    )
    assert r.status_code == 202, r.text
    w.acp_run = r.json()["run_id"]
    # Kore: a run of `approval` in Alice's session
    r = await alice.post(
        f"/kore/apps/{APP}/environments/dev/runs/execute", json=kore_execute_body("u1"),
        headers={"idempotency-key": KEYS["kore"]},
    )
    assert r.status_code == 202, r.text
    w.kore_run = r.json()["runId"]
    status = await alice.post(
        f"/kore/apps/{APP}/environments/dev/runs/{w.kore_run}/status",
        json={"sessionIdentity": [{"type": "userReference", "value": "u1"}]},
    )
    assert status.status_code == 200, status.text
    w.kore_session = status.json()["run"]["sessionId"]
    # Platform: a session with one turn, and a webhook registration
    r = await alice.post(f"/platform/apps/{APP}/sessions", json={})
    assert r.status_code == 201, r.text
    w.platform_session = r.json()["session_id"]
    r = await alice.post(
        f"/platform/apps/{APP}/execute", json={"message": "hello", "session_id": w.platform_session},
        headers={"idempotency-key": KEYS["platform"]},
    )
    assert r.status_code == 200, r.text
    w.platform_trace = r.json()["trace_id"]
    r = await alice.post(
        f"/platform/apps/{APP}/webhooks",
        json={"url": HOOK_URL, "events": ["session.ended"], "secret": "s3cret"},
    )
    assert r.status_code == 201, r.text
    w.webhook_id = r.json()["webhook_id"]
    # /v1 (seed 004): a run waiting for input in Alice's thread
    r = await alice.post(f"/v1/threads/{w.v1_thread}/runs", json={"persona_id": "approval", "input": "refund"},
                         headers={"idempotency-key": KEYS["v1"]})
    assert r.status_code == 201, r.text
    w.v1_run, w.v1_trace = r.json()["run_id"], r.json()["trace_id"]
    await wait_status(alice, w.v1_run, "waiting_for_input")
    # /ai (AI SDK useChat): a chat whose run waits for approval
    r = await alice.post("/ai/chat", json=ai_chat_body(w.ai_chat, "refund", agent="approval"))
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n"), r.text
    w.ai_run = r.text.split('"messageId":"', 1)[1].split('"', 1)[0]
    await wait_status(alice, w.ai_run, "waiting_for_input")
    # /langgraph: a thread with a run waiting for input
    r = await alice.post("/langgraph/threads", json={"thread_id": w.lg_thread, "metadata": {"owner": "alice"}})
    assert r.status_code == 200, r.text
    r = await alice.post(f"/langgraph/threads/{w.lg_thread}/runs", json={"assistant_id": "approval", "input": "refund"})
    assert r.status_code == 200, r.text
    w.lg_run = r.json()["run_id"]
    # /ds: a stream of her own (its data names her run's input), beside her runs' streams
    r = await alice.put(f"/ds/v1/stream/{w.ds_stream}", content=b"refund notes", headers={"content-type": "text/plain"})
    assert r.status_code == 201, r.text
    # /schedules: a yearly schedule of hers
    r = await alice.post("/schedules", json={"schedule_id": w.schedule, "cron": "0 0 1 1 *", "agent": "echo", "input": "refund"})
    assert r.status_code == 201, r.text
    await wait_status(alice, w.lg_run, "waiting_for_input")
    return w


def ai_chat_body(chat_id: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"id": chat_id, "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": text}]}], **extra}


# -- what Bob may be answered ------------------------------------------------------------------


def hidden(response: httpx.Response) -> None:
    """Answered exactly as a missing object: 404 not_found."""
    assert response.status_code == 404, f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
    assert response.json()["error"]["code"] == "not_found", response.text


def reveals_nothing(w: World, response: httpx.Response, *sent: str) -> None:
    """The response names none of Alice's ids (but those Bob sent himself)."""
    shown = {s for s in w.secrets() - set(sent) if s and s in response.text}
    assert not shown, f"{response.request.method} {response.request.url} shows {shown}: {response.text[:500]}"


def new_own_run(w: World, response: httpx.Response, run_id: str) -> None:
    """A keyed request of Bob's made a run of his own (never Alice's, whatever the key)."""
    assert response.status_code < 300, response.text
    assert run_id and run_id not in w.secrets(), response.text
    reveals_nothing(w, response)


def own_namespace(w: World, response: httpx.Response) -> None:
    """Bob naming a session id Alice chose reaches his own session of that id (or none yet: 404;
    409 creating one he already has), never hers: nothing of hers in the answer (her runs' input was "refund")."""
    assert response.status_code in (200, 201, 202, 204, 404, 409), f"{response.request.url}: {response.status_code} {response.text}"
    if response.status_code == 404:
        hidden(response)
    reveals_nothing(w, response)
    assert "refund" not in response.text, response.text


Probe = Callable[[World], Awaitable[None]]


# -- native ---------------------------------------------------------------------------------


async def native_create_run(w: World) -> None:
    for session in (w.native_session, w.explicit_session):
        for policy in ("reject", "interrupt", "allow", "enqueue"):
            r = await w.bob.post("/runs", json={"agent": "echo", "input": "x", "session_id": session, "session_policy": policy})
            assert r.status_code == 200, r.text
            own_namespace(w, r)
    r = await w.bob.post("/runs", json={"agent": "echo", "input": "x", "mode": "async"},
                         headers={"idempotency-key": "alice:" + KEYS["native"]})
    new_own_run(w, r, r.json().get("run_id", ""))


async def native_list_runs(w: World) -> None:
    for query in ({}, {"session_id": w.native_session}, {"session_id": w.explicit_session}):
        r = await w.bob.get("/runs", params=query)
        assert r.status_code == 200, r.text
        reveals_nothing(w, r)  # Bob's own runs in his sessions of those ids, at most


async def native_get_run(w: World) -> None:
    hidden(await w.bob.get(f"/runs/{w.native_run}"))


async def native_events(w: World) -> None:
    hidden(await w.bob.get(f"/runs/{w.native_run}/events"))
    hidden(await w.bob.get(f"/runs/{w.native_run}/events", headers={"accept": "text/event-stream"}))


async def native_cancel(w: World) -> None:
    hidden(await w.bob.post(f"/runs/{w.native_run}/cancel"))


async def native_delete_run(w: World) -> None:
    hidden(await w.bob.delete(f"/runs/{w.native_run}"))  # active: still 404, not 409
    ended = (await w.alice.post("/runs", json={"agent": "echo", "input": "done"})).json()
    assert ended["status"] == "completed", ended
    hidden(await w.bob.delete(f"/runs/{ended['run_id']}"))
    assert (await w.alice.get(f"/runs/{ended['run_id']}")).status_code == 200  # not deleted


async def native_input(w: World) -> None:
    hidden(await w.bob.post(f"/runs/{w.native_run}/input", json={"content": "yes"}))


async def native_signal(w: World) -> None:
    hidden(await w.bob.post(f"/runs/{w.native_run}/signals/msg", json={"payload": "from bob"}))
    state = (await w.alice.get(f"/runs/{w.native_run}")).json()
    assert state["signals"] == [], state["signals"]  # nothing recorded


async def native_children(w: World) -> None:
    hidden(await w.bob.get(f"/runs/{w.native_run}/children"))


async def native_fork(w: World) -> None:
    async def alices_runs() -> set[str]:
        return {run["run_id"] for run in (await w.alice.get("/runs", params={"limit": 200})).json()["runs"]}

    before = await alices_runs()
    hidden(await w.bob.post(f"/runs/{w.native_run}/fork", json={"at_seq": 1}))
    assert await alices_runs() == before, "a fork was made"


async def schedule_untouched(w: World) -> None:
    r = await w.alice.get(f"/schedules/{w.schedule}")
    assert r.status_code == 200 and r.json()["paused"] is False and r.json()["input"] == "refund", r.text


async def schedules_create(w: World) -> None:
    own_namespace(w, await w.bob.post("/schedules", json={"schedule_id": w.schedule, "cron": "0 0 1 1 *", "agent": "echo"}))
    await schedule_untouched(w)


async def schedules_list(w: World) -> None:
    r = await w.bob.get("/schedules")
    assert r.status_code == 200, r.text
    reveals_nothing(w, r)
    assert "refund" not in r.text, r.text


async def schedule_get(w: World) -> None:
    own_namespace(w, await w.bob.get(f"/schedules/{w.schedule}"))


async def schedule_pause(w: World) -> None:
    own_namespace(w, await w.bob.post(f"/schedules/{w.schedule}/pause"))
    await schedule_untouched(w)


async def schedule_resume(w: World) -> None:
    own_namespace(w, await w.bob.post(f"/schedules/{w.schedule}/resume"))
    await schedule_untouched(w)


async def schedule_delete(w: World) -> None:
    own_namespace(w, await w.bob.delete(f"/schedules/{w.schedule}"))
    await schedule_untouched(w)


async def native_create_session(w: World) -> None:
    for session in (w.native_session, w.explicit_session):
        r = await w.bob.post("/sessions", json={"session_id": session, "metadata": {"by": "bob"}})
        assert r.status_code in (201, 409), r.text  # his own (409: he already has one of that id)
        own_namespace(w, r)


async def native_get_session(w: World) -> None:
    for session in (w.native_session, w.explicit_session):
        own_namespace(w, await w.bob.get(f"/sessions/{session}"))


async def native_end_session(w: World) -> None:
    for session in (w.native_session, w.explicit_session):
        own_namespace(w, await w.bob.delete(f"/sessions/{session}"))


async def native_history(w: World) -> None:
    for session in (w.native_session, w.explicit_session):
        own_namespace(w, await w.bob.get(f"/sessions/{session}/history"))


async def public(w: World, path: str, method: str = "GET") -> None:
    r = await w.bob.request(method, path)
    assert r.status_code == 200, r.text
    reveals_nothing(w, r)


# -- ACP ------------------------------------------------------------------------------------------


async def acp_create_run(w: World) -> None:
    for policy in ("reject", "interrupt", "allow"):
        r = await w.bob.post("/acp/runs", json={
            "agent_name": "echo", "session_id": w.acp_session, "session_policy": policy, "mode": "async",
            "input": [{"parts": [{"content": "x"}]}],
        })
        own_namespace(w, r)
    r = await w.bob.post("/acp/runs", json={"agent_name": "echo", "mode": "async", "input": [{"parts": [{"content": "x"}]}]},
                         headers={"idempotency-key": "alice:" + KEYS["acp"]})
    new_own_run(w, r, r.json().get("run_id", ""))


async def acp_read_run(w: World) -> None:
    hidden(await w.bob.get(f"/acp/runs/{w.acp_run}"))


async def acp_resume(w: World) -> None:
    hidden(await w.bob.post(f"/acp/runs/{w.acp_run}", json={
        "await_resume": {"type": "message", "message": {"parts": [{"content": "yes"}]}}, "mode": "async",
    }))


async def acp_events(w: World) -> None:
    hidden(await w.bob.get(f"/acp/runs/{w.acp_run}/events"))
    hidden(await w.bob.get(f"/acp/runs/{w.acp_run}/events", headers={"accept": "text/event-stream"}))


async def acp_cancel(w: World) -> None:
    hidden(await w.bob.post(f"/acp/runs/{w.acp_run}/cancel"))


async def acp_session(w: World) -> None:
    own_namespace(w, await w.bob.get(f"/acp/sessions/{w.acp_session}"))


async def acp_history_message(w: World) -> None:
    own_namespace(w, await w.bob.get(f"/acp/sessions/{w.acp_session}/history/0"))


# -- Kore --------------------------------------------------------------------------------------------


async def kore_execute(w: World) -> None:
    base = f"/kore/apps/{APP}/environments/dev/runs/execute"
    # Alice's engine session named directly, with each multitask strategy
    for policy in ("reject", "interrupt", "allow"):
        body = kore_execute_body("ignored", multitaskStrategy=policy)
        body["sessionIdentity"] = [{"type": "sessionIdentity", "value": w.kore_session}]
        r = await w.bob.post(base, json=body)
        hidden(r)
        reveals_nothing(w, r, w.kore_session)
    # The same userReference as Alice: Bob gets a session of his own, and his key is his own
    r = await w.bob.post(base, json=kore_execute_body("u1"), headers={"idempotency-key": "alice:" + KEYS["kore"]})
    new_own_run(w, r, r.json().get("runId", ""))


async def kore_status(w: World) -> None:
    base = f"/kore/apps/{APP}/environments/dev/runs/{w.kore_run}/status"
    for identity in ({"type": "userReference", "value": "u1"}, {"type": "sessionIdentity", "value": w.kore_session}):
        hidden(await w.bob.post(base, json={"sessionIdentity": [identity]}))


# -- Platform ------------------------------------------------------------------------------------------


async def platform_execute(w: World) -> None:
    path = f"/platform/apps/{APP}/execute"
    r = await w.bob.post(path, json={"message": "hi", "session_id": w.platform_session})
    # The seed answers a body naming an unknown session with 400 "Session not found": as for a missing one.
    missing = await w.bob.post(path, json={"message": "hi", "session_id": "sess_" + uuid.uuid4().hex})
    assert (r.status_code, r.json()["error"]["code"]) == (missing.status_code, missing.json()["error"]["code"]), r.text
    reveals_nothing(w, r, w.platform_session)
    r = await w.bob.post(path, json={"message": "hello"}, headers={"idempotency-key": "alice:" + KEYS["platform"]})
    new_own_run(w, r, r.json().get("trace_id", ""))


async def platform_execute_stream(w: World) -> None:
    path = f"/platform/apps/{APP}/execute/stream"
    r = await w.bob.post(path, json={"message": "hi", "session_id": w.platform_session})
    missing = await w.bob.post(path, json={"message": "hi", "session_id": "sess_" + uuid.uuid4().hex})
    assert (r.status_code, r.json()["error"]["code"]) == (missing.status_code, missing.json()["error"]["code"]), r.text
    r = await w.bob.post(path, json={"message": "hello"}, headers={"idempotency-key": "alice:" + KEYS["platform"] + "s"})
    new_own_run(w, r, r.headers.get("x-trace-id", ""))


async def platform_resume_stream(w: World) -> None:
    hidden(await w.bob.get(f"/platform/apps/{APP}/traces/{w.platform_trace}/stream"))


async def platform_create_session(w: World) -> None:
    r = await w.bob.post(f"/platform/apps/{APP}/sessions", json={})
    assert r.status_code == 201, r.text
    reveals_nothing(w, r)


async def platform_history(w: World) -> None:
    hidden(await w.bob.get(f"/platform/apps/{APP}/sessions/{w.platform_session}/history"))


async def platform_end_session(w: World) -> None:
    hidden(await w.bob.delete(f"/platform/apps/{APP}/sessions/{w.platform_session}"))


async def platform_register_webhook(w: World) -> None:
    r = await w.bob.post(f"/platform/apps/{APP}/webhooks", json={"url": HOOK_URL, "events": ["session.ended"], "secret": "x"})
    assert r.status_code == 201, r.text
    reveals_nothing(w, r)


async def platform_list_webhooks(w: World) -> None:
    r = await w.bob.get(f"/platform/apps/{APP}/webhooks")
    assert r.status_code == 200, r.text
    reveals_nothing(w, r)


async def platform_remove_webhook(w: World) -> None:
    hidden(await w.bob.delete(f"/platform/apps/{APP}/webhooks/{w.webhook_id}"))


# -- /v1 (seed 004) ----------------------------------------------------------------------------------


async def v1_create_run(w: World) -> None:
    r = await w.bob.post(f"/v1/threads/{w.v1_thread}/runs", json={"input": "x"})
    assert r.status_code == 201, r.text
    own_namespace(w, r)
    r = await w.bob.post("/v1/threads/bob-thread/runs", json={"input": "x"}, headers={"idempotency-key": "alice:" + KEYS["v1"]})
    new_own_run(w, r, r.json().get("run_id", ""))


async def v1_thread_runs(w: World) -> None:
    own_namespace(w, await w.bob.get(f"/v1/threads/{w.v1_thread}/runs"))


async def v1_list_runs(w: World) -> None:
    for query in ({}, {"status": "waiting_for_input"}):
        r = await w.bob.get("/v1/runs", params=query)
        assert r.status_code == 200, r.text
        reveals_nothing(w, r)
    hidden(await w.bob.get("/v1/runs", params={"before": w.v1_run}))


async def v1_get_run(w: World) -> None:
    hidden(await w.bob.get(f"/v1/runs/{w.v1_run}"))


async def v1_cancel(w: World) -> None:
    hidden(await w.bob.post(f"/v1/runs/{w.v1_run}:cancel"))


async def v1_input(w: World) -> None:
    hidden(await w.bob.post(f"/v1/runs/{w.v1_run}/input", json={"content": "yes"}))


async def v1_events(w: World) -> None:
    hidden(await w.bob.get(f"/v1/runs/{w.v1_run}/events", headers={"accept": "text/event-stream"}))


# -- /ai (AI SDK UI message stream) ------------------------------------------------------------------


async def as_missing(w: World, method: str, path: str, **kwargs: Any) -> None:
    """Bob is answered about Alice's chat exactly as about a chat that does not exist."""
    r = await w.bob.request(method, path.format(chat=w.ai_chat), **kwargs)
    missing = await w.bob.request(method, path.format(chat="no-such-chat-" + uuid.uuid4().hex), **kwargs)
    assert (r.status_code, r.content) == (missing.status_code, missing.content), r.text
    reveals_nothing(w, r, w.ai_chat)


async def ai_chat(w: World) -> None:
    # Alice's chat waits for approval: Bob's "yes" naming its id is a turn of his own chat of that
    # id (chat ids are sessions: per principal), never an answer to hers (checked at the end).
    for text in ("yes", "another turn"):
        r = await w.bob.post("/ai/chat", json=ai_chat_body(w.ai_chat, text, agent="echo"))
        own_namespace(w, r)
    # His approval response naming her chat is answered as one naming no chat at all (a 400: no turn to answer).
    def approval(chat: str) -> dict[str, Any]:
        return {"id": chat, "messages": [{"id": w.ai_run, "role": "assistant", "parts": [
            {"type": "tool-ask", "toolCallId": "ask-1", "approval": {"id": "ask-1", "approved": True}}]}]}

    r = await w.bob.post("/ai/chat", json=approval(w.ai_chat))
    missing = await w.bob.post("/ai/chat", json=approval("no-such-chat"))
    assert (r.status_code, r.json()) == (missing.status_code, missing.json()), r.text
    reveals_nothing(w, r, w.ai_chat, w.ai_run)


async def ai_stream(w: World) -> None:
    for headers in ({}, {"last-event-id": "1"}):
        await as_missing(w, "GET", "/ai/chat/{chat}/stream", headers=headers)
        assert (await w.bob.get(f"/ai/chat/{w.ai_chat}/stream", headers=headers)).status_code == 204


async def ai_stop(w: World) -> None:
    await as_missing(w, "POST", "/ai/chat/{chat}/stop")
    assert (await w.bob.post(f"/ai/chat/{w.ai_chat}/stop")).status_code == 204
# -- /langgraph ---------------------------------------------------------------------------------------

LG_RUN_BODIES = [
    {"assistant_id": "echo", "input": {"messages": [{"type": "human", "content": "x"}]}},
    *({"assistant_id": "echo", "input": "x", "multitask_strategy": s} for s in ("reject", "interrupt", "rollback", "enqueue")),
    {"assistant_id": "echo", "input": "x", "if_not_exists": "create"},
    {"assistant_id": "approval", "command": {"resume": "yes"}},
]


async def lg_create_thread(w: World) -> None:
    # A thread id is a session id: Bob naming Alice's is a thread of his own of that id.
    for body in ({"thread_id": w.lg_thread}, {"thread_id": w.lg_thread, "if_exists": "do_nothing"}):
        own_namespace(w, await w.bob.post("/langgraph/threads", json=body))
    r = await w.bob.post("/langgraph/threads", json={})
    assert r.status_code == 200 and r.json()["thread_id"] not in w.secrets(), r.text


async def lg_get_thread(w: World) -> None:
    own_namespace(w, await w.bob.get(f"/langgraph/threads/{w.lg_thread}"))


async def lg_state(w: World) -> None:
    own_namespace(w, await w.bob.get(f"/langgraph/threads/{w.lg_thread}/state"))


async def lg_history(w: World) -> None:
    own_namespace(w, await w.bob.post(f"/langgraph/threads/{w.lg_thread}/history", json={}))


async def lg_run_in_alices_thread(w: World, suffix: str) -> None:
    for body in LG_RUN_BODIES:
        r = await w.bob.post(f"/langgraph/threads/{w.lg_thread}/runs{suffix}", json=body)
        if body.get("command"):  # a resume: Bob's thread has no run waiting, Alice's is not his
            assert r.status_code in (400, 404, 409), r.text
        own_namespace(w, r)


async def lg_get_run(w: World) -> None:
    hidden(await w.bob.get(f"/langgraph/threads/{w.lg_thread}/runs/{w.lg_run}"))


async def lg_join_stream(w: World) -> None:
    for last in ("-1", "1"):
        hidden(await w.bob.get(f"/langgraph/threads/{w.lg_thread}/runs/{w.lg_run}/stream", headers={"last-event-id": last}))


async def lg_join(w: World) -> None:
    hidden(await w.bob.get(f"/langgraph/threads/{w.lg_thread}/runs/{w.lg_run}/join"))


async def lg_cancel(w: World) -> None:
    for action in ("interrupt", "rollback"):
        hidden(await w.bob.post(f"/langgraph/threads/{w.lg_thread}/runs/{w.lg_run}/cancel", params={"action": action}))


# -- /ds --------------------------------------------------------------------------------------------


async def ds_run_stream_as_missing(w: World, method: str, **kwargs: Any) -> None:
    """Bob is answered about Alice's run's stream exactly as about a run that does not exist."""
    r = await w.bob.request(method, f"/ds/v1/stream/runs/{w.native_run}", **kwargs)
    missing = await w.bob.request(method, f"/ds/v1/stream/runs/no-such-run-{uuid.uuid4().hex}", **kwargs)
    assert (r.status_code, r.content) == (missing.status_code, missing.content), r.text
    assert r.status_code in (404, 405), r.text
    reveals_nothing(w, r)


async def ds_put(w: World) -> None:
    await ds_run_stream_as_missing(w, "PUT", headers={"content-type": "application/json"})
    # A stream name is his own: Bob naming Alice's makes a stream of his; forking hers finds none.
    own_namespace(w, await w.bob.put(f"/ds/v1/stream/{w.ds_stream}", headers={"content-type": "text/plain"}))
    hidden(await w.bob.put("/ds/v1/stream/bobs-fork", headers={"stream-forked-from": f"/v1/stream/{w.ds_stream}x"}))
    r = await w.bob.put(f"/ds/v1/stream/fork-{uuid.uuid4().hex}", headers={"stream-forked-from": f"/ds/v1/stream/{w.ds_stream}"})
    own_namespace(w, r)  # a fork of his own stream of that name, never of hers


async def ds_post(w: World) -> None:
    await ds_run_stream_as_missing(w, "POST", content=b"[1]", headers={"content-type": "application/json"})
    own_namespace(w, await w.bob.post(f"/ds/v1/stream/{w.ds_stream}", content=b"bob", headers={"content-type": "text/plain"}))


async def ds_get(w: World) -> None:
    for params in ({}, {"offset": "-1", "live": "long-poll"}, {"offset": "now", "live": "sse"}):
        hidden(await w.bob.get(f"/ds/v1/stream/runs/{w.native_run}", params=params))
    own_namespace(w, await w.bob.get(f"/ds/v1/stream/{w.ds_stream}"))


async def ds_head(w: World) -> None:
    assert (await w.bob.head(f"/ds/v1/stream/runs/{w.native_run}")).status_code == 404
    assert (await w.bob.head(f"/ds/v1/stream/{w.ds_stream}")).status_code in (200, 404)  # his own, or none


async def ds_delete(w: World) -> None:
    await ds_run_stream_as_missing(w, "DELETE")
    own_namespace(w, await w.bob.delete(f"/ds/v1/stream/{w.ds_stream}"))


#: Every route of the composed app, with how Bob tries it against Alice's objects.
PROBES: dict[tuple[str, str], Probe] = {
    ("POST", "/runs"): native_create_run,
    ("GET", "/runs"): native_list_runs,
    ("GET", "/runs/{run_id}"): native_get_run,
    ("GET", "/runs/{run_id}/events"): native_events,
    ("POST", "/runs/{run_id}/cancel"): native_cancel,
    ("POST", "/runs/{run_id}/input"): native_input,
    ("POST", "/runs/{run_id}/signals/{name}"): native_signal,
    ("GET", "/runs/{run_id}/children"): native_children,
    ("POST", "/runs/{run_id}/fork"): native_fork,
    ("POST", "/schedules"): schedules_create,
    ("GET", "/schedules"): schedules_list,
    ("GET", "/schedules/{schedule_id}"): schedule_get,
    ("POST", "/schedules/{schedule_id}/pause"): schedule_pause,
    ("POST", "/schedules/{schedule_id}/resume"): schedule_resume,
    ("DELETE", "/schedules/{schedule_id}"): schedule_delete,
    ("DELETE", "/runs/{run_id}"): native_delete_run,
    ("POST", "/sessions"): native_create_session,
    ("GET", "/sessions/{session_id}"): native_get_session,
    ("DELETE", "/sessions/{session_id}"): native_end_session,
    ("GET", "/sessions/{session_id}/history"): native_history,
    ("GET", "/agents"): lambda w: public(w, "/agents"),
    ("GET", "/openapi.json"): lambda w: public(w, "/openapi.json"),
    ("GET", "/"): lambda w: public(w, "/"),
    ("GET", "/healthz"): lambda w: public(w, "/healthz"),
    ("GET", "/readyz"): lambda w: public(w, "/readyz"),
    ("POST", "/platform/apps/{app_id}/execute"): platform_execute,
    ("POST", "/platform/apps/{app_id}/execute/stream"): platform_execute_stream,
    ("GET", "/platform/apps/{app_id}/traces/{trace_id}/stream"): platform_resume_stream,
    ("POST", "/platform/apps/{app_id}/sessions"): platform_create_session,
    ("GET", "/platform/apps/{app_id}/sessions/{session_id}/history"): platform_history,
    ("DELETE", "/platform/apps/{app_id}/sessions/{session_id}"): platform_end_session,
    ("POST", "/platform/apps/{app_id}/webhooks"): platform_register_webhook,
    ("GET", "/platform/apps/{app_id}/webhooks"): platform_list_webhooks,
    ("DELETE", "/platform/apps/{app_id}/webhooks/{webhook_id}"): platform_remove_webhook,
    ("POST", "/kore/apps/{app_id}/environments/{env}/runs/execute"): kore_execute,
    ("POST", "/kore/apps/{app_id}/environments/{env}/runs/{run_id}/status"): kore_status,
    ("GET", "/acp/ping"): lambda w: public(w, "/acp/ping"),
    ("GET", "/acp/agents"): lambda w: public(w, "/acp/agents"),
    ("GET", "/acp/agents/{name}"): lambda w: public(w, "/acp/agents/approval"),
    ("POST", "/acp/runs"): acp_create_run,
    ("GET", "/acp/runs/{run_id}"): acp_read_run,
    ("POST", "/acp/runs/{run_id}"): acp_resume,
    ("GET", "/acp/runs/{run_id}/events"): acp_events,
    ("POST", "/acp/runs/{run_id}/cancel"): acp_cancel,
    ("GET", "/acp/sessions/{session_id}"): acp_session,
    ("GET", "/acp/sessions/{session_id}/history/{index}"): acp_history_message,
    ("POST", "/v1/threads/{thread_id}/runs"): v1_create_run,
    ("GET", "/v1/threads/{thread_id}/runs"): v1_thread_runs,
    ("GET", "/v1/runs"): v1_list_runs,
    ("GET", "/v1/runs/{run_id}"): v1_get_run,
    ("POST", "/v1/runs/{run_id}:cancel"): v1_cancel,
    ("POST", "/v1/runs/{run_id}/input"): v1_input,
    ("GET", "/v1/runs/{run_id}/events"): v1_events,
    ("GET", "/v1/openapi.json"): lambda w: public(w, "/v1/openapi.json"),
    ("POST", "/ai/chat"): ai_chat,
    ("GET", "/ai/chat/{chat_id}/stream"): ai_stream,
    ("POST", "/ai/chat/{chat_id}/stop"): ai_stop,
    ("GET", "/ai/openapi.json"): lambda w: public(w, "/ai/openapi.json"),
    ("POST", "/langgraph/assistants/search"): lambda w: public(w, "/langgraph/assistants/search", "POST"),
    ("GET", "/langgraph/assistants/{assistant_id}"): lambda w: public(w, "/langgraph/assistants/echo"),
    ("POST", "/langgraph/threads"): lg_create_thread,
    ("GET", "/langgraph/threads/{thread_id}"): lg_get_thread,
    ("GET", "/langgraph/threads/{thread_id}/state"): lg_state,
    ("POST", "/langgraph/threads/{thread_id}/history"): lg_history,
    ("POST", "/langgraph/threads/{thread_id}/runs"): lambda w: lg_run_in_alices_thread(w, ""),
    ("POST", "/langgraph/threads/{thread_id}/runs/stream"): lambda w: lg_run_in_alices_thread(w, "/stream"),
    ("POST", "/langgraph/threads/{thread_id}/runs/wait"): lambda w: lg_run_in_alices_thread(w, "/wait"),
    ("GET", "/langgraph/threads/{thread_id}/runs/{run_id}"): lg_get_run,
    ("GET", "/langgraph/threads/{thread_id}/runs/{run_id}/stream"): lg_join_stream,
    ("GET", "/langgraph/threads/{thread_id}/runs/{run_id}/join"): lg_join,
    ("POST", "/langgraph/threads/{thread_id}/runs/{run_id}/cancel"): lg_cancel,
    ("GET", "/langgraph/openapi.json"): lambda w: public(w, "/langgraph/openapi.json"),
    ("PUT", "/ds/v1/stream/{name}"): ds_put,
    ("POST", "/ds/v1/stream/{name}"): ds_post,
    ("GET", "/ds/v1/stream/{name}"): ds_get,
    ("HEAD", "/ds/v1/stream/{name}"): ds_head,
    ("DELETE", "/ds/v1/stream/{name}"): ds_delete,
}


def served_routes() -> list[tuple[str, str]]:
    return list(build_app(demo_engine(), auth=auth_hook).routes())


def test_every_route_is_classified() -> None:
    served = served_routes()
    unclassified = [route for route in served if route not in PROBES]
    assert not unclassified, f"routes with no authorization probe in PROBES: {unclassified}"
    stale = [route for route in PROBES if route not in served]
    assert not stale, f"probes for routes no longer served: {stale}"


async def alice_objects_unchanged(w: World) -> None:
    """Whatever Bob tried, Alice's runs are where she left them and her sessions are hers."""
    run = (await w.alice.get(f"/runs/{w.native_run}")).json()
    assert run["status"] == "waiting_for_input", run
    for session in (w.native_session, w.explicit_session):
        r = await w.alice.get(f"/sessions/{session}")
        assert r.status_code == 200 and r.json()["status"] == "active", r.text
    assert (await w.alice.get(f"/acp/runs/{w.acp_run}")).json()["status"] == "awaiting"
    assert (await w.alice.get(f"/runs/{w.kore_run}")).json()["status"] == "waiting_for_input"
    assert (await w.alice.get(f"/v1/runs/{w.v1_run}")).json()["status"] == "waiting_for_input"
    assert [r["run_id"] for r in (await w.alice.get(f"/v1/threads/{w.v1_thread}/runs")).json()] == [w.v1_run]
    assert (await w.alice.get(f"/runs/{w.ai_run}")).json()["status"] == "waiting_for_input"
    assert [r["run_id"] for r in (await w.alice.get("/runs", params={"session_id": w.ai_chat})).json()["runs"]] == [w.ai_run]
    stream = await w.alice.get(f"/ai/chat/{w.ai_chat}/stream")  # Alice still sees her chat's approval request
    assert stream.status_code == 200 and '"type":"tool-approval-request"' in stream.text, stream.text
    thread = (await w.alice.get(f"/langgraph/threads/{w.lg_thread}")).json()
    assert thread["status"] == "interrupted" and thread["metadata"] == {"owner": "alice"}, thread
    assert (await w.alice.get(f"/langgraph/threads/{w.lg_thread}/runs/{w.lg_run}")).json()["status"] == "running"
    assert len((await w.alice.post(f"/langgraph/threads/{w.lg_thread}/history", json={})).json()) == 1
    history = await w.alice.get(f"/platform/apps/{APP}/sessions/{w.platform_session}/history")
    assert history.status_code == 200, history.text
    assert [h["webhook_id"] for h in (await w.alice.get(f"/platform/apps/{APP}/webhooks")).json()["webhooks"]] == [w.webhook_id]
    notes = await w.alice.get(f"/ds/v1/stream/{w.ds_stream}")
    assert (notes.status_code, notes.text) == (200, "refund notes"), notes.text
    assert (await w.alice.get(f"/ds/v1/stream/runs/{w.native_run}")).json()[0]["type"] == "run.created"
    # Alice still drives her own run in her own session.
    r = await w.alice.post("/runs", json={"agent": "echo", "input": "again", "session_id": w.native_session})
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text


@pytest.mark.server
@pytest.mark.anyio
async def test_no_principal_reaches_another_principals_objects() -> None:
    engine = demo_engine()
    async with serve(engine_asgi_app(engine, auth=auth_hook)) as url:
        async with (
            httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer t-alice"}, timeout=30.0) as alice,
            httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer t-bob"}, timeout=30.0) as bob,
        ):
            world = await build_world(alice, bob)
            failures: list[str] = []
            for route in served_routes():
                try:
                    await PROBES[route](world)
                except AssertionError as exc:
                    failures.append(f"{route[0]} {route[1]}: {exc}")
            await alice_objects_unchanged(world)
            assert not failures, "\n".join(failures)
