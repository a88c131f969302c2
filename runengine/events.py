"""The events of a run: one frozen attrs class per type, each with its dotted wire name.

Every event carries the run it belongs to, its sequence number in that run's log
(1, 2, 3 ... gapless) and the time it was recorded. Conversion to and from JSON
lives in `runengine.wire`, nowhere else.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, ClassVar

import attrs

#: The epoch used where an event is built without a time (tests, strategies).
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@attrs.frozen(kw_only=True)
class ErrorInfo:
    """Why a run (or a tool call) failed: a stable machine code and a human message."""

    code: str
    message: str = ""


@attrs.frozen(kw_only=True)
class Event:
    """Base of every event. `type` is the dotted wire name, a class constant."""

    type: ClassVar[str] = ""
    #: True for the events that end a run.
    terminal: ClassVar[bool] = False

    run_id: str
    seq: int
    at: datetime = EPOCH


@attrs.frozen(kw_only=True)
class RunCreated(Event):
    type: ClassVar[str] = "run.created"
    agent: str
    input: Any = None
    session_id: str | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)
    mode: str = "sync"
    #: Who created the run (the auth hook's principal); None when auth is off.
    owner: str | None = None
    #: Seconds the run may take before it fails with code `timeout` (counted from its start).
    timeout: float | None = None
    #: A delayed run stays pending until this time.
    start_at: datetime | None = None


@attrs.frozen(kw_only=True)
class RunStarted(Event):
    type: ClassVar[str] = "run.started"
    #: Which engine process (worker) executes this attempt.
    worker: str | None = None
    attempt: int = 1
    #: The agent's version key (`@engine.agent(name, version=...)`), checked when the run resumes.
    version: str | None = None


@attrs.frozen(kw_only=True)
class RunResumed(Event):
    """An engine took up an unfinished run again: its agent replays the log, then goes on live."""

    type: ClassVar[str] = "run.resumed"
    worker: str | None = None
    attempt: int = 1
    #: "restart" after a graceful stop (run.suspended), "worker_lost" after a crash.
    reason: str = "restart"
    version: str | None = None


@attrs.frozen(kw_only=True)
class RunSuspended(Event):
    """The executing process stopped gracefully; the run waits, unfinished, for the next engine."""

    type: ClassVar[str] = "run.suspended"
    reason: str = "shutdown"


@attrs.frozen(kw_only=True)
class MessageDelta(Event):
    type: ClassVar[str] = "message.delta"
    message_id: str
    content: str


@attrs.frozen(kw_only=True)
class MessageCompleted(Event):
    type: ClassVar[str] = "message.completed"
    message_id: str
    role: str = "assistant"
    content: str = ""


@attrs.frozen(kw_only=True)
class MessageDiscarded(Event):
    """A message left streaming by a lost process: clients drop its partial text."""

    type: ClassVar[str] = "message.discarded"
    message_id: str
    reason: str = "resumed"


@attrs.frozen(kw_only=True)
class Thought(Event):
    type: ClassVar[str] = "thought"
    content: str
    source: str | None = None


@attrs.frozen(kw_only=True)
class ToolCall(Event):
    type: ClassVar[str] = "tool.call"
    call_id: str
    name: str
    arguments: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ToolResult(Event):
    type: ClassVar[str] = "tool.result"
    call_id: str
    output: Any = None
    error: ErrorInfo | None = None


@attrs.frozen(kw_only=True)
class StepCompleted(Event):
    """The recorded result of `ctx.step`: replayed, never recomputed."""

    type: ClassVar[str] = "step.completed"
    name: str
    output: Any = None
    error: ErrorInfo | None = None


@attrs.frozen(kw_only=True)
class TimerStarted(Event):
    """A durable sleep began; the run wakes at `until`, whatever restarts happen in between."""

    type: ClassVar[str] = "timer.started"
    timer_id: str
    until: datetime


@attrs.frozen(kw_only=True)
class TimerFired(Event):
    type: ClassVar[str] = "timer.fired"
    timer_id: str


@attrs.frozen(kw_only=True)
class RunWaitingForInput(Event):
    type: ClassVar[str] = "run.waiting_for_input"
    request: Any = None
    #: Past this time the run resumes without input (`ctx.ask(timeout=...)`).
    expires_at: datetime | None = None


@attrs.frozen(kw_only=True)
class RunInput(Event):
    type: ClassVar[str] = "run.input"
    content: Any = None


@attrs.frozen(kw_only=True)
class RunInputTimedOut(Event):
    """No input came before the waiting run's `expires_at`: the agent's `ask` raises InputTimedOut."""

    type: ClassVar[str] = "run.input_timed_out"


@attrs.frozen(kw_only=True)
class Usage(Event):
    type: ClassVar[str] = "usage"
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0


@attrs.frozen(kw_only=True)
class Custom(Event):
    type: ClassVar[str] = "custom"
    name: str
    data: Any = None


@attrs.frozen(kw_only=True)
class RunRequeued(Event):
    """The run's worker was lost and the run goes back to the queue for another attempt."""

    type: ClassVar[str] = "run.requeued"
    reason: str = ""


@attrs.frozen(kw_only=True)
class RunCompleted(Event):
    type: ClassVar[str] = "run.completed"
    terminal: ClassVar[bool] = True
    output: Any = None


@attrs.frozen(kw_only=True)
class RunFailed(Event):
    type: ClassVar[str] = "run.failed"
    terminal: ClassVar[bool] = True
    error: ErrorInfo


@attrs.frozen(kw_only=True)
class RunCancelled(Event):
    type: ClassVar[str] = "run.cancelled"
    terminal: ClassVar[bool] = True
    reason: str | None = None


@attrs.frozen(kw_only=True)
class UnknownEvent(Event):
    """An event whose type this version does not know (written by a newer one).

    Readers keep it as raw data instead of crashing; the reducer lets it advance
    the sequence number of a live run and otherwise ignores it.
    """

    type: str  # type: ignore[misc]  # an instance field here, a class constant elsewhere
    data: dict[str, Any] = attrs.field(factory=dict)


KNOWN_EVENTS: tuple[type[Event], ...] = (
    RunCreated,
    RunStarted,
    RunResumed,
    RunSuspended,
    MessageDelta,
    MessageCompleted,
    MessageDiscarded,
    Thought,
    ToolCall,
    ToolResult,
    StepCompleted,
    TimerStarted,
    TimerFired,
    RunWaitingForInput,
    RunInput,
    RunInputTimedOut,
    Usage,
    Custom,
    RunRequeued,
    RunCompleted,
    RunFailed,
    RunCancelled,
)

#: Wire name -> event class.
EVENT_TYPES: dict[str, type[Event]] = {cls.type: cls for cls in KNOWN_EVENTS}

#: The wire names of the events that end a run.
TERMINAL_TYPES: frozenset[str] = frozenset(cls.type for cls in KNOWN_EVENTS if cls.terminal)

#: Base fields every event has; everything else is the event's `data`.
ENVELOPE_FIELDS: tuple[str, ...] = ("run_id", "seq", "at")


def data_fields(cls: type[Event]) -> tuple[str, ...]:
    """The names of an event class's payload fields (those under `data` on the wire)."""
    return tuple(f.name for f in attrs.fields(cls) if f.name not in ENVELOPE_FIELDS)


def is_terminal(event: Event) -> bool:
    return event.type in TERMINAL_TYPES
