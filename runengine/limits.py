"""Every limit on what a client can make the server keep, declared once.

Each limit is one constant here; the engine, the native API and every profile read it
from this module (`runengine.http.limits` re-exports the HTTP ones), and docs/security.md
has the one table: value, surfaces, what a client gets past it, how to change it.
Sizes are bytes of compact UTF-8 JSON unless a name says characters.
"""

from __future__ import annotations

# -- one request ------------------------------------------------------------------------------

#: Largest request body accepted, in bytes.
MAX_BODY_BYTES = 1_048_576
#: A run's input (native `input`, ACP `input`, Kore `input`).
MAX_INPUT_BYTES = 256 * 1024
#: The input given to a run waiting for it (native `content`).
MAX_CONTENT_BYTES = 32 * 1024
#: One text item of a Kore `input` array, in characters.
MAX_TEXT_CHARS = 32 * 1024
#: The Platform profile's `message`, in characters.
MAX_MESSAGE_CHARS = 100_000
#: Ids and short names a client chooses (agent, session id, idempotency key, user id ...), in characters.
MAX_ID_LENGTH = 200

# -- what a run and a session keep ---------------------------------------------------------------

#: The metadata a client gives one run (native and Platform `metadata`; Kore `metadata` per request).
MAX_METADATA_BYTES = 16 * 1024
#: A session's metadata as kept, after every merge of request metadata into it.
MAX_SESSION_METADATA_BYTES = 16 * 1024
#: Files a session may have active at once (Kore `attachments.includeFiles`).
MAX_ACTIVE_ATTACHMENTS = 50
#: Files a session lists, active and excluded: past it, the longest-excluded ones are forgotten.
MAX_ATTACHMENTS = 100
#: A file id of an attachment, in characters.
MAX_FILE_ID_LENGTH = 64
#: Webhook registrations one principal may hold per app (Platform profile): each principal's own
#: count, so one principal filling it neither blocks another nor learns that others have any.
MAX_WEBHOOKS_PER_PRINCIPAL = 50
#: A webhook or callback URL (Platform registrations, Kore `callbackUrl`), in characters.
MAX_URL_LENGTH = 2048
#: A webhook's signing secret (Platform), in characters.
MAX_SECRET_LENGTH = 1024
#: A completion callback's bearer token (Kore `callbackToken`), in characters.
MAX_CALLBACK_TOKEN_LENGTH = 4096

# -- what one read of a session's history returns ---------------------------------------------------

#: Messages one page of a session's history holds when the client names no `limit` (native
#: `GET /sessions/{id}/history`, ACP `GET /sessions/{id}`, Platform history), and at most.
DEFAULT_HISTORY_PAGE = 50
MAX_HISTORY_PAGE = 100
#: The latest messages an agent reads by default: `ctx.history(limit=)`, and so the message
#: history the Pydantic AI and OpenAI integrations hand their model.
DEFAULT_AGENT_HISTORY = 100

# -- what a run's log keeps (engine options: RunEngine(limits=RunLimits(max_events_per_run=, max_event_bytes=))) ----

#: Events in one run's log; past it the run fails with error code `too_many_events`.
MAX_EVENTS_PER_RUN = 1_000_000
#: One event as JSON; an agent call that would record a larger one raises `EventTooLarge`.
MAX_EVENT_BYTES = 4 * 1024 * 1024
#: How far past this machine's clock an imported log's times may be (another machine's clock), in seconds.
MAX_IMPORT_CLOCK_SKEW = 300.0

# -- what a client holds open -----------------------------------------------------------------------

#: SSE streams one authenticated principal may hold open at once, over every surface (429 past it).
MAX_OPEN_STREAMS_PER_PRINCIPAL = 100
#: Sync requests (waiting for a run to end or ask for input) one authenticated principal may hold
#: open at once, over every surface: each holds a connection and a task, for as long as the run
#: takes (a delayed run: days). 429 past it, before any run is created.
MAX_SYNC_WAITS_PER_PRINCIPAL = 100
#: Encoded SSE frames of recent events kept for many subscribers (native API), in bytes in all:
#: large events (a 256 KiB input echoed back) must not make a count-bounded cache hold gigabytes.
MAX_FRAME_CACHE_BYTES = 32 * 1024 * 1024

# -- what the server holds for everyone at once (runengine.http.admission; `runengine serve` options) --

#: Connections `runengine serve` keeps open at once (the ASGI and aiohttp bindings: requests in
#: progress); past it a new one gets 503 at once. Each open SSE stream holds one.
MAX_CONNECTIONS = 1000
#: Bytes of request bodies being read at once, over every connection (a body is held from its
#: headers, by its Content-Length, until it has been read); past it a request gets 503 at once.
MAX_BODY_BYTES_IN_FLIGHT = 64 * 1024 * 1024
#: A request's line and header fields, in bytes (`runengine serve`); past it a 431.
MAX_HEADER_BYTES = 16 * 1024
#: Requests answered 401 from one client address within AUTH_FAILURE_WINDOW seconds; past it every
#: request from that address gets 429 until the window ends (IPv6: one count per /64).
MAX_AUTH_FAILURES = 20
AUTH_FAILURE_WINDOW = 60.0
