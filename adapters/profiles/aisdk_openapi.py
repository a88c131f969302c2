"""The /ai profile's OpenAPI 3.1 document (the AI SDK's UI message stream), served at /ai/openapi.json:
its shapes, and the document generated from the routes' declarations (aisdk.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runengine.http.openapi import Operation, openapi_document

from .native_openapi import SCHEMAS as NATIVE_SCHEMAS
from .threads_openapi import ID

SCHEMAS: dict[str, Any] = {
    "Error": NATIVE_SCHEMAS["Error"],
    "Stopped": {
        "type": "object",
        "required": ["run_id", "status"],
        "properties": {"run_id": {"type": "string"}, "status": {"type": "string"}},
    },
    "UIMessageChunk": {
        "type": "object",
        "required": ["type"],
        "description": "A part of the AI SDK's UI message stream protocol v1 (start, text-start/-delta/-end, "
        "reasoning-*, tool-input-available, tool-output-available/-error, tool-approval-request, start-step, "
        "finish-step, data-*, error, abort, finish)",
        "properties": {"type": {"type": "string"}},
    },
}

UI_MESSAGE_STREAM = {
    "text/event-stream": {
        "schema": {
            "description": "Frames `id: <seq>` (the seq to resume after) and `data: <UIMessageChunk JSON>`, the last "
            "one `data: [DONE]`; header x-vercel-ai-ui-message-stream: v1; `: keep-alive` comments every 15 s. "
            "It ends at the run's end, or when the run waits for input (after its tool-approval-request).",
            "type": "object",
            "required": ["id", "data"],
            "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"}, "data": {"type": "string"}},
        }
    }
}

ERRORS = {
    400: "invalid_request: malformed JSON, a wrong type, no user message, an answer that does not fit the wait",
    401: "authentication_error: missing or invalid credentials",
    404: "not_found: no such agent (or one this server hides), or the chat is another principal's",
    409: "conflict: the chat already has a run under way (stop it, or wait for its end)",
    413: "payload_too_large: the body, or the user message, is over its limit",
    429: "rate_limited: the principal already has the most event streams open at once",
}


def aisdk_openapi(
    routes: Iterable[tuple[str, str, Operation]], *, auth: bool, rate_limit: tuple[int, float] | None = None
) -> dict[str, Any]:
    """The document of the profile's declared `routes` (`auth`: 401 and bearer security on each;
    `rate_limit`: the server's limit per principal, 429 and the X-RateLimit-* headers)."""
    return openapi_document(
        routes,
        info={"title": "runengine AI SDK UI message stream (useChat)", "version": "1"},
        schemas=SCHEMAS,
        error_descriptions=ERRORS,
        auth=auth,
        path_parameter=ID,
        servers=("/ai",),
        rate_limit=rate_limit,
    )


__all__ = ["UI_MESSAGE_STREAM", "aisdk_openapi"]
