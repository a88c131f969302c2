"""Slow and oversized requests over raw sockets against a real uvicorn (and aiohttp): a request
whose headers or body never finish is closed after its timeout (with a 408 when part of it came);
a body over the size limit gets a 413 without being read to the end."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from httpkit import RAW_WAIT, assert_error, demo_engine, parse_response, read_until_closed, serve, serve_aiohttp
from runengine.adapters.aiohttp_app import engine_aiohttp_app
from runengine.adapters.asgi import engine_asgi_app
from runengine.adapters.uvicorn_http import limited_protocol
from runengine.http.core import MAX_BODY_BYTES

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

#: Small timeouts for the tests (seconds); every wait below is bounded by RAW_WAIT instead.
HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5
CHUNK = b"x" * 65536


ANYIO_BACKENDS = ("asyncio",)  # uvicorn, aiohttp


@contextlib.asynccontextmanager
async def uvicorn_server() -> AsyncIterator[int]:
    engine = demo_engine()
    app = engine_asgi_app(engine, body_timeout=BODY_TIMEOUT)
    async with serve(app, http=limited_protocol(HEADER_TIMEOUT), access_log=False) as url:
        yield int(url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def aiohttp_server() -> AsyncIterator[int]:
    async with serve_aiohttp(engine_aiohttp_app(demo_engine(), body_timeout=BODY_TIMEOUT)) as url:
        yield int(url.rsplit(":", 1)[1])


SERVERS = {"uvicorn": uvicorn_server, "aiohttp": aiohttp_server}


def post_head(extra: str) -> bytes:
    return f"POST /runs HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n{extra}\r\n".encode()


@pytest.mark.anyio
async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout() -> None:
    async with uvicorn_server() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            assert await read_until_closed(stream) == b""  # closed, nothing said


@pytest.mark.anyio
async def test_headers_that_never_finish_get_a_408_and_the_connection_closed() -> None:
    async with uvicorn_server() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"POST /runs HTTP/1.1\r\nhost: test\r\ncontent-ty")
            error = assert_error(await read_until_closed(stream), 408, "request_timeout")
            assert "headers" in error["message"] and error["details"]["timeout_seconds"] == HEADER_TIMEOUT


@pytest.mark.anyio
async def test_many_half_open_connections_are_all_closed() -> None:
    async with uvicorn_server() as port:
        streams = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(200)]
        try:
            for i, stream in enumerate(streams):
                await stream.send(b"GET /runs HTTP/1.1\r\n" if i % 2 else b"G")
            results = [await read_until_closed(stream) for stream in streams]
        finally:
            for stream in streams:
                await stream.aclose()
        assert all(parse_response(r)[0] == 408 for r in results)


@pytest.mark.anyio
async def test_the_header_deadline_moves_with_each_response_on_one_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a kept-alive connection the next request's headers are due HEADER_TIMEOUT after each
    response: requests spaced over several timeouts are served, and the connection idle after
    the last one is closed; the deadline is one timer per connection, not one made (and
    cancelled) per response."""
    timers: list[str] = []
    real_call_at = asyncio.BaseEventLoop.call_at

    def call_at(self: Any, when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(callback, "__name__", "") == "_on_deadline":
            timers.append(callback.__qualname__)
        return real_call_at(self, when, callback, *args, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "call_at", call_at)
    async def echo(stream: anyio.abc.SocketStream, i: int) -> None:
        body = json.dumps({"agent": "echo", "input": f"hello {i}"}).encode()
        await stream.send(post_head(f"content-length: {len(body)}\r\n") + body)
        received = b""
        while b'"completed"' not in received:
            received += await stream.receive()
        assert received.startswith(b"HTTP/1.1 200")

    async with uvicorn_server() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await echo(stream, 0)
            before = len(timers)
            for i in range(20):  # back to back, well within one timeout: the pending timer serves them all
                await echo(stream, i)
            assert len(timers) - before <= 1, timers
            for i in range(6):  # 6 x 0.3 s: past three header timeouts in all, each request within one
                await anyio.sleep(HEADER_TIMEOUT * 0.6)
                await echo(stream, i)
            with anyio.fail_after(HEADER_TIMEOUT * 4):  # idle now: closed at the deadline
                assert await read_until_closed(stream) == b""


@pytest.mark.anyio
async def test_a_request_in_flight_is_not_cut_by_the_header_timeout() -> None:
    async with uvicorn_server() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            body = json.dumps({"agent": "sleeper", "input": HEADER_TIMEOUT * 3}).encode()
            await stream.send(post_head(f"content-length: {len(body)}\r\nconnection: close\r\n") + body)
            status, _, run = parse_response(await read_until_closed(stream))
            assert status == 200 and run["status"] == "completed"


@pytest.mark.anyio
@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_a_body_that_never_finishes_gets_a_408_and_the_connection_closed(server: str) -> None:
    async with SERVERS[server]() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(post_head("content-length: 100\r\n") + b'{"agent": "echo", ')
            error = assert_error(await read_until_closed(stream), 408, "request_timeout")
            assert "body" in error["message"] and error["details"]["timeout_seconds"] == BODY_TIMEOUT


@pytest.mark.anyio
@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_a_declared_length_over_the_limit_gets_a_413_without_sending_the_body(server: str) -> None:
    async with SERVERS[server]() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(post_head(f"content-length: {10**12}\r\n"))
            error = assert_error(await read_until_closed(stream), 413, "payload_too_large")
            assert error["details"]["limit_bytes"] == MAX_BODY_BYTES


@pytest.mark.anyio
@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_a_chunked_body_that_never_ends_gets_a_413_once_past_the_limit(server: str) -> None:
    async with SERVERS[server]() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(post_head("transfer-encoding: chunked\r\n"))
            sent = 0

            async def send_for_ever() -> None:
                nonlocal sent
                frame = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
                with contextlib.suppress(anyio.BrokenResourceError, ConnectionError, OSError):
                    while True:
                        await stream.send(frame)
                        sent += len(CHUNK)

            async with anyio.create_task_group() as tg:
                tg.start_soon(send_for_ever)
                raw = await read_until_closed(stream)
                tg.cancel_scope.cancel()
            assert_error(raw, 413, "payload_too_large")
            # The server stopped reading near the limit: what was sent beyond it sat in socket buffers.
            assert MAX_BODY_BYTES < sent < 64 * MAX_BODY_BYTES


@pytest.mark.anyio
@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_a_body_just_under_the_limit_is_read(server: str) -> None:
    async with SERVERS[server]() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            body = json.dumps({"agent": "echo", "input": "hi", "metadata": {}}).encode()
            body += b" " * (MAX_BODY_BYTES - len(body))
            await stream.send(post_head(f"content-length: {len(body)}\r\nconnection: close\r\n") + body)
            status, _, run = parse_response(await read_until_closed(stream))
            assert status == 200 and run["output"] == "hi"


@pytest.mark.anyio
@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_a_client_that_sends_its_whole_body_before_reading_still_gets_the_413(server: str) -> None:
    async with SERVERS[server]() as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=RAW_WAIT) as client:
            # 10 MiB: what Node's fetch sends whole before it reads (the Durable Streams suite's large append)
            for body in (b" " * (MAX_BODY_BYTES + 1), b" " * (2 * MAX_BODY_BYTES), b" " * (10 * MAX_BODY_BYTES)):
                response = await client.post("/runs", content=body, headers={"content-type": "application/json"})
                assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
                assert response.headers["connection"] == "close"
            assert (await client.get("/runs")).json()["runs"] == []
