"""The pure reducer: `apply(state, event) -> state` and `fold(events) -> state`.

No clock, no I/O, no randomness: every time in the state comes from an event.

`Fold` is the accumulator behind both. It keeps the state in mutable, private
form so that folding a million `message.delta` events appends a million chunks
to a list instead of copying a growing string or tuple on each step; the frozen
`RunState` is built once, when asked for. Every check runs before any change,
so an illegal event raises `InvalidTransition` and leaves the fold untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .errors import InvalidTransition
from .events import (
    EVENT_TYPES,
    Custom,
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
    Usage,
)
from .state import Message, RunState, ThoughtRecord, ToolCallRecord, UsageTotals
from .status import Status
from .transitions import TRANSITIONS, UNKNOWN


class _Call:
    """A tool call while folding (mutable; frozen into ToolCallRecord)."""

    __slots__ = ("call_id", "name", "arguments", "done", "output", "error")

    def __init__(self, record: ToolCallRecord) -> None:
        self.call_id = record.call_id
        self.name = record.name
        self.arguments = record.arguments
        self.done = record.done
        self.output = record.output
        self.error = record.error

    def freeze(self) -> ToolCallRecord:
        return ToolCallRecord(
            call_id=self.call_id,
            name=self.name,
            arguments=self.arguments,
            done=self.done,
            output=self.output,
            error=self.error,
        )


class Fold:
    """Folds events into a run state, one `apply` at a time, in amortised O(1) per event."""

    def __init__(self, state: RunState | None = None) -> None:
        self._frozen: RunState | None = state
        self._base: RunState | None = state  # fields that events rarely touch
        self.status: Status | None = state.status if state else None
        self.last_seq = state.last_seq if state else 0
        self.run_id: str | None = state.run_id if state else None
        self._messages: list[Message] = list(state.messages) if state else []
        self._message_ids = {m.message_id for m in self._messages}
        self._partial_id: str | None = None
        self._partial_role = "assistant"
        self._chunks: list[str] = []
        if state is not None and state.partial is not None:
            self._partial_id = state.partial.message_id
            self._partial_role = state.partial.role
            self._chunks = [state.partial.content]
        self._thoughts: list[ThoughtRecord] = list(state.thoughts) if state else []
        self._calls: dict[str, _Call] = (
            {c.call_id: _Call(c) for c in state.tool_calls} if state else {}
        )
        self._inputs: list[Any] = list(state.inputs) if state else []
        self._discarded: list[str] = list(state.discarded) if state else []
        self._steps = state.steps if state else 0
        usage = state.usage if state else UsageTotals()
        self._in_tokens, self._out_tokens, self._cost = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cost,
        )
        self._changes: dict[str, Any] = {}
        self._handlers: dict[str, Callable[[Any], None]] = {
            RunCreated.type: self._created,
            RunStarted.type: self._started,
            RunResumed.type: self._resumed,
            RunSuspended.type: self._suspended,
            MessageDelta.type: self._delta,
            MessageCompleted.type: self._message_completed,
            MessageDiscarded.type: self._message_discarded,
            Thought.type: self._thought,
            ToolCall.type: self._tool_call,
            ToolResult.type: self._tool_result,
            StepCompleted.type: self._step,
            TimerStarted.type: self._timer_started,
            TimerFired.type: self._timer_fired,
            RunWaitingForInput.type: self._waiting,
            RunInput.type: self._input,
            RunInputTimedOut.type: self._input_timed_out,
            Usage.type: self._usage,
            Custom.type: _ignore,
            RunRequeued.type: self._requeued,
            RunCompleted.type: self._completed,
            RunFailed.type: self._failed,
            RunCancelled.type: self._cancelled,
        }

    # -- the one entry point -------------------------------------------------

    def apply(self, event: Event) -> None:
        """Validate `event` against the state and the table, then fold it in."""
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
        handler = self._handlers.get(event_type)
        nxt = TRANSITIONS.get((status, event_type if handler is not None else UNKNOWN))
        if nxt is None:
            reason = "the run has ended" if status is not None and status.terminal else "not allowed by the transition table"
            raise InvalidTransition(status, event_type, event.seq, reason)
        if handler is not None:
            handler(event)  # raises before changing anything when a guard fails
        self.status = nxt
        self.last_seq = event.seq
        self._changes["updated_at"] = event.at
        self._frozen = None

    def apply_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.apply(event)

    @property
    def open_message_id(self) -> str | None:
        """The id of the message being streamed by deltas, if one is open."""
        return self._partial_id

    def partial(self) -> Message | None:
        """The message being streamed, without freezing the whole state."""
        if self._partial_id is None:
            return None
        if len(self._chunks) > 1:
            self._chunks = ["".join(self._chunks)]
        return Message(message_id=self._partial_id, role=self._partial_role, content=self._chunks[0] if self._chunks else "")

    @property
    def state(self) -> RunState | None:
        """The frozen state (built on demand, cached until the next event)."""
        if self._frozen is None and self.status is not None:
            self._frozen = self._freeze()
        return self._frozen

    # -- handlers: guards first, then changes ----------------------------------

    def _reject(self, event: Event, reason: str) -> InvalidTransition:
        return InvalidTransition(self.status, event.type, event.seq, reason)

    def _created(self, e: RunCreated) -> None:
        self.run_id = e.run_id
        self._base = RunState(
            run_id=e.run_id,
            agent=e.agent,
            status=Status.PENDING,
            input=e.input,
            session_id=e.session_id,
            metadata=e.metadata,
            mode=e.mode,
            owner=e.owner,
            timeout=e.timeout,
            start_at=e.start_at,
            created_at=e.at,
        )

    def _started(self, e: RunStarted) -> None:
        if "started_at" not in self._changes and (self._base is None or self._base.started_at is None):
            self._changes["started_at"] = e.at
        self._changes["attempt"] = e.attempt
        self._changes["worker"] = e.worker
        self._changes["version"] = e.version

    def _resumed(self, e: RunResumed) -> None:
        self._changes["attempt"] = e.attempt
        self._changes["worker"] = e.worker
        self._changes["version"] = e.version
        self._changes["suspended"] = False
        if e.reason == "worker_lost":
            self._changes["lost_attempts"] = self._get("lost_attempts") + 1

    def _suspended(self, e: RunSuspended) -> None:
        self._changes["suspended"] = True

    def _get(self, name: str) -> Any:
        """A rarely changed field's current value: changed since the base state, or the base's."""
        return self._changes[name] if name in self._changes else getattr(self._base, name)

    def _delta(self, e: MessageDelta) -> None:
        if self._partial_id is None:
            if e.message_id in self._message_ids:
                raise self._reject(e, f"message {e.message_id!r} is already completed")
            self._partial_id = e.message_id
            self._partial_role = "assistant"
        elif e.message_id != self._partial_id:
            raise self._reject(e, f"message {self._partial_id!r} is still streaming")
        self._chunks.append(e.content)

    def _message_completed(self, e: MessageCompleted) -> None:
        if self._partial_id is not None and e.message_id != self._partial_id:
            raise self._reject(e, f"message {self._partial_id!r} is still streaming")
        if e.message_id in self._message_ids:
            raise self._reject(e, f"message {e.message_id!r} is already completed")
        self._messages.append(Message(message_id=e.message_id, role=e.role, content=e.content))
        self._message_ids.add(e.message_id)
        self._partial_id = None
        self._chunks = []

    def _message_discarded(self, e: MessageDiscarded) -> None:
        if e.message_id != self._partial_id:
            raise self._reject(e, f"message {e.message_id!r} is not the one streaming")
        self._message_ids.add(e.message_id)  # its id is spent: a fresh message gets a new one
        self._discarded.append(e.message_id)
        self._partial_id = None
        self._chunks = []

    def _step(self, e: StepCompleted) -> None:
        self._steps += 1

    def _timer_started(self, e: TimerStarted) -> None:
        if self._get("timer_id") is not None:
            raise self._reject(e, "a timer is already running")
        self._changes["sleeping_until"] = e.until
        self._changes["timer_id"] = e.timer_id

    def _timer_fired(self, e: TimerFired) -> None:
        if self._get("timer_id") != e.timer_id:
            raise self._reject(e, f"no running timer {e.timer_id!r}")
        self._changes["sleeping_until"] = None
        self._changes["timer_id"] = None

    def _thought(self, e: Thought) -> None:
        self._thoughts.append(ThoughtRecord(content=e.content, source=e.source, seq=e.seq))

    def _tool_call(self, e: ToolCall) -> None:
        if e.call_id in self._calls:
            raise self._reject(e, f"tool call {e.call_id!r} already exists")
        self._calls[e.call_id] = _Call(
            ToolCallRecord(call_id=e.call_id, name=e.name, arguments=e.arguments)
        )

    def _tool_result(self, e: ToolResult) -> None:
        call = self._calls.get(e.call_id)
        if call is None:
            raise self._reject(e, f"no tool.call with call_id {e.call_id!r}")
        if call.done:
            raise self._reject(e, f"tool call {e.call_id!r} already has its result")
        call.done, call.output, call.error = True, e.output, e.error

    def _waiting(self, e: RunWaitingForInput) -> None:
        self._changes["await_request"] = e.request
        self._changes["input_expires_at"] = e.expires_at

    def _input(self, e: RunInput) -> None:
        self._inputs.append(e.content)
        self._changes["await_request"] = None
        self._changes["input_expires_at"] = None

    def _input_timed_out(self, e: RunInputTimedOut) -> None:
        self._changes["await_request"] = None
        self._changes["input_expires_at"] = None

    def _usage(self, e: Usage) -> None:
        self._in_tokens += e.input_tokens
        self._out_tokens += e.output_tokens
        self._cost += e.cost

    def _requeued(self, e: RunRequeued) -> None:
        # A new attempt starts from the run's input: what the lost attempt produced is dropped.
        self._messages, self._message_ids = [], set()
        self._partial_id, self._chunks = None, []
        self._thoughts, self._calls = [], {}
        self._steps = 0
        self._changes["await_request"] = None
        self._changes["sleeping_until"] = self._changes["timer_id"] = None
        self._changes["input_expires_at"] = None
        self._changes["replay_from"] = e.seq

    def _finish(self, e: Event) -> None:
        self._changes["finished_at"] = e.at
        self._changes["await_request"] = None
        self._changes["sleeping_until"] = self._changes["timer_id"] = None
        self._changes["input_expires_at"] = None

    def _completed(self, e: RunCompleted) -> None:
        self._finish(e)
        self._changes["output"] = e.output

    def _failed(self, e: RunFailed) -> None:
        self._finish(e)
        self._changes["error"] = e.error

    def _cancelled(self, e: RunCancelled) -> None:
        self._finish(e)
        self._changes["cancel_reason"] = e.reason

    # -- freezing -------------------------------------------------------------

    def _freeze(self) -> RunState:
        assert self._base is not None and self.status is not None
        if len(self._chunks) > 1:  # join once, and keep the joined string for later appends
            self._chunks = ["".join(self._chunks)]
        partial = (
            Message(message_id=self._partial_id, role=self._partial_role, content=self._chunks[0] if self._chunks else "")
            if self._partial_id is not None
            else None
        )
        base = self._base
        changes = self._changes
        state = RunState(
            run_id=base.run_id,
            agent=base.agent,
            status=self.status,
            input=base.input,
            session_id=base.session_id,
            metadata=base.metadata,
            mode=base.mode,
            owner=base.owner,
            timeout=base.timeout,
            messages=tuple(self._messages),
            partial=partial,
            thoughts=tuple(self._thoughts),
            tool_calls=tuple(c.freeze() for c in self._calls.values()),
            usage=UsageTotals(
                input_tokens=self._in_tokens, output_tokens=self._out_tokens, cost=self._cost
            ),
            inputs=tuple(self._inputs),
            await_request=changes.get("await_request", base.await_request),
            output=changes.get("output", base.output),
            error=changes.get("error", base.error),
            cancel_reason=changes.get("cancel_reason", base.cancel_reason),
            created_at=base.created_at,
            started_at=changes.get("started_at", base.started_at),
            finished_at=changes.get("finished_at", base.finished_at),
            updated_at=changes.get("updated_at", base.updated_at),
            attempt=changes.get("attempt", base.attempt),
            worker=changes.get("worker", base.worker),
            start_at=base.start_at,
            version=changes.get("version", base.version),
            sleeping_until=changes.get("sleeping_until", base.sleeping_until),
            timer_id=changes.get("timer_id", base.timer_id),
            input_expires_at=changes.get("input_expires_at", base.input_expires_at),
            suspended=changes.get("suspended", base.suspended),
            lost_attempts=changes.get("lost_attempts", base.lost_attempts),
            discarded=tuple(self._discarded),
            steps=self._steps,
            replay_from=changes.get("replay_from", base.replay_from),
            last_seq=self.last_seq,
        )
        return state


def _ignore(event: Event) -> None:
    return None


def apply(state: RunState | None, event: Event) -> RunState:
    """The state after `event`. Raises InvalidTransition (and `state` is untouched) when illegal."""
    fold_ = Fold(state)
    fold_.apply(event)
    result = fold_.state
    assert result is not None
    return result


def fold(events: Iterable[Event], state: RunState | None = None) -> RunState | None:
    """Fold `events` onto `state` (None: from the beginning). Linear in the number of events."""
    fold_ = Fold(state)
    fold_.apply_all(events)
    return fold_.state


__all__ = ["Fold", "apply", "fold", "EVENT_TYPES"]
