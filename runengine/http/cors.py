"""CORS for any runengine App: browsers on the listed origins may call the API and read its answers.

    app = CORS(build_app(engine), origins=["https://console.example.com"])   # "*": any origin

A preflight (OPTIONS with Access-Control-Request-Method) from an allowed origin is answered
here with 204; from another origin with a 403 in the one error format. Other requests go to
the app; an allowed origin's answer (JSON or SSE) gets Access-Control-Allow-Origin and exposes
its headers. Credentials (cookies) are not allowed: the API authenticates with a bearer token.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .core import App, Request, Response, StreamResponse, error_response

#: The methods the API answers.
ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
#: How long a browser may cache a preflight answer (seconds).
MAX_AGE = 600


class CORS:
    """Wraps `app` with CORS for `origins` (exact `scheme://host[:port]`, or "*")."""

    def __init__(self, app: App, *, origins: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(origin.rstrip("/") for origin in origins)
        if not self.origins:
            raise ValueError("give at least one origin (or '*')")

    def allowed(self, origin: str) -> bool:
        return "*" in self.origins or origin in self.origins

    async def __call__(self, request: Request) -> Response | StreamResponse:
        origin = request.header("origin")
        preflight = request.method.upper() == "OPTIONS" and request.header("access-control-request-method") is not None
        if origin is None:
            return await self.app(request)
        if not self.allowed(origin):
            if preflight:
                return error_response(403, "forbidden", f"origin {origin!r} may not call this API", {"origin": origin})
            return await self.app(request)  # no CORS headers: the browser keeps the answer from the page
        if preflight:
            headers = [
                ("access-control-allow-origin", origin),
                ("access-control-allow-methods", ALLOWED_METHODS),
                ("access-control-max-age", str(MAX_AGE)),
                ("vary", "Origin"),
            ]
            asked = request.header("access-control-request-headers")
            if asked:
                headers.append(("access-control-allow-headers", asked))
            return Response(status=204, headers=tuple(headers))
        response = await self.app(request)
        exposed = ", ".join(sorted({name.lower() for name, _ in response.headers}))
        extra = [("access-control-allow-origin", origin), ("vary", "Origin")]
        if exposed:
            extra.append(("access-control-expose-headers", exposed))
        return attrs.evolve(response, headers=(*response.headers, *extra))


__all__ = ["CORS"]
