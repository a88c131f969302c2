"""The pure reducer: `apply(state, event) -> state` and `fold(events) -> state`.

No clock, no I/O, no randomness: every time in the state comes from an event.

`Fold` is the accumulator behind both. It keeps the state in mutable, private
form so that folding a million `message.delta` events appends a million chunks
to a list instead of copying a growing string or tuple on each step; the frozen
`RunState` is built once, when asked for. Every check runs before any change,
so an illegal event raises `InvalidTransition` and leaves the fold untouched.

What each event type checks and does is declared with its class (`runengine.events`:
`guards`, `fold_into`); the table it is checked against is `runengine.transitions`.
Here is only the generic part: the seq and run id, the table lookup, and the
accumulator's read and write methods that the declarations use.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, KeysView, Sequence
from datetime import datetime
from typing import Any

import attrs

from .errors import InvalidTransition
from .events import EVENT_TYPES, ErrorInfo, Event, UnknownEvent
from .state import Message, RunState, ThoughtRecord, ToolCallRecord, UsageTotals
from .status import Status
from .transitions import TRANSITIONS, UNKNOWN


def _rules() -> dict[type[Event], tuple[dict[Status | None, Status], tuple[Any, ...]]]:
    """Per event class, read from the table and the declarations once: its rows (status before ->
    after) and its guards' checks, so that `Fold.apply` looks both up with one dict access."""
    rules = {}
    for cls in (*EVENT_TYPES.values(), UnknownEvent):
        key = UNKNOWN if cls is UnknownEvent else cls.type
        rows = {before: after for (before, event_type), after in TRANSITIONS.items() if event_type == key}
        rules[cls] = (rows, tuple(guard.refuse for guard in cls.guards))
    return rules


_RULES = _rules()

#: The RunState fields the fold keeps in its own form (lists, counters, the open message): `_freeze`
#: builds these. Every other field is carried, read from `attrs.fields(RunState)`, so that a field
#: added to the state is never dropped by a fold.
FOLDED_FIELDS = frozenset({
    "status", "messages", "partial", "thoughts", "tool_calls", "usage", "inputs", "discarded", "steps",
    "last_seq", "progress_seq",
})
_FIELDS = tuple(field.name for field in attrs.fields(RunState))
if not FOLDED_FIELDS <= set(_FIELDS):  # a folded field renamed in RunState and not here
    raise TypeError(f"not RunState fields: {sorted(FOLDED_FIELDS - set(_FIELDS))}")
_CARRIED = tuple(name for name in _FIELDS if name not in FOLDED_FIELDS)


class Fold:
    """Folds events into a run state, one `apply` at a time, in amortised O(1) per event.

    `apply` checks the table and the event's guards, then calls the event's `fold_into`,
    which changes the state through the methods below (the event declarations in
    `runengine.events` are their only callers).
    """

    def __init__(self, state: RunState | None = None) -> None:
        self._frozen: RunState | None = state
        self._base: RunState | None = state  # fields that events rarely touch
        self.status: Status | None = state.status if state else None
        self.last_seq = state.last_seq if state else 0
        #: The seq of the last event that was progress of the run (`Event.progress`).
        self.progress_seq = state.progress_seq if state else 0
        self.run_id: str | None = state.run_id if state else None
        self._messages: list[Message] = list(state.messages) if state else []
        self._message_ids = {m.message_id for m in self._messages}
        #: The id of the message being streamed by deltas, if one is open.
        self.open_message_id: str | None = None
        self._partial_role = "assistant"
        self._chunks: list[str] = []
        if state is not None and state.partial is not None:
            self.open_message_id = state.partial.message_id
            self._partial_role = state.partial.role
            self._chunks = [state.partial.content]
        self._thoughts: list[ThoughtRecord] = list(state.thoughts) if state else []
        self._calls: list[ToolCallRecord] = list(state.tool_calls) if state else []
        self._call_index = {c.call_id: i for i, c in enumerate(self._calls)}
        self._inputs: list[Any] = list(state.inputs) if state else []
        self._discarded: list[str] = list(state.discarded) if state else []
        # The tuples of the last frozen state, reused while their list has not grown.
        self._tuples: dict[str, tuple[list[Any], tuple[Any, ...]]] = {}
        if state is not None:
            self._tuples = {
                "messages": (self._messages, state.messages),
                "thoughts": (self._thoughts, state.thoughts),
                "inputs": (self._inputs, state.inputs),
                "discarded": (self._discarded, state.discarded),
                "tool_calls": (self._calls, state.tool_calls),
            }
        self._steps = state.steps if state else 0
        usage = state.usage if state else UsageTotals()
        self._in_tokens, self._out_tokens, self._cost = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cost,
        )
        self._changes: dict[str, Any] = {}
        #: The base state and its carried fields' values, read once per base (by `_freeze`).
        self._carried_base: tuple[RunState, dict[str, Any]] | None = None

    # -- the one entry point -------------------------------------------------

    def apply(self, event: Event) -> None:
        """Validate `event` against the state, the table and its guards, then fold it in."""
        event_type = event.type
        status = self.status
        if event.seq != self.last_seq + 1:
            raise InvalidTransition(
                status, event_type, event.seq, f"expected seq {self.last_seq + 1}"
            )
        if self.run_id is not None and event.run_id != self.run_id:
            raise InvalidTransition(
                status, event_type, event.seq, f"event is for run {event.run_id!r}, not {self.run_id!r}"
            )
        rule = _RULES.get(type(event))
        nxt = rule[0].get(status) if rule is not None else None
        if nxt is None:
            reason = "the run has ended" if status is not None and status.terminal else "not allowed by the transition table"
            raise InvalidTransition(status, event_type, event.seq, reason)
        for refuse in rule[1]:  # every check before any change
            refused = refuse(self, event)
            if refused is not None:
                raise InvalidTransition(status, event_type, event.seq, refused)
        event.fold_into(self)
        self.status = nxt
        self.last_seq = event.seq
        if event.progress:
            self.progress_seq = event.seq
        self._changes["updated_at"] = event.at
        self._frozen = None

    def apply_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.apply(event)

    def partial(self) -> Message | None:
        """The message being streamed, without freezing the whole state."""
        if self.open_message_id is None:
            return None
        if len(self._chunks) > 1:
            self._chunks = ["".join(self._chunks)]
        return Message(message_id=self.open_message_id, role=self._partial_role, content=self._chunks[0] if self._chunks else "")

    @property
    def state(self) -> RunState | None:
        """The frozen state (built on demand, cached until the next event)."""
        if self._frozen is None and self.status is not None:
            self._frozen = self._freeze()
        return self._frozen

    # -- what guards read ----------------------------------------------------

    @property
    def steps(self) -> int:
        """The steps recorded so far (`RunState.steps`, without freezing a state)."""
        return self._steps

    @property
    def message_ids(self) -> set[str]:
        """Ids of the completed and discarded messages (spent: a new message needs another)."""
        return self._message_ids

    @property
    def messages(self) -> Sequence[Message]:
        """The completed messages so far (`RunState.messages`, without freezing a state)."""
        return self._messages

    @property
    def call_ids(self) -> KeysView[str]:
        return self._call_index.keys()

    @property
    def open_call_ids(self) -> tuple[str, ...]:
        """The tool calls still waiting for their result, in call order."""
        return tuple(call.call_id for call in self._calls if not call.done)

    def call_done(self, call_id: str) -> bool | None:
        """Whether tool call `call_id` has its result; None when there is no such call."""
        index = self._call_index.get(call_id)
        return None if index is None else self._calls[index].done

    def get(self, name: str) -> Any:
        """A rarely changed field's current value: changed since the base state, or the base's."""
        return self._changes[name] if name in self._changes else getattr(self._base, name)

    # -- what effects do (called by the events' `fold_into`) ------------------

    def begin(self, **fields: Any) -> None:
        """A new run: its first state's fields."""
        self.run_id = fields["run_id"]
        self._base = RunState(**fields)

    def set(self, **changes: Any) -> None:
        """Change rarely changed fields (those without a method below)."""
        self._changes.update(changes)

    def stream(self, message_id: str, content: str) -> None:
        if self.open_message_id is None:
            self.open_message_id = message_id
            self._partial_role = "assistant"
        self._chunks.append(content)

    def complete_message(self, message_id: str, role: str, content: str) -> None:
        self._messages.append(Message(message_id=message_id, role=role, content=content))
        self._message_ids.add(message_id)
        self.open_message_id = None
        self._chunks = []

    def discard_message(self, message_id: str) -> None:
        self._message_ids.add(message_id)  # its id is spent: a fresh message gets a new one
        self._discarded.append(message_id)
        self.open_message_id = None
        self._chunks = []

    def add_thought(self, content: str, source: str | None, seq: int) -> None:
        self._thoughts.append(ThoughtRecord(content=content, source=source, seq=seq))

    def open_call(self, call_id: str, name: str, arguments: dict[str, Any]) -> None:
        self._call_index[call_id] = len(self._calls)
        self._calls.append(ToolCallRecord(call_id=call_id, name=name, arguments=arguments))

    def close_call(self, call_id: str, output: Any, error: ErrorInfo | None) -> None:
        index = self._call_index[call_id]
        call = self._calls[index]
        self._calls[index] = ToolCallRecord(
            call_id=call_id, name=call.name, arguments=call.arguments, done=True, output=output, error=error
        )
        self._tuples.pop("tool_calls", None)  # changed in place: the cached tuple is stale

    def count_step(self) -> None:
        self._steps += 1

    def add_input(self, content: Any) -> None:
        self._inputs.append(content)

    def add_usage(self, input_tokens: int, output_tokens: int, cost: float) -> None:
        self._in_tokens += input_tokens
        self._out_tokens += output_tokens
        self._cost += cost

    def restart_attempt(self, seq: int) -> None:
        """A new attempt starts from the run's input: what the lost attempt produced is dropped."""
        self._messages, self._message_ids = [], set()
        self.open_message_id, self._chunks = None, []
        self._thoughts, self._calls, self._call_index = [], [], {}
        self._steps = 0
        self.set(await_request=None, sleeping_until=None, timer_id=None, input_expires_at=None, replay_from=seq)

    def finish(self, at: datetime, **outcome: Any) -> None:
        """The run ended at `at` with `outcome` (output, error or cancel_reason)."""
        self.set(finished_at=at, await_request=None, sleeping_until=None, timer_id=None, input_expires_at=None, **outcome)

    # -- freezing -------------------------------------------------------------

    def _freeze(self) -> RunState:
        assert self._base is not None and self.status is not None
        if len(self._chunks) > 1:  # join once, and keep the joined string for later appends
            self._chunks = ["".join(self._chunks)]
        partial = (
            Message(message_id=self.open_message_id, role=self._partial_role, content=self._chunks[0] if self._chunks else "")
            if self.open_message_id is not None
            else None
        )
        if self._carried_base is None or self._carried_base[0] is not self._base:
            self._carried_base = (self._base, {name: getattr(self._base, name) for name in _CARRIED})
        # Every RunState field the fold does not keep itself: changed since the base, or the base's.
        return RunState(
            **{**self._carried_base[1], **self._changes},
            status=self.status,
            messages=self._tuple("messages", self._messages),
            partial=partial,
            thoughts=self._tuple("thoughts", self._thoughts),
            tool_calls=self._tuple("tool_calls", self._calls),
            usage=UsageTotals(input_tokens=self._in_tokens, output_tokens=self._out_tokens, cost=self._cost),
            inputs=self._tuple("inputs", self._inputs),
            discarded=self._tuple("discarded", self._discarded),
            steps=self._steps,
            last_seq=self.last_seq,
            progress_seq=self.progress_seq,
        )

    def _tuple(self, name: str, items: list[Any]) -> tuple[Any, ...]:
        """`tuple(items)`, reused from the last freeze while the (append-only) list has not grown."""
        cached = self._tuples.get(name)
        if cached is not None and cached[0] is items and len(cached[1]) == len(items):
            return cached[1]
        frozen = tuple(items)
        self._tuples[name] = (items, frozen)
        return frozen


# The fold that produced each state `apply` returned, kept while that state is alive and not yet
# advanced: applying the next event to it moves the fold on instead of rebuilding one from the state.
# A state is advanced at most once this way (the entry is taken out, atomically); applying an event
# to it again (a branch) rebuilds a fold from the state, so the result depends only on (state, event).
_tips: dict[int, tuple[weakref.ref[RunState], Fold]] = {}


def _forget(key: int, tips: dict[int, Any] = _tips) -> Any:
    return lambda _ref: tips.pop(key, None)


def apply(state: RunState | None, event: Event) -> RunState:
    """The state after `event`. Raises InvalidTransition (and `state` is untouched) when illegal.

    O(1) per call along a chain of applies (each call's result fed to the next), besides
    copying the partial message's text and the collection that the event grows.
    """
    tip = _tips.pop(id(state), None) if state is not None else None
    fold_ = tip[1] if tip is not None and tip[0]() is state else Fold(state)
    try:
        fold_.apply(event)
    except InvalidTransition:
        if tip is not None:
            _tips[id(state)] = tip  # refused: the fold is unchanged, still `state`'s
        raise
    result = fold_.state
    assert result is not None
    key = id(result)
    _tips[key] = (weakref.ref(result, _forget(key)), fold_)
    return result


def fold(events: Iterable[Event], state: RunState | None = None) -> RunState | None:
    """Fold `events` onto `state` (None: from the beginning). Linear in the number of events."""
    fold_ = Fold(state)
    fold_.apply_all(events)
    return fold_.state


__all__ = ["Fold", "apply", "fold", "EVENT_TYPES"]
