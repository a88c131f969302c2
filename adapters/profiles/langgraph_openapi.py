"""The /langgraph profile's requests and responses as declared (langgraph.py serves them): the
fields each route reads, the rules the handlers apply to them, and the OpenAPI 3.1 document
generated from the routes' declarations, served at /langgraph/openapi.json."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runengine.http import params
from runengine.http.cursor import LAST_EVENT_ID_PARAMETER
from runengine.http.limits import MAX_START_DELAY
from runengine.http.openapi import Body, Operation, Reply, openapi_document, ref
from runengine.limits import MAX_ID_LENGTH, MAX_INPUT_BYTES, MAX_METADATA_BYTES

from .langgraph_shapes import META_KEY, RUN_STATUS, SILENT_MODES, STREAM_MODES

#: multitask_strategy -> the engine's session policy (rollback: interrupt, then delete the interrupted runs).
MULTITASK = {"reject": "reject", "interrupt": "interrupt", "enqueue": "enqueue", "rollback": "interrupt"}
#: The run body's fields this profile acts on.
RUN_FIELDS = (
    "assistant_id", "input", "command", "metadata", "stream_mode", "multitask_strategy", "if_not_exists",
    "on_disconnect", "after_seconds",
)
#: Fields LangGraph clients send that change nothing here (every run is durable and resumable).
IGNORED_FIELDS = (
    "config", "context", "stream_subgraphs", "stream_resumable", "durability", "on_completion", "feedback_keys",
    "langsmith_tracer", "checkpoint_during", "strict_resume",
)
#: Fields refused unless null, and why (a clear 400, not a silent no-op).
REFUSED_FIELDS = {
    "checkpoint": "checkpoint time travel is not supported: a run's log is never rewritten",
    "checkpoint_id": "checkpoint time travel is not supported: a run's log is never rewritten",
    "interrupt_before": "interrupt_before needs graph nodes; agents here ask for input with ctx.ask",
    "interrupt_after": "interrupt_after needs graph nodes; agents here ask for input with ctx.ask",
    "webhook": "webhooks are not supported on /langgraph (use /platform or /kore)",
}
THREAD_FIELDS = ("thread_id", "metadata", "if_exists", "ttl", "supersteps", "graph_id")
HISTORY_FIELDS = ("limit", "before", "metadata", "checkpoint", "subgraphs")
SEARCH_FIELDS = ("graph_id", "name", "metadata", "limit", "offset", "sort_by", "sort_order", "select", "response_format")

# -- the document ---------------------------------------------------------------------------

ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, **params.NO_CONTROL}
OBJECT = {"type": "object"}
SSE = {
    "text/event-stream": {
        "schema": {
            "description": "LangGraph frames `event: <mode>` + `data: <JSON>`; the last frame of each run event carries "
            "`id: <seq>`; `metadata` first, `end` (or `error`) last; `: keep-alive` comments every 15 s",
            "type": "string",
        }
    }
}
SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message", "details"]}},
    },
    "Assistant": {
        "type": "object",
        "required": ["assistant_id", "graph_id", "name"],
        "properties": {"assistant_id": {"type": "string"}, "graph_id": {"type": "string"}, "name": {"type": "string"}},
    },
    "Thread": {
        "type": "object",
        "required": ["thread_id", "status", "values", "metadata"],
        "properties": {
            "thread_id": {"type": "string"},
            "status": {"enum": ["idle", "busy", "interrupted", "error"]},
            "values": OBJECT,
            "metadata": OBJECT,
        },
    },
    "ThreadState": {"type": "object", "required": ["values", "next", "checkpoint"], "properties": {"values": OBJECT}},
    "Run": {
        "type": "object",
        "required": ["run_id", "thread_id", "assistant_id", "status"],
        "properties": {"status": {"enum": sorted(set(RUN_STATUS.values()) | {"timeout"})}},
    },
    "Values": {"type": "object", "properties": {"messages": {"type": "array"}}},
}
RUN_BODY = Body(
    "RunCreate",
    {
        "type": "object",
        "required": ["assistant_id"],
        "properties": {
            "assistant_id": {**ID, "description": "an agent's name (LangGraph's graph id) or its assistant_id"},
            "input": {"description": f"the run's input (at most {MAX_INPUT_BYTES} bytes): with `messages`, ctx.input "
                      "is the last human message's text; otherwise the object itself"},
            "command": {
                "type": ["object", "null"],
                "required": ["resume"],
                "additionalProperties": False,
                "properties": {"resume": {}},
                "description": "{\"resume\": value}: the input of the thread's run waiting for it (not with `input`)",
            },
            "metadata": {
                "anyOf": [{"type": "null"}, {"type": "object", "not": {"required": [META_KEY]}}],
                "description": f"the run's metadata (at most {MAX_METADATA_BYTES} bytes; the key {META_KEY!r} is this profile's)",
            },
            "stream_mode": {
                "anyOf": [{"enum": [*STREAM_MODES, *SILENT_MODES, None]},
                          {"type": "array", "items": {"enum": [*STREAM_MODES, *SILENT_MODES]}}],
            },
            "multitask_strategy": {"enum": [*MULTITASK, None]},
            "if_not_exists": {"enum": ["reject", "create", None]},
            "on_disconnect": {"enum": ["cancel", "continue", None]},
            "after_seconds": {"type": ["number", "null"], "minimum": 0, "maximum": MAX_START_DELAY},
            **{name: {"description": "accepted, no effect here"} for name in IGNORED_FIELDS},
            **{name: {"type": "null", "description": why} for name, why in REFUSED_FIELDS.items()},
        },
        "additionalProperties": False,
        "if": {"required": ["command"], "properties": {"command": {"type": "object"}}},
        "then": {"properties": {"input": {"type": "null"}}},
    },
)
STREAM_MODE_PARAMETER = {
    "name": "stream_mode",
    "in": "query",
    "description": "the modes to join with (repeatable); default: the run's own",
    "schema": {"type": "string", "enum": list(STREAM_MODES + SILENT_MODES)},
}
JOIN_LAST_EVENT_ID = {**LAST_EVENT_ID_PARAMETER, "description": "the last seq the client saw; -1 or absent: from the run's start",
                      "schema": {"type": "string"}}
STREAM_REPLY = {200: Reply("the run's event stream", content=SSE)}
SEARCH = Operation("searchAssistants", "An assistant per agent", body=Body("AssistantSearch", OBJECT, required=False),
                   replies={200: Reply("assistants", {"type": "array", "items": ref("Assistant")})}, errors=(400,))
GET_ASSISTANT = Operation("getAssistant", "An assistant", replies={200: Reply("the assistant", "Assistant")}, errors=(400, 404))
CREATE_THREAD = Operation("createThread", "Create a thread", body=Body("ThreadCreate", OBJECT, required=False),
                          replies={200: Reply("the thread", "Thread")}, errors=(400, 409, 413))
GET_THREAD = Operation("getThread", "A thread", replies={200: Reply("the thread", "Thread")}, errors=(400, 404))
THREAD_STATE = Operation("getThreadState", "The thread's current state", replies={200: Reply("its state", "ThreadState")}, errors=(400, 404))
THREAD_HISTORY = Operation("getThreadHistory", "The thread's state after each run, newest first",
                           body=Body("HistoryQuery", OBJECT, required=False),
                           replies={200: Reply("states", {"type": "array", "items": ref("ThreadState")})}, errors=(400, 404))
CREATE_RUN = Operation("createRun", "Start a run in the background", body=RUN_BODY,
                       replies={200: Reply("the run", "Run")}, errors=(400, 404, 409, 413))
STREAM_RUN = Operation("streamRun", "Start a run and stream it", body=RUN_BODY, replies=STREAM_REPLY,
                       errors=(400, 404, 409, 413, 429))
WAIT_RUN = Operation("waitRun", "Start a run and wait for it: the thread's values", body=RUN_BODY,
                     replies={200: Reply("the thread's values", "Values")}, errors=(400, 404, 409, 413))
GET_RUN = Operation("getRun", "A run", replies={200: Reply("the run", "Run")}, errors=(400, 404))
JOIN_STREAM = Operation("joinRunStream", "The run's stream, resumed after Last-Event-ID",
                        parameters=(STREAM_MODE_PARAMETER, JOIN_LAST_EVENT_ID,
                                    {"name": "cancel_on_disconnect", "in": "query", "schema": {"type": "string", "enum": ["true", "false", "1", "0"]}}),
                        replies=STREAM_REPLY, errors=(400, 404, 429))
JOIN_RUN = Operation("joinRun", "Wait for the run's end: the thread's values", replies={200: Reply("the thread's values", "Values")}, errors=(400, 404))
CANCEL_RUN = Operation("cancelRun", "Cancel the run (rollback: and delete it)",
                       parameters=({"name": "wait", "in": "query", "schema": {"type": "string", "enum": ["true", "false", "1", "0"]}},
                                   {"name": "action", "in": "query", "schema": {"type": "string", "enum": ["interrupt", "rollback"]}}),
                       replies={200: Reply("the run as it ended", "Run")}, errors=(400, 404))
OPENAPI = Operation("openapi", "This document", replies={200: Reply("the OpenAPI document", OBJECT)})
ERRORS = {
    400: "invalid_request: malformed JSON, a wrong type, an unknown or unsupported field",
    401: "authentication_error: missing or invalid credentials",
    404: "not_found: no such assistant, thread or run (or not visible to this principal)",
    409: "conflict: the thread exists, or has an active run (multitask_strategy reject), or has no run waiting for input",
    413: "payload_too_large: the body, the input or the metadata is over its limit",
    429: "rate_limited: the principal already has the most event streams open at once",
}


def langgraph_openapi(
    routes: Iterable[tuple[str, str, Operation]], *, auth: bool, rate_limit: tuple[int, float] | None = None
) -> dict[str, Any]:
    """The document of `routes` (the profile's declared routes); with `auth`, 401 and bearer security;
    `rate_limit`: the server's limit per principal (429 and X-RateLimit-* headers)."""
    return openapi_document(
        routes,
        info={"title": "runengine LangGraph Platform API subset", "version": "1"},
        schemas=SCHEMAS,
        error_descriptions=ERRORS,
        auth=auth,
        path_parameter=ID,
        servers=("/langgraph",),
        rate_limit=rate_limit,
    )
