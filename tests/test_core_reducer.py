"""The reducer against the transition table: properties and precise refusals."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st

from runengine import transitions
from runengine.errors import InvalidTransition
from runengine.events import (
    EVENT_TYPES,
    ErrorInfo,
    MessageCompleted,
    MessageDelta,
    MessageDiscarded,
    RunCompleted,
    RunCreated,
    RunInput,
    RunResumed,
    RunStarted,
    ToolCall,
    ToolResult,
)
from runengine.reducer import Fold, apply, fold
from runengine.state import RunState
from runengine.status import Status
from runengine.testing.machine import LogMachine
from runengine.testing.strategies import any_event, histories
from runengine.transitions import TRANSITIONS, UNKNOWN

ROOT = Path(__file__).resolve().parent.parent


def started(run_id="r"):
    return fold([RunCreated(run_id=run_id, seq=1, agent="a"), RunStarted(run_id=run_id, seq=2)])


@given(histories(max_events=25), st.data())
def test_every_state_event_pair_is_a_table_transition_or_refused_unchanged(events, data):
    state = fold(events)
    event = data.draw(any_event(run_id=state.run_id, max_seq=state.last_seq + 2))
    known = event.type in EVENT_TYPES
    try:
        after = apply(state, event)
    except InvalidTransition as exc:
        assert fold(events) == state  # unchanged (and frozen)
        assert exc.event_type == event.type and exc.status == state.status
        return
    assert (state.status, event.type if known else UNKNOWN) in TRANSITIONS
    assert after.status == TRANSITIONS[(state.status, event.type if known else UNKNOWN)]
    assert after.last_seq == state.last_seq + 1 == event.seq


@given(histories(finish=True, max_events=20), st.data())
def test_terminal_states_absorb_nothing(events, data):
    state = fold(events)
    assert state.terminal
    event = data.draw(any_event(run_id=state.run_id))
    event = evolve(event, seq=state.last_seq + 1)
    with pytest.raises(InvalidTransition, match="ended|not allowed"):
        apply(state, event)


@given(histories(max_events=40), st.data())
def test_fold_of_prefix_then_suffix_equals_fold_of_all(events, data):
    cut = data.draw(st.integers(0, len(events)))
    assert fold(events[cut:], fold(events[:cut])) == fold(events)


@given(histories(max_events=40))
def test_step_by_step_apply_equals_fold(events):
    state = None
    for event in events:
        state = apply(state, event)
    assert state == fold(events)


def test_table_is_the_single_source_for_allowed_types():
    for (src, event_type), dst in TRANSITIONS.items():
        assert event_type == UNKNOWN or event_type in EVENT_TYPES
        assert src is None or not src.terminal, "terminal states have no outgoing rows"
    assert transitions.allowed(None) == ("run.created",)
    for status in Status:
        if status.terminal:
            assert transitions.allowed(status) == ()


def test_docs_diagram_is_generated_from_the_table():
    doc = (ROOT / "docs" / "transitions.md").read_text()
    assert transitions.mermaid() in doc, "run `python -m runengine.transitions > docs/...`: docs/transitions.md is stale"


@pytest.mark.parametrize(
    "events, bad, reason",
    [
        ([], RunStarted(run_id="r", seq=1), "not allowed"),
        ([RunCreated(run_id="r", seq=1, agent="a")], RunStarted(run_id="r", seq=3), "expected seq 2"),
        ([RunCreated(run_id="r", seq=1, agent="a")], RunStarted(run_id="other", seq=2), "for run 'other'"),
        (
            [RunCreated(run_id="r", seq=1, agent="a"), RunStarted(run_id="r", seq=2)],
            ToolResult(run_id="r", seq=3, call_id="c9", output=1),
            "no tool.call with call_id 'c9'",
        ),
        (
            [RunCreated(run_id="r", seq=1, agent="a"), RunStarted(run_id="r", seq=2)],
            RunInput(run_id="r", seq=3, content="x"),
            "not allowed",
        ),
        (
            [RunCreated(run_id="r", seq=1, agent="a"), RunStarted(run_id="r", seq=2), RunCompleted(run_id="r", seq=3)],
            MessageDelta(run_id="r", seq=4, message_id="m", content="x"),
            "the run has ended",
        ),
        (
            [
                RunCreated(run_id="r", seq=1, agent="a"),
                RunStarted(run_id="r", seq=2),
                MessageDelta(run_id="r", seq=3, message_id="m1", content="x"),
            ],
            MessageDelta(run_id="r", seq=4, message_id="m2", content="y"),
            "'m1' is still streaming",
        ),
        (
            [
                RunCreated(run_id="r", seq=1, agent="a"),
                RunStarted(run_id="r", seq=2),
                ToolCall(run_id="r", seq=3, call_id="c", name="t"),
                ToolResult(run_id="r", seq=4, call_id="c", error=ErrorInfo(code="x")),
            ],
            ToolResult(run_id="r", seq=5, call_id="c", output=2),
            "already has its result",
        ),
    ],
)
def test_illegal_events_raise_a_precise_error_and_change_nothing(events, bad, reason):
    f = Fold()
    f.apply_all(events)
    before = f.state
    with pytest.raises(InvalidTransition, match=reason) as info:
        f.apply(bad)
    assert f.state == before
    assert bad.type in str(info.value)
    if before is not None:
        assert repr(before.status.value) in str(info.value)


def test_deltas_join_into_the_partial_message_and_completion_closes_it():
    f = Fold(started())
    for i, piece in enumerate(["Hel", "lo", " world"]):
        f.apply(MessageDelta(run_id="r", seq=3 + i, message_id="m", content=piece))
    assert f.state.partial.content == "Hello world" and f.state.messages == ()
    f.apply(MessageCompleted(run_id="r", seq=6, message_id="m", content="Hello world"))
    assert f.state.partial is None and f.state.messages[0].content == "Hello world"
    assert f.state.text == "Hello world"


def test_a_long_stream_folds_to_the_whole_text():
    n = 200_000
    events = [RunCreated(run_id="r", seq=1, agent="a"), RunStarted(run_id="r", seq=2)]
    events += [MessageDelta(run_id="r", seq=3 + i, message_id="m", content="ab") for i in range(n)]
    state = fold(events)
    assert state.partial.content == "ab" * n and state.last_seq == n + 2


def test_freezing_mid_stream_does_not_change_the_result():
    f = Fold(started())
    for i in range(100):
        f.apply(MessageDelta(run_id="r", seq=3 + i, message_id="m", content=str(i % 10)))
        if i % 7 == 0:
            assert f.state.partial.content == "".join(str(j % 10) for j in range(i + 1))


TestLogMachine = LogMachine.TestCase
TestLogMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_process_losses_count_in_a_row_without_progress() -> None:
    """Issue 20, item 2: a loss counts against a run that made no progress since its last start or
    resumption; progress (a completed message here) starts the count again. Text streamed and
    left open is not progress: the next resumption discards it and the agent streams it again
    (a crash loop that talks before its fatal step still ends)."""
    lost = [RunCreated(run_id="r", seq=1, agent="a"), RunStarted(run_id="r", seq=2)]

    def resumed() -> RunResumed:
        return RunResumed(run_id="r", seq=len(lost) + 1, reason="worker_lost")

    counts = []
    for step in ("lost", "lost", "progress", "lost", "partial", "lost", "lost"):
        if step == "progress":
            lost.append(MessageDelta(run_id="r", seq=len(lost) + 1, message_id=f"m{len(lost)}", content="x"))
            lost.append(MessageCompleted(run_id="r", seq=len(lost) + 1, message_id=f"m{len(lost) - 1}"))
            continue
        if step == "partial":  # a half-streamed message: not progress, discarded by the next resumption
            lost.append(MessageDelta(run_id="r", seq=len(lost) + 1, message_id="half", content="x"))
            continue
        lost.append(resumed())
        state = fold(lost)
        if state.partial is not None:
            lost.append(MessageDiscarded(run_id="r", seq=len(lost) + 1, message_id=state.partial.message_id))
        counts.append(fold(lost).lost_attempts)
    assert counts == [1, 2, 1, 2, 3]


def _distinct_value(field: attrs.Attribute, index: int) -> object:
    """A value for `field` that is not its default, told apart from every other field's."""
    from datetime import datetime, timedelta, timezone

    from runengine.state import Message, ThoughtRecord, ToolCallRecord, UsageTotals

    name = field.name
    special = {
        "status": Status.WAITING_FOR_INPUT,
        "messages": (Message(message_id="m1", content="hi"),),
        "partial": Message(message_id="m2", content="par"),
        "thoughts": (ThoughtRecord(content="t", seq=3),),
        "tool_calls": (ToolCallRecord(call_id="c1", name="tool"),),
        "usage": UsageTotals(input_tokens=1, output_tokens=2, cost=0.5),
        "inputs": ("in",),
        "discarded": ("m0",),
        "error": ErrorInfo(code="boom"),
        "metadata": {"k": index},
        "suspended": True,
    }
    if name in special:
        return special[name]
    if name.endswith("_at") or name in ("sleeping_until", "input_expires_at"):
        return datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=index)
    if field.type in ("int", int) or name in ("steps", "attempt", "last_seq", "progress_seq", "replay_from"):
        return 100 + index
    if name == "timeout":
        return 1.5 + index
    return f"{name}-{index}"


def test_every_run_state_field_survives_a_fold_and_a_freeze() -> None:
    # The reducer builds RunState from attrs.fields(RunState): a field it does not fold itself is
    # carried from the base state or from its changes (issue 21), never dropped.
    from runengine.reducer import FOLDED_FIELDS

    fields = attrs.fields(RunState)
    full = RunState(**{field.name: _distinct_value(field, i) for i, field in enumerate(fields)})
    for field in fields:
        assert getattr(full, field.name) != field.default, field.name
    assert Fold(full).state == full

    # A field changed by an event (it lives in the fold's changes until the next freeze) is
    # carried too, whichever field it is.
    base = RunState(run_id="r", agent="a", status=Status.RUNNING, last_seq=2)
    for index, field in enumerate(fields):
        if field.name in FOLDED_FIELDS:
            continue
        accumulator = Fold(base)
        value = _distinct_value(field, index)
        accumulator.apply(MessageDelta(run_id="r", seq=3, message_id="m", content="x"))
        accumulator.set(**{field.name: value})  # as an event's fold_into does, before the freeze
        assert getattr(accumulator.state, field.name) == value, field.name
