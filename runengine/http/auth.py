"""The optional auth hook: given the request headers, it returns a principal or refuses (401).

    def auth(headers):                       # may also be `async def`
        token = headers.get("authorization", "")
        return USERS.get(token.removeprefix("Bearer "))   # None refuses

The principal becomes the owner of the runs the request creates; a run is only
visible to the principal that owns it (others get 404, as if it did not exist).
A hook may return a plain string, or a `Principal` when it knows more about the caller
(organization, name, e-mail: what the /v1 profile reports as `org_id` and `created_by_*`).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from .core import Handler, HttpError, Request, Response, StreamResponse

AuthHook = Callable[[Mapping[str, str]], "Any | Awaitable[Any]"]


@attrs.frozen(kw_only=True)
class Principal:
    """Who a request comes from, as an auth hook may describe it; `id` is the owner of what it creates."""

    id: str
    org_id: str | None = None
    user_name: str | None = None
    email: str | None = None

    def __str__(self) -> str:
        return self.id


class AuthenticationFailed(Exception):
    """Raise from an auth hook to refuse with a specific message."""


def refused(message: str = "missing or invalid credentials") -> HttpError:
    return HttpError(401, "authentication_error", message, headers=(("www-authenticate", "Bearer"),))


async def authenticate(hook: AuthHook | None, request: Request) -> Request:
    """The request with `principal` set by the hook; a 401 HttpError when it refuses."""
    if hook is None or request.principal is not None:  # no auth, or an outer layer authenticated already
        return request
    try:
        principal = hook(request.headers)
        if inspect.isawaitable(principal):
            principal = await principal
    except AuthenticationFailed as exc:
        raise refused(str(exc) or "authentication failed") from None
    if principal is None or principal is False:
        raise refused()
    return attrs.evolve(request, principal=principal)


def guarded(hook: AuthHook | None, handler: Handler) -> Handler:
    """`handler` behind the auth hook: every profile's routes go through this (401 when it refuses)."""

    async def run(request: Request) -> Response | StreamResponse:
        return await handler(await authenticate(hook, request))

    return run


def owner_of(principal: Any) -> str | None:
    """The owner string recorded on runs for a principal (None when auth is off)."""
    if principal is None:
        return None
    return principal.id if isinstance(principal, Principal) else str(principal)
