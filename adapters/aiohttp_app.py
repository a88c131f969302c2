"""aiohttp binding: serve any runengine App from an aiohttp application. Translation only.

    web_app = aiohttp_app(build_app(engine))     # the host enters `async with engine`
    web_app = engine_aiohttp_app(engine)          # enters it in a cleanup context
    parent.add_subapp("/runengine", web_app)      # mount under a prefix

A client disconnect is noticed by the handler being cancelled (run the server with
`handler_cancellation=True`) or, otherwise, by watching the connection's transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import anyio
import attrs
from aiohttp import HttpVersion11, web

from runengine import observe
from runengine.engine import RunEngine
from runengine.http.admission import Admission, ServerLimits
from runengine.http.auth import AuthHook
from runengine.http.core import (
    LINGER_BYTES,
    LINGER_SECONDS,
    MAX_BODY_BYTES,
    App,
    HttpError,
    Request,
    Response,
    payload_too_large,
    request_timeout,
)

#: How often the transport is checked for a gone client while a handler runs (seconds).
DISCONNECT_POLL = 0.25
CLOSE_TIMEOUT = 10.0
#: How long a request's whole body may take to arrive, by default (seconds).
BODY_TIMEOUT = 30.0


class AiohttpHandler:
    """An aiohttp handler for a catch-all route `/{tail:.*}` that calls `app`.

    `body_timeout`: seconds for a request's whole body to arrive (None: no limit); later, a 408.
    `auth` and `limits`: as for `ASGIApp` (the hook is asked before any body is read; requests in
    progress, bytes of bodies being read and failed authentications per address are limited). The
    client address is aiohttp's `request.remote`: the peer, or what a forwarded-headers middleware
    that trusts the proxy made it. `refusal`: as for `ASGIApp`."""

    def __init__(
        self,
        app: App,
        *,
        body_timeout: float | None = BODY_TIMEOUT,
        auth: AuthHook | None = None,
        limits: ServerLimits | None = None,
        refusal: Callable[[Request, Response], Response] | None = None,
    ) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.admission = Admission(auth, limits, refusal=refusal)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        try:
            self.admission.enter()
        except HttpError as exc:  # 503: too many requests in progress
            return await _refuse(request, exc.response())
        try:
            return await self._admitted(request)
        finally:
            self.admission.leave()

    async def _admitted(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail")
        path = "/" + tail if tail is not None else request.path
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        head = Request(
            method=request.method,
            path=path,
            query_string=request.query_string,
            headers=headers,
            root_path=request.path,
        )
        try:
            # Who is asking, from the headers alone: a body is read only for a request that may send one.
            head = await self.admission.admit(head, request.remote)
            body = await _read_body(request, self.body_timeout, self.admission)
        except HttpError as exc:  # 401 / 429 / 503 / 413 / 408: answered now; the rest of the body is never read
            return await _refuse(request, self.admission.refused(head, exc))
        inner = attrs.evolve(head, body=body)
        out: web.StreamResponse = web.Response(status=499)  # what is "returned" to a gone client
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_disconnect, request, tg.cancel_scope)
            with observe.current.request(headers=inner.headers):  # a traceparent continues its trace
                response = await self.app(inner)
            self.admission.answered(request.remote, response.status)
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


async def _read_body(request: web.Request, timeout: float | None, admission: Admission) -> bytes:
    """The request body. HttpError 413 for a Content-Length over the limit (before reading any of
    it) or as soon as a chunked body passes it; 503 when the bytes it needs of the bodies being read
    at once are not free; 408 when it has not all arrived within `timeout`."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise payload_too_large()
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(timeout), admission.body(request.content_length) as hold:
            await _invite_body(request)
            while chunk := await request.content.read(65536):
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise payload_too_large()
                hold.cover(size)
                chunks.append(chunk)
    except TimeoutError:
        assert timeout is not None
        raise request_timeout(timeout) from None
    return b"".join(chunks)


async def _invite_body(request: web.Request) -> None:
    """Send "100 Continue" to a client waiting for it, now that its body is to be read (aiohttp's own
    expect handler would send it before the request is even authenticated: `_no_expect_handler`)."""
    if request.version == HttpVersion11 and request.headers.get("expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


async def _no_expect_handler(request: web.Request) -> None:
    return None


async def _refuse(request: web.Request, response: Response) -> web.StreamResponse:
    """Send `response`, read (and drop) at most LINGER_BYTES more for at most LINGER_SECONDS, so a
    client that sends its whole body first still gets the answer, then close the connection
    (aiohttp's own lingering would read for 10 s, however much comes)."""
    out = web.Response(status=response.status, body=response.body, headers=list(response.headers))
    out.force_close()
    await out.prepare(request)
    await out.write_eof()
    dropped = 0
    with anyio.move_on_after(LINGER_SECONDS):
        while dropped <= LINGER_BYTES and (chunk := await request.content.readany()):
            dropped += len(chunk)
    if request.protocol is not None:
        request.protocol.force_close()
    return out


async def _cancel_on_disconnect(request: web.Request, scope: anyio.CancelScope) -> None:
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            scope.cancel()
            return
        await anyio.sleep(DISCONNECT_POLL)


def aiohttp_app(
    app: App,
    *,
    body_timeout: float | None = BODY_TIMEOUT,
    auth: AuthHook | None = None,
    limits: ServerLimits | None = None,
    refusal: Callable[[Request, Response], Response] | None = None,
) -> web.Application:
    """`app` as an aiohttp application (`auth`, `limits`, `refusal`: as for AiohttpHandler)."""
    web_app = web.Application(client_max_size=MAX_BODY_BYTES + 1)
    handler = AiohttpHandler(app, body_timeout=body_timeout, auth=auth, limits=limits, refusal=refusal)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    web_app.router.add_route("*", "/{tail:.*}", handle, expect_handler=_no_expect_handler)
    return web_app


def engine_aiohttp_app(
    engine: RunEngine,
    *,
    auth: AuthHook | None = None,
    body_timeout: float | None = BODY_TIMEOUT,
    limits: ServerLimits | None = None,
    cors_origins: Iterable[str] = (),
    **options: Any,
) -> web.Application:
    """`build_app(engine)` as an aiohttp application that runs `async with engine` while it serves;
    `limits`, `cors_origins` and `options` (`rate_limit`, `metrics`, ...) as for `engine_asgi_app`."""
    from .server import profile_error, standalone_app

    app = standalone_app(engine, auth=auth, cors_origins=cors_origins, **options)
    web_app = aiohttp_app(app, body_timeout=body_timeout, auth=auth, limits=limits, refusal=profile_error)

    async def run_engine(_: web.Application) -> AsyncIterator[None]:
        async with engine:
            yield

    web_app.cleanup_ctx.append(run_engine)
    return web_app
