"""The native API's documented limits (docs/http.md and the OpenAPI document quote these).

What a client can make the server keep is declared in `runengine.limits` (re-exported
here); the paging and format limits of the HTTP API are declared here.
"""

from __future__ import annotations

from ..limits import (
    DEFAULT_HISTORY_PAGE,
    MAX_ACTIVE_ATTACHMENTS,
    MAX_ATTACHMENTS,
    MAX_BODY_BYTES,
    MAX_CONTENT_BYTES,
    MAX_FILE_ID_LENGTH,
    MAX_HISTORY_PAGE,
    MAX_ID_LENGTH,
    MAX_INPUT_BYTES,
    MAX_MESSAGE_CHARS,
    MAX_METADATA_BYTES,
    MAX_OPEN_STREAMS_PER_PRINCIPAL,
    MAX_SESSION_METADATA_BYTES,
    MAX_TEXT_CHARS,
    MAX_WEBHOOKS_PER_PRINCIPAL,
)

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
    "DEFAULT_HISTORY_PAGE",
    "DEFAULT_RUNS_LIMIT",
    "MAX_ACTIVE_ATTACHMENTS",
    "MAX_ATTACHMENTS",
    "MAX_BODY_BYTES",
    "MAX_CONTENT_BYTES",
    "MAX_EVENTS_LIMIT",
    "MAX_FILE_ID_LENGTH",
    "MAX_HISTORY_PAGE",
    "MAX_ID_LENGTH",
    "MAX_INPUT_BYTES",
    "MAX_MESSAGE_CHARS",
    "MAX_METADATA_BYTES",
    "MAX_OPEN_STREAMS_PER_PRINCIPAL",
    "MAX_SESSION_METADATA_BYTES",
    "MAX_TEXT_CHARS",
    "MAX_WEBHOOKS_PER_PRINCIPAL",
    "MAX_REASON_LENGTH",
    "MAX_RUNS_LIMIT",
    "MAX_SEQ",
    "MAX_START_DELAY",
    "MAX_SESSION_TTL",
    "MAX_TIMEOUT",
    "RETRY_MS",
]
