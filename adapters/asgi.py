"""ASGI 3 binding: serve any runengine App with uvicorn or hypercorn, or mount it in
FastAPI, Starlette, Litestar or Django-ASGI. No API logic here: translation only.

    asgi = ASGIApp(build_app(engine))           # the host app enters `async with engine`
    asgi = engine_asgi_app(engine)              # standalone: enters it on lifespan startup
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import structlog

from runengine import observe
from runengine.engine import RunEngine
from runengine.http.admission import Admission, BodyHold, ServerLimits
from runengine.http.auth import AuthHook
from runengine.http.core import (
    LINGER_BYTES,
    LINGER_SECONDS,
    MAX_BODY_BYTES,
    App,
    HttpError,
    Request,
    Response,
    StreamResponse,
    payload_too_large,
    request_timeout,
)
from runengine.http.sse import RECONNECT
from runengine.http.streaming import ServerStop, server_stop

if TYPE_CHECKING:
    from .metrics import PrometheusObserver

try:  # anyio asks sniffio which event loop runs for every primitive it makes
    import sniffio
except ImportError:  # pragma: no cover - anyio then asks asyncio directly
    sniffio = None  # type: ignore[assignment]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Lifespan = Callable[[], contextlib.AbstractAsyncContextManager[Any]]

log = structlog.get_logger("runengine.asgi")

#: How long closing a stream's body may take after a disconnect (it may cancel a run).
CLOSE_TIMEOUT = 10.0
#: How long a request's whole body may take to arrive, by default (seconds).
BODY_TIMEOUT = 30.0
#: Statuses whose responses have no body and say no Content-Length (RFC 9110 8.6).
_NO_CONTENT = frozenset({204, 304})
#: How long a handler runs before a task watches for its client's disconnect (seconds; up to
#: twice that, `_Watches`): a sync run that ends sooner, as most do, makes no watcher task; a
#: later disconnect is noticed then.
WATCH_AFTER = 0.05


class ASGIApp:
    """`body_timeout`: seconds for a request's whole body to arrive (None: no limit); later, a 408.

    `auth`: the app's auth hook, asked from the headers before any body is read (a request with a
    body the hook refuses is a 401 at once), and `limits`: the requests in progress, the bytes of
    bodies being read at once and the failed authentications per client address this app allows
    (runengine.http.admission; 503 / 429 with Retry-After past them). The client address is the
    server's `scope["client"]`: behind a proxy, tell the server which proxy to trust (uvicorn's
    `forwarded_allow_ips`) so that it is the client's, not the proxy's. `refusal`: gives these
    refusals the error format of the API a request is for (server.profile_error).

    `drain()` (in the event loop's thread, e.g. from the server's signal handler) ends every open
    stream, and any opened later, with a reconnect hint (sse.RECONNECT): the server can then
    stop without waiting out, or cutting, its streams, and clients resume elsewhere by seq."""

    def __init__(
        self,
        app: App,
        *,
        lifespan: Lifespan | None = None,
        body_timeout: float | None = BODY_TIMEOUT,
        auth: AuthHook | None = None,
        limits: ServerLimits | None = None,
        refusal: Callable[[Request, Response], Response] | None = None,
    ) -> None:
        self.app = app
        self.lifespan = lifespan
        self.body_timeout = body_timeout
        self.admission = Admission(auth, limits, refusal=refusal)
        self._stop = ServerStop()
        self._streams: set[anyio.CancelScope] = set()
        self._watches = _Watches()

    @property
    def draining(self) -> bool:
        return self._stop.stopping

    def drain(self) -> None:
        self._stop.stopping = True
        for scope in self._streams:
            scope.cancel()

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
        if sniffio is not None and sniffio.current_async_library_cvar.get() is None:
            # Said once in this request's task (a context of its own): the anyio primitives the
            # request and the run it starts make read it instead of sniffing the loop each time.
            sniffio.current_async_library_cvar.set(sniffio.current_async_library())
        try:
            self.admission.enter()
        except HttpError as exc:  # 503: too many requests in progress
            await _refuse(scope, receive, send, exc.response())
            return
        try:
            await self._admitted(scope, receive, send)
        finally:
            self.admission.leave()

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        address = (scope.get("client") or (None,))[0]
        head = _request(scope, b"")
        try:
            # Who is asking, from the headers alone: a body is read only for a request that may send one.
            head = await self.admission.admit(head, address)
            body = await _read_body(scope, receive, self.body_timeout, self.admission)
        except HttpError as exc:  # 401 / 429 / 503 / 413 / 408: answered now; the rest of the body is not read
            await _refuse(scope, receive, send, self.admission.refused(head, exc))
            return
        if body is None:  # the client has gone
            return
        request = attrs.evolve(head, body=body)
        # The client may go at any time: stop the handler, and the stream, when it does.
        loop = _running_loop()
        if loop is None:  # trio: a watcher task from the start
            async with _watched(receive) as watched:
                await self._respond(request, address, send, watched)
            return
        # asyncio: a plain task, made only for a handler still running after WATCH_AFTER (or a
        # stream): an anyio task group around every request cost several times as much (issue 22).
        with anyio.CancelScope() as scope:
            watch = _Watch(loop, receive, scope)
            self._watches.add(loop, watch)
            try:
                await self._respond(request, address, send, watch)
            finally:
                self._watches.discard(watch)
                watch.stop()

    async def _respond(self, request: Request, address: str | None, send: Send, watch: _Watch | _Watched) -> None:
        with observe.current.request(headers=request.headers):  # a traceparent continues its trace
            response = await self.app(request)
        self.admission.answered(address, response.status)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        whole = isinstance(response, Response)
        if whole and response.status not in _NO_CONTENT:
            # Its length said up front, so the server need not chunk it: the body goes in one write
            # with no closing chunk after it (one send, one wake-up of the client fewer).
            headers.append((b"content-length", str(len(response.body)).encode("ascii")))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        if whole:
            await send({"type": "http.response.body", "body": response.body})
        else:
            watch.now()
            await self._send_stream(response, send)

    async def _send_stream(self, response: StreamResponse, send: Send) -> None:
        drained = anyio.CancelScope()
        self._streams.add(drained)
        server_stop.set(self._stop)  # this task's: the body sees it when it is ended by drain()
        if self.draining:
            drained.cancel()
        try:
            with drained:
                async for chunk in response.body:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if drained.cancelled_caught:  # the server is stopping: the client reconnects (to another)
                await send({"type": "http.response.body", "body": RECONNECT, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            self._streams.discard(drained)
            await _close_body(response)


async def _close_body(response: StreamResponse) -> None:
    """Close the body here, in this task, whatever happened (disconnect, cancel, error)."""
    aclose = getattr(response.body, "aclose", None)
    if aclose is not None:
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            await aclose()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio event loop running this task (None: trio)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Watch:
    """The task reading `receive` for a disconnect (asyncio): made only once the handler has run
    WATCH_AFTER seconds (`_Watches`), or at once by `now()` (a stream is watched from its first byte)."""

    __slots__ = ("_loop", "_receive", "_scope", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Receive, scope: anyio.CancelScope) -> None:
        self._loop, self._receive, self._scope = loop, receive, scope
        self._task: asyncio.Task[None] | None = None

    def now(self) -> None:
        if self._task is None:
            self._task = self._loop.create_task(_cancel_on_disconnect(self._receive, self._scope))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class _Watches:
    """The requests in progress on one event loop, and one timer for them all instead of one per
    request (a timer is a heap push and a cancel on the loop: two a request with the run's flush
    window): every WATCH_AFTER seconds, while any request is in progress, the requests that were
    already in progress at the previous sweep get their watcher (`_Watch.now`), so a handler
    still running WATCH_AFTER to 2 x WATCH_AFTER seconds after it began is watched, and one that
    ends sooner never is."""

    __slots__ = ("_loop", "_young", "_old", "_timer")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._young: dict[int, _Watch] = {}  # begun since the last sweep
        self._old: dict[int, _Watch] = {}  # in progress at the last sweep
        self._timer: asyncio.TimerHandle | None = None

    def add(self, loop: asyncio.AbstractEventLoop, watch: _Watch) -> None:
        if loop is not self._loop:  # an app served on another loop (tests): start afresh there
            self._loop, self._young, self._old, self._timer = loop, {}, {}, None
        self._young[id(watch)] = watch
        if self._timer is None:
            self._timer = loop.call_later(WATCH_AFTER, self._sweep)

    def discard(self, watch: _Watch) -> None:
        key = id(watch)
        if self._young.pop(key, None) is None:
            self._old.pop(key, None)

    def _sweep(self) -> None:
        for watch in self._old.values():
            watch.now()
        self._old, self._young = self._young, {}
        loop = self._loop
        self._timer = loop.call_later(WATCH_AFTER, self._sweep) if self._old and loop is not None else None


class _Watched:
    """Elsewhere (trio) the watcher runs from the start, in a task group."""

    def now(self) -> None:
        pass


@contextlib.asynccontextmanager
async def _watched(receive: Receive) -> AsyncIterator[_Watched]:
    """Run the block cancelled as soon as the client disconnects: a task reads `receive`
    meanwhile, in a task group (trio; asyncio has `_Watch`, a plain task made only when needed)."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
        yield _Watched()
        tg.cancel_scope.cancel()


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _read_body(scope: Scope, receive: Receive, timeout: float | None, admission: Admission) -> bytes | None:
    """The request body (None if the client went away first).

    HttpError 413 for a Content-Length over the limit (before reading any of it) or as soon as a
    chunked body passes the limit; 503 when the bytes it needs of the bodies being read at once are
    not free; 408 when the whole body has not arrived within `timeout`.
    """
    declared = _content_length(scope)
    if declared is not None and declared > MAX_BODY_BYTES:
        raise payload_too_large()
    try:
        async with _deadline(timeout):
            with admission.body(declared) as hold:
                return await _body_chunks(receive, hold)
    except TimeoutError:
        assert timeout is not None
        raise request_timeout(timeout) from None


async def _body_chunks(receive: Receive, hold: BodyHold) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise payload_too_large()
        hold.cover(size)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _deadline(seconds: float | None) -> contextlib.AbstractAsyncContextManager[Any]:
    """TimeoutError after `seconds` (None: never). On asyncio its own timeout: anyio's cancel scope
    cost a sync run over HTTP ~8% of the server's CPU (issue 22), for a body that is there already."""
    if _running_loop() is not None:
        return asyncio.timeout(seconds)
    return _anyio_deadline(seconds)


@contextlib.asynccontextmanager
async def _anyio_deadline(seconds: float | None) -> AsyncIterator[None]:
    with anyio.fail_after(seconds):
        yield


async def _refuse(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    """Send `response` and have the server close the connection, after a bounded lingering read.

    The connection closes when the response ends, so its end waits until the client has sent
    LINGER_BYTES more (dropped) or LINGER_SECONDS have passed, whichever comes first.
    """
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers += [(b"content-length", str(len(response.body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": True})
    # A client that asked for "100 Continue" has not sent its body, and must not be invited to.
    if _header(scope, b"expect") is None:
        dropped = 0
        with anyio.move_on_after(LINGER_SECONDS):
            while dropped <= LINGER_BYTES:
                message = await receive()
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    break
                dropped += len(message.get("body", b""))
    await send({"type": "http.response.body", "body": b""})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None  # the server has already refused a malformed one


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


def engine_asgi_app(
    engine: RunEngine,
    *,
    auth: AuthHook | None = None,
    body_timeout: float | None = BODY_TIMEOUT,
    limits: ServerLimits | None = None,
    cors_origins: Iterable[str] = (),
    **options: Any,
) -> ASGIApp:
    """A standalone ASGI app for `engine`: `build_app` (given `auth` and `options`) plus a lifespan
    that runs `async with engine`.

    `limits`: the server-wide limits (ServerLimits; runengine.limits' defaults); `cors_origins`:
    browser origins allowed to call the API (runengine.http.cors); `options` go to `build_app`
    (`metrics`: an installed observer whose metrics GET /metrics serves, `rate_limit`, ...)."""
    from .server import profile_error, standalone_app

    app = standalone_app(engine, auth=auth, cors_origins=cors_origins, **options)
    return ASGIApp(app, lifespan=lambda: engine, body_timeout=body_timeout, auth=auth, limits=limits, refusal=profile_error)
