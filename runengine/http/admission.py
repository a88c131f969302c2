"""What a binding decides from a request's head, before it reads the body: the server-wide limits.

    admission = Admission(auth=hook)                  # the limits of runengine.limits by default
    admission.enter()                                 # 503 past the requests in progress ... leave()
    head = await admission.admit(head, address)       # 429: the address failed auth too often;
                                                      # 401: a body without valid credentials
    with admission.body(declared) as hold:            # 503 past the bytes of bodies being read at once
        hold.cover(size_so_far)                       # (a chunked body is held as it grows)
    admission.answered(address, response.status)      # a 401 counts against the address

So a client without a key makes the server read no body, a client guessing keys is slowed to
`auth_failures` guesses per window per address, and the memory bodies take while being read
is bounded over every connection at once. Refusals are HttpErrors in the one error format,
with Retry-After. Every count is this process's (one Admission per served app).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Mapping
from types import TracebackType

import attrs
import structlog

from ..errors import InvalidRequest
from ..limits import (
    AUTH_FAILURE_WINDOW,
    MAX_AUTH_FAILURES,
    MAX_BODY_BYTES,
    MAX_BODY_BYTES_IN_FLIGHT,
    MAX_CONNECTIONS,
)
from .auth import AuthHook, authenticate
from .core import HttpError, Request, Response
from .ratelimit import RETRY_AFTER, Rate

log = structlog.get_logger("runengine.http")
_RETRY = next(iter(RETRY_AFTER)).lower()
#: What a client refused for a busy server is told to wait (seconds).
BUSY_RETRY_AFTER = 1


@attrs.frozen(kw_only=True)
class ServerLimits:
    """The limits one server process applies over all its clients at once (defaults: runengine.limits)."""

    #: Connections (`runengine serve`) or requests in progress (the bindings) at once.
    connections: int = MAX_CONNECTIONS
    #: Bytes of request bodies being read at once.
    body_bytes_in_flight: int = MAX_BODY_BYTES_IN_FLIGHT
    #: Requests answered 401 per client address per window; None: not limited.
    auth_failures: Rate | None = Rate(MAX_AUTH_FAILURES, AUTH_FAILURE_WINDOW)

    def __attrs_post_init__(self) -> None:
        if self.connections < 1:
            raise InvalidRequest("connections must be at least 1", connections=self.connections)
        if self.body_bytes_in_flight < MAX_BODY_BYTES:  # else a body of the allowed size could never be read
            raise InvalidRequest(
                f"body_bytes_in_flight must be at least the largest body, {MAX_BODY_BYTES} bytes",
                body_bytes_in_flight=self.body_bytes_in_flight,
            )
        failures = self.auth_failures
        if failures is not None and not (failures.limit >= 1 and math.isfinite(failures.window) and failures.window > 0):
            raise InvalidRequest("auth_failures must be a Rate of at least 1 per a positive window (None: not limited)")


def server_busy(what: str, limit: int) -> HttpError:
    """503 for a server at one of its limits: the client should come back in a moment."""
    return HttpError(
        503,
        "server_busy",
        f"the server is at its limit of {limit} {what}; retry shortly",
        {"limit": limit, "retry_after_seconds": BUSY_RETRY_AFTER},
        headers=((_RETRY, str(BUSY_RETRY_AFTER)),),
    )


def announces_body(headers: Mapping[str, str]) -> bool:
    """Whether a request's headers say a body follows (a Content-Length above 0, or chunked)."""
    if "transfer-encoding" in headers:
        return True
    try:
        return int(headers.get("content-length") or 0) > 0
    except ValueError:
        return True  # the server refuses a malformed length; never take it for "no body"


def address_key(address: str | None) -> str:
    """Whose failures an address counts as: the address, an IPv6 one's /64 (one host has them all)."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # a unix socket path, or whatever the server reports
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class AuthFailures:
    """Requests answered 401, counted per client address in windows that start at its first failure.

    Memory is bounded: past MAX_ADDRESSES, ended windows are dropped, then the oldest."""

    MAX_ADDRESSES = 100_000

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window start, failures), oldest first

    def retry_after(self, address: str | None) -> float | None:
        """Seconds until `address` may try again; None when it is not refused."""
        if not self._windows:  # nobody has failed: no address to parse (every request asks)
            return None
        found = self._windows.get(address_key(address))
        if found is None:
            return None
        start, count = found
        left = start + self.window - self.clock()
        return left if left > 0 and count >= self.limit else None

    def failed(self, address: str | None) -> None:
        key, now = address_key(address), self.clock()
        start, count = self._windows.pop(key, (now, 0))
        if now >= start + self.window:
            start, count = now, 0
        self._windows[key] = (start, count + 1)
        if len(self._windows) > self.MAX_ADDRESSES:
            self._prune(now)

    def _prune(self, now: float) -> None:
        for key in [k for k, (start, _) in self._windows.items() if now >= start + self.window]:
            del self._windows[key]
        while len(self._windows) > self.MAX_ADDRESSES:
            del self._windows[next(iter(self._windows))]


class Admission:
    """One served app's server-wide limits (`limits`) and its auth hook, applied from a request's head."""

    def __init__(
        self,
        auth: AuthHook | None = None,
        limits: ServerLimits | None = None,
        *,
        refusal: Callable[[Request, Response], Response] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`refusal`: gives a refusal the error format of the API the request is for (as RateLimited's)."""
        self.auth = auth
        self.limits = limits if limits is not None else ServerLimits()
        self.refusal = refusal
        self.in_progress = 0
        #: Bytes of bodies held by requests whose body is being read.
        self.body_bytes = 0
        failures = self.limits.auth_failures
        self.failures = AuthFailures(failures.limit, failures.window, clock) if failures is not None else None

    def enter(self) -> None:
        """Count a request in (503 when `limits.connections` are in progress); `leave()` when it ends."""
        if self.in_progress >= self.limits.connections:
            raise server_busy("requests in progress", self.limits.connections)
        self.in_progress += 1

    def leave(self) -> None:
        self.in_progress -= 1

    async def admit(self, head: Request, address: str | None) -> Request:
        """`head` (a request without its body yet) with its principal, from its headers alone.

        429 for every request from an address that has failed authentication too often, until its
        window ends (the hook is not asked: no key is tried from there meanwhile). 401 when the hook
        refuses a request that announces a body (a failure; the body is never read). A refused
        request without a body goes on unauthenticated: the app answers it (an open route, or its
        own 401, which `answered` counts)."""
        if self._retry_after(address) is not None:
            raise self._too_many_failures(address)
        if self.auth is None:
            return head
        try:
            return await authenticate(self.auth, head)
        except HttpError:
            if announces_body(head.headers):
                self.answered(address, 401)
                raise
            return head
        except Exception:  # a bug in the hook, as the router answers one: logged, 500 in the error format
            log.exception("the auth hook failed", method=head.method, path=head.path)
            raise HttpError(500, "internal_error", "internal server error") from None

    def refused(self, head: Request, error: HttpError) -> Response:
        """The response refusing `head` with `error`, in the format of the API it is for."""
        response = error.response()
        return self.refusal(head, response) if self.refusal is not None else response

    def answered(self, address: str | None, status: int) -> None:
        """Note the status a request from `address` was answered with (a 401 is a failed authentication)."""
        if status == 401 and self.failures is not None:
            self.failures.failed(address)

    def _retry_after(self, address: str | None) -> float | None:
        return self.failures.retry_after(address) if self.failures is not None else None

    def _too_many_failures(self, address: str | None) -> HttpError:
        assert self.failures is not None
        seconds = max(1, math.ceil(self._retry_after(address) or 0))
        return HttpError(
            429,
            "rate_limited",
            f"too many failed authentications from this address: the limit is {self.failures.limit}"
            f" per {self.failures.window:g} s; retry in {seconds} s",
            {"limit": self.failures.limit, "window_seconds": self.failures.window, "retry_after_seconds": seconds},
            headers=((_RETRY, str(seconds)),),
        )

    def body(self, declared: int | None) -> BodyHold:
        """Hold `declared` bytes (a Content-Length; None or 0 for none yet) of the bytes bodies may
        take at once while one is read: 503 when they are not free."""
        return BodyHold(self, declared or 0)


class BodyHold:
    """Bytes one request's body holds of its Admission's `body_bytes_in_flight`, until released."""

    def __init__(self, admission: Admission, size: int) -> None:
        self._admission = admission
        self.size = 0
        self.cover(size)

    def cover(self, total: int) -> None:
        """Hold at least `total` bytes (a chunked body as it grows): 503 when they are not free."""
        extra = total - self.size
        if extra <= 0:
            return
        admission = self._admission
        if admission.body_bytes + extra > admission.limits.body_bytes_in_flight:
            raise server_busy("bytes of request bodies being read", admission.limits.body_bytes_in_flight)
        admission.body_bytes += extra
        self.size = total

    def release(self) -> None:
        self._admission.body_bytes -= self.size
        self.size = 0

    def __enter__(self) -> BodyHold:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


__all__ = [
    "Admission",
    "AuthFailures",
    "BodyHold",
    "ServerLimits",
    "address_key",
    "announces_body",
    "server_busy",
]
