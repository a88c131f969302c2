"""Where an event stream resumes: the one rule every profile applies to `after_seq` and `Last-Event-ID`.

- Each may be given: the `after_seq` query parameter, the `Last-Event-ID` header.
- Absent or blank (empty or only spaces) counts as not given; neither given means 0 (from the start).
- A given value is decimal digits (surrounding spaces ignored) from 0 to MAX_SEQ; anything else
  (a sign, a fraction, letters, too large) is a 400 `invalid_request` naming which one.
- Both given: the larger wins. A browser's EventSource keeps its URL (with its `after_seq`) and
  sends the last id it saw as `Last-Event-ID` when it reconnects: it resumes after what it saw,
  with no duplicate.
"""

from __future__ import annotations

from .core import HttpError, Request
from .limits import MAX_SEQ


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
