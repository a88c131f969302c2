"""Argument checks that every store applies the same way (so they behave alike in the conformance suite)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from .errors import InvalidRequest
from .events import Event, RunCreated
from .limits import MAX_ID_LENGTH
from .ports import MAX_PAGE


#: The control characters no id or short text may hold (C0, DEL and C1), as a regular expression
#: both Python and JSON Schema read (the OpenAPI document's "no control characters" says it too).
CONTROL_CHARACTER = "[\\u0000-\\u001f\\u007f-\\u009f]"
_CONTROL = re.compile(CONTROL_CHARACTER)


def has_control_characters(value: str) -> bool:
    # One search in C: a generator over the characters cost a sync run over HTTP ~130 Python
    # calls (its run id and agent name checked), about 6% of all it made (issue 22).
    return _CONTROL.search(value) is not None


def is_run_id(value: object) -> bool:
    """Whether `value` can name a run on every surface: 1 to MAX_ID_LENGTH characters, no control
    characters, and one URL path segment (no "/", not "." or "..")."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_LENGTH
        and not has_control_characters(value)
        and "/" not in value
        and value not in (".", "..")
    )


def check_run_id(value: object) -> None:
    if not is_run_id(value):
        shown = value[:80] if isinstance(value, str) else value
        raise InvalidRequest(
            f"a run id must be 1 to {MAX_ID_LENGTH} characters without control characters or '/', got {shown!r}",
            field="run_id",
        )


def check_append(run_id: str, events: Sequence[Event], expected_seq: int) -> None:
    """A batch must be non-empty, for one run, numbered expected_seq+1, +2 ... and start a
    new log with run.created."""
    if not events:
        raise InvalidRequest("nothing to append")
    if expected_seq < 0:
        raise InvalidRequest(f"expected_seq must be >= 0, got {expected_seq}")
    for offset, event in enumerate(events, start=1):
        if event.run_id != run_id:
            raise InvalidRequest(f"event seq {event.seq} is for run {event.run_id!r}, not {run_id!r}")
        if event.seq != expected_seq + offset:
            raise InvalidRequest(
                f"events must be numbered {expected_seq + 1}.. without gaps; got seq {event.seq} at position {offset}"
            )
    first_is_created = isinstance(events[0], RunCreated)
    if expected_seq == 0 and not first_is_created:
        raise InvalidRequest("a run's log must start with run.created")
    if (len(events) > 1 and any(isinstance(e, RunCreated) for e in events[1:])) or (expected_seq > 0 and first_is_created):
        raise InvalidRequest("run.created can only be the first event of a run")


def check_page(after_seq: int, limit: int) -> None:
    if after_seq < 0:
        raise InvalidRequest(f"after_seq must be >= 0, got {after_seq}")
    if limit < 1 or limit > MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}, got {limit}")


def encode_cursor(position: int) -> str:
    return str(position)


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    try:
        value = int(cursor)
    except ValueError:
        raise InvalidRequest(f"invalid cursor {cursor!r}") from None
    if value < 0:
        raise InvalidRequest(f"invalid cursor {cursor!r}")
    return value


def decode_listing_start(before: str | None, before_run: str | None) -> int | None:
    """A run listing's `before` cursor as a position, refusing it beside `before_run` (one start only)."""
    if before_run is not None and before not in (None, ""):
        raise InvalidRequest("give a listing `before` cursor or a `before_run` id, not both")
    return decode_cursor(before)


def encode_ended_cursor(ended_us: int, position: int) -> str:
    """The cursor of an ended-runs listing: (ended time in µs since the epoch, creation position)."""
    return f"{ended_us}_{position}"


def decode_ended_cursor(cursor: str | None) -> tuple[int, int] | None:
    if cursor is None or cursor == "":
        return None
    match = _ENDED_CURSOR.fullmatch(cursor)
    if match is None:
        raise InvalidRequest(f"invalid cursor {cursor!r}")
    return int(match[1]), int(match[2])


_ENDED_CURSOR = re.compile(r"(-?[0-9]{1,18})_([0-9]{1,18})")


def micros(value: datetime) -> int:
    """µs since the Unix epoch (a naive time is taken as UTC): how stores order ended times."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return (value - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
