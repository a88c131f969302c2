"""Flow control over the native HTTP API: `priority` on POST /runs (validated with the one
error format), and a pending run's `waiting_for` on GET /runs/{id}."""

from __future__ import annotations

import anyio
import httpx
import pytest

from httpkit import serve, wait_status
from runengine import RunEngine
from runengine.adapters.asgi import engine_asgi_app

pytestmark = [pytest.mark.server, pytest.mark.anyio]
ANYIO_BACKENDS = ("asyncio",)  # uvicorn


async def test_priority_orders_runs_and_a_waiting_run_says_why() -> None:
    engine = RunEngine()
    release = anyio.Event()
    order: list[str] = []

    @engine.agent("serial", concurrency=1)
    async def serial(ctx):
        if ctx.input == "first":
            await release.wait()
        order.append(ctx.input)

    async with engine, serve(engine_asgi_app(engine)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        first = (await client.post("/runs", json={"agent": "serial", "input": "first", "mode": "async"})).json()
        await wait_status(client, first["run_id"], "running")
        low = await client.post("/runs", json={"agent": "serial", "input": "low", "mode": "async"})
        high = await client.post("/runs", json={"agent": "serial", "input": "high", "mode": "async", "priority": 7})
        assert low.status_code == high.status_code == 202, high.text
        assert high.json()["priority"] == 7 and low.json()["priority"] == 0
        waiting = (await client.get(f"/runs/{high.json()['run_id']}")).json()
        assert waiting["status"] == "pending" and waiting["waiting_for"] == "concurrency"
        assert (await client.get(f"/runs/{first['run_id']}")).json()["waiting_for"] is None
        release.set()
        await wait_status(client, low.json()["run_id"], "completed")
    assert order == ["first", "high", "low"]


@pytest.mark.parametrize("priority", [1.5, "high", True, 10**7, -(10**7), [1], 1e300, -0.5])
async def test_a_bad_priority_is_a_400_in_the_one_error_format_and_creates_nothing(priority: object) -> None:
    engine = RunEngine()

    @engine.agent("echo")
    async def echo(ctx):
        return ctx.input

    async with engine, serve(engine_asgi_app(engine)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post("/runs", json={"agent": "echo", "input": "x", "priority": priority})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and "priority" in error["message"]
        assert len(error["message"]) < 120  # says the number as sent (1e+300), not as 300 digits
        assert error["details"]["field"] == "priority"
        assert (await client.get("/runs")).json()["runs"] == []


async def test_a_priority_without_a_fraction_is_that_integer_as_the_schema_says() -> None:
    engine = RunEngine()

    @engine.agent("echo")
    async def echo(ctx):
        return ctx.input

    async with engine, serve(engine_asgi_app(engine)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post("/runs", content=b'{"agent": "echo", "input": "x", "priority": 3.0}',
                                     headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text
        assert response.json()["priority"] == 3 and isinstance(response.json()["priority"], int)
