"""The OpenAPI 3.1 document of the /v1 Threads/Runs profile (seed 004), served at /v1/openapi.json.

Schemas are JSON Schema 2020-12, so the tests validate real responses against them;
paths are relative to the mount (the document's `servers` names it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runengine.http.limits import DEFAULT_RUNS_LIMIT, MAX_CONTENT_BYTES, MAX_ID_LENGTH, MAX_INPUT_BYTES, MAX_RUNS_LIMIT, MAX_SEQ

from .native_openapi import NO_CONTROL, SCHEMAS as NATIVE_SCHEMAS, STATUSES

if TYPE_CHECKING:
    from .threads import ThreadsProfile

ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": NO_CONTROL}
TIME = {"type": ["string", "null"], "format": "date-time"}
TEXT = {"type": ["string", "null"]}
INT = {"type": ["integer", "null"]}
NUMBER = {"type": ["number", "null"]}

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
}

SCHEMAS: dict[str, Any] = {
    "Error": NATIVE_SCHEMAS["Error"],
    "CreateRun": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "route_id": {**ID, "description": "provider route id; reaches the agent in ctx.metadata"},
            "persona_id": {
                "type": ["string", "null"],
                "maxLength": MAX_ID_LENGTH,
                "description": "persona_key@version: runs the agent named persona_key; empty: the default agent",
            },
            "input": {"description": f"the agent's ctx.input (any JSON, at most {MAX_INPUT_BYTES} bytes); an extension"},
        },
    },
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
    "Input": {
        "type": "object",
        "required": ["content"],
        "additionalProperties": False,
        "properties": {"content": {"type": "string", "description": f"at most {MAX_CONTENT_BYTES} bytes (UTF-8)"}},
    },
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
                "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {"$ref": "#/components/schemas/Event"}},
            },
        }
    }
}

ERRORS = {
    400: "invalid_request: malformed JSON, a wrong type, an unknown field or value",
    401: "authentication_error: missing or invalid credentials",
    404: "not_found: no such run, thread or agent (or not visible to this principal)",
    409: "invalid_transition: the run's state does not allow this (input while not waiting_for_input)",
    413: "payload_too_large: the body, or an input's content, is over its limit",
    422: "idempotency_error: the Idempotency-Key was used with a different request",
    429: "rate_limited: the principal already has the most event streams open at once",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def threads_openapi(profile: ThreadsProfile | None = None, *, auth: bool | None = None) -> dict[str, Any]:
    """The document; with auth on (the profile's hook, or `auth`), every operation documents 401 and bearer security."""
    secured = auth if auth is not None else (profile is not None and profile.auth is not None)

    def errors(*statuses: int) -> dict[str, Any]:
        return {str(s): _json(_ref("Error"), ERRORS[s]) for s in sorted({*statuses, *((401,) if secured else ())})}

    def path_id(name: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "schema": ID}

    limit = {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_RUNS_LIMIT, "default": DEFAULT_RUNS_LIMIT},
    }
    paths: dict[str, Any] = {
        "/threads/{thread_id}/runs": {
            "parameters": [path_id("thread_id")],
            "post": {
                "operationId": "createRun",
                "summary": "Start a run in the thread (begun by its first run); it executes in the background",
                "parameters": [
                    {"name": "Idempotency-Key", "in": "header", "required": False, "description": "a retry with it gets the same run", "schema": ID}
                ],
                "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("CreateRun")}}},
                "responses": {"201": _json(_ref("Created"), "the run was created"), **errors(400, 404, 409, 413, 422)},
            },
            "get": {
                "operationId": "listThreadRuns",
                "summary": "The thread's runs, newest first",
                "parameters": [limit],
                "responses": {"200": _json({"type": "array", "items": _ref("ThreadRun")}, "runs"), **errors(400, 404)},
            },
        },
        "/runs": {
            "get": {
                "operationId": "listRuns",
                "summary": "The principal's runs, newest first",
                "parameters": [
                    limit,
                    {"name": "before", "in": "query", "description": "a run_id: list the runs older than it", "schema": ID},
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)}},
                ],
                "responses": {"200": _json({"type": "array", "items": _ref("RunRow")}, "runs"), **errors(400, 404)},
            }
        },
        "/runs/{run_id}": {
            "parameters": [path_id("run_id")],
            "get": {
                "operationId": "getRun",
                "summary": "A run",
                "responses": {"200": _json(_ref("RunDetail"), "the run"), **errors(400, 404)},
            },
        },
        "/runs/{run_id}:cancel": {
            "parameters": [path_id("run_id")],
            "post": {
                "operationId": "cancelRun",
                "summary": "Cancel a run (an ended run stays as it is)",
                "responses": {"200": _json(_ref("Ok"), "cancelled"), **errors(400, 404)},
            },
        },
        "/runs/{run_id}/input": {
            "parameters": [path_id("run_id")],
            "post": {
                "operationId": "submitInput",
                "summary": "Give input to a run in waiting_for_input",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Input")}}},
                "responses": {"200": _json(_ref("Ok"), "the input was recorded"), **errors(400, 404, 409, 413)},
            },
        },
        "/runs/{run_id}/events": {
            "parameters": [path_id("run_id")],
            "get": {
                "operationId": "runEvents",
                "summary": "The run's events as SSE, after `after_seq` (or Last-Event-ID)",
                "parameters": [
                    {"name": "after_seq", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}},
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string", "pattern": "^[0-9]+$"}},
                ],
                "responses": {"200": {"description": "the event stream", "content": SSE}, **errors(400, 404, 429)},
            },
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "the OpenAPI document"), **errors()},
            }
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "runengine Threads/Runs API (seed 004)", "version": "1"},
        "servers": [{"url": "/v1"}],
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
    if secured:
        doc["components"] = {**doc["components"], "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
        doc["security"] = [{"bearer": []}]
    return doc


__all__ = ["threads_openapi"]
