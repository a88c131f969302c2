"""Idempotency-Key semantics over real HTTP (issue 11, findings 4 and 6): a key is recorded only
once its request created a run; the same key with another request is a 422 `idempotency_error`;
each entry point (native, ACP, Kore, platform) has its own key space; concurrent duplicates make
exactly one run."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import runengine.clock

from httpkit import demo_engine, serve, wait_status
from kit import until
from runengine import RunEngine, Status
from runengine.errors import IdempotencyKeyReused
from runengine.adapters.asgi import engine_asgi_app
from runengine.adapters.memory import MemoryStore
from runengine.adapters.postgres import PostgresStore
from runengine.adapters.sqlite import SQLiteStore
from runengine.idempotency import PENDING_FOR, RECHECK

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes


ANYIO_BACKENDS = ("asyncio",)  # uvicorn


@pytest.fixture
async def client(tmp_path: Path):
    # SQLite: the store that refuses an input nested too deeply (after the key was bound).
    async with serve(engine_asgi_app(demo_engine(f"sqlite:///{tmp_path / 'runs.db'}"))) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as c:
            yield c


def keyed(key: str) -> dict[str, str]:
    return {"idempotency-key": key}


def acp_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"agent_name": "echo", "mode": "sync", "input": [{"parts": [{"content": text}]}], **extra}


def kore_body(text: str) -> dict[str, Any]:
    return {
        "sessionIdentity": [{"type": "userReference", "value": "u1"}],
        "input": [{"type": "text", "content": text}],
        "invoke": {"tasks": [{"type": "agent", "name": "echo"}]},
        "isAsync": True,
    }


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, response.text
    return error


async def run_count(client: httpx.AsyncClient) -> int:
    return len((await client.get("/runs", params={"limit": 200})).json()["runs"])


# -- finding 4: a refused request leaves its key unused ------------------------------------------------


@pytest.mark.anyio
async def test_a_request_refused_by_the_session_policy_leaves_its_key_unused(client: httpx.AsyncClient) -> None:
    busy = (await client.post("/runs", json={"agent": "approval", "session_id": "s", "mode": "async"})).json()
    await wait_status(client, busy["run_id"], "waiting_for_input")
    body = {"agent": "echo", "input": "next", "session_id": "s", "session_policy": "reject"}
    assert_error(await client.post("/runs", json=body, headers=keyed("k-busy")), 409, "conflict")
    await client.post("/runs/" + busy["run_id"] + "/cancel")
    # Once the session is free, the same request with the same key runs (no 10 s wait, no 404).
    again = await client.post("/runs", json=body, headers=keyed("k-busy"))
    assert again.status_code == 200 and again.json()["status"] == "completed", again.text
    assert (await client.post("/runs", json=body, headers=keyed("k-busy"))).json()["run_id"] == again.json()["run_id"]


@pytest.mark.anyio
async def test_an_acp_request_refused_by_the_session_policy_leaves_its_key_unused(client: httpx.AsyncClient) -> None:
    session_id = str(uuid.uuid4())
    busy = await client.post("/acp/runs", json={**acp_body("pay", session_id=session_id), "agent_name": "approval", "mode": "async"})
    await wait_status(client, busy.json()["run_id"], "waiting_for_input")
    body = acp_body("next", session_id=session_id, session_policy="reject")
    refused = await client.post("/acp/runs", json=body, headers=keyed("k-acp-busy"))
    assert refused.status_code == 409 and refused.json()["code"] == "conflict", refused.text
    await client.post(f"/acp/runs/{busy.json()['run_id']}/cancel")
    again = await client.post("/acp/runs", json=body, headers=keyed("k-acp-busy"))
    assert again.status_code == 200 and again.json()["status"] == "completed", again.text


@pytest.mark.anyio
async def test_a_request_refused_by_the_store_leaves_its_key_unused(client: httpx.AsyncClient) -> None:
    deep = '{"agent":"echo","mode":"async","input":' + "[" * 900 + "]" * 900 + "}"
    refused = await client.post("/runs", content=deep, headers={**keyed("k-deep"), "content-type": "application/json"})
    assert_error(refused, 400, "invalid_request")
    before = await run_count(client)
    # The key was never used: another request may take it.
    fine = await client.post("/runs", json={"agent": "echo", "input": "flat", "mode": "async"}, headers=keyed("k-deep"))
    assert fine.status_code == 202, fine.text
    assert await run_count(client) == before + 1


@pytest.mark.anyio
async def test_a_request_refused_for_an_ended_session_leaves_its_key_unused(client: httpx.AsyncClient) -> None:
    await client.post("/sessions", json={"session_id": "closed"})
    await client.delete("/sessions/closed")
    assert_error(await client.post("/runs", json={"agent": "echo", "session_id": "closed"}, headers=keyed("k-ended")), 409, "conflict")
    fine = await client.post("/runs", json={"agent": "echo", "input": "elsewhere"}, headers=keyed("k-ended"))
    assert fine.status_code == 200 and fine.json()["status"] == "completed", fine.text


# -- finding 6: a reused key with another request is a 422; one key space per entry point ------------


@pytest.mark.anyio
async def test_native_key_reused_with_another_body_is_422(client: httpx.AsyncClient) -> None:
    first = await client.post("/runs", json={"agent": "echo", "input": "once", "mode": "async"}, headers=keyed("k6"))
    assert first.status_code == 202
    error = assert_error(
        await client.post("/runs", json={"agent": "echo", "input": "twice", "mode": "async"}, headers=keyed("k6")),
        422, "idempotency_error",
    )
    assert error["details"] == {"idempotency_key": "k6"}
    # The same request again, even asking for another answer (sync, a stream), is the first run.
    repeat = await client.post("/runs", json={"agent": "echo", "input": "once"}, headers=keyed("k6"))
    assert repeat.json()["run_id"] == first.json()["run_id"]
    assert await run_count(client) == 1


@pytest.mark.anyio
async def test_profile_keys_reused_with_another_body_are_422(client: httpx.AsyncClient) -> None:
    first = await client.post("/acp/runs", json=acp_body("once"), headers=keyed("k6"))
    other = await client.post("/acp/runs", json=acp_body("twice"), headers=keyed("k6"))
    assert other.status_code == 422 and other.json()["code"] == "idempotency_error", other.text
    assert (await client.post("/acp/runs", json=acp_body("once"), headers=keyed("k6"))).json()["run_id"] == first.json()["run_id"]

    kore = "/kore/apps/echo/environments/dev/runs/execute"
    first = await client.post(kore, json=kore_body("once"), headers=keyed("k6"))
    assert_error(await client.post(kore, json=kore_body("twice"), headers=keyed("k6")), 422, "idempotency_error")
    assert (await client.post(kore, json=kore_body("once"), headers=keyed("k6"))).json()["runId"] == first.json()["runId"]

    platform = "/platform/apps/echo/execute"
    first = await client.post(platform, json={"message": "once"}, headers=keyed("k6"))
    assert_error(await client.post(platform, json={"message": "twice"}, headers=keyed("k6")), 422, "idempotency_error")
    assert (await client.post(platform, json={"message": "once"}, headers=keyed("k6"))).json()["trace_id"] == first.json()["trace_id"]


@pytest.mark.anyio
async def test_each_entry_point_has_its_own_key_space(client: httpx.AsyncClient) -> None:
    native = (await client.post("/runs", json={"agent": "echo", "input": "a"}, headers=keyed("shared"))).json()["run_id"]
    acp = (await client.post("/acp/runs", json=acp_body("b"), headers=keyed("shared"))).json()["run_id"]
    kore = (await client.post("/kore/apps/echo/environments/dev/runs/execute", json=kore_body("c"), headers=keyed("shared"))).json()["runId"]
    platform = (await client.post("/platform/apps/echo/execute", json={"message": "d"}, headers=keyed("shared"))).json()["trace_id"]
    assert len({native, acp, kore, platform}) == 4


# -- concurrent duplicates -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_duplicates_make_exactly_one_run(client: httpx.AsyncClient) -> None:
    run_ids: list[str] = []

    async def post() -> None:
        r = await client.post("/runs", json={"agent": "echo", "input": "same", "mode": "async"}, headers=keyed("k-race"))
        assert r.status_code == 202, r.text
        run_ids.append(r.json()["run_id"])

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(post)
    assert len(run_ids) == 10 and len(set(run_ids)) == 1
    assert await run_count(client) == 1


@pytest.mark.anyio
async def test_engine_keys_check_the_request(tmp_path: Path) -> None:
    engine = demo_engine(f"sqlite:///{tmp_path / 'e.db'}")
    async with engine:
        first = await engine.execute("echo", "once", mode="async", idempotency_key="k", owner="alice")
        assert (await engine.execute("echo", "once", idempotency_key="k", owner="alice")).run_id == first.run_id
        with pytest.raises(IdempotencyKeyReused):
            await engine.execute("echo", "twice", idempotency_key="k", owner="alice")
        # Another owner, or another scope, is another key.
        assert (await engine.execute("echo", "twice", idempotency_key="k", owner="bob")).run_id != first.run_id
        assert (await engine.execute("echo", "twice", idempotency_key="k", owner="alice", idempotency_scope="acp")).run_id != first.run_id


@pytest.mark.anyio
async def test_a_repeated_kore_answer_is_not_given_twice() -> None:
    engine = demo_engine()

    @engine.agent("two-questions")
    async def two_questions(ctx: Any) -> list[Any]:
        return [await ctx.ask("first?"), await ctx.ask("second?")]

    base = "/kore/apps/two-questions/environments/dev/runs/execute"
    ident = [{"type": "userReference", "value": "u-2q"}]
    async with serve(engine_asgi_app(engine)) as url, httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        started = await client.post(base, json={"sessionIdentity": ident, "input": [{"type": "text", "content": "go"}], "isAsync": True,
                                                "invoke": {"tasks": [{"type": "agent", "name": "two-questions"}]}})
        run_id = started.json()["runId"]
        await wait_status(client, run_id, "waiting_for_input")
        answer = {"sessionIdentity": ident, "input": [{"type": "text", "content": "a"}]}
        first = await client.post(base, json=answer, headers=keyed("k-answer"))
        assert first.status_code == 200, first.text
        assert (await client.get(f"/runs/{run_id}")).json()["await_request"] == "second?"
        # The same request again (a client retry) while the run waits for its second answer.
        repeat = await client.post(base, json=answer, headers=keyed("k-answer"))
        assert repeat.status_code == 200, repeat.text
        run = (await client.get(f"/runs/{run_id}")).json()
        assert run["status"] == "waiting_for_input" and run["await_request"] == "second?", run
        assert_error(await client.post(base, json={**answer, "input": [{"type": "text", "content": "b"}]}, headers=keyed("k-answer")),
                     422, "idempotency_error")


# -- issue 20, item 3: one key, one run, whatever the timing --------------------------------------------


class HeldCreation:
    """A real store whose first `run.created` (appended, or put on its work queue) waits until
    `release` is set: a creation held pending (a slow request, a stalled process) for as long
    as the test likes."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.holding = anyio.Event()
        self.release = anyio.Event()
        self._held = False
        queue = getattr(store, "work_queue", None)
        if queue is not None:
            self.work_queue = HeldQueue(queue, self)

    async def hold_the_first(self) -> None:
        if not self._held:
            self._held = True
            self.holding.set()
            await self.release.wait()

    async def append(self, run_id: str, events: Any, *, expected_seq: int) -> None:
        if expected_seq == 0:
            await self.hold_the_first()
        await self._store.append(run_id, events, expected_seq=expected_seq)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class HeldQueue:
    def __init__(self, queue: Any, store: HeldCreation) -> None:
        self._queue = queue
        self._store = store

    async def enqueue(self, run_id: str, events: Any, *, after: Any = ()) -> None:
        await self._store.hold_the_first()
        await self._queue.enqueue(run_id, events, after=after)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


class Clock(runengine.clock.Clock):
    """Time moved by hand (`clock.now = ...`); a Clock, so the engine keeps it as it is."""

    def __init__(self) -> None:
        super().__init__()
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.anyio
@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
@pytest.mark.parametrize("session_policy", [None, "interrupt"])
async def test_a_retry_after_the_pending_window_does_not_make_a_second_run(
    tmp_path: Path, store_kind: str, session_policy: str | None
) -> None:
    real = MemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "runs.db")
    await one_key_one_run(RunEngine(HeldCreation(real), clock=Clock()), session_policy)


@pytest.mark.anyio
@pytest.mark.postgres
@pytest.mark.parametrize("session_policy", [None, "interrupt"])
async def test_a_retry_after_the_pending_window_does_not_make_a_second_run_on_postgresql(
    pg_schema_url: str, session_policy: str | None
) -> None:
    """The same on PostgreSQL, where a run is created by putting it on the work queue."""
    engine = RunEngine(HeldCreation(PostgresStore.from_url(pg_schema_url)), clock=Clock(), worker=True)
    await one_key_one_run(engine, session_policy)


async def one_key_one_run(engine: RunEngine, session_policy: str | None) -> None:
    """The first request binds a key, and its run's creation is held past PENDING_FOR; a retry
    with the same key then comes: one run, answered to both, not cancelled by its retry."""
    store, clock = engine.store, engine.clock
    assert isinstance(store, HeldCreation) and isinstance(clock, Clock)

    @engine.agent("asker")
    async def asker(ctx: Any) -> Any:
        return await ctx.ask("go?")

    session = {"session_id": "s", "session_policy": session_policy} if session_policy else {}
    answers: dict[str, str] = {}

    async def request(name: str) -> None:
        state = await engine.execute("asker", "same", mode="async", idempotency_key="k", **session)
        answers[name] = state.run_id

    with anyio.fail_after(60):
        await _held_then_retried(engine, request, answers, session)


async def _held_then_retried(engine: RunEngine, request: Any, answers: dict[str, str], session: dict[str, Any]) -> None:
    store, clock = engine.store, engine.clock
    assert isinstance(store, HeldCreation) and isinstance(clock, Clock)
    async with engine:
        async with anyio.create_task_group() as tg:
            tg.start_soon(request, "first")
            await store.holding.wait()  # the first request bound the key; its run is not created yet
            clock.now += timedelta(seconds=PENDING_FOR + 5)  # ... for longer than the pending window
            tg.start_soon(request, "retry")
            await anyio.sleep(2 * RECHECK)  # the retry looks at the key again after the window
            store.release.set()
        assert answers["first"] == answers["retry"]
        page = await engine.list_runs(limit=10)
        assert [run.run_id for run in page.runs] == [answers["first"]]
        # Not cancelled by its own retry (policy interrupt): it waits for its input.
        assert await until(lambda: _status_is(engine, answers["first"], Status.WAITING_FOR_INPUT))
        # And the key keeps naming it.
        again = await engine.execute("asker", "same", mode="async", idempotency_key="k", **session)
        assert again.run_id == answers["first"]


async def _status_is(engine: RunEngine, run_id: str, status: Status) -> bool:
    state = await engine.status(run_id)
    assert state.status is not Status.CANCELLED, state.cancel_reason
    return state.status is status
