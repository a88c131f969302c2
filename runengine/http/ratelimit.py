"""Per-principal rate limits as a wrapper App (seed 002's headers and 429 error).

    app = RateLimited(build_app(engine, auth=hook), limit=600, window=60.0, auth=hook)

With `auth`, the limiter authenticates first (a refusal is a 401, not counted) and
passes the principal on, so the wrapped apps do not authenticate twice; without it
the key sees whatever principal an outer layer set (one shared bucket when none).

Every response carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
`X-RateLimit-Reset` (epoch seconds when the window ends); a request over the limit
gets 429 `rate_limited` in the common error format with `Retry-After`, and never
reaches the wrapped app. Nothing is limited unless an app is wrapped: the servers
only wrap when a limit is configured.

Fixed windows per key: one counter and one window start per principal, so memory is
bounded by the number of principals seen in the current window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from ..errors import InvalidRequest
from .auth import AuthHook, authenticate
from .core import App, HttpError, Request, Response, StreamResponse, error_response


def principal_key(request: Request) -> str:
    """The default key: the auth hook's principal, or one shared bucket when auth is off."""
    principal = request.principal
    if principal is None:
        return "anonymous"
    for attr in ("id", "name", "key"):
        value = getattr(principal, attr, None)
        if isinstance(value, str):
            return value
    return str(principal)


@attrs.define
class _Window:
    start: float
    count: int = 0


class RateLimited:
    """Wraps `app`: at most `limit` requests per `window` seconds for each `key(request)`."""

    def __init__(
        self,
        app: App,
        *,
        limit: int,
        window: float = 60.0,
        key: Callable[[Request], str] = principal_key,
        exempt: Callable[[Request], bool] | None = None,
        auth: AuthHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(limit, int) or limit < 1:
            raise InvalidRequest("limit must be a positive integer", limit=limit)
        if not (isinstance(window, (int, float)) and math.isfinite(window) and window > 0):
            raise InvalidRequest("window must be a positive number of seconds", window=window)
        self.app = app
        self.limit = limit
        self.window = float(window)
        self.key = key
        self.exempt = exempt
        self.auth = auth
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def _take(self, key: str, now: float) -> tuple[bool, int, float]:
        """Count one request for `key`: (allowed, remaining, reset time)."""
        window = self._windows.get(key)
        if window is None or now >= window.start + self.window:
            if len(self._windows) > 10_000:
                self._prune(now)
            window = self._windows[key] = _Window(start=now - (now % self.window))
        reset = window.start + self.window
        if window.count >= self.limit:
            return False, 0, reset
        window.count += 1
        return True, self.limit - window.count, reset

    def _prune(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if now >= w.start + self.window]:
            del self._windows[key]

    def routes(self) -> Iterator[tuple[str, str]]:
        listing = getattr(self.app, "routes", None)
        return listing() if listing is not None else iter([("*", "/*")])

    async def __call__(self, request: Request) -> Response | StreamResponse:
        if self.auth is not None:
            try:
                request = await authenticate(self.auth, request)
            except HttpError as exc:
                return exc.response()
        if self.exempt is not None and self.exempt(request):
            return await self.app(request)
        now = self.clock()
        allowed, remaining, reset = self._take(self.key(request), now)
        headers = (
            ("x-ratelimit-limit", str(self.limit)),
            ("x-ratelimit-remaining", str(remaining)),
            ("x-ratelimit-reset", str(math.ceil(reset))),
        )
        if not allowed:
            retry_after = max(1, math.ceil(reset - now))
            return error_response(
                429,
                "rate_limited",
                f"too many requests: the limit is {self.limit} per {self.window:g} s",
                {"limit": self.limit, "window_seconds": self.window, "retry_after_seconds": retry_after},
                headers=(*headers, ("retry-after", str(retry_after))),
            )
        response = await self.app(request)
        return _with_headers(response, headers)


def _with_headers(response: Any, headers: tuple[tuple[str, str], ...]) -> Any:
    names = {name for name, _ in headers}
    kept = tuple((n, v) for n, v in response.headers if n.lower() not in names)
    return attrs.evolve(response, headers=(*kept, *headers))


__all__ = ["RateLimited", "principal_key"]
