"""The ASGI binding under another server: hypercorn, on asyncio and on trio (the binding and the
API use anyio only), same API, same disconnect handling."""

from __future__ import annotations

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse
from hypercorn.config import Config

from httpkit import demo_engine, full_log, sse_events, wait_status
from kit import free_port
from runengine.adapters.asgi import engine_asgi_app

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes


@pytest.mark.anyio
async def test_native_api_under_hypercorn(anyio_backend: str) -> None:
    if anyio_backend == "trio":
        from hypercorn.trio import serve
    else:
        from hypercorn.asyncio import serve
    config = Config()
    port = free_port()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.graceful_timeout = 5
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(engine_asgi_app(demo_engine()), config, shutdown_trigger=stop.wait))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
            with anyio.fail_after(20):
                while True:
                    try:
                        if (await client.get("/agents")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await anyio.sleep(0.05)
            run = (await client.post("/runs", json={"agent": "echo", "input": "over hypercorn"})).json()
            assert run["output"] == "over hypercorn"
            streamed = await sse_events(client, "/runs", method="POST", json={"agent": "pizza", "mode": "stream"})
            assert streamed == await full_log(client, streamed[0]["run_id"])
            waiting = (await client.post("/runs", json={"agent": "approval"})).json()
            async with aconnect_sse(client, "GET", f"/runs/{waiting['run_id']}/events", params={"on_disconnect": "cancel"}) as source:
                async for sse in source.aiter_sse():
                    if sse.event == "run.waiting_for_input":
                        break
            assert (await wait_status(client, waiting["run_id"], "cancelled"))["cancel_reason"] == "client disconnected"
            bad = await client.post("/runs", content=b"[")
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
        stop.set()
