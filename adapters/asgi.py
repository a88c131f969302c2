"""ASGI 3 binding: serve any runengine App with uvicorn or hypercorn, or mount it in
FastAPI, Starlette, Litestar or Django-ASGI. No API logic here: translation only.

    asgi = ASGIApp(build_app(engine))           # the host app enters `async with engine`
    asgi = engine_asgi_app(engine)              # standalone: enters it on lifespan startup
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import structlog

from runengine.engine import RunEngine
from runengine.http.auth import AuthHook
from runengine.http.core import MAX_BODY_BYTES, App, Request, Response, StreamResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Lifespan = Callable[[], contextlib.AbstractAsyncContextManager[Any]]

log = structlog.get_logger("runengine.asgi")

#: How long closing a stream's body may take after a disconnect (it may cancel a run).
CLOSE_TIMEOUT = 10.0


class ASGIApp:
    def __init__(self, app: App, *, lifespan: Lifespan | None = None) -> None:
        self.app = app
        self.lifespan = lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        # websocket: not served; returning without accepting makes the server refuse it.

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        started = False
        try:
            async with self.lifespan() if self.lifespan else contextlib.nullcontext():
                started = True
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
        except BaseException as exc:
            kind = "shutdown" if started else "startup"
            await send({"type": f"lifespan.{kind}.failed", "message": repr(exc)})
            if isinstance(exc, Exception):
                return
            raise
        await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, disconnected = await _read_body(receive)
        if disconnected:
            return
        request = _request(scope, body)
        async with anyio.create_task_group() as tg:
            # The client may go at any time: stop the handler, and the stream, when it does.
            tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
            response = await self.app(request)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers],
                }
            )
            if isinstance(response, Response):
                await send({"type": "http.response.body", "body": response.body})
            else:
                await _send_stream(response, send)
            tg.cancel_scope.cancel()


async def _send_stream(response: StreamResponse, send: Send) -> None:
    try:
        async for chunk in response.body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        # Close the body here, in this task, whatever happened (disconnect, cancel, error).
        aclose = getattr(response.body, "aclose", None)
        if aclose is not None:
            with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await aclose()


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request body, cut just past the size limit (the API answers 400 for that)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", True
        chunk = message.get("body", b"")
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
            size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _request(scope: Scope, body: bytes) -> Request:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    root_path = scope.get("root_path", "") or ""
    path = scope.get("path", "/") or "/"
    if root_path and path.startswith(root_path):  # servers and routers that keep the full path
        path = path[len(root_path) :] or "/"
    return Request(
        method=scope.get("method", "GET"),
        path=path,
        query_string=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=body,
        root_path=root_path + path,
    )


def engine_asgi_app(engine: RunEngine, *, auth: AuthHook | None = None) -> ASGIApp:
    """A standalone ASGI app for `engine`: `build_app` plus a lifespan that runs `async with engine`."""
    from .server import build_app

    return ASGIApp(build_app(engine, auth=auth), lifespan=lambda: engine)
