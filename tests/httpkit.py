"""Helpers for the HTTP tests: a real uvicorn server on 127.0.0.1, a TCP proxy that can drop
connections, and reading SSE with httpx-sse."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import httpx
import uvicorn
from httpx_sse import aconnect_sse
from uvicorn.config import LifespanType

from runengine import RunEngine
from runengine.demo import register_demo_agents


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve(
    asgi_app: Any, *, lifespan: LifespanType = "on", started_timeout: float = 20.0, **uvicorn_options: Any
) -> AsyncIterator[str]:
    """Run uvicorn in this event loop on a free 127.0.0.1 port; yield its base URL; stop it.

    `uvicorn_options` go to `uvicorn.Config` as they are (e.g. `http="h11"`, `access_log=False`)."""
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        asgi_app, lifespan=lifespan, log_level="warning", timeout_graceful_shutdown=5, **uvicorn_options
    )
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(started_timeout):
                while not server.started:
                    await anyio.sleep(0.01)
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()


#: How the fault and profile suites run uvicorn: the engine is started by the test, plain h11.
NO_LIFESPAN_H11: dict[str, Any] = {
    "lifespan": "off", "started_timeout": 30.0, "access_log": False, "http": "h11", "loop": "asyncio"
}


@contextlib.asynccontextmanager
async def serve_aiohttp(app: Any) -> AsyncIterator[str]:
    """Run an aiohttp application in this event loop on a free 127.0.0.1 port; yield its base URL; stop it."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


# -- raw sockets: what a server really sends ------------------------------------------------------

#: How long a raw-socket read waits for the server at most (seconds).
RAW_WAIT = 15.0


async def read_until_closed(stream: anyio.abc.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection (bounded by RAW_WAIT)."""
    received = b""
    with anyio.fail_after(RAW_WAIT):
        while True:
            try:
                received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
                return received


def parse_response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    if headers.get("transfer-encoding") == "chunked":  # one chunk is enough for these small bodies
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    return int(lines[0].split()[1]), headers, json.loads(body)


def assert_error(raw: bytes, status: int, code: str) -> dict[str, Any]:
    got, headers, body = parse_response(raw)
    assert got == status, raw[:300]
    assert headers["content-type"].startswith("application/json")
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def add_test_agents(engine: RunEngine) -> None:
    """Agents the HTTP tests need beside the demo ones."""

    @engine.agent("ticker", description="streams input.n tokens, pausing input.every seconds")
    async def ticker(ctx: Any) -> None:
        n = int(ctx.input.get("n", 50))
        every = float(ctx.input.get("every", 0.0))
        async with ctx.message() as message:
            for i in range(n):
                await message.delta(f"t{i} ")
                if every:
                    await anyio.sleep(every)

    @engine.agent("hidden", description="internal: not listed nor startable over HTTP", metadata={"internal": True})
    async def hidden(ctx: Any) -> None:
        return None

    @engine.agent("sleeper", description="sleeps for input seconds")
    async def sleeper(ctx: Any) -> None:
        await anyio.sleep(float(ctx.input))

    @engine.agent("fanout", description="spawns an echo child per word of its input, joins them in order")
    async def fanout(ctx: Any) -> Any:
        handles = [await ctx.spawn("echo", word) for word in str(ctx.input).split()]
        return await ctx.gather(*handles)

    @engine.agent("listener", description="returns the payload of the next signal named input (default msg)")
    async def listener(ctx: Any) -> Any:
        return await ctx.receive(ctx.input or "msg")


def demo_engine(store: str = "memory://") -> RunEngine:
    engine = register_demo_agents(RunEngine(store), delay=0.0)
    add_test_agents(engine)
    return engine


async def sse_events(
    client: httpx.AsyncClient, url: str, *, headers: dict[str, str] | None = None, method: str = "GET", **kwargs: Any
) -> list[dict[str, Any]]:
    """Every event of an SSE response (keep-alives and the retry hint skipped), as wire dicts."""
    out: list[dict[str, Any]] = []
    async with aconnect_sse(client, method, url, headers=dict(headers or {}), **kwargs) as source:
        source.response.raise_for_status()
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            event = json.loads(sse.data)
            assert sse.id == str(event["seq"]) and sse.event == event["type"]
            out.append(event)
    return out


async def full_log(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    """The run's whole log through the JSON pages."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = (await client.get(f"/runs/{run_id}/events", params={"after_seq": after, "limit": 1000})).json()
        events.extend(page["events"])
        after = page["next_after_seq"]
        if page["ended"]:
            return events


async def wait_status(client: httpx.AsyncClient, run_id: str, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            run = (await client.get(f"/runs/{run_id}")).json()
            if run["status"] in statuses:
                return run
            await anyio.sleep(0.02)


class TcpProxy:
    """Forwards 127.0.0.1:port to a target port; `drop()` cuts every connection open now."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0
        #: Bytes sent from the target back to clients so far.
        self.bytes_down = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.drop()
        await self._server.wait_closed()

    def drop(self) -> int:
        dropped = 0
        for writer in list(self._writers):
            writer.transport.abort()
            dropped += 1
        self._writers.clear()
        return dropped

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
            try:
                while chunk := await src.read(65536):
                    if down:
                        self.bytes_down += len(chunk)
                    dst.write(chunk)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))
        self._writers.discard(writer)
        self._writers.discard(up_writer)


def bearer_auth(tokens: dict[str, str]) -> Any:
    """An auth hook: the principal a `Bearer` token names in `tokens` (None: refused)."""

    def hook(headers: Any) -> str | None:
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        return tokens.get(token) if scheme.lower() == "bearer" else None

    return hook


@contextlib.asynccontextmanager
async def alice_and_bob(engine: RunEngine, tokens: dict[str, str]) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """`engine` served with `bearer_auth(tokens)`, and a client for each of the first two tokens."""
    from runengine.adapters.asgi import engine_asgi_app

    first, second = list(tokens)[:2]
    async with serve(engine_asgi_app(engine, auth=bearer_auth(tokens))) as url:
        async with (
            httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {first}"}, timeout=30.0) as alice,
            httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {second}"}, timeout=30.0) as bob,
        ):
            yield alice, bob
