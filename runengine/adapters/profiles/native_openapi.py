"""The OpenAPI 3.1 document of the native API (served at GET /openapi.json).

Schemas are plain JSON Schema (2020-12), so tests validate real responses against
them. Keep this in step with `native.py`: the tests check both ways.
"""

from __future__ import annotations

import json
from typing import Any

from runengine.engine import MODES, SESSION_POLICIES
from runengine.status import Status
from runengine.http.limits import (
    DEFAULT_EVENTS_LIMIT,
    DEFAULT_RUNS_LIMIT,
    MAX_BODY_BYTES,
    MAX_CONTENT_BYTES,
    MAX_EVENTS_LIMIT,
    MAX_ID_LENGTH,
    MAX_INPUT_BYTES,
    MAX_METADATA_BYTES,
    MAX_REASON_LENGTH,
    MAX_RUNS_LIMIT,
    MAX_SEQ,
    MAX_SESSION_METADATA_BYTES,
    MAX_SESSION_TTL,
    MAX_START_DELAY,
    MAX_TIMEOUT,
)

STATUSES = [s.value for s in Status]
#: Ids and short texts: no control characters (they could not be stored by every store).
NO_CONTROL = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


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
    "CreateRun": {
        "type": "object",
        "required": ["agent"],
        "additionalProperties": False,
        "properties": {
            "agent": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": NO_CONTROL},
            "input": {"description": f"any JSON value, at most {MAX_INPUT_BYTES} bytes encoded"},
            "session_id": _nullable({"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": NO_CONTROL}),
            "mode": _nullable({"type": "string", "enum": list(MODES), "default": "sync"}),
            "metadata": _nullable({"type": "object", "description": f"at most {MAX_METADATA_BYTES} bytes encoded"}),
            "timeout": _nullable({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT}),
            "start_at": _nullable(
                {
                    "type": "string",
                    "format": "date-time",
                    "maxLength": 40,
                    "description": f"a delayed run: pending until this time (with an offset), at most {MAX_START_DELAY:g} s ahead",
                }
            ),
            "idempotency_key": _nullable({"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": NO_CONTROL}),
            "session_policy": _nullable({"type": "string", "enum": list(SESSION_POLICIES)}),
            "on_disconnect": _nullable({"type": "string", "enum": ["continue", "cancel"], "default": "continue"}),
        },
    },
    "Input": {
        "type": "object",
        "required": ["content"],
        "additionalProperties": False,
        "properties": {
            "content": {
                "not": {"type": "null"},
                "description": f"any JSON value but null, at most {MAX_CONTENT_BYTES} bytes encoded",
            }
        },
    },
    "Cancel": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "reason": _nullable({"type": "string", "minLength": 1, "maxLength": MAX_REASON_LENGTH, "pattern": NO_CONTROL})
        },
    },
    "Run": {
        "type": "object",
        "required": [
            "run_id", "agent", "status", "session_id", "input", "metadata", "mode", "output", "error",
            "await_request", "cancel_reason", "messages", "tool_calls", "usage", "attempt",
            "start_at", "sleeping_until", "input_expires_at", "suspended", "discarded_messages", "waiting_for_agent",
            "created_at", "started_at", "finished_at", "updated_at", "last_seq",
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
            "created_at": TIME,
            "started_at": TIME,
            "finished_at": TIME,
            "updated_at": TIME,
            "last_seq": {"type": "integer", "minimum": 1},
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
    "CreateSession": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "session_id": _nullable(
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_ID_LENGTH,
                    "pattern": NO_CONTROL,
                    "description": "omitted: the server picks one (sess_...); taken: 409",
                }
            ),
            "metadata": _nullable({"type": "object", "description": f"at most {MAX_SESSION_METADATA_BYTES} bytes encoded"}),
            "ttl": _nullable(
                {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": MAX_SESSION_TTL,
                    "description": "seconds until the session expires (then it takes no new runs); omitted: never",
                }
            ),
            "user_id": _nullable({"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": NO_CONTROL}),
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
        "required": ["session_id", "messages"],
        "properties": {
            "session_id": {"type": "string"},
            "messages": {
                "type": "array",
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


def _errors(*statuses: int) -> dict[str, Any]:
    names = {
        400: "invalid_request: malformed JSON, a wrong type, an unknown field or value, a size limit",
        401: "authentication_error: the auth hook refused the request",
        404: "not_found: no such run, session or agent (or not visible to this principal)",
        409: "conflict: the run's or session's state does not allow this (or the session id is taken)",
        408: "request_timeout: the body did not arrive within the server's body timeout",
        413: "payload_too_large: the body is larger than the limit",
        422: "idempotency_error: the Idempotency-Key was used with a different request",
        429: "rate_limited: the principal already has the most event streams open at once (Retry-After)",
    }
    return {str(s): _json(_ref("Error"), names[s]) for s in statuses}


#: What a client can do next with the run_id a response names (OpenAPI links).
RUN_LINKS = {
    op: {"operationId": op, "parameters": {"run_id": "$response.body#/run_id"}}
    for op in ("getRun", "getRunEvents", "cancelRun", "giveInput", "deleteRun")
}

#: What a client can do next with the session a response names.
SESSION_LINKS = {
    op: {"operationId": op, "parameters": {"session_id": "$response.body#/session_id"}}
    for op in ("getSession", "endSession", "getSessionHistory")
}

SESSION_ID = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}

RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def native_openapi(*, auth: bool = False, agents: tuple[str, ...] = ()) -> dict[str, Any]:
    """The document; with `auth`, every API operation also documents 401 and bearer security.
    `agents` (the startable agent names) become examples of the `agent` field."""
    extra = (401,) if auth else ()
    schemas = json.loads(json.dumps(SCHEMAS))  # a copy this call may annotate
    if agents:
        schemas["CreateRun"]["properties"]["agent"]["examples"] = list(agents)
        schemas["CreateRun"]["examples"] = [{"agent": agents[0], "input": "hello", "mode": "async"}]

    def errors(*statuses: int) -> dict[str, Any]:
        return _errors(*sorted((*statuses, *extra)))

    paths: dict[str, Any] = {
        "/runs": {
            "post": {
                "operationId": "createRun",
                "summary": "Start a run (mode sync, async or stream)",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": NO_CONTROL},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "description": f"at most {MAX_BODY_BYTES} bytes",
                    "content": {"application/json": {"schema": _ref("CreateRun")}},
                },
                "responses": {
                    "200": {
                        "description": "sync: the run once it ended or waits for input; "
                        "stream: its events from seq 1 as SSE",
                        "content": {"application/json": {"schema": _ref("Run")}, **SSE},
                        "links": RUN_LINKS,
                    },
                    "202": {**_json(_ref("Run"), "async: the run, pending"), "links": RUN_LINKS},
                    **errors(400, 404, 408, 409, 413, 422, 429),
                },
            },
            "get": {
                "operationId": "listRuns",
                "summary": "List runs, newest first",
                "parameters": [
                    {
                        "name": "session_id",
                        "in": "query",
                        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": NO_CONTROL},
                    },
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": STATUSES}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_RUNS_LIMIT, "default": DEFAULT_RUNS_LIMIT},
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "description": "the next_before of the previous page",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    },
                ],
                "responses": {"200": _json(_ref("RunList"), "a page of runs"), **errors(400)},
            },
        },
        "/runs/{run_id}": {
            "get": {
                "operationId": "getRun",
                "summary": "The run object",
                "parameters": [RUN_ID],
                "responses": {"200": _json(_ref("Run"), "the run"), **errors(404)},
            },
            "delete": {
                "operationId": "deleteRun",
                "summary": "Delete an ended run: its events, snapshot and idempotency records",
                "parameters": [RUN_ID],
                "responses": {
                    "204": {"description": "deleted; the run is not found from now on"},
                    **errors(404, 409),
                },
            },
        },
        "/runs/{run_id}/events": {
            "get": {
                "operationId": "getRunEvents",
                "summary": "The run's events after a seq: a JSON page, or SSE live until the end",
                "parameters": [
                    RUN_ID,
                    {"name": "after_seq", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ, "default": 0}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS_LIMIT, "default": DEFAULT_EVENTS_LIMIT},
                    },
                    {"name": "on_disconnect", "in": "query", "schema": {"type": "string", "enum": ["continue", "cancel"]}},
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[0-9]{0,18}$"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "JSON page, or with Accept: text/event-stream an SSE stream",
                        "content": {"application/json": {"schema": _ref("EventPage")}, **SSE},
                    },
                    "204": {"description": "SSE only: the run has ended and nothing comes after the cursor"},
                    **errors(400, 404, 429),
                },
            }
        },
        "/runs/{run_id}/cancel": {
            "post": {
                "operationId": "cancelRun",
                "summary": "Cancel the run (idempotent: an ended run is returned as it is)",
                "parameters": [RUN_ID],
                "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("Cancel")}}},
                "responses": {"200": _json(_ref("Run"), "the run after the cancel"), **errors(400, 404, 408, 413)},
            }
        },
        "/runs/{run_id}/input": {
            "post": {
                "operationId": "giveInput",
                "summary": "Give input to a run waiting for it",
                "parameters": [RUN_ID],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Input")}}},
                "responses": {"200": _json(_ref("Run"), "the run with the input recorded"), **errors(400, 404, 408, 409, 413)},
            }
        },
        "/sessions": {
            "post": {
                "operationId": "createSession",
                "summary": "Create a session, owned by the caller",
                "requestBody": {
                    "required": False,
                    "description": "every field is optional; no body is an empty object",
                    "content": {"application/json": {"schema": _ref("CreateSession")}},
                },
                "responses": {
                    "201": {**_json(_ref("Session"), "the new session"), "links": SESSION_LINKS},
                    **errors(400, 408, 409, 413),
                },
            }
        },
        "/sessions/{session_id}": {
            "get": {
                "operationId": "getSession",
                "summary": "The session, with its runs counted by status",
                "parameters": [SESSION_ID],
                "responses": {"200": _json(_ref("Session"), "the session"), **errors(404)},
            },
            "delete": {
                "operationId": "endSession",
                "summary": "End the session (idempotent): its active runs are cancelled, new ones refused",
                "parameters": [SESSION_ID],
                "responses": {"200": _json(_ref("Session"), "the ended session"), **errors(404)},
            },
        },
        "/sessions/{session_id}/history": {
            "get": {
                "operationId": "getSessionHistory",
                "summary": "The messages of a session's runs, oldest first",
                "parameters": [SESSION_ID],
                "responses": {"200": _json(_ref("History"), "the history"), **errors(404)},
            }
        },
        "/agents": {
            "get": {
                "operationId": "listAgents",
                "summary": "The agents this engine runs",
                "responses": {"200": _json(_ref("AgentList"), "the agents"), **errors()},
            }
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "runengine native API",
            "version": "1",
            "description": "Runs of agents as gapless event logs. Errors: "
            '{"error": {"code", "message", "details"}}. Reference: docs/http.md.',
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
