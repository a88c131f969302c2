"""SSE over a real uvicorn server: reconnection anywhere, many subscribers, keep-alives,
client disconnects (no task left behind) and on_disconnect=cancel."""

from __future__ import annotations

import asyncio
import json
import random

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from httpkit import demo_engine, full_log, serve, wait_status
from kit import until
from runengine.adapters.asgi import ASGIApp
from runengine.adapters.profiles.native import NativeAPI
from runengine.adapters.console import add_page
from runengine.http.router import Router

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes


ANYIO_BACKENDS = ("asyncio",)  # uvicorn


@pytest.fixture
async def served():
    """(client, native api) over uvicorn; the fixture enters the engine itself (host-managed lifespan)."""
    engine = demo_engine()
    router = Router()
    native = NativeAPI(engine, router=router, keepalive=0.3)
    add_page(router)
    async with engine, serve(ASGIApp(router)) as url:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as http:
            yield http, native


async def read_some(client: httpx.AsyncClient, url: str, count: int, *, after_seq: int, use_header: bool) -> list[dict]:
    """Read up to `count` events after `after_seq`, then drop the connection."""
    kwargs: dict = {"headers": {"last-event-id": str(after_seq)}} if use_header else {"params": {"after_seq": after_seq}}
    out: list[dict] = []
    async with aconnect_sse(client, "GET", url, **kwargs) as source:
        if source.response.status_code == 204:
            return out
        async for sse in source.aiter_sse():
            if sse.data:
                out.append(json.loads(sse.data))
                if len(out) >= count:
                    break  # leaving the block closes the connection mid-stream
    return out


@pytest.mark.anyio
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_reconnecting_at_random_points_reassembles_the_log(served, seed: int) -> None:
    client, _ = served
    rng = random.Random(seed)
    run = (await client.post("/runs", json={"agent": "ticker", "input": {"n": 150, "every": 0.002}, "mode": "async"})).json()
    url = f"/runs/{run['run_id']}/events"
    got: list[dict] = []
    connections = 0
    while not got or got[-1]["type"] != "run.completed":
        cursor = got[-1]["seq"] if got else 0
        got.extend(await read_some(client, url, rng.randint(1, 25), after_seq=cursor, use_header=rng.random() < 0.5))
        connections += 1
    assert connections > 5
    assert got == await full_log(client, run["run_id"])
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))


@pytest.mark.anyio
async def test_200_subscribers_receive_the_identical_sequence(served) -> None:
    client, native = served
    run = (await client.post("/runs", json={"agent": "approval", "input": "fan out"})).json()
    assert run["status"] == "waiting_for_input"
    url = f"/runs/{run['run_id']}/events"
    caught_up = 0
    results: list[list[str]] = []

    async def subscriber() -> None:
        nonlocal caught_up
        seen: list[str] = []
        async with aconnect_sse(client, "GET", url) as source:
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue
                seen.append(f"{sse.id} {sse.event} {sse.data}")
                if sse.event == "run.waiting_for_input":
                    caught_up += 1
        results.append(seen)

    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(subscriber)
        await until(lambda: caught_up == 200, timeout=60)
        assert native.open_streams == 200
        # Every subscriber is now live: the rest of the run reaches all of them as it happens.
        assert (await client.post(f"/runs/{run['run_id']}/input", json={"content": "yes"})).status_code == 200
    log = await full_log(client, run["run_id"])
    expected = [f"{e['seq']} {e['type']} {json.dumps(e, separators=(',', ':'), ensure_ascii=False)}" for e in log]
    assert len(results) == 200
    assert all(seen == results[0] for seen in results)
    assert [line.split(" ", 2)[:2] for line in results[0]] == [line.split(" ", 2)[:2] for line in expected]
    assert [json.loads(line.split(" ", 2)[2]) for line in results[0]] == log
    await until(lambda: native.open_streams == 0)


@pytest.mark.anyio
async def test_keepalive_comments_on_an_idle_stream(served) -> None:
    client, _ = served
    run = (await client.post("/runs", json={"agent": "approval"})).json()
    comments = 0
    async with client.stream("GET", f"/runs/{run['run_id']}/events", headers={"accept": "text/event-stream"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        async for line in response.aiter_lines():
            if line.startswith(":"):
                comments += 1
                if comments == 2:
                    break


def task_count() -> int:
    return len(asyncio.all_tasks())


@pytest.mark.anyio
async def test_disconnect_leaves_no_task_and_the_run_goes_on(served) -> None:
    client, native = served
    run = (await client.post("/runs", json={"agent": "approval"})).json()
    await until(lambda: native.open_streams == 0)
    baseline = task_count()
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30.0) as other:
        async with aconnect_sse(other, "GET", f"/runs/{run['run_id']}/events") as source:
            async for sse in source.aiter_sse():
                if sse.event == "run.waiting_for_input":
                    break
            assert native.open_streams == 1
            assert task_count() > baseline
    await until(lambda: native.open_streams == 0)
    await until(lambda: task_count() <= baseline)
    assert (await client.get(f"/runs/{run['run_id']}")).json()["status"] == "waiting_for_input"


@pytest.mark.anyio
async def test_on_disconnect_cancel_for_a_followed_run(served) -> None:
    client, native = served
    run = (await client.post("/runs", json={"agent": "approval"})).json()
    url = f"/runs/{run['run_id']}/events"
    async with aconnect_sse(client, "GET", url, params={"on_disconnect": "cancel"}) as source:
        async for sse in source.aiter_sse():
            if sse.event == "run.waiting_for_input":
                break
    done = await wait_status(client, run["run_id"], "cancelled")
    assert done["cancel_reason"] == "client disconnected"
    await until(lambda: native.open_streams == 0)


@pytest.mark.anyio
async def test_on_disconnect_cancel_for_a_streamed_run(served) -> None:
    client, _ = served
    body = {"agent": "ticker", "input": {"n": 100000, "every": 0.01}, "mode": "stream", "on_disconnect": "cancel"}
    run_id = None
    async with aconnect_sse(client, "POST", "/runs", json=body) as source:
        run_id = source.response.headers["x-run-id"]
        async for sse in source.aiter_sse():
            if sse.event == "message.delta":
                break
    assert (await wait_status(client, run_id, "cancelled"))["cancel_reason"] == "client disconnected"
    # Without on_disconnect the run goes on after the client leaves.
    body["on_disconnect"] = None
    body["input"] = {"n": 40, "every": 0.01}
    async with aconnect_sse(client, "POST", "/runs", json=body) as source:
        run_id = source.response.headers["x-run-id"]
        async for sse in source.aiter_sse():
            if sse.event == "message.delta":
                break
    assert (await wait_status(client, run_id, "completed"))["status"] == "completed"


@pytest.mark.anyio
async def test_on_disconnect_cancel_for_a_sync_run(served) -> None:
    client, _ = served
    async with anyio.create_task_group() as tg:
        # A sync request waiting for a long run; the client gives up once the run is running.
        tg.start_soon(lambda: client.post("/runs", json={"agent": "sleeper", "input": 120, "on_disconnect": "cancel"}))
        runs: list = []

        async def running() -> bool:
            runs[:] = (await client.get("/runs", params={"status": "running"})).json()["runs"]
            return bool(runs)

        with anyio.fail_after(20):
            while not await running():
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()  # closes the waiting request's connection
    run = await wait_status(client, runs[0]["run_id"], "cancelled")
    assert run["cancel_reason"] == "client disconnected"


@pytest.mark.anyio
async def test_a_dropped_connection_through_a_proxy_resumes_with_last_event_id(served) -> None:
    from httpkit import TcpProxy

    client, native = served
    port = int(str(client.base_url).rsplit(":", 1)[1].strip("/"))
    run = (await client.post("/runs", json={"agent": "ticker", "input": {"n": 200, "every": 0.003}, "mode": "async"})).json()
    url = f"/runs/{run['run_id']}/events"
    got: list[dict] = []
    drops = 0
    async with TcpProxy(port) as proxy:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy.port}", timeout=30.0) as via:
            while not got or got[-1]["type"] != "run.completed":
                headers = {"last-event-id": str(got[-1]["seq"])} if got else {}
                try:
                    async with aconnect_sse(via, "GET", url, headers=headers) as source:
                        if source.response.status_code == 204:
                            break
                        async for sse in source.aiter_sse():
                            if sse.data:
                                got.append(json.loads(sse.data))
                                if len(got) % 60 == 0:
                                    drops += proxy.drop()  # the network fails mid-stream
                except httpx.TransportError:
                    pass
    assert drops >= 2
    assert got == await full_log(client, run["run_id"])
    await until(lambda: native.open_streams == 0)
