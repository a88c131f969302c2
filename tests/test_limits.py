"""Every limit on what a client can make the server keep (runengine.limits, docs/security.md),
on every surface, over real HTTP: each refusal is a 400 or 429 in the surface's error format and
changes nothing; session records do not grow with runs; the Kore includeFiles repro stays bounded;
and the engine's own limits (events per run, event size) end a run cleanly."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs
import httpx
import pytest

from runengine import RunContext, RunEngine
from runengine.adapters.memory import MemoryStore
from runengine.adapters.server import build_app
from runengine.ownership import session_key
from runengine.demo import register_demo_agents
from runengine.errors import EventTooLarge, InvalidRequest, TooManyEvents
from runengine.events import Event
from runengine.http.openstreams import OpenStreams
from runengine.limits import (
    MAX_ACTIVE_ATTACHMENTS,
    MAX_ATTACHMENTS,
    MAX_FILE_ID_LENGTH,
    MAX_ID_LENGTH,
    MAX_INPUT_BYTES,
    MAX_METADATA_BYTES,
    MAX_SESSION_METADATA_BYTES,
    MAX_URL_LENGTH,
)
from runengine.ports import RunPage
from runengine.wire import dumps

from httpkit import add_test_agents, wait_status
from kit import until
from profile_http import serve_app
from runengine.options import RunLimits

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

KORE = "/kore/apps/echo/environments/draft/runs"
STREAM_LIMIT = 2


ANYIO_BACKENDS = ("asyncio",)


class CountingStore(MemoryStore):
    """A memory store that counts the listing rows and events it hands out (what a read costs)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows_read = 0

    async def list_runs(self, **kwargs: Any) -> RunPage:
        page = await super().list_runs(**kwargs)
        self.rows_read += len(page.runs)
        return page

    async def read(self, run_id: str, *, after_seq: int = 0, limit: int = 500) -> list[Event]:
        events = await super().read(run_id, after_seq=after_seq, limit=limit)
        self.rows_read += len(events)
        return events


@attrs.define
class Server:
    engine: RunEngine
    store: CountingStore
    streams: OpenStreams
    base: str

    def client(self, user: str = "alice") -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, headers={"x-user": user}, timeout=30.0)


def principal(headers: Any) -> str | None:
    return headers.get("x-user")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    store = CountingStore()
    engine = register_demo_agents(RunEngine(store), delay=0.0)
    add_test_agents(engine)
    streams = OpenStreams(limit=STREAM_LIMIT)
    async with engine:
        async with serve_app(build_app(engine, auth=principal, streams=streams)) as base:
            yield Server(engine, store, streams, base)


def assert_refused(response: httpx.Response, status: int, code: str, *, acp: bool = False) -> dict[str, Any]:
    """The common error format (and ACP's top-level fields on /acp)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    if acp:
        assert body["code"] == {"invalid_request": "invalid_input"}.get(code, code) and body["message"]
    return body["error"]


def blob(size: int) -> str:
    return "x" * size


def kore_body(reference: str, text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {
        "sessionIdentity": [{"type": "sessionReference", "value": reference}],
        "input": [{"type": "text", "content": text}],
        **extra,
    }


async def run_count(server: Server) -> int:
    total, before = 0, None
    while True:
        page = await server.store.list_runs(limit=200, before=before)
        total += len(page.runs)
        if page.next_before is None:
            return total
        before = page.next_before


# -- per-run metadata and input ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_run_metadata_and_input_over_the_limit_are_refused_on_every_surface(server: Server) -> None:
    over = {"k": blob(MAX_METADATA_BYTES)}
    async with server.client() as http:
        before = await run_count(server)
        native = await http.post("/runs", json={"agent": "echo", "input": "x", "metadata": over})
        assert assert_refused(native, 400, "invalid_request")["details"]["limit_bytes"] == MAX_METADATA_BYTES
        big_input = await http.post("/runs", json={"agent": "echo", "input": blob(MAX_INPUT_BYTES)})
        assert_refused(big_input, 400, "invalid_request")

        platform = await http.post("/platform/apps/echo/execute", json={"message": "hi", "metadata": over})
        assert assert_refused(platform, 400, "invalid_request")["details"]["limit_bytes"] == MAX_METADATA_BYTES

        kore = await http.post(f"{KORE}/execute", json=kore_body("meta-over", metadata=over))
        assert assert_refused(kore, 400, "invalid_request")["details"]["field"] == "metadata"
        many_texts = [{"type": "text", "content": blob(30_000)} for _ in range(10)]  # each item allowed, the sum not
        kore_input = await http.post(f"{KORE}/execute", json={**kore_body("input-over"), "input": many_texts})
        assert assert_refused(kore_input, 400, "invalid_request")["details"]["limit_bytes"] == MAX_INPUT_BYTES

        acp_message = {"parts": [{"content": blob(MAX_INPUT_BYTES)}]}
        acp = await http.post("/acp/runs", json={"agent_name": "echo", "input": [acp_message]})
        assert_refused(acp, 400, "invalid_request", acp=True)
        acp_meta = await http.post("/acp/runs", json={"agent_name": "echo", "input": [], "metadata": {}})
        assert_refused(acp_meta, 400, "invalid_request", acp=True)  # ACP runs take no metadata at all

        long_url = await http.post(f"{KORE}/execute", json=kore_body("url", callbackUrl="http://example.com/" + blob(MAX_URL_LENGTH)))
        assert assert_refused(long_url, 400, "invalid_request")["details"]["field"] == "callbackUrl"
        long_task = {"tasks": [{"type": "agent", "name": "echo", "agentName": blob(MAX_ID_LENGTH + 1)}]}
        assert_refused(await http.post(f"{KORE}/execute", json=kore_body("task", invoke=long_task)), 400, "invalid_request")
        long_user = await http.post("/platform/apps/echo/sessions", json={"user_id": blob(MAX_ID_LENGTH + 1)})
        assert assert_refused(long_user, 400, "invalid_request")["details"]["field"] == "user_id"

        assert await run_count(server) == before  # nothing was started
        # Fields of an invoke task the seeds do not name are not kept with the run.
        junk = {"tasks": [{"type": "agent", "name": "echo", "notes": blob(500_000)}]}
        invoked = await http.post(f"{KORE}/execute", json=kore_body("task", invoke=junk))
        assert invoked.status_code == 200, invoked.text
        state = await server.engine.status(invoked.json()["sessionInfo"]["runId"])
        assert len(dumps(state.metadata)) < MAX_METADATA_BYTES
        assert (await http.post("/runs", json={"agent": "echo", "input": "x", "metadata": {"k": blob(1000)}})).status_code == 200


# -- per-session metadata ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_session_metadata_is_bounded_however_it_is_merged(server: Server) -> None:
    half = MAX_SESSION_METADATA_BYTES // 2
    async with server.client() as http:
        # Native: a session's metadata is given once, at creation.
        refused = await http.post("/sessions", json={"metadata": {"k": blob(MAX_SESSION_METADATA_BYTES)}})
        assert assert_refused(refused, 400, "invalid_request")["details"]["limit_bytes"] == MAX_SESSION_METADATA_BYTES

        # Platform: request metadata merges into the session's; new keys cannot grow it past the limit.
        create = await http.post("/platform/apps/echo/sessions", json={"metadata": {"k": blob(MAX_SESSION_METADATA_BYTES)}})
        assert_refused(create, 400, "invalid_request")
        session_id = (await http.post("/platform/apps/echo/sessions", json={})).json()["session_id"]
        first = await http.post("/platform/apps/echo/execute", json={"message": "a", "session_id": session_id, "metadata": {"a": blob(half)}})
        assert first.status_code == 200, first.text
        kept = await server.engine.get_session(session_id, owner="alice")
        second = await http.post("/platform/apps/echo/execute", json={"message": "b", "session_id": session_id, "metadata": {"b": blob(half)}})
        assert_refused(second, 400, "invalid_request")
        assert await server.engine.get_session(session_id, owner="alice") == kept  # unchanged, and no run started
        replaced = await http.post("/platform/apps/echo/execute", json={"message": "c", "session_id": session_id, "metadata": {"a": "small"}})
        assert replaced.status_code == 200  # the same key again replaces, it does not add

        # Kore: request metadata is the session's sessionMeta, merged the same way.
        ok = await http.post(f"{KORE}/execute", json=kore_body("kore-meta", metadata={"a": blob(half)}))
        assert ok.status_code == 200, ok.text
        kore_session = ok.json()["sessionInfo"]["sessionId"]
        kept = await server.engine.get_session(kore_session, owner="alice")
        over = await http.post(f"{KORE}/execute", json=kore_body("kore-meta", metadata={"b": blob(half)}))
        assert assert_refused(over, 400, "invalid_request")["details"]["limit"] == MAX_SESSION_METADATA_BYTES
        assert await server.engine.get_session(kore_session, owner="alice") == kept


# -- attachments (Kore) --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_active_and_listed_attachments_per_session_are_bounded(server: Server) -> None:
    async with server.client() as http:
        files = [f"f-{i}" for i in range(MAX_ACTIVE_ATTACHMENTS + 1)]
        full = await http.post(f"{KORE}/execute", json=kore_body("files", attachments={"includeFiles": files[:-1]}))
        assert full.status_code == 200, full.text
        session_id = full.json()["sessionInfo"]["sessionId"]
        kept = await server.engine.get_session(session_id, owner="alice")
        over = await http.post(f"{KORE}/execute", json=kore_body("files", attachments={"includeFiles": files[-1:]}))
        assert assert_refused(over, 400, "invalid_request")["details"]["limit"] == MAX_ACTIVE_ATTACHMENTS
        assert await server.engine.get_session(session_id, owner="alice") == kept
        # Excluding one makes room for another.
        swap = {"includeFiles": files[-1:], "excludeFiles": files[:1]}
        assert (await http.post(f"{KORE}/execute", json=kore_body("files", attachments=swap))).status_code == 200

        too_long = await http.post(f"{KORE}/execute", json=kore_body("files", attachments={"includeFiles": [blob(MAX_FILE_ID_LENGTH + 1)]}))
        assert_refused(too_long, 400, "invalid_request")
        too_many = await http.post(f"{KORE}/execute", json=kore_body("files", attachments={"excludeFiles": [f"g-{i}" for i in range(MAX_ATTACHMENTS + 1)]}))
        assert_refused(too_many, 400, "invalid_request")


@pytest.mark.anyio
async def test_kore_include_files_repro_keeps_the_record_and_each_run_bounded(server: Server) -> None:
    """The finding: 12 executes in one session, each with 60k new includeFiles ids. Refused whole
    now (nothing kept); and a client rotating the most it may (exclude all, include as many new
    ones) 12 times leaves a session record and runs of bounded size."""
    async with server.client() as http:
        first = await http.post(f"{KORE}/execute", json=kore_body("repro"))
        session_id = first.json()["sessionInfo"]["sessionId"]
        empty = await server.engine.get_session(session_id, owner="alice")
        for turn in range(12):
            ids = [f"f{turn:02d}{i:05d}" for i in range(60_000)]  # ~700 KiB: under the body limit
            response = await http.post(f"{KORE}/execute", json=kore_body("repro", attachments={"includeFiles": ids}))
            assert assert_refused(response, 400, "invalid_request")["details"]["limit"] == MAX_ATTACHMENTS
        assert await server.engine.get_session(session_id, owner="alice") == empty

        active: list[str] = []
        sizes: list[tuple[int, int, int]] = []
        for turn in range(12):
            new = [f"f-{turn:02d}-{i:03d}-".ljust(MAX_FILE_ID_LENGTH, "x") for i in range(MAX_ACTIVE_ATTACHMENTS)]
            change = {"includeFiles": new, "excludeFiles": active}
            response = await http.post(f"{KORE}/execute", json=kore_body("repro", attachments=change))
            assert response.status_code == 200, response.text
            active = new
            record = await server.engine.get_session(session_id, owner="alice")
            run = await server.engine.status(response.json()["sessionInfo"]["runId"])
            assert sorted(run.metadata["attachments"]) == sorted(new)
            sizes.append((len(dumps(attrs.asdict(record))), len(dumps(run.metadata)), len(response.content)))
        listed = record.data["kore"]["attachments"]
        assert len(listed) == MAX_ATTACHMENTS and sum(f["isActive"] for f in listed.values()) == MAX_ACTIVE_ATTACHMENTS
        # From the third turn on (the list is full) nothing grows: record, run metadata, response.
        assert len(set(sizes[2:])) == 1, sizes
        assert all(run_meta <= MAX_METADATA_BYTES for _, run_meta, _ in sizes), sizes
        print(f"\nKore rotation, (record bytes, run metadata bytes, response bytes) per turn: {sizes}")


# -- session records do not grow with runs ----------------------------------------------------------------


@pytest.mark.anyio
async def test_session_records_do_not_grow_with_runs_on_any_surface(server: Server) -> None:
    async with server.client() as http:
        native_session = (await http.post("/sessions", json={"metadata": {"k": "v"}})).json()["session_id"]
        platform_session = (await http.post("/platform/apps/echo/sessions", json={})).json()["session_id"]
        acp_session = "2b0f0b8e-7a52-4c8a-8c55-0b7b8e6c1f11"

        async def one_each() -> list[str]:
            await http.post("/runs", json={"agent": "echo", "input": "x", "session_id": native_session})
            await http.post("/platform/apps/echo/execute", json={"message": "x", "session_id": platform_session, "metadata": {"k": "v"}})
            kore = await http.post(f"{KORE}/execute", json=kore_body("grow", metadata={"k": "v"}, attachments={"includeFiles": ["f-1"]}))
            await http.post("/acp/runs", json={"agent_name": "echo", "session_id": acp_session, "input": [{"parts": [{"content": "x"}]}]})
            return [native_session, platform_session, kore.json()["sessionInfo"]["sessionId"], acp_session]

        async def records(ids: Sequence[str]) -> list[str]:
            out = []
            for session_id in ids:
                record = await server.store.get_session(session_key("alice", session_id))
                # Without expiry, which the Platform profile extends on every turn.
                out.append(dumps(attrs.evolve(record, expires_at=None)) if record is not None else "none")
            return out

        ids = await one_each()
        after_one = await records(ids)
        for _ in range(20):
            await one_each()
        assert await records(ids) == after_one
        assert after_one[3] != "none"  # an ACP session begun by a run has its owner's record, of fixed size
        listed = await server.engine.list_runs(session_id=native_session, limit=50)
        assert len(listed.runs) == 21  # the runs are in the listing, not in the record


@pytest.mark.anyio
async def test_a_session_read_costs_the_same_whatever_its_runs(server: Server) -> None:
    async with server.client() as http:
        session_id = (await http.post("/sessions", json={"metadata": {"k": "v"}})).json()["session_id"]

        async def read() -> tuple[int, int, dict[str, Any]]:
            server.store.rows_read = 0
            response = await http.get(f"/sessions/{session_id}")
            assert response.status_code == 200
            return len(response.content), server.store.rows_read, response.json()

        for _ in range(3):
            await http.post("/runs", json={"agent": "echo", "input": "x", "session_id": session_id})
        small = await read()
        for _ in range(60):
            await http.post("/runs", json={"agent": "echo", "input": "x", "session_id": session_id})
        large = await read()
        assert large[2]["runs"]["count"] == 63 and small[2]["runs"]["count"] == 3
        assert small[1] == large[1] == 0  # counted by the store: no listing row, no event read
        assert large[0] == small[0] + 2  # "63" for "3" in `count` and in `by_status`, nothing else


# -- open SSE streams per principal ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_open_streams_per_principal_are_bounded_across_every_surface(server: Server) -> None:
    async with server.client("alice") as http, server.client("bob") as bob, contextlib.AsyncExitStack() as stack:
        waiting = (await http.post("/runs", json={"agent": "approval", "input": "x", "mode": "async"})).json()["run_id"]
        await wait_status(http, waiting, "waiting_for_input")
        trace = (await http.post("/platform/apps/echo/execute", json={"message": "x"})).json()["trace_id"]
        sse = {"accept": "text/event-stream"}

        async def hold(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
            response = await stack.enter_async_context(client.stream(method, url, **kwargs))
            assert response.status_code == 200, await response.aread()
            return response

        # Two streams on two surfaces fill alice's quota.
        await hold(http, "GET", f"/runs/{waiting}/events", headers=sse)
        acp_waiting = (await http.post("/acp/runs", json={"agent_name": "approval", "input": [], "mode": "async"})).json()["run_id"]
        await hold(http, "GET", f"/acp/runs/{acp_waiting}/events", headers=sse)
        await until(lambda: server.streams.count("alice") == STREAM_LIMIT)

        before = await run_count(server)
        refusals = [
            (await http.get(f"/runs/{waiting}/events", headers=sse), False),
            (await http.post("/runs", json={"agent": "echo", "input": "x", "mode": "stream"}), False),
            (await http.get(f"/acp/runs/{acp_waiting}/events", headers=sse), True),
            (await http.post("/acp/runs", json={"agent_name": "echo", "input": [], "mode": "stream"}), True),
            (await http.post(f"{KORE}/execute", json=kore_body("streams", stream={"enable": True})), False),
            (await http.post("/platform/apps/echo/execute/stream", json={"message": "x"}), False),
            (await http.get(f"/platform/apps/echo/traces/{trace}/stream"), False),
            (await http.get(f"/ds/v1/stream/runs/{waiting}", params={"offset": "-1", "live": "sse"}), False),
        ]
        for response, acp in refusals:
            error = assert_refused(response, 429, "rate_limited", acp=acp)
            assert error["details"]["limit"] == STREAM_LIMIT and response.headers["retry-after"]
        assert await run_count(server) == before  # a refused stream starts no run

        # Another principal has a quota of its own.
        async with bob.stream("POST", "/runs", json={"agent": "echo", "input": "x", "mode": "stream"}) as other:
            assert other.status_code == 200
            await other.aread()

        # A stream that ends, or that the client closes, gives its place back.
        await stack.aclose()
        await until(lambda: server.streams.count("alice") == 0)
        async with http.stream("POST", "/runs", json={"agent": "echo", "input": "a b c", "mode": "stream"}) as ended:
            assert ended.status_code == 200
            await ended.aread()
        async with http.stream("POST", f"{KORE}/execute", json=kore_body("streams", stream={"enable": True})) as kore:
            assert kore.status_code == 200
            await kore.aread()
        async with http.stream("POST", "/platform/apps/echo/execute/stream", json={"message": "x"}) as platform:
            assert platform.status_code == 200
            await platform.aread()
        await until(lambda: server.streams.count("alice") == 0)


# -- the engine's limits: events per run, event size --------------------------------------------------------


@pytest.mark.anyio
async def test_a_run_past_its_events_limit_fails_too_many_events() -> None:
    engine = RunEngine("memory://", limits=RunLimits(max_events_per_run=50))
    caught: list[BaseException] = []

    @engine.agent("chatty")
    async def chatty(ctx: RunContext) -> None:
        async with ctx.message() as message:
            for i in range(1000):
                await message.delta(f"t{i} ")

    @engine.agent("stubborn")
    async def stubborn(ctx: RunContext) -> str:
        try:
            for i in range(1000):
                await ctx.custom("tick", i)
        except TooManyEvents as exc:
            caught.append(exc)
        return "done anyway"  # a completion after the limit is still the failure

    async with engine:
        for agent in ("chatty", "stubborn"):
            state = await engine.execute(agent, None)
            assert state.status.value == "failed" and state.error is not None
            assert state.error.code == "too_many_events" and "50" in state.error.message
            assert state.last_seq == 50
            assert [e.seq async for e in engine.events(state.run_id, follow=False)] == list(range(1, 51))
        assert len(caught) == 1


@pytest.mark.anyio
async def test_an_event_over_the_size_limit_is_refused_in_the_agent() -> None:
    limit = 64 * 1024
    engine = RunEngine("memory://", limits=RunLimits(max_event_bytes=limit))
    refused: list[EventTooLarge] = []

    @engine.agent("careful")
    async def careful(ctx: RunContext) -> str:
        try:
            await ctx.custom("big", blob(limit))
        except EventTooLarge as exc:
            refused.append(exc)
        await ctx.custom("small", "fits")
        return "ok"

    @engine.agent("careless")
    async def careless(ctx: RunContext) -> None:
        async with ctx.message() as message:
            await message.delta(blob(limit))

    @engine.agent("huge_output")
    async def huge_output(ctx: RunContext) -> str:
        return blob(limit)

    async with engine:
        state = await engine.execute("careful", None)
        assert state.status.value == "completed" and state.output == "ok"
        [error] = refused
        assert error.code == "event_too_large" and error.limit == limit and error.size > limit
        types = [e.type async for e in engine.events(state.run_id, follow=False)]
        assert types == ["run.created", "run.started", "custom", "run.completed"]  # the big one left no trace
        for agent in ("careless", "huge_output"):
            state = await engine.execute(agent, None)
            assert state.status.value == "failed" and state.error is not None
            assert state.error.code == "event_too_large", state.error


@pytest.mark.anyio
async def test_the_events_limit_over_http() -> None:
    engine = RunEngine("memory://", limits=RunLimits(max_events_per_run=20))
    add_test_agents(engine)
    async with engine, serve_app(build_app(engine)) as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.post("/runs", json={"agent": "ticker", "input": {"n": 100}})
        body = response.json()
        assert body["status"] == "failed" and body["error"]["code"] == "too_many_events" and body["last_seq"] == 20


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        OpenStreams(limit=0)
    with pytest.raises(InvalidRequest, match="max_events_per_run"):
        RunEngine("memory://", limits=RunLimits(max_events_per_run=2))
    with pytest.raises(InvalidRequest, match="max_event_bytes"):
        RunEngine("memory://", limits=RunLimits(max_event_bytes=10))
