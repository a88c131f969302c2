"""The examples, exercised for real: the FastAPI app under uvicorn, the aiohttp app under
aiohttp's runner, and the plain demo script."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from httpx_sse import aconnect_sse

from httpkit import serve, sse_events, wait_status

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


ANYIO_BACKENDS = ("asyncio",)  # uvicorn, aiohttp


def load_example(name: str, monkeypatch: pytest.MonkeyPatch, store: str):
    monkeypatch.setenv("RUNENGINE_STORE", store)
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def exercise(base: str) -> None:
    """The same checks through either framework: the page, every mode, replay, disconnect handling."""
    async with httpx.AsyncClient(base_url=base + "/runengine", timeout=30.0) as client:
        page = await client.get("/")
        assert page.status_code == 200 and "runengine console" in page.text
        run = await client.post("/runs", json={"agent": "echo", "input": "through the framework"})
        assert run.status_code == 200 and run.json()["output"] == "through the framework"
        events = await sse_events(client, "/runs", method="POST", json={"agent": "pizza", "mode": "stream"})
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1)) and events[-1]["type"] == "run.completed"
        replay = await sse_events(client, f"/runs/{events[0]['run_id']}/events", headers={"last-event-id": "3"})
        assert replay == events[3:]
        missing = await client.get("/runs/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        bad = await client.post("/runs", content=b"{oops")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
        # A client that goes away with on_disconnect=cancel cancels its run; otherwise the run goes on.
        for on_disconnect, outcome in (("cancel", "cancelled"), ("continue", "waiting_for_input")):
            waiting = (await client.post("/runs", json={"agent": "approval"})).json()
            url = f"/runs/{waiting['run_id']}/events"
            async with httpx.AsyncClient(base_url=base + "/runengine", timeout=30.0) as other:
                async with aconnect_sse(other, "GET", url, params={"on_disconnect": on_disconnect}) as source:
                    async for sse in source.aiter_sse():
                        if sse.event == "run.waiting_for_input":
                            break
            if outcome == "cancelled":
                run = await wait_status(client, waiting["run_id"], "cancelled")
                assert run["cancel_reason"] == "client disconnected"
            else:
                assert (await client.get(f"/runs/{waiting['run_id']}")).json()["status"] == outcome


@pytest.mark.anyio
async def test_fastapi_example_under_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example("fastapi_app", monkeypatch, "memory://")
    async with serve(example.app) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/")).json() == {"runengine": "/runengine/"}
        await exercise(base)
    assert not example.engine.running  # the lifespan stopped the engine


@pytest.mark.anyio
@pytest.mark.parametrize("handler_cancellation", [False, True])
async def test_aiohttp_example_under_aiohttp(monkeypatch: pytest.MonkeyPatch, handler_cancellation: bool) -> None:
    example = load_example("aiohttp_app", monkeypatch, "memory://")
    runner = web.AppRunner(example.app, handler_cancellation=handler_cancellation)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        assert example.engine.running
        await exercise(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
    assert not example.engine.running


def test_demo_script(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    by_run: dict[str, list[dict]] = {}
    for event in events:
        by_run.setdefault(event["run_id"], []).append(event)
    assert len(by_run) == 3
    for run_events in by_run.values():
        assert run_events[-1]["type"] == "run.completed"
    assert "final output: {'approved': True, 'answer': 'yes'}" in result.stdout
