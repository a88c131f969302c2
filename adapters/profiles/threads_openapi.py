"""The /v1 Threads/Runs profile's OpenAPI 3.1 document (seed 004), served at /v1/openapi.json: its
response shapes, and the document generated from the routes' declarations (threads.py).

Schemas are JSON Schema 2020-12, so the tests validate real responses against them;
paths are relative to the mount (the document's `servers` names it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runengine.http.openapi import Operation, openapi_document, ref
from runengine.http.params import NO_CONTROL
from runengine.limits import MAX_ID_LENGTH

from .native_openapi import SCHEMAS as NATIVE_SCHEMAS, STATUSES

#: Path ids: 1 to MAX_ID_LENGTH characters without control characters (else a 400).
ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, **NO_CONTROL}
TIME = {"type": ["string", "null"], "format": "date-time"}
TEXT = {"type": ["string", "null"]}
INT = {"type": ["integer", "null"]}
NUMBER = {"type": ["number", "null"]}

#: An extension (seed 004 has no field for it; the prefix keeps it apart from any field the seed
#: may add): what a run in waiting_for_input asks for.
WAITING_FOR = "x_runengine_waiting_for"

ROW_FIELDS: dict[str, Any] = {
    "run_id": {"type": "string"},
    "org_id": TEXT,
    "thread_id": TEXT,
    "status": {"type": "string", "enum": list(STATUSES)},
    "model": TEXT,
    "persona_id": TEXT,
    "total_input_tokens": INT,
    "total_output_tokens": INT,
    "total_cost_usd": NUMBER,
    "duration_ms": INT,
    "cache_hit_rate": NUMBER,
    "credits_used": NUMBER,
    "created_at": TIME,
    "completed_at": TIME,
    "failed_at": TIME,
    "created_by_user_id": TEXT,
    "created_by_user_name": TEXT,
    "created_by_email": TEXT,
    WAITING_FOR: {
        "description": "extension (not in seed 004): while the run is waiting_for_input, what its agent asked for "
        "(the request of ctx.ask, any JSON, e.g. {\"question\", \"options\"} or a Pydantic AI "
        "{\"type\": \"approval\", \"tool\", \"arguments\", \"call_id\"}); null otherwise. "
        "Answer it with POST /runs/{run_id}/input"
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": NATIVE_SCHEMAS["Error"],
    "Created": {
        "type": "object",
        "required": ["run_id", "trace_id"],
        "properties": {"run_id": {"type": "string"}, "trace_id": {"type": "string"}},
    },
    "ThreadRun": {
        "type": "object",
        "required": ["run_id", "status", "created_at"],
        "properties": {k: ROW_FIELDS[k] for k in ("run_id", "status", "created_at")},
    },
    "RunRow": {"type": "object", "required": list(ROW_FIELDS), "properties": ROW_FIELDS},
    "RunDetail": {
        "type": "object",
        "required": ["run_id", "org_id", "thread_id", "created_by_user_id", "status", "created_at", "trace_id"],
        "properties": {**ROW_FIELDS, "trace_id": TEXT},
    },
    "Ok": {"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}}},
    "Event": {
        "type": "object",
        "required": ["seq", "type", "data", "created_at"],
        "properties": {
            "seq": {"type": "integer", "minimum": 1},
            "type": {"type": "string", "examples": ["run.started", "message.delta", "run.completed"]},
            "data": {"type": "object"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
}

SSE = {
    "text/event-stream": {
        "schema": {
            "description": "Frames `id: <seq>` and `data: <Event JSON>`; `: keep-alive` comments every 15 s; "
            "ends after the terminal event (at once for an ended run with nothing after the cursor).",
            "type": "object",
            "required": ["id", "data"],
            "properties": {
                "id": {"type": "string", "pattern": "^[0-9]+$"},
                "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": ref("Event")},
            },
        }
    }
}

ERRORS = {
    400: "invalid_request: malformed JSON, a wrong type, an unknown field or value",
    401: "authentication_error: missing or invalid credentials",
    404: "not_found: no such run, thread, agent or agent version (or not visible to this principal)",
    409: "invalid_transition: the run's state does not allow this (input while not waiting_for_input)",
    413: "payload_too_large: the body, or an input's content, is over its limit",
    422: "idempotency_error: the Idempotency-Key was used with a different request",
    429: "rate_limited: the principal already has the most event streams open at once",
}


def threads_openapi(
    routes: Iterable[tuple[str, str, Operation]], *, auth: bool, rate_limit: tuple[int, float] | None = None
) -> dict[str, Any]:
    """The document of `routes` (the profile's declared routes); with `auth`, every operation
    documents 401 and bearer security; `rate_limit`: the server's limit per principal (429 and
    X-RateLimit-* headers)."""
    return openapi_document(
        routes,
        info={"title": "runengine Threads/Runs API (seed 004)", "version": "1"},
        schemas=SCHEMAS,
        error_descriptions=ERRORS,
        auth=auth,
        path_parameter=ID,
        servers=("/v1",),
        rate_limit=rate_limit,
    )


__all__ = ["WAITING_FOR", "threads_openapi"]
