"""Fork from any event: a new run whose log begins with a copy of another run's, up to a seq.

`engine.fork(run_id, at_seq)` copies the source's events 1..at_seq under a new run id and adds
`run.forked` (the source and the seq). The new run is then taken up like a run a graceful stop
left unfinished: its agent replays the copied prefix (every recorded step, tool result, input
and timer returns what was recorded, nothing is done again) and runs for real from there.

`input=` gives the event at `at_seq` another result: a `tool.result`'s output (its error is
dropped), a `run.input`'s content, or at seq 1 `run.created`'s input. The source is never
changed. The fork keeps the source's agent, owner, session and metadata (its `run.created` is
the source's); the prefix and `run.forked` are appended in one batch, so a fork exists whole or
not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs

from .errors import InvalidRequest, InvalidRunState, RunNotFound
from .events import Event, RunCreated, RunForked, RunInput, ToolResult
from .ports import MAX_PAGE, EventStore
from .reducer import Fold
from .state import RunState
from .wire import to_json

#: The events whose result `input=` may replace, and the field that holds it.
REPLACEABLE: dict[type[Event], str] = {ToolResult: "output", RunInput: "content", RunCreated: "input"}


async def read_prefix(store: EventStore, run_id: str, at_seq: int) -> list[Event]:
    """The source's events 1..at_seq (RunNotFound: no such run; InvalidRequest: no such seq)."""
    if isinstance(at_seq, bool) or not isinstance(at_seq, int) or at_seq < 1:
        raise InvalidRequest("at_seq must be a positive integer", at_seq=at_seq)
    prefix: list[Event] = []
    while len(prefix) < at_seq:
        page = await store.read(run_id, after_seq=len(prefix), limit=min(MAX_PAGE, at_seq - len(prefix)))
        if not page:
            break
        prefix.extend(page)
    if not prefix:
        raise RunNotFound(run_id)
    if len(prefix) < at_seq:
        raise InvalidRequest(f"run {run_id!r} has no event {at_seq} (its last is {len(prefix)})", at_seq=at_seq)
    return prefix


def fork_events(
    prefix: Sequence[Event], new_run_id: str, *, at: datetime, input: Any = None
) -> tuple[list[Event], RunState]:
    """The fork's first events (the prefix under `new_run_id`, then run.forked) and the state they
    fold to. InvalidRunState at the event that ended the source (nothing goes on after it);
    InvalidRequest for an `input` the event at the fork cannot take."""
    last = prefix[-1]
    if last.terminal:
        raise InvalidRunState(last.run_id, last.type, f"seq {last.seq} ended the run: fork at an earlier event")
    copied = [attrs.evolve(event, run_id=new_run_id) for event in prefix]
    if input is not None:
        field = REPLACEABLE.get(type(last))
        if field is None:
            kinds = ", ".join(cls.type for cls in REPLACEABLE)
            raise InvalidRequest(
                f"input replaces the result of a {kinds} event; seq {last.seq} is a {last.type}", at_seq=last.seq
            )
        to_json(input, "input")
        changes: dict[str, Any] = {field: input}
        if isinstance(last, ToolResult):
            changes["error"] = None
        copied[-1] = attrs.evolve(copied[-1], **changes)
    copied.append(
        RunForked(run_id=new_run_id, seq=last.seq + 1, at=at, source_run_id=last.run_id, source_seq=last.seq,
                  replaced=input is not None)
    )
    fold = Fold()
    fold.apply_all(copied)
    assert fold.state is not None
    return copied, fold.state


__all__ = ["REPLACEABLE", "fork_events", "read_prefix"]
