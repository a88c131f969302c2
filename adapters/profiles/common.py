"""What every profile shares: run visibility, field checks, idempotency and session policy."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, cast

from runengine.engine import SESSION_POLICIES, SessionPolicy
from runengine.idempotency import fingerprint
from runengine.http.auth import AuthHook, owner_of
from runengine.http.core import HttpError, Request
from runengine.wire import dumps

#: Largest Idempotency-Key accepted.
MAX_KEY_LENGTH = 200


def invalid(message: str, **details: Any) -> HttpError:
    return HttpError(400, "invalid_request", message, details)


def request_owner(auth: AuthHook | None, request: Request) -> str | None:
    return owner_of(request.principal) if auth is not None else None


def request_fingerprint(target: Any, body: Mapping[str, Any], delivery: Collection[str] = ()) -> str:
    """What an Idempotency-Key is checked against: what the request acts on (`target`: e.g. the
    app named in its path) and its parsed body, less the `delivery` fields that only say how the
    answer comes back (a retry may ask for a stream of the same run). Anything else with the
    same key is a 422 (runengine.idempotency)."""
    return fingerprint([target, {k: v for k, v in body.items() if k not in delivery}])


def idempotency_key(request: Request) -> str | None:
    key = request.header("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise invalid(f"the Idempotency-Key header must be 1 to {MAX_KEY_LENGTH} characters", header="Idempotency-Key")
    return key


def session_policy(value: Any, field: str) -> SessionPolicy | None:
    """A per-session concurrency policy: allow, reject (409), enqueue or interrupt."""
    if value is None:
        return None
    if value not in SESSION_POLICIES:
        raise invalid(
            f"{field} must be one of {', '.join(SESSION_POLICIES)}; got {dumps(value)[:60]}",
            field=field,
            allowed=list(SESSION_POLICIES),
        )
    return cast(SessionPolicy, value)


def boolean(value: Any, field: str, default: bool = False) -> bool:
    """A flag; the seeds' samples also send "true"/"false" as strings."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid(f"{field} must be true or false", field=field)
