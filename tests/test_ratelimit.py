"""Rate limits per principal (seed 002): the X-RateLimit-* headers, 429 rate_limited in the common
error format, windows that reset, off unless an app is wrapped; over real HTTP and in-process."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from runengine.adapters.aiohttp_app import engine_aiohttp_app
from runengine.adapters.asgi import engine_asgi_app
from runengine.adapters.profiles.acp import AcpProfile
from runengine.adapters.server import build_app
from runengine.engine import RunEngine
from runengine.errors import InvalidRequest
from runengine.http.core import Request, Response, json_response
from runengine.http.ratelimit import Rate, RateLimited, principal_key
from runengine.http.router import Router

from httpkit import serve, serve_aiohttp
from profile_http import serve_app


class Clock:
    def __init__(self, now: float = 1_705_330_200.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def hello(request: Request) -> Response:
    return json_response({"principal": request.principal})


def users(headers: Mapping[str, str]) -> str | None:
    return {"Bearer a": "alice", "Bearer b": "bob"}.get(headers.get("authorization", ""))


def limited_router(limit: int, clock: Clock) -> RateLimited:
    router = Router()
    router.route("GET", "/hello", hello)
    return RateLimited(router, limit=limit, window=60, clock=clock)


@pytest.mark.anyio
async def test_headers_429_and_reset_in_process() -> None:
    clock = Clock()
    app = limited_router(2, clock)
    request = Request(method="GET", path="/hello", principal="alice")
    first = await app(request)
    assert dict(first.headers)["x-ratelimit-limit"] == "2"
    assert dict(first.headers)["x-ratelimit-remaining"] == "1"
    assert dict(first.headers)["x-ratelimit-reset"] == "1705330260"  # end of the window, epoch seconds
    assert dict((await app(request)).headers)["x-ratelimit-remaining"] == "0"
    refused = await app(request)
    assert refused.status == 429
    body = json.loads(refused.body)
    assert body["error"]["code"] == "rate_limited" and body["error"]["details"]["limit"] == 2
    assert dict(refused.headers)["retry-after"] == "60"
    other = await app(Request(method="GET", path="/hello", principal="bob"))  # per principal
    assert other.status == 200
    clock.now += 60  # the next window
    assert (await app(request)).status == 200


def test_settings_are_checked() -> None:
    router = Router()
    for bad in ({"limit": 0}, {"limit": 1.5}, {"limit": 3, "window": 0}, {"limit": 3, "window": float("nan")}):
        with pytest.raises(InvalidRequest):
            RateLimited(router, **bad)  # type: ignore[arg-type]
    assert principal_key(Request(method="GET", path="/")) == "anonymous"


ANYIO_BACKENDS = ("asyncio",)


@pytest.mark.server
@pytest.mark.anyio
async def test_over_http_per_principal_with_every_profile() -> None:
    engine = RunEngine("memory://")

    @engine.agent("echo")
    async def echo(ctx) -> str:  # type: ignore[no-untyped-def]
        return str(ctx.input)

    clock = Clock()
    async with engine:
        app = RateLimited(build_app(engine, auth=users), limit=3, window=60, clock=clock, auth=users)
        async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
            alice, bob = {"authorization": "Bearer a"}, {"authorization": "Bearer b"}
            seen = []
            for path in ("/agents", "/acp/ping", "/acp/agents"):
                response = await http.get(path, headers=alice)
                assert response.status_code == 200, path
                seen.append(response.headers["x-ratelimit-remaining"])
            assert seen == ["2", "1", "0"]
            refused = await http.post(
                "/kore/apps/a/environments/e/runs/execute",
                headers=alice,
                json={"sessionIdentity": [{"type": "sessionReference", "value": "s"}], "input": []},
            )
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
            assert refused.headers["x-ratelimit-limit"] == "3" and refused.headers["retry-after"] == "60"
            assert (await http.get("/acp/ping", headers=bob)).status_code == 200
            unauthenticated = await http.get("/agents")
            assert unauthenticated.status_code == 401 and "x-ratelimit-limit" not in unauthenticated.headers
            clock.now += 61
            assert (await http.get("/acp/ping", headers=alice)).headers["x-ratelimit-remaining"] == "2"


@pytest.mark.server
@pytest.mark.anyio
async def test_off_unless_wrapped_and_streams_carry_headers() -> None:
    engine = RunEngine("memory://")

    @engine.agent("echo")
    async def echo(ctx) -> None:  # type: ignore[no-untyped-def]
        await ctx.delta("hi")

    async with engine:
        plain = Router()
        plain.mount("/acp", AcpProfile(engine))
        limited = RateLimited(plain, limit=1, window=60)
        async with serve_app(plain) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
            for _ in range(5):
                response = await http.get("/acp/ping")
                assert response.status_code == 200 and "x-ratelimit-limit" not in response.headers
        async with serve_app(limited) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
            body = {"agent_name": "echo", "input": [{"parts": [{"content": "x"}]}], "mode": "stream"}
            async with http.stream("POST", "/acp/runs", json=body) as response:
                assert response.headers["x-ratelimit-remaining"] == "0"
                assert b"run.completed" in await response.aread()
            assert (await http.get("/acp/ping")).status_code == 429


@pytest.mark.server
@pytest.mark.anyio
async def test_both_standalone_bindings_take_the_limit_and_cors() -> None:
    """`engine_asgi_app` and `engine_aiohttp_app` take the same options (`rate_limit`, `cors_origins`),
    over real HTTP: uvicorn and aiohttp."""
    origin = "https://app.example"
    for binding in ("asgi", "aiohttp"):
        engine = RunEngine("memory://")
        options: dict[str, Any] = {"auth": users, "rate_limit": Rate(2, 60), "cors_origins": [origin]}
        if binding == "asgi":
            served = serve(engine_asgi_app(engine, **options), access_log=False)
        else:
            served = serve_aiohttp(engine_aiohttp_app(engine, **options))
        async with served as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
            alice = {"authorization": "Bearer a", "origin": origin}
            first = await http.get("/agents", headers=alice)
            assert first.status_code == 200, binding
            assert first.headers["x-ratelimit-limit"] == "2" and first.headers["x-ratelimit-remaining"] == "1"
            assert first.headers["access-control-allow-origin"] == origin
            assert (await http.get("/agents", headers=alice)).status_code == 200
            refused = await http.get("/agents", headers=alice)
            assert refused.status_code == 429, binding
            assert refused.json()["error"]["code"] == "rate_limited"
            assert (await http.get("/agents", headers={"authorization": "Bearer b"})).status_code == 200



@pytest.mark.server
@pytest.mark.anyio
async def test_openapi_documents_describe_the_limit_the_server_applies() -> None:
    """With a limit, every operation of /openapi.json and /v1/openapi.json documents 429 (with
    Retry-After) and every response the X-RateLimit-* headers, which the server then sends; the
    documents stay valid OpenAPI 3.1. Without one, neither."""
    engine = RunEngine("memory://")
    async with engine:
        for limited in (False, True):
            app = build_app(engine, auth=users, rate_limit=Rate(100, 60) if limited else None)
            async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
                for path in ("/openapi.json", "/v1/openapi.json"):
                    served = await http.get(path, headers={"authorization": "Bearer a"})
                    assert served.status_code == 200
                    doc = served.json()
                    validate(doc)
                    operations = [op for item in doc["paths"].values() for op in item.values()]
                    assert len(operations) > 5
                    for op in operations:
                        responses = op["responses"]
                        for status, response in responses.items():
                            headers = response.get("headers", {})
                            assert ("X-RateLimit-Remaining" in headers) == limited, (path, op["operationId"], status)
                        if limited:  # (without a limit, only the event streams declare a 429: too many open)
                            assert "100 requests per 60 s" in responses["429"]["description"]
                            assert "Retry-After" in responses["429"]["headers"]
                    assert ("x-ratelimit-limit" in served.headers) == limited
