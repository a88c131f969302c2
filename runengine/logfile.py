"""A run's log as JSON lines: one event per line, in seq order, in the wire format of
`runengine.wire` (`{"seq", "type", "run_id", "at", "data"}`). What `runengine export` writes
and `runengine import` reads back; also a fixture format (`runengine.testing.logs.load_log`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from .errors import InvalidRequest, InvalidRunState, RunEngineError, RunNotFound
from .events import Event, UnknownEvent
from .limits import MAX_EVENT_BYTES, MAX_EVENTS_PER_RUN, MAX_IMPORT_CLOCK_SKEW
from .ports import MAX_PAGE, EventStore
from .reducer import Fold
from .state import RunState
from .validation import check_run_id
from .wire import event_from_dict, event_to_json


def parse_log(lines: Iterable[str | bytes]) -> list[Event]:
    """The events of JSON lines (blank lines are skipped), checked as the engine checks what it
    writes: each line at most MAX_EVENT_BYTES, at most MAX_EVENTS_PER_RUN of them, a known event
    type, an integer seq, a run id every surface can address (`validation.is_run_id`), and folded
    by the reducer: one run, seq 1, 2, 3 ... and only allowed transitions. InvalidRequest (naming
    the line) otherwise."""
    events: list[Event] = []
    fold = Fold()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = _event_of_line(line)
            if not events:
                check_run_id(event.run_id)  # the fold holds every later event to the same run
            if len(events) >= MAX_EVENTS_PER_RUN:
                raise InvalidRequest(f"a run's log holds at most {MAX_EVENTS_PER_RUN} events")
            fold.apply(event)
        except (RunEngineError, ValueError, RecursionError) as exc:  # ValueError: not JSON (or not UTF-8)
            message = exc.message if isinstance(exc, RunEngineError) else str(exc)
            raise InvalidRequest(f"line {number}: {message}", line=number) from None
        events.append(event)
    if not events:
        raise InvalidRequest("the log holds no event")
    return events


def _event_of_line(line: str | bytes) -> Event:
    size = len(line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line)
    if size > MAX_EVENT_BYTES:
        raise InvalidRequest(f"an event is {size} bytes of JSON; the limit is {MAX_EVENT_BYTES}")
    raw = json.loads(line)
    if not isinstance(raw, dict):
        raise InvalidRequest("an event is a JSON object")
    if type(raw.get("seq")) is not int:  # not "2", 2.0 or true
        raise InvalidRequest(f"seq must be an integer, got {json.dumps(raw.get('seq'))[:40]}")
    event = event_from_dict(raw)
    if isinstance(event, UnknownEvent):
        raise InvalidRequest(f"unknown event type {str(raw.get('type'))[:80]!r}")
    return event


async def export_run(store: EventStore, run_id: str, write: Callable[[str], Any]) -> int:
    """Write the run's committed log to `write`, one JSON line per event, paged (never the whole
    log in memory); return how many events. RunNotFound when there is no such run."""
    if await store.get_run(run_id) is None:
        raise RunNotFound(run_id)
    after = 0
    while True:
        page = await store.read(run_id, after_seq=after, limit=MAX_PAGE)
        for event in page:
            write(event_to_json(event) + "\n")
        if page:
            after = page[-1].seq
        if len(page) < MAX_PAGE:
            return after


async def import_run(store: EventStore, events: list[Event], *, now: datetime) -> RunState:
    """Append an ended run's whole log as a new run, in one atomic append; return its state.

    Refuses (InvalidRunState, conflict) a run id the store has already, and (InvalidRequest) a log
    that does not end (no process would ever execute or end such a run), or with a time later than
    `now` (give or take MAX_IMPORT_CLOCK_SKEW): a run cannot have ended in the future."""
    latest = now + timedelta(seconds=MAX_IMPORT_CLOCK_SKEW)
    for event in events:
        if event.at > latest:
            raise InvalidRequest(f"event seq {event.seq} is at {event.at.isoformat()}, later than now", seq=event.seq)
    fold = Fold()
    try:
        fold.apply_all(events)
    except RunEngineError as exc:
        raise InvalidRequest(exc.message) from None
    state = fold.state
    if state is None:
        raise InvalidRequest("the log holds no event")
    if not state.terminal:
        raise InvalidRequest(
            f"run {state.run_id!r} has not ended (status {state.status.value!r}); only an ended run's log can be imported"
        )
    existing = await store.get_run(state.run_id)
    if existing is not None:
        raise InvalidRunState(state.run_id, existing.status.value, "a run with this id exists already")
    await store.append(state.run_id, events, expected_seq=0)  # ConcurrencyConflict if one just appeared
    return state


def dump_log(events: Iterable[Event]) -> str:
    """The JSON-lines text of `events` (what export writes)."""
    return "".join(event_to_json(event) + "\n" for event in events)


__all__ = ["dump_log", "export_run", "import_run", "parse_log"]
