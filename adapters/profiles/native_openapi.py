"""The native API's OpenAPI 3.1 document (served at GET /openapi.json): its response shapes, and
the document generated from the routes' declarations (`runengine.http.openapi`).

Schemas are plain JSON Schema (2020-12), so tests validate real responses against them. Request
bodies and query parameters are not here: native.py declares them with the specs it parses with.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from runengine.status import Status
from runengine.http.openapi import Operation, openapi_document, ref as _ref
from runengine.http.limits import MAX_HISTORY_PAGE

STATUSES = [s.value for s in Status]


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


TIME = _nullable({"type": "string", "format": "date-time"})
ERROR_INFO = _nullable(
    {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    }
)

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            }
        },
    },
    "Run": {
        "type": "object",
        "required": [
            "run_id", "agent", "status", "session_id", "input", "metadata", "mode", "output", "error",
            "await_request", "cancel_reason", "messages", "tool_calls", "usage", "attempt",
            "start_at", "sleeping_until", "input_expires_at", "suspended", "discarded_messages", "waiting_for_agent",
            "parent_run_id", "children", "signals", "waiting_for", "priority", "created_at", "started_at", "finished_at", "updated_at", "last_seq",
        ],
        "properties": {
            "run_id": {"type": "string"},
            "agent": {"type": "string"},
            "status": {"type": "string", "enum": STATUSES},
            "session_id": _nullable({"type": "string"}),
            "input": {},
            "metadata": {"type": "object"},
            "mode": {"type": "string"},
            "output": {},
            "error": ERROR_INFO,
            "await_request": {},
            "cancel_reason": _nullable({"type": "string"}),
            "messages": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["message_id", "role", "content"],
                    "properties": {
                        "message_id": {"type": "string"},
                        "role": {"type": "string"},
                        "content": {"type": "string"},
                    },
                },
            },
            "tool_calls": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["call_id", "name", "arguments", "done", "output", "error"],
                    "properties": {
                        "call_id": {"type": "string"},
                        "name": {"type": "string"},
                        "arguments": {"type": "object"},
                        "done": {"type": "boolean"},
                        "output": {},
                        "error": ERROR_INFO,
                    },
                },
            },
            "usage": {
                "type": "object",
                "required": ["input_tokens", "output_tokens", "cost"],
                "properties": {
                    "input_tokens": {"type": "integer"},
                    "output_tokens": {"type": "integer"},
                    "cost": {"type": "number"},
                },
            },
            "attempt": {"type": "integer", "minimum": 0},
            "start_at": TIME,
            "sleeping_until": TIME,
            "input_expires_at": TIME,
            "suspended": {"type": "boolean", "description": "left by a graceful stop for the next engine to resume"},
            "discarded_messages": {
                "type": "array",
                "items": {"type": "string"},
                "description": "ids of messages a resumed run dropped (their deltas are not part of the output)",
            },
            "waiting_for_agent": {
                **_nullable({"type": "boolean"}),
                "description": "unfinished, and the serving engine does not have its agent: it stays as it is until an "
                "engine that has the agent starts (null on a shared store, where another worker may have it)",
            },
            "parent_run_id": {**_nullable({"type": "string"}), "description": "the run that spawned this one (ctx.spawn)"},
            "children": {
                "type": "array",
                "description": "the child runs this run spawned, in spawn order; status null until its join saw it end",
                "items": {
                    "type": "object",
                    "required": ["run_id", "agent", "status", "output", "error"],
                    "properties": {
                        "run_id": {"type": "string"},
                        "agent": {"type": "string"},
                        "status": _nullable({"type": "string", "enum": ["completed", "failed", "cancelled"]}),
                        "output": {},
                        "error": ERROR_INFO,
                    },
                },
            },
            "signals": {
                "type": "array",
                "description": "the signals sent to this run, in arrival order, and whether its agent took each",
                "items": {
                    "type": "object",
                    "required": ["signal_id", "name", "taken"],
                    "properties": {
                        "signal_id": {"type": "string"},
                        "name": {"type": "string"},
                        "taken": {"type": "boolean"},
                    },
                },
            },
            "waiting_for": {
                **_nullable({"type": "string", "enum": ["concurrency", "rate", "schedule"]}),
                "description": "why a pending run has not started (flow control, start_at, debounce); "
                "null when nothing holds it back (given by GET /runs/{run_id})",
            },
            "priority": {"type": "integer", "description": "among its agent's runs waiting for a slot, higher starts first"},
            "created_at": TIME,
            "started_at": TIME,
            "finished_at": TIME,
            "updated_at": TIME,
            "last_seq": {"type": "integer", "minimum": 1},
            "forked_from": {
                **_nullable({
                    "type": "object",
                    "required": ["run_id", "seq"],
                    "properties": {"run_id": {"type": "string"}, "seq": {"type": "integer", "minimum": 1}},
                }),
                "description": "a fork (POST /runs/{run_id}/fork): its log begins with this run's events up to seq",
            },
        },
    },
    "ChildList": {
        "type": "object",
        "required": ["runs"],
        "properties": {"runs": {"type": "array", "items": _ref("RunSummary")}},
    },
    "SignalReceipt": {
        "type": "object",
        "required": ["run_id", "signal_id", "name", "seq"],
        "properties": {
            "run_id": {"type": "string"},
            "signal_id": {"type": "string"},
            "name": {"type": "string"},
            "seq": {"type": "integer", "minimum": 1, "description": "the signal.received event's seq in the run's log"},
        },
    },
    "RunSummary": {
        "type": "object",
        "required": ["run_id", "agent", "status", "session_id", "created_at", "updated_at", "last_seq"],
        "properties": {
            "run_id": {"type": "string"},
            "agent": {"type": "string"},
            "status": {"type": "string", "enum": STATUSES},
            "session_id": _nullable({"type": "string"}),
            "created_at": TIME,
            "updated_at": TIME,
            "last_seq": {"type": "integer", "minimum": 0},
        },
    },
    "RunList": {
        "type": "object",
        "required": ["runs", "next_before"],
        "properties": {
            "runs": {"type": "array", "items": _ref("RunSummary")},
            "next_before": _nullable({"type": "string"}),
        },
    },
    "Event": {
        "type": "object",
        "required": ["seq", "type", "run_id", "at", "data"],
        "properties": {
            "seq": {"type": "integer", "minimum": 1},
            "type": {"type": "string"},
            "run_id": {"type": "string"},
            "at": {"type": "string", "format": "date-time"},
            "data": {"type": "object"},
        },
    },
    "EventPage": {
        "type": "object",
        "required": ["run_id", "events", "next_after_seq", "ended"],
        "properties": {
            "run_id": {"type": "string"},
            "events": {"type": "array", "items": _ref("Event")},
            "next_after_seq": {"type": "integer", "minimum": 0},
            "ended": {"type": "boolean"},
        },
    },
    "Session": {
        "type": "object",
        "required": ["session_id", "status", "user_id", "created_at", "expires_at", "ended_at", "metadata", "runs"],
        "properties": {
            "session_id": {"type": "string"},
            "status": {
                "type": "string",
                "enum": ["active", "ended", "expired"],
                "description": "only an active session takes new runs",
            },
            "user_id": _nullable({"type": "string"}),
            "created_at": TIME,
            "expires_at": TIME,
            "ended_at": TIME,
            "metadata": {"type": "object"},
            "runs": {
                "type": "object",
                "description": "the session's runs visible to the caller, counted",
                "required": ["count", "by_status"],
                "properties": {
                    "count": {"type": "integer", "minimum": 0},
                    "by_status": {
                        "type": "object",
                        "propertyNames": {"enum": STATUSES},
                        "additionalProperties": {"type": "integer", "minimum": 1},
                    },
                },
            },
        },
    },
    "History": {
        "type": "object",
        "required": ["session_id", "messages", "next"],
        "properties": {
            "session_id": {"type": "string"},
            "next": _nullable({"type": "string", "description": "the cursor of the page of older messages"}),
            "messages": {
                "type": "array",
                "maxItems": MAX_HISTORY_PAGE,
                "items": {
                    "type": "object",
                    "required": ["role", "content", "run_id", "agent", "at"],
                    "properties": {
                        "role": {"type": "string"},
                        "content": {},
                        "run_id": {"type": "string"},
                        "agent": _nullable({"type": "string"}),
                        "at": TIME,
                    },
                },
            },
        },
    },
    "AgentList": {
        "type": "object",
        "required": ["agents"],
        "properties": {
            "agents": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "description", "metadata"],
                    "properties": {
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                        "metadata": {"type": "object"},
                    },
                },
            }
        },
    },
}

SSE = {
    "text/event-stream": {
        # One parsed SSE event (OpenAPI 3.1 has no itemSchema: tools read `schema` per event).
        "schema": {
            "description": "Frames `id: <seq>`, `event: <type>`, `data: <Event JSON>`; `: keep-alive` "
            "comments every 15 s; a first `retry: 1000`; the stream ends after the terminal event. "
            "On a server failure: `event: stream.error` with an Error body.",
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "id": {"type": "string", "pattern": "^[0-9]+$"},
                "event": {"type": "string", "minLength": 1},
                "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": _ref("Event")},
                "retry": {"type": "integer"},
            },
        }
    }
}


#: What each error status of the native API means (every one in the common error format).
ERRORS = {
    400: "invalid_request: malformed JSON, a wrong type, an unknown field or value, a size limit",
    401: "authentication_error: the auth hook refused the request",
    404: "not_found: no such run, session or agent (or not visible to this principal)",
    408: "request_timeout: the body did not arrive within the server's body timeout",
    409: "conflict: the run's or session's state does not allow this (or the caller already has a session of that id)",
    413: "payload_too_large: the body is larger than the limit",
    422: "idempotency_error: the Idempotency-Key was used with a different request",
    429: "rate_limited: the principal already has the most event streams, or sync requests, open at once (Retry-After)",
}

#: What a client can do next with the run_id a response names (OpenAPI links).
RUN_LINKS = {
    op: {"operationId": op, "parameters": {"run_id": "$response.body#/run_id"}}
    for op in ("getRun", "getRunEvents", "cancelRun", "giveInput", "deleteRun", "sendSignal", "listChildren")
}

#: What a client can do next with the session a response names.
SESSION_LINKS = {
    op: {"operationId": op, "parameters": {"session_id": "$response.body#/session_id"}}
    for op in ("getSession", "endSession", "getSessionHistory")
}

#: Path ids: a longer one, or one with control characters, is simply not found.
PATH_ID = {"type": "string", "minLength": 1}


def native_openapi(
    routes: Iterable[tuple[str, str, Operation]],
    *,
    auth: bool = False,
    agents: tuple[str, ...] = (),
    rate_limit: tuple[int, float] | None = None,
) -> dict[str, Any]:
    """The document of `routes` (the native API's declared routes); with `auth`, every API operation
    also documents 401 and bearer security. `agents` (the startable agent names) become examples of
    the `agent` field; `rate_limit`: the server's limit per principal (429 and X-RateLimit-* headers)."""
    doc = openapi_document(
        routes,
        info={
            "title": "runengine native API",
            "version": "1",
            "description": "Runs of agents as gapless event logs. Errors: "
            '{"error": {"code", "message", "details"}}. Reference: docs/http.md.',
        },
        schemas=json.loads(json.dumps(SCHEMAS)),  # a copy this call may annotate
        error_descriptions=ERRORS,
        auth=auth,
        path_parameter=PATH_ID,
        rate_limit=rate_limit,
    )
    create = doc["components"]["schemas"].get("CreateRun")
    if agents and create is not None:
        create["properties"]["agent"]["examples"] = list(agents)
        create["examples"] = [{"agent": agents[0], "input": "hello", "mode": "async"}]
    return doc
