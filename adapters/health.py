"""Health endpoints for load balancers and orchestrators: no auth, tiny answers.

    GET /healthz   200 while the process serves HTTP (liveness)
    GET /readyz    200 when the engine is started and its store answers with the schema this
                   version expects; 503 in the one error format otherwise (readiness)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import anyio

from runengine.engine import RunEngine
from runengine.http.core import Request, Response, error_response, json_response
from runengine.http.router import Router
from runengine.ports import port_of

#: Seconds the store has to answer a readiness probe.
READY_TIMEOUT = 2.0
#: A run id that no run has: reading it proves the store answers and its tables exist.
_PROBE_RUN_ID = "runengine-readyz-probe"


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"}, headers=(("cache-control", "no-store"),))


def add_health(router: Router, engine: RunEngine) -> None:
    """GET /healthz and GET /readyz on `router`."""

    async def readyz(request: Request) -> Response:
        problem = await not_ready(engine)
        if problem is not None:
            return error_response(503, "not_ready", problem, headers=(("cache-control", "no-store"), ("retry-after", "1")))
        return json_response({"status": "ready"}, headers=(("cache-control", "no-store"),))

    router.route("GET", "/healthz", healthz)
    router.route("GET", "/readyz", readyz)


@runtime_checkable
class SchemaVersioned(Protocol):
    """A store whose schema other processes may migrate while this one runs (PostgreSQL)."""

    async def schema_current(self) -> bool:
        """Whether the schema is the version this runengine writes."""
        ...


async def not_ready(engine: RunEngine) -> str | None:
    """Why `engine` cannot take requests now (None: it can)."""
    if not engine.running:
        return "the engine is not started (or is stopping)"
    try:
        with anyio.fail_after(READY_TIMEOUT):
            await engine.store.get_run(_PROBE_RUN_ID)
            versioned = port_of(engine.store, SchemaVersioned)
            if versioned is not None and not await versioned.schema_current():
                return "the store's schema is not the version this runengine writes (migrations pending or newer)"
    except TimeoutError:
        return f"the store did not answer within {READY_TIMEOUT:g} s"
    except Exception as exc:  # the engine's StoreError, or a driver's own (asyncpg, sqlite3, OSError ...)
        return f"the store is unreachable: {type(exc).__name__}: {exc}"
    return None


__all__ = ["SchemaVersioned", "add_health", "healthz", "not_ready"]
