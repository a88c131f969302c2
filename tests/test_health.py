"""GET /healthz (the process answers) and GET /readyz (the engine is started, its store answers
with the schema this version writes), over real HTTP; CORS and the SSE headers of every surface."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import asyncpg
import httpx
import pytest

from httpkit import demo_engine, serve
from kit import free_port
from runengine import RunEngine
from runengine.adapters.asgi import ASGIApp, engine_asgi_app
from runengine.adapters.postgres import SCHEMA_VERSION, PostgresStore
from runengine.adapters.server import build_app
from test_cli import COMMAND, wait_ready

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes


ANYIO_BACKENDS = ("asyncio",)  # uvicorn, asyncpg


@pytest.mark.anyio
async def test_healthy_and_ready_while_the_engine_runs() -> None:
    async with serve(engine_asgi_app(demo_engine())) as url, httpx.AsyncClient(base_url=url) as http:
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


@pytest.mark.anyio
async def test_not_ready_before_the_engine_starts() -> None:
    engine = demo_engine()  # no lifespan: nobody enters `async with engine`
    async with serve(ASGIApp(build_app(engine)), lifespan="off") as url, httpx.AsyncClient(base_url=url) as http:
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
    assert health.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "not_ready"
    assert "not started" in ready.json()["error"]["message"]


@pytest.mark.anyio
@pytest.mark.postgres
async def test_not_ready_when_the_database_schema_moved_on_or_the_server_is_gone(pg_server: object, pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn, schema="readyz")
    engine = RunEngine(store)
    async with serve(engine_asgi_app(engine)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        assert (await http.get("/readyz")).status_code == 200
        conn = await asyncpg.connect(pg_dsn)
        try:  # a newer runengine process migrated the database past what this one writes
            await conn.execute('INSERT INTO "readyz".runengine_schema VALUES ($1)', SCHEMA_VERSION + 1)
            moved_on = await http.get("/readyz")
            await conn.execute('DELETE FROM "readyz".runengine_schema WHERE version = $1', SCHEMA_VERSION + 1)
        finally:
            await conn.close()
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/healthz")).status_code == 200
    assert moved_on.status_code == 503, moved_on.text
    assert "schema" in moved_on.json()["error"]["message"]


@pytest.mark.anyio
async def test_cors_preflight_and_answers_for_allowed_origins_only() -> None:
    app = engine_asgi_app(demo_engine(), cors_origins=["https://console.example.com"])
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        preflight = await http.options(
            "/runs",
            headers={
                "origin": "https://console.example.com",
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        refused = await http.options(
            "/runs", headers={"origin": "https://evil.example", "access-control-request-method": "POST"}
        )
        allowed = await http.post(
            "/runs", json={"agent": "echo", "input": "hi"}, headers={"origin": "https://console.example.com"}
        )
        other = await http.get("/agents", headers={"origin": "https://evil.example"})
        plain = await http.get("/agents")
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://console.example.com"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert "access-control-allow-origin" not in refused.headers
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://console.example.com"
    assert "content-type" in allowed.headers["access-control-expose-headers"]
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


@pytest.mark.anyio
async def test_every_sse_surface_tells_proxies_not_to_buffer() -> None:
    app = engine_asgi_app(demo_engine(), cors_origins=["*"])
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        run_id = (await http.post("/runs", json={"agent": "echo", "input": "hi"})).json()["run_id"]
        acp = (await http.post("/acp/runs", json={"agent_name": "echo", "input": [{"role": "user", "parts": [{"content": "hi", "content_type": "text/plain"}]}]})).json()
        streams = {
            "native": ("GET", f"/runs/{run_id}/events", None),
            "native create": ("POST", "/runs", {"agent": "echo", "input": "hi", "mode": "stream"}),
            "acp": ("GET", f"/acp/runs/{acp['run_id']}/events", None),
            "platform": ("POST", "/platform/apps/echo/execute/stream", {"message": "hi"}),
        }
        for surface, (method, path, body) in streams.items():
            async with http.stream(
                method, path, json=body, headers={"accept": "text/event-stream", "origin": "https://any.example"}
            ) as response:
                assert response.status_code == 200, (surface, await response.aread())
                assert response.headers["content-type"].startswith("text/event-stream"), surface
                assert response.headers["cache-control"] == "no-cache", surface
                assert response.headers["x-accel-buffering"] == "no", surface
                assert response.headers["access-control-allow-origin"] == "https://any.example", surface


def test_serve_options_for_cors_and_metrics(tmp_path: Path) -> None:
    """`runengine serve --cors-origin ... --no-metrics`; metrics are on by default (test_shutdown)."""
    port = free_port()
    process = subprocess.Popen(
        [*COMMAND, "serve", "--store", f"sqlite:///{tmp_path / 'o.db'}", "--port", str(port),
         "--cors-origin", "https://a.example", "--cors-origin", "https://b.example", "--no-metrics"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        with httpx.Client(base_url=url, timeout=30.0) as http:
            allowed = [
                http.options("/runs", headers={"origin": origin, "access-control-request-method": "POST"})
                for origin in ("https://a.example", "https://b.example")
            ]
            refused = http.options("/runs", headers={"origin": "https://c.example", "access-control-request-method": "POST"})
            metrics = http.get("/metrics")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert [r.status_code for r in allowed] == [204, 204]
    assert refused.status_code == 403
    assert metrics.status_code == 404
