"""A run's log as JSON lines: one event per line, in seq order, in the wire format of
`runengine.wire` (`{"seq", "type", "run_id", "at", "data"}`). What `runengine export` writes
and `runengine import` reads back; also a fixture format (`runengine.testing.logs.load_log`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .errors import InvalidRequest, InvalidRunState, RunEngineError, RunNotFound
from .events import Event
from .ports import MAX_PAGE, EventStore
from .reducer import Fold
from .state import RunState
from .wire import event_from_json, event_to_json


def parse_log(lines: Iterable[str | bytes]) -> list[Event]:
    """The events of JSON lines (blank lines are skipped), checked by folding them with the
    reducer: one run, seq 1, 2, 3 ... and only allowed transitions. InvalidRequest (naming the
    line) otherwise."""
    events: list[Event] = []
    fold = Fold()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = event_from_json(line)
            fold.apply(event)
        except (RunEngineError, ValueError, RecursionError) as exc:  # ValueError: not JSON (or not UTF-8)
            message = exc.message if isinstance(exc, RunEngineError) else str(exc)
            raise InvalidRequest(f"line {number}: {message}", line=number) from None
        events.append(event)
    if not events:
        raise InvalidRequest("the log holds no event")
    return events


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


async def import_run(store: EventStore, events: list[Event]) -> RunState:
    """Append an ended run's whole log as a new run, in one atomic append; return its state.

    Refuses (InvalidRunState, conflict) a run id the store has already, and (InvalidRequest) a log
    that does not end: no process would ever execute or end such a run."""
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
