"""Argument checks that every store applies the same way (so they behave alike in the conformance suite)."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InvalidRequest
from .events import Event, RunCreated
from .ports import MAX_PAGE


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
    if any(isinstance(e, RunCreated) for e in events[1:]) or (expected_seq > 0 and first_is_created):
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
