"""A small router: method + path pattern -> handler, and mounting of other apps under a prefix."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import attrs
import structlog

from ..errors import RunEngineError
from .core import App, Handler, HttpError, Request, Response, StreamResponse, engine_error_response, error_response

if TYPE_CHECKING:  # the declaration is only carried here; runengine.http.openapi reads it
    from .openapi import Operation

log = structlog.get_logger("runengine.http")

_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}")


def _compile(pattern: str) -> re.Pattern[str]:
    regex = ""
    last = 0
    for match in _PARAM.finditer(pattern):
        regex += re.escape(pattern[last : match.start()]) + f"(?P<{match.group(1)}>[^/]+)"
        last = match.end()
    regex += re.escape(pattern[last:])
    return re.compile(f"^{regex}$")


class Router:
    """Routes requests to handlers; maps engine errors and HttpError to the common error format."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._patterns: list[tuple[str, str]] = []
        self._operations: list[Operation | None] = []
        self._mounts: list[tuple[str, App]] = []

    def route(self, method: str, pattern: str, handler: Handler, *, operation: Operation | None = None) -> None:
        """Serve `handler` for `method` on `pattern`; `operation` declares it for the OpenAPI document."""
        self._routes.append((method.upper(), _compile(pattern), handler))
        self._patterns.append((method.upper(), pattern))
        self._operations.append(operation)

    def declared(self) -> Iterator[tuple[str, str, Operation | None]]:
        """This router's own routes (not mounted apps') with their declarations (None: undeclared)."""
        for (method, pattern), operation in zip(self._patterns, self._operations):
            yield method, pattern, operation

    def routes(self) -> Iterator[tuple[str, str]]:
        """Every (method, path pattern) served, mounted apps' included under their prefix. A mounted
        app that cannot list its routes (no `routes()`) shows as ("*", prefix + "/*")."""
        yield from self._patterns
        for prefix, app in self._mounts:
            listing = getattr(app, "routes", None)
            if listing is None:
                yield "*", prefix + "/*"
                continue
            for method, pattern in listing():
                yield method, prefix + pattern

    def mount(self, prefix: str, app: App) -> None:
        """Serve `app` under `prefix` (longest prefix first); the app sees paths without it."""
        self._mounts.append((prefix.rstrip("/"), app))
        self._mounts.sort(key=lambda m: -len(m[0]))

    async def __call__(self, request: Request) -> Response | StreamResponse:
        try:
            return await self._dispatch(request)
        except Exception:  # a bug, not bad input: log it, answer in the error format, never a traceback
            log.exception("unhandled error", method=request.method, path=request.path)
            return error_response(500, "internal_error", "internal server error")

    async def _dispatch(self, request: Request) -> Response | StreamResponse:
        path = request.path or "/"
        for prefix, app in self._mounts:
            if path == prefix or path.startswith(prefix + "/"):
                inner = path[len(prefix) :] or "/"
                return await app(attrs.evolve(request, path=inner, root_path=request.root_path or path))
        allowed: list[str] = []
        for method, regex, handler in self._routes:
            match = regex.match(path)
            if match is None:
                continue
            if method != request.method.upper():
                allowed.append(method)
                continue
            try:
                return await handler(attrs.evolve(request, params=match.groupdict()))
            except HttpError as exc:
                return exc.response()
            except RunEngineError as exc:
                return engine_error_response(exc)
        if allowed:
            return error_response(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed on {path}",
                {"allowed": sorted(set(allowed))},
                headers=(("allow", ", ".join(sorted(set(allowed)))),),
            )
        return error_response(404, "not_found", f"no route for {request.method} {path}", {"path": path})
