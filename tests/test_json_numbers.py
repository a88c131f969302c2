"""Strict JSON numbers on every surface: NaN, Infinity, -Infinity and numbers that parse to
infinity (1e400) are a 400 in the profile's error format and change nothing; nothing the
engine stores or sends holds them (the encoder refuses); integers of any size JSON allows
are kept as they are, through SQLite and PostgreSQL."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from httpkit import demo_engine, serve, sse_events, wait_status
from runengine import RunEngine
from runengine.adapters.asgi import engine_asgi_app
from runengine.errors import InvalidRequest
from runengine.http.core import parse_json
from runengine.wire import dumps, event_to_json, loads_stored
from runengine.worker import WorkerOptions

NOT_JSON_NUMBERS = ["1e400", "-1e400", "1E+999", "NaN", "Infinity", "-Infinity"]
KORE = "/kore/apps/echo/environments/draft/runs/execute"
KORE_IDENTITY = '"sessionIdentity": [{"type": "sessionReference", "value": "s-1"}]'

#: (profile, path, body with X where the bad number goes, whether the profile adds ACP's error fields)
SURFACES = [
    ("native", "/runs", '{"agent": "echo", "input": X}', False),
    ("native", "/runs", '{"agent": "echo", "input": {"deep": [1, X]}}', False),
    ("native", "/runs", '{"agent": "echo", "input": "hi", "metadata": {"m": X}}', False),
    ("native", "/runs", '{"agent": "echo", "input": "hi", "timeout": X}', False),
    ("native", "/sessions", '{"metadata": {"m": X}}', False),
    ("native", "/sessions", '{"ttl": X}', False),
    ("acp", "/acp/runs", '{"agent_name": "echo", "input": [{"role": "user", "parts": [{"content": X}]}]}', True),
    ("acp", "/acp/runs", '{"agent_name": "echo", "input": [], "session": {"state": X}}', True),
    ("kore", KORE, "{" + KORE_IDENTITY + ', "input": [{"type": "text", "content": X}]}', False),
    ("kore", KORE, "{" + KORE_IDENTITY + ', "input": [{"type": "text", "content": "hi"}], "metadata": {"m": X}}', False),
    ("platform", "/platform/apps/echo/sessions", '{"user_id": "u1", "metadata": {"m": X}}', False),
    ("platform", "/platform/apps/echo/execute", '{"message": "hi", "metadata": {"m": X}}', False),
    ("platform", "/platform/apps/echo/execute/stream", '{"message": "hi", "metadata": {"m": X}}', False),
]


ANYIO_BACKENDS = ("asyncio",)  # uvicorn


@pytest.fixture
async def served(tmp_path: Any) -> Any:
    engine = demo_engine(f"sqlite:///{tmp_path / 'numbers.db'}")
    async with serve(engine_asgi_app(engine)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
            yield engine, http


def strict(text: str | bytes) -> Any:
    """What JavaScript's JSON.parse accepts: no NaN, no Infinity, nothing that overflows a double."""
    return parse_json(text)


@pytest.mark.server
@pytest.mark.anyio
@pytest.mark.parametrize("number", NOT_JSON_NUMBERS)
async def test_every_surface_refuses_numbers_json_cannot_carry(served: Any, number: str) -> None:
    engine, http = served
    for profile, path, template, acp in SURFACES:
        response = await http.post(path, content=template.replace("X", number), headers={"content-type": "application/json"})
        assert response.status_code == 400, (profile, path, template, response.text)
        body = strict(response.text)
        assert body["error"]["code"] == "invalid_request", (profile, template)
        assert isinstance(body["error"]["message"], str) and isinstance(body["error"]["details"], dict)
        if number[-3:].lower() in ("400", "999"):
            assert "out of range" in body["error"]["message"], body
        if acp:  # ACP's own top-level fields beside the common error object
            assert body["code"] == "invalid_input" and body["message"] == body["error"]["message"]
    assert not (await engine.store.list_runs()).runs  # nothing was created anywhere


@pytest.mark.server
@pytest.mark.anyio
async def test_input_for_a_waiting_run_refuses_them_and_the_run_keeps_waiting(served: Any) -> None:
    _, http = served
    run = (await http.post("/runs", json={"agent": "approval", "input": "order", "mode": "async"})).json()
    waiting = await wait_status(http, run["run_id"], "waiting_for_input")
    for number in NOT_JSON_NUMBERS:
        response = await http.post(
            f"/runs/{run['run_id']}/input", content=f'{{"content": {{"ok": {number}}}}}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"
    assert (await http.get(f"/runs/{run['run_id']}")).json() == waiting


@pytest.mark.server
@pytest.mark.anyio
async def test_numbers_at_the_edges_of_json_are_kept_exactly(served: Any) -> None:
    _, http = served
    text = '{"big": 123456789012345678901234567890123456789, "neg": -1e308, "max": 1.7976931348623157e308, "tiny": 5e-324, "under": 1e-400}'
    body = '{"agent": "echo", "input": ' + text + ', "metadata": {"n": 18446744073709551616}}'
    response = await http.post("/runs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    run = strict(response.text)
    assert run["input"] == json.loads(text) and run["input"]["big"] == 123456789012345678901234567890123456789
    assert run["input"]["under"] == 0.0 and run["metadata"] == {"n": 2**64}
    again = strict((await http.get(f"/runs/{run['run_id']}")).text)
    assert again["input"] == run["input"]
    events = await sse_events(http, f"/runs/{run['run_id']}/events")
    assert events[0]["data"]["input"] == run["input"]


# -- the engine API -----------------------------------------------------------------------


def numbers_engine(store: str, **options: Any) -> RunEngine:
    engine = RunEngine(store, **options)

    @engine.agent("nan_output")
    async def nan_output(ctx: Any) -> Any:
        await ctx.say("computing")
        return {"mean": float("nan")}

    @engine.agent("inf_event")
    async def inf_event(ctx: Any) -> None:
        await ctx.custom("metric", {"ratio": float("inf")})

    @engine.agent("inf_tool")
    async def inf_tool(ctx: Any) -> str:
        await ctx.tool_call("divide", {"a": 1, "b": 0}, lambda a, b: float("-inf"))
        return "unreachable"

    @engine.agent("careful")
    async def careful(ctx: Any) -> str:
        try:
            await ctx.custom("metric", float("nan"))
        except InvalidRequest as exc:  # the agent may catch the refusal and go on
            await ctx.custom("metric", None)
            return exc.message
        return "not refused"

    @engine.agent("huge")
    async def huge(ctx: Any) -> Any:
        await ctx.custom("n", {"n": 10**100})
        return {"echo": ctx.input, "n": -(10**200)}

    return engine


STORES = ["memory://", "sqlite"]


def store_url(kind: str, tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'engine.db'}" if kind == "sqlite" else kind


async def check_engine(engine: RunEngine) -> None:
    async with engine:
        for bad in (float("nan"), float("inf"), {"x": [float("-inf")]}):
            with pytest.raises(InvalidRequest, match="NaN or Infinity"):
                await engine.execute("huge", bad)
            with pytest.raises(InvalidRequest):
                await engine.execute("huge", "ok", metadata={"m": bad})
            with pytest.raises(InvalidRequest):
                await engine.execute("huge", "ok", idempotency_key="k1", metadata={"m": bad})
            with pytest.raises(InvalidRequest):
                await engine.create_session(metadata={"m": bad})
        assert not (await engine.store.list_runs()).runs
        # the idempotency key was not taken by the refused calls
        first = await engine.execute("huge", "ok", idempotency_key="k1")
        assert first.status.value == "completed"

        failed = await engine.execute("nan_output", "x")
        assert failed.status.value == "failed" and failed.error is not None
        assert failed.error.code == "invalid_output" and "NaN or Infinity" in failed.error.message
        assert failed.messages[0].content == "computing"  # what came before the output is kept
        for agent in ("inf_event", "inf_tool"):
            state = await engine.execute(agent, "x")
            assert state.status.value == "failed" and state.error is not None
            assert state.error.code == "agent_error" and "InvalidRequest" in state.error.message
        caught = await engine.execute("careful", "x")
        assert caught.status.value == "completed" and "NaN or Infinity" in caught.output

        big = await engine.execute("huge", {"n": 10**50})
        assert big.output == {"echo": {"n": 10**50}, "n": -(10**200)}
        events = [e async for e in engine.events(big.run_id)]
        assert [e.type for e in events] == ["run.created", "run.started", "custom", "run.completed"]
        assert events[2].data == {"n": 10**100}  # type: ignore[attr-defined]

        for state in (failed, caught, big):  # every stored event is strict JSON
            async for event in engine.events(state.run_id):
                strict(event_to_json(event))


@pytest.mark.anyio
@pytest.mark.parametrize("kind", STORES)
async def test_the_engine_refuses_what_json_cannot_carry(kind: str, tmp_path: Any) -> None:
    await check_engine(numbers_engine(store_url(kind, tmp_path)))


@pytest.mark.anyio
async def test_the_engine_on_postgresql(pg_schema_url: str) -> None:
    await check_engine(numbers_engine(pg_schema_url, worker=WorkerOptions(poll=0.2)))  # executes its queued runs


@pytest.mark.anyio
async def test_resume_refuses_them_and_the_run_keeps_waiting() -> None:
    engine = demo_engine()
    async with engine:
        state = await engine.execute("approval", "order")
        assert state.status.value == "waiting_for_input"
        with pytest.raises(InvalidRequest):
            await engine.resume(state.run_id, {"ok": float("nan")})
        assert await engine.status(state.run_id) == state


def test_the_encoder_refuses_nan_and_infinity() -> None:
    for value in (float("nan"), float("inf"), -math.inf, {"a": [1, float("nan")]}):
        with pytest.raises(ValueError):
            dumps(value)
    assert dumps({"n": 10**30, "f": 1e308}) == '{"n":1000000000000000000000000000000,"f":1e+308}'


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    )
)
def test_stored_payloads_decode_to_what_was_encoded(value: Any) -> None:
    """The stores' decoder (msgspec) gives back exactly what `dumps` wrote: integers of any size,
    floats, every character (a lone surrogate cannot be stored: the stores refuse the text)."""
    text = dumps(value)
    if any(0xD800 <= ord(char) <= 0xDFFF for char in text):
        return
    decoded = loads_stored(text)
    assert decoded == json.loads(text)
    assert dumps(decoded) == text  # 1.0 stays a float, 10**30 an exact int, at every depth


def test_what_the_fast_decoder_refuses_goes_to_the_standard_one() -> None:
    # msgspec refuses an escaped lone surrogate; the standard library reads it: so does the store
    assert loads_stored('{"a": "\\ud800"}') == {"a": "\ud800"}
    assert loads_stored(b"[2e308]") == [math.inf]  # never written by dumps; still read as json would
