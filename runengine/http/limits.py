"""The native API's documented limits (docs/http.md and the OpenAPI document quote these)."""

from __future__ import annotations

from .core import MAX_BODY_BYTES

#: Sizes are bytes of compact UTF-8 JSON.
MAX_INPUT_BYTES = 256 * 1024
MAX_METADATA_BYTES = 16 * 1024
MAX_CONTENT_BYTES = 32 * 1024
MAX_ID_LENGTH = 200
MAX_REASON_LENGTH = 1000
MAX_TIMEOUT = 7 * 24 * 3600.0
#: How far ahead a delayed run (`start_at`) may be scheduled (30 days).
MAX_START_DELAY = 30 * 24 * 3600.0
#: Longest `ttl` of a session created through the API (30 days).
MAX_SESSION_TTL = 30 * 24 * 3600.0
#: Largest after_seq / Last-Event-ID accepted (18 digits).
MAX_SEQ = 10**18 - 1
DEFAULT_EVENTS_LIMIT = 100
MAX_EVENTS_LIMIT = 1000
DEFAULT_RUNS_LIMIT = 20
MAX_RUNS_LIMIT = 200
#: What an SSE client is told to wait before reconnecting (milliseconds).
RETRY_MS = 1000

__all__ = [
    "DEFAULT_EVENTS_LIMIT",
    "DEFAULT_RUNS_LIMIT",
    "MAX_BODY_BYTES",
    "MAX_CONTENT_BYTES",
    "MAX_EVENTS_LIMIT",
    "MAX_ID_LENGTH",
    "MAX_INPUT_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_REASON_LENGTH",
    "MAX_RUNS_LIMIT",
    "MAX_SEQ",
    "MAX_START_DELAY",
    "MAX_SESSION_TTL",
    "MAX_TIMEOUT",
    "RETRY_MS",
]
