"""Hypothesis strategies for runs, derived from the event declarations.

`histories()` generates valid logs by walking the transition table (the same
table the reducer validates against) with a real `Fold`: the types a status accepts
come from the table, the ones whose guards cannot pass now are left out, guarded id
fields are filled from the guards' passing values, and every other payload field
from its declared type. Each event is folded as it is drawn, so every generated
history folds without error. `any_event()` generates events of every type with
arbitrary sequence numbers and payloads: mostly invalid for a given state, which is the point.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any, Union, get_args, get_origin

import attrs
from hypothesis import strategies as st

from ..events import ENVELOPE_FIELDS, EVENT_TYPES, VALUES, ErrorInfo, Event, Fresh, Guard, UnknownEvent
from ..reducer import Fold
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

#: Text fields that name something (drawn as ids); other text fields are free text.
_NAMES = frozenset({"agent", "name", "worker", "version", "owner", "source", "code"})

#: Per event type, per payload field: a strategy to use instead of the derived one.
Overrides = Mapping[str, Mapping[str, st.SearchStrategy[Any]]]


@cache
def _fields(cls: type[Event]) -> tuple[attrs.Attribute, ...]:  # type: ignore[type-arg]
    attrs.resolve_types(cls)
    return tuple(f for f in attrs.fields(cls) if f.name not in ENVELOPE_FIELDS)


@cache
def _field_strategy(cls: type[Event], name: str) -> st.SearchStrategy[Any]:
    """Values for payload field `name` of `cls`: its declared usual values, or values of its type."""
    field = attrs.fields_dict(cls)[name]
    if VALUES in field.metadata:
        return st.sampled_from(field.metadata[VALUES])
    return _for_type(field.type, name)


def _for_type(tp: Any, name: str) -> st.SearchStrategy[Any]:
    """Values of the declared type `tp` (a new field type without a case here fails loudly)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        parts = [arg for arg in get_args(tp) if arg is not type(None)]
        inner = st.one_of(*(_for_type(arg, name) for arg in parts))
        return st.none() | inner if len(parts) < len(get_args(tp)) else inner
    if tp is Any:
        return json_values
    if tp is str:
        return ids if name in _NAMES or name.endswith("_id") else short_text
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(0, 10_000)
    if tp is float:
        return st.floats(0, 10, allow_nan=False)
    if tp is datetime:
        return st.integers(0, 3600).map(lambda seconds: BASE_TIME + timedelta(seconds=seconds))
    if origin is dict:
        return st.dictionaries(ids, json_values, max_size=2)
    if tp is ErrorInfo:
        return error_infos
    raise TypeError(f"no strategy for a field of type {tp!r} ({name}): add one to runengine.testing.strategies")


def _fresh(taken: Any) -> Callable[[str], str]:
    def fresh(candidate: str) -> str:
        while candidate in taken:
            candidate += "x"
        return candidate

    return fresh


def _passing(guard: Guard, run: Fold) -> st.SearchStrategy[Any] | None:
    """The values of the guarded field that pass now (None: none does)."""
    assert guard.passing is not None
    passing = guard.passing(run)
    if isinstance(passing, Fresh):
        return ids.map(_fresh(passing.taken))
    return st.sampled_from(passing) if passing else None


def can_come(event_type: str, run: Fold) -> bool:
    """Whether an event of `event_type` can pass its guards in `run`'s state (the table aside)."""
    if event_type == UNKNOWN:
        return True
    for guard in EVENT_TYPES[event_type].guards:
        if guard.field is None:
            if guard.refuse(run, None) is not None:
                return False
        elif _passing(guard, run) is None:
            return False
    return True


def next_types(run: Fold, *, include_unknown: bool = True) -> list[str]:
    """The event types (and UNKNOWN) that `run` accepts next: the table's, whose guards can pass."""
    return [
        event_type
        for event_type in allowed(run.status)
        if (include_unknown or event_type != UNKNOWN) and can_come(event_type, run)
    ]


def build_event(
    draw: st.DrawFn,
    event_type: str,
    run_id: str,
    seq: int,
    at: datetime,
    run: Fold | None = None,
    overrides: Overrides | None = None,
) -> Event:
    """An event of `event_type`; with `run`, its guarded fields hold values `run` accepts."""
    if event_type == UNKNOWN:
        return UnknownEvent(
            run_id=run_id, seq=seq, at=at, type=f"future.{draw(ids)}", data=draw(st.dictionaries(ids, json_values, max_size=2))
        )
    cls = EVENT_TYPES[event_type]
    guarded = {g.field: g for g in cls.guards if g.field is not None} if run is not None else {}
    ours = (overrides or {}).get(event_type, {})
    payload: dict[str, Any] = {}
    for field in _fields(cls):
        if field.name in guarded:
            assert run is not None
            values = _passing(guarded[field.name], run)
            assert values is not None, f"{event_type} cannot come now"
        elif field.name in ours:
            values = ours[field.name]
        else:
            values = _field_strategy(cls, field.name)
        payload[field.name] = draw(values)
    return cls(run_id=run_id, seq=seq, at=at, **payload)


@st.composite
def next_event(
    draw: st.DrawFn,
    run: Fold,
    run_id: str,
    *,
    at: datetime,
    include_unknown: bool = True,
    weights: Mapping[str, int] | None = None,
    overrides: Overrides | None = None,
) -> Event:
    """An event `run` accepts next (`run` must accept one: it has not ended). Not folded in."""
    choices = next_types(run, include_unknown=include_unknown)
    assert choices, "the run has ended"
    if weights:
        choices = [c for c in choices for _ in range(weights.get(c, 1))]
    event_type = draw(st.sampled_from(choices))
    return build_event(draw, event_type, run_id, run.last_seq + 1, at, run, overrides)


def _is_terminal(event_type: str) -> bool:
    return event_type in EVENT_TYPES and EVENT_TYPES[event_type].terminal


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
    """A valid log: starts with run.created, follows the table and the guards, gapless seqs.

    `finish=True` ends it with a terminal event, False never does, None lets hypothesis choose.
    """
    rid = run_id if run_id is not None else draw(ids)
    run = Fold()
    events: list[Event] = []
    at = BASE_TIME
    target = draw(st.integers(min_events, max_events))
    while True:
        choices = next_types(run, include_unknown=include_unknown)
        if not choices:
            break  # terminal
        if len(events) >= target:
            if finish is False:
                break
            if finish is None and draw(st.booleans()):
                break
            terminal = [c for c in choices if _is_terminal(c)]
            if not terminal:  # e.g. a fresh run: only run.started leads on
                choices = [c for c in choices if c == "run.started"] or choices
            else:
                choices = terminal
        else:  # terminal events only once the target length is reached
            choices = [c for c in choices if not _is_terminal(c)] or choices
        event_type = draw(st.sampled_from(choices))
        at = at + timedelta(milliseconds=draw(st.integers(0, 1000)))
        event = build_event(draw, event_type, rid, len(events) + 1, at, run)
        run.apply(event)  # a generator that disagrees with the reducer fails here
        events.append(event)
        if len(events) > max_events + 4 and finish is not True:
            break
    return events


@st.composite
def any_event(draw: st.DrawFn, *, run_id: str | None = None, max_seq: int = 50) -> Event:
    """An event of any type (known or not) with an arbitrary seq and payload: often invalid."""
    rid = run_id if run_id is not None else draw(ids)
    event_type = draw(st.sampled_from([*EVENT_TYPES, UNKNOWN]))
    seq = draw(st.integers(1, max_seq))
    return build_event(draw, event_type, rid, seq, BASE_TIME)
