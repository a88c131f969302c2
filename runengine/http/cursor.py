"""The cursors every profile reads: where an event stream resumes, and where a page of a session's history ends.

Event streams: the one rule every profile applies to `after_seq` and `Last-Event-ID`.

- Each may be given: the `after_seq` query parameter, the `Last-Event-ID` header.
- Absent or blank (empty or only spaces) counts as not given; neither given means 0 (from the start).
- A given value is decimal digits (surrounding spaces ignored) from 0 to MAX_SEQ; anything else
  (a sign, a fraction, letters, too large) is a 400 `invalid_request` naming which one.
- Both given: the larger wins. A browser's EventSource keeps its URL (with its `after_seq`) and
  sends the last id it saw as `Last-Event-ID` when it reconnects: it resumes after what it saw,
  with no duplicate.

Session history (native `?cursor=`, ACP's session object and its message URLs, Platform history):
a message's position is `<run_id>:<index>` (runengine.history.HistoryPosition, index 0 being the
run's input). A page's `next` is the position of its oldest message; `?cursor=` it for the page
before. Anything else is a 400 `invalid_request` with details {"field": "cursor"}; a well-formed
one naming no message of the caller's session too (runengine.history.HistoryCursorInvalid).
"""

from __future__ import annotations

from ..history import HistoryPosition
from .core import HttpError, Request
from .limits import DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE, MAX_ID_LENGTH, MAX_SEQ
from .params import QueryInt


def resume_after(request: Request) -> int:
    """The seq after which the stream starts (module rules); a 400 HttpError for a bad value."""
    return max(after_seq_param(request), last_event_id(request))


def after_seq_param(request: Request) -> int:
    """The `after_seq` query parameter alone (same rules), e.g. for a JSON page of events."""
    return _parsed(request.query.get("after_seq"), "query parameter 'after_seq'", {"field": "after_seq"})


def last_event_id(request: Request) -> int:
    """The `Last-Event-ID` header alone (same rules)."""
    return _parsed(request.header("last-event-id"), "header 'Last-Event-ID'", {"header": "Last-Event-ID"})


def _parsed(raw: str | None, what: str, details: dict[str, str]) -> int:
    if raw is None or not raw.strip():
        return 0
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_SEQ)) or int(text) > MAX_SEQ:
        raise HttpError(
            400, "invalid_request", f"{what} must be an integer from 0 to {MAX_SEQ}; got {text[:40]!r}", details
        )
    return int(text)


#: The two cursors as an OpenAPI document states them (the rules above; every profile's document
#: takes these, so they are stated once beside the parser).
AFTER_SEQ_PARAMETER = {
    "name": "after_seq",
    "in": "query",
    "description": "resume after this seq (blank: from the start; with Last-Event-ID the larger wins)",
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ, "default": 0},
}
LAST_EVENT_ID_PARAMETER = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "the last seq an EventSource saw (blank: not given)",
    "schema": {"type": "string", "pattern": f"^[ \\t]*[0-9]{{0,{len(str(MAX_SEQ))}}}[ \\t]*$"},
}


#: A history page's `limit` query parameter: messages in the page.
HISTORY_LIMIT = QueryInt("limit", default=DEFAULT_HISTORY_PAGE, minimum=1, maximum=MAX_HISTORY_PAGE)
#: Longest message index a history cursor may name (9 digits).
_MAX_INDEX_DIGITS = 9


def history_cursor(position: HistoryPosition) -> str:
    """The text of a history position (module rules)."""
    return f"{position.run_id}:{position.index}"


def history_before(request: Request) -> HistoryPosition | None:
    """The `cursor` query parameter of a history page (None: the latest page); 400 when malformed."""
    raw = request.query.get("cursor")
    if raw is None or not raw.strip():
        return None
    return parse_history_position(raw.strip())


def parse_history_position(text: str) -> HistoryPosition:
    """A history position from its text (module rules); a 400 HttpError for anything else."""
    run_id, colon, index = text.rpartition(":")
    if (
        not colon
        or not run_id
        or len(run_id) > MAX_ID_LENGTH
        or any(ord(c) < 32 or ord(c) == 127 for c in run_id)
        or not (index.isascii() and index.isdigit())
        or len(index) > _MAX_INDEX_DIGITS
    ):
        raise HttpError(400, "invalid_request", f"cursor must be a history cursor (run_id:index); got {text[:40]!r}", {"field": "cursor"})
    return HistoryPosition(run_id, int(index))


HISTORY_CURSOR_PARAMETER = {
    "name": "cursor",
    "in": "query",
    "description": "a page's `next`: the page of older messages (absent: the latest page)",
    "schema": {"type": "string", "minLength": 1, "pattern": f"^[^\\x00-\\x1f\\x7f]{{1,{MAX_ID_LENGTH}}}:[0-9]{{1,{_MAX_INDEX_DIGITS}}}$"},
}
