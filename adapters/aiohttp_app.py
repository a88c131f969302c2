"""aiohttp binding: serve any runengine App from an aiohttp application. Translation only.

    web_app = aiohttp_app(build_app(engine))     # the host enters `async with engine`
    web_app = engine_aiohttp_app(engine)          # enters it in a cleanup context
    parent.add_subapp("/runengine", web_app)      # mount under a prefix

A client disconnect is noticed by the handler being cancelled (run the server with
`handler_cancellation=True`) or, otherwise, by watching the connection's transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from aiohttp import web

from runengine.engine import RunEngine
from runengine.http.auth import AuthHook
from runengine.http.core import MAX_BODY_BYTES, App, Request, Response

#: How often the transport is checked for a gone client while a handler runs (seconds).
DISCONNECT_POLL = 0.25
CLOSE_TIMEOUT = 10.0


class AiohttpHandler:
    """An aiohttp handler for a catch-all route `/{tail:.*}` that calls `app`."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        body = await _read_body(request)
        tail = request.match_info.get("tail")
        path = "/" + tail if tail is not None else request.path
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        inner = Request(
            method=request.method,
            path=path,
            query_string=request.query_string,
            headers=headers,
            body=body,
            root_path=request.path,
        )
        out: web.StreamResponse = web.Response(status=499)  # what is "returned" to a gone client
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_disconnect, request, tg.cancel_scope)
            response = await self.app(inner)
            if isinstance(response, Response):
                out = web.Response(status=response.status, body=response.body, headers=list(response.headers))
            else:
                out = web.StreamResponse(status=response.status, headers=list(response.headers))
                await out.prepare(request)
                try:
                    async for chunk in response.body:
                        await out.write(chunk)
                    await out.write_eof()
                finally:
                    with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                        await response.body.aclose()  # type: ignore[attr-defined]
            tg.cancel_scope.cancel()
        return out


async def _read_body(request: web.Request) -> bytes:
    """The request body, cut just past the size limit (the API answers 400 for that)."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY_BYTES:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def _cancel_on_disconnect(request: web.Request, scope: anyio.CancelScope) -> None:
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            scope.cancel()
            return
        await anyio.sleep(DISCONNECT_POLL)


def aiohttp_app(app: App) -> web.Application:
    web_app = web.Application(client_max_size=MAX_BODY_BYTES + 1)
    handler = AiohttpHandler(app)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    web_app.router.add_route("*", "/{tail:.*}", handle)
    return web_app


def engine_aiohttp_app(engine: RunEngine, *, auth: AuthHook | None = None) -> web.Application:
    """`build_app(engine)` as an aiohttp application that runs `async with engine` while it serves."""
    from .server import build_app

    web_app = aiohttp_app(build_app(engine, auth=auth))

    async def run_engine(_: web.Application) -> AsyncIterator[None]:
        async with engine:
            yield

    web_app.cleanup_ctx.append(run_engine)
    return web_app
