"""Per-principal rate limits as a wrapper App (seed 002's headers and 429 error).

    app = RateLimited(build_app(engine, auth=hook), limit=600, window=60.0, auth=hook)

With `auth`, the limiter authenticates first and passes the principal on, so the
wrapped apps do not authenticate twice; a request the hook refuses goes on uncounted,
so the wrapped app answers it (a 401 in its own format, or an open route such as the
page); without `auth` the key sees whatever principal an outer layer set (one shared
bucket when none).

Every response carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
`X-RateLimit-Reset` (epoch seconds when the window ends); a request over the limit
gets 429 `rate_limited` in the common error format with `Retry-After`, and never
reaches the wrapped app. A request it lets through carries the limit (`request.rate_limit`),
so the OpenAPI documents the profiles serve describe the 429 and the headers. Nothing is limited unless an app is wrapped: the servers
only wrap when a limit is configured.

Fixed windows per key: one counter and one window start per principal, kept by a
`WindowCounter`: `MemoryWindows` (this process; memory bounded by the principals seen
in the current window) by default, or one shared by every process (the PostgreSQL
store's `rate_windows`), so N processes allow the limit once, not N times.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import attrs

from ..errors import InvalidRequest
from .auth import AuthHook, authenticate
from .core import App, HttpError, Request, Response, StreamResponse, error_response


#: The headers every counted response carries (seed 002), with what each holds; the OpenAPI
#: documents list them from here.
HEADERS = {
    "X-RateLimit-Limit": "Requests allowed per window",
    "X-RateLimit-Remaining": "Requests left in this window",
    "X-RateLimit-Reset": "When the window ends (epoch seconds)",
}
#: The header a refused request (429) carries besides.
RETRY_AFTER = {"Retry-After": "Seconds until the window ends"}
_LIMIT, _REMAINING, _RESET = (name.lower() for name in HEADERS)
_RETRY = next(iter(RETRY_AFTER)).lower()


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


_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_PERIOD_ALIASES = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
_RATE = re.compile(r"\s*([0-9]{1,9})\s*/\s*([a-z]+)\s*")


@attrs.frozen
class Rate:
    """`limit` requests per `window` seconds; `Rate.parse("600/minute")`."""

    limit: int
    window: float = 60.0

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`N/second`, `N/minute`, `N/hour`, `N/day` (also `s`, `m`, `h`, `d`)."""
        match = _RATE.fullmatch(text.lower())
        period = match and _PERIOD_ALIASES.get(match[2], match[2].removesuffix("s"))
        if match is None or period not in _PERIODS or int(match[1]) < 1:
            raise InvalidRequest(f"{text!r} is not a rate like 600/minute (per second, minute, hour or day)", rate=text)
        return cls(int(match[1]), _PERIODS[period])

    def __str__(self) -> str:
        names = {seconds: name for name, seconds in _PERIODS.items()}
        return f"{self.limit}/{names.get(self.window, f'{self.window:g}s')}"


class WindowCounter(Protocol):
    """Counts requests per key in fixed windows (the window's start identifies it)."""

    async def take(self, key: str, window_start: float, limit: int) -> int | None:
        """Count one request for `key` in the window starting at `window_start` (a later window
        starts the count again): the count after it, or None when `limit` was already reached."""
        ...


@runtime_checkable
class SharedRateWindows(Protocol):
    """A store keeping request counts for every process on it (PostgreSQL): the servers count there."""

    @property
    def rate_windows(self) -> WindowCounter: ...


@attrs.define
class _Window:
    start: float
    count: int = 0


class MemoryWindows:
    """A WindowCounter in this process's memory."""

    #: Past this many keys, windows that have ended are dropped.
    PRUNE_AT = 10_000

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}

    async def take(self, key: str, window_start: float, limit: int) -> int | None:
        window = self._windows.get(key)
        if window is None or window_start > window.start:
            if len(self._windows) > self.PRUNE_AT:
                self._prune(window_start)
            window = self._windows[key] = _Window(start=window_start)
        if window.count >= limit:
            return None
        window.count += 1
        return window.count

    def _prune(self, window_start: float) -> None:
        for key in [k for k, w in self._windows.items() if w.start < window_start]:
            del self._windows[key]


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
        windows: WindowCounter | None = None,
        refusal: Callable[[Request, Response], Response] | None = None,
    ) -> None:
        """`windows`: where the counts are kept (this process's memory by default).
        `refusal`: gives the 429 the error format of the API the request is for."""
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
        self.windows: WindowCounter = windows if windows is not None else MemoryWindows()
        self.refusal = refusal

    async def _take(self, key: str, now: float) -> tuple[bool, int, float]:
        """Count one request for `key`: (allowed, remaining, reset time)."""
        start = now - (now % self.window)
        # Counts of windows of another length (another process's setting, during a deploy) are kept apart.
        count = await self.windows.take(f"{self.window:g}s {key}", start, self.limit)
        reset = start + self.window
        if count is None:
            return False, 0, reset
        return True, self.limit - count, reset

    def routes(self) -> Iterator[tuple[str, str]]:
        listing = getattr(self.app, "routes", None)
        return listing() if listing is not None else iter([("*", "/*")])

    async def __call__(self, request: Request) -> Response | StreamResponse:
        if self.auth is not None and request.principal is None:
            try:
                request = await authenticate(self.auth, request)
            except HttpError:
                return await self.app(request)  # refused: the wrapped app answers (401 or an open route)
        if self.exempt is not None and self.exempt(request):
            return await self.app(request)
        now = self.clock()
        allowed, remaining, reset = await self._take(self.key(request), now)
        headers = ((_LIMIT, str(self.limit)), (_REMAINING, str(remaining)), (_RESET, str(math.ceil(reset))))
        if not allowed:
            retry_after = max(1, math.ceil(reset - now))
            refused = error_response(
                429,
                "rate_limited",
                f"too many requests: the limit is {self.limit} per {self.window:g} s",
                {"limit": self.limit, "window_seconds": self.window, "retry_after_seconds": retry_after},
                headers=(*headers, (_RETRY, str(retry_after))),
            )
            return self.refusal(request, refused) if self.refusal is not None else refused
        response = await self.app(attrs.evolve(request, rate_limit=(self.limit, self.window)))  # e.g. for an OpenAPI document
        return _with_headers(response, headers)


def _with_headers(response: Any, headers: tuple[tuple[str, str], ...]) -> Any:
    names = {name for name, _ in headers}
    kept = tuple((n, v) for n, v in response.headers if n.lower() not in names)
    return attrs.evolve(response, headers=(*kept, *headers))


__all__ = [
    "HEADERS",
    "RETRY_AFTER",
    "MemoryWindows",
    "Rate",
    "RateLimited",
    "SharedRateWindows",
    "WindowCounter",
    "principal_key",
]
