"""Hypothesis strategies for runs.

`histories()` generates valid logs by walking the transition table (the same
table the reducer validates against), so every generated history folds without
error. `any_event()` generates events of every type with arbitrary sequence
numbers and payloads: mostly invalid for a given state, which is the point.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from ..events import (
    EVENT_TYPES,
    Custom,
    ErrorInfo,
    Event,
    MessageCompleted,
    MessageDelta,
    MessageDiscarded,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunInput,
    RunInputTimedOut,
    RunRequeued,
    RunResumed,
    RunStarted,
    RunSuspended,
    RunWaitingForInput,
    StepCompleted,
    Thought,
    TimerFired,
    TimerStarted,
    ToolCall,
    ToolResult,
    UnknownEvent,
    Usage,
)
from ..status import Status
from ..transitions import UNKNOWN, allowed

BASE_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)

#: Small JSON values (what inputs, outputs and tool arguments hold).
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
short_text = st.text(max_size=12)
ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
error_infos = st.builds(ErrorInfo, code=ids, message=short_text)


class _Walk:
    """What a history generator must remember to respect the reducer's guards."""

    def __init__(self) -> None:
        self.open_message: str | None = None
        self.done_messages: set[str] = set()
        self.open_calls: list[str] = []
        self.all_calls: set[str] = set()
        self.open_timer: str | None = None
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"


def _choices(status: Status | None, walk: _Walk, include_unknown: bool) -> list[str]:
    out = []
    for event_type in allowed(status):
        if event_type == UNKNOWN and not include_unknown:
            continue
        if event_type == ToolResult.type and not walk.open_calls:
            continue
        if event_type == MessageDiscarded.type and walk.open_message is None:
            continue
        if event_type == TimerStarted.type and walk.open_timer is not None:
            continue
        if event_type == TimerFired.type and walk.open_timer is None:
            continue
        out.append(event_type)
    return out


def _build(draw: st.DrawFn, event_type: str, run_id: str, seq: int, at: datetime, walk: _Walk) -> Event:
    common: dict[str, Any] = {"run_id": run_id, "seq": seq, "at": at}
    if event_type == RunCreated.type:
        return RunCreated(
            **common,
            agent=draw(ids),
            input=draw(json_values),
            session_id=draw(st.none() | ids),
            metadata=draw(st.dictionaries(ids, json_values, max_size=2)),
            mode=draw(st.sampled_from(["sync", "async", "stream"])),
            start_at=draw(st.none() | st.just(at + timedelta(seconds=5))),
        )
    if event_type == RunStarted.type:
        return RunStarted(**common, worker=draw(st.none() | ids), attempt=draw(st.integers(1, 3)), version=draw(st.none() | ids))
    if event_type == RunResumed.type:
        return RunResumed(
            **common,
            worker=draw(st.none() | ids),
            attempt=draw(st.integers(2, 5)),
            reason=draw(st.sampled_from(["restart", "worker_lost"])),
        )
    if event_type == RunSuspended.type:
        return RunSuspended(**common)
    if event_type == MessageDiscarded.type:
        message_id, walk.open_message = walk.open_message or walk.fresh("m"), None
        walk.done_messages.add(message_id)
        return MessageDiscarded(**common, message_id=message_id)
    if event_type == StepCompleted.type:
        failed = draw(st.booleans())
        return StepCompleted(
            **common, name=draw(ids), output=None if failed else draw(json_values), error=draw(error_infos) if failed else None
        )
    if event_type == TimerStarted.type:
        walk.open_timer = walk.fresh("t")
        return TimerStarted(**common, timer_id=walk.open_timer, until=at + timedelta(seconds=draw(st.integers(0, 60))))
    if event_type == TimerFired.type:
        timer_id, walk.open_timer = walk.open_timer or walk.fresh("t"), None
        return TimerFired(**common, timer_id=timer_id)
    if event_type == RunInputTimedOut.type:
        return RunInputTimedOut(**common)
    if event_type == MessageDelta.type:
        if walk.open_message is None:
            walk.open_message = walk.fresh("m")
        return MessageDelta(**common, message_id=walk.open_message, content=draw(short_text))
    if event_type == MessageCompleted.type:
        message_id = walk.open_message or walk.fresh("m")
        walk.open_message = None
        walk.done_messages.add(message_id)
        return MessageCompleted(
            **common, message_id=message_id, role=draw(st.sampled_from(["assistant", "user", "system"])), content=draw(short_text)
        )
    if event_type == Thought.type:
        return Thought(**common, content=draw(short_text), source=draw(st.none() | ids))
    if event_type == ToolCall.type:
        call_id = walk.fresh("c")
        walk.open_calls.append(call_id)
        walk.all_calls.add(call_id)
        return ToolCall(**common, call_id=call_id, name=draw(ids), arguments=draw(st.dictionaries(ids, json_values, max_size=2)))
    if event_type == ToolResult.type:
        call_id = draw(st.sampled_from(walk.open_calls))
        walk.open_calls.remove(call_id)
        failed = draw(st.booleans())
        return ToolResult(
            **common, call_id=call_id, output=None if failed else draw(json_values), error=draw(error_infos) if failed else None
        )
    if event_type == RunWaitingForInput.type:
        return RunWaitingForInput(
            **common, request=draw(json_values), expires_at=draw(st.none() | st.just(at + timedelta(seconds=30)))
        )
    if event_type == RunInput.type:
        return RunInput(**common, content=draw(json_values))
    if event_type == Usage.type:
        return Usage(
            **common,
            input_tokens=draw(st.integers(0, 10_000)),
            output_tokens=draw(st.integers(0, 10_000)),
            cost=draw(st.floats(0, 10, allow_nan=False)),
        )
    if event_type == Custom.type:
        return Custom(**common, name=draw(ids), data=draw(json_values))
    if event_type == RunRequeued.type:
        walk.open_message, walk.open_calls, walk.open_timer = None, [], None
        walk.done_messages, walk.all_calls = set(), set()
        return RunRequeued(**common, reason=draw(short_text))
    if event_type == RunCompleted.type:
        return RunCompleted(**common, output=draw(json_values))
    if event_type == RunFailed.type:
        return RunFailed(**common, error=draw(error_infos))
    if event_type == RunCancelled.type:
        return RunCancelled(**common, reason=draw(st.none() | short_text))
    if event_type == UNKNOWN:
        return UnknownEvent(**common, type=f"future.{draw(ids)}", data=draw(st.dictionaries(ids, json_values, max_size=2)))
    raise AssertionError(f"no builder for {event_type}")  # pragma: no cover - the table and builders agree


@st.composite
def histories(
    draw: st.DrawFn,
    *,
    run_id: str | None = None,
    min_events: int = 1,
    max_events: int = 40,
    finish: bool | None = None,
    include_unknown: bool = True,
) -> list[Event]:
    """A valid log: starts with run.created, follows the table, gapless seqs.

    `finish=True` ends it with a terminal event, False never does, None lets hypothesis choose.
    """
    from ..transitions import TRANSITIONS

    rid = run_id if run_id is not None else draw(ids)
    walk = _Walk()
    events: list[Event] = []
    status: Status | None = None
    at = BASE_TIME
    target = draw(st.integers(min_events, max_events))
    while True:
        choices = _choices(status, walk, include_unknown)
        if not choices:
            break  # terminal
        wants_end = len(events) >= target
        if wants_end:
            if finish is False:
                break
            if finish is None and draw(st.booleans()):
                break
            terminal = [c for c in choices if c in (RunCompleted.type, RunFailed.type, RunCancelled.type)]
            if not terminal:  # e.g. a fresh run: only run.started leads on
                choices = [c for c in choices if c == RunStarted.type] or choices
            else:
                choices = terminal
        else:  # terminal events only once the target length is reached
            non_terminal = [c for c in choices if c not in (RunCompleted.type, RunFailed.type, RunCancelled.type)]
            choices = non_terminal or choices
        event_type = draw(st.sampled_from(choices))
        at = at + timedelta(milliseconds=draw(st.integers(0, 1000)))
        event = _build(draw, event_type, rid, len(events) + 1, at, walk)
        events.append(event)
        status = TRANSITIONS[(status, event_type if event_type in EVENT_TYPES else UNKNOWN)]
        if len(events) > max_events + 4 and finish is not True:
            break
    return events


@st.composite
def any_event(draw: st.DrawFn, *, run_id: str | None = None, max_seq: int = 50) -> Event:
    """An event of any type (known or not) with an arbitrary seq and payload: often invalid."""
    rid = run_id if run_id is not None else draw(ids)
    event_type = draw(st.sampled_from([*EVENT_TYPES, UNKNOWN]))
    walk = _Walk()
    walk.open_calls = [draw(ids)]  # tool.result for a call that may well not exist
    walk.open_message = draw(st.none() | ids)
    seq = draw(st.integers(1, max_seq))
    return _build(draw, event_type, rid, seq, BASE_TIME, walk)


def split_points(events: list[Event]) -> st.SearchStrategy[int]:
    """An index into a history (for prefix/suffix and reconnection properties)."""
    return st.integers(0, len(events))
