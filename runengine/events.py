"""The events of a run: one frozen attrs class per type, each declared once, in full.

Every event carries the run it belongs to, its sequence number in that run's log
(1, 2, 3 ... gapless) and the time it was recorded. Each class also declares, as data
beside its fields, everything else about its type:

- `moves`: the statuses that accept it and the status after it (the transition table,
  `runengine.transitions.TRANSITIONS`, is built from these; an event is terminal when
  every status it leads to is terminal);
- `guards`: the checks beyond the table (each with the text docs/transitions.md shows,
  and for an id field the values that pass, which the hypothesis strategies draw from);
- `fold_into(run)`: its effect on the state, through the reducer's accumulator
  (`runengine.accumulator.RunAccumulator`, which `runengine.reducer.Fold` implements).

Conversion to and from JSON lives in `runengine.wire`, nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Union

import attrs

from .errors import ErrorInfo
from .status import Status

if TYPE_CHECKING:
    # What an event's guards read and its fold_into changes: declared below the events and the
    # reducer (whose Fold is the one implementation), so that neither imports the other.
    from .accumulator import RunAccumulator

#: The epoch used where an event is built without a time (tests, strategies).
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: The wake time of a run idle with no deadline (waiting for input without a timeout): later than
#: any other, so a timer index ordered by wake time never finds it due.
NO_DEADLINE = datetime.max.replace(tzinfo=timezone.utc)


P, R, W = Status.PENDING, Status.RUNNING, Status.WAITING_FOR_INPUT
C, F, X = Status.COMPLETED, Status.FAILED, Status.CANCELLED
#: The statuses of a run that has not ended.
LIVE: tuple[Status, ...] = tuple(s for s in Status if not s.terminal)

#: Status before -> status after (None before: no run yet).
Moves = Mapping[Union[Status, None], Status]


@attrs.frozen
class Fresh:
    """Generator hint: any id not in `taken` passes."""

    taken: Collection[str]


#: The values of a guarded field that pass: these ids (none: the event cannot come now), or a fresh one.
Passing = Union[tuple[str, ...], Fresh]


@attrs.frozen
class Guard:
    """A check the reducer makes beyond the table, before the event changes anything.

    `refuse(run, event)` is the reason the event is refused, or None. A guard with a
    `field` constrains that payload field, and `passing(run)` says which values pass
    (the generators fill the field from it); a guard without one reads only the run
    (generators call it with event None to learn whether the type can come now).
    """

    doc: str
    refuse: Callable[[RunAccumulator, Any], str | None]
    field: str | None = None
    passing: Callable[[RunAccumulator], Passing] | None = None


#: Field metadata key: the values a text field takes in practice (generators draw from them).
VALUES = "runengine.values"


def one_of(default: str, *others: str) -> Any:
    """A text field with a default and the other values it usually takes."""
    return attrs.field(default=default, metadata={VALUES: (default, *others)})


@attrs.frozen(kw_only=True)
class Event:
    """Base of every event. `type` is the dotted wire name, a class constant."""

    type: ClassVar[str] = ""
    #: Where this type may come (status before -> status after): its rows of the transition table.
    moves: ClassVar[Moves] = {}
    #: The reducer's checks beyond the table.
    guards: ClassVar[tuple[Guard, ...]] = ()
    #: True for the events that end a run (derived from `moves`, below the classes).
    terminal: ClassVar[bool] = False
    #: Whether appending it is progress of the run, for the crash-loop bound (`losses_in_a_row`).
    #: Streamed text is not: a resume may discard it, and the agent streams it again.
    progress: ClassVar[bool] = True

    run_id: str
    seq: int
    at: datetime = EPOCH

    def fold_into(self, run: RunAccumulator) -> None:
        """This event's effect on the state (guards and table already passed)."""

    def wake_after(self, wake: datetime | None) -> datetime | None:
        """The run's wake time after this event, from `wake` before it: when a run idle in a durable
        wait (or delayed) is due to go on (NO_DEADLINE: only input ends the wait); None when it is
        not idle (at work, or ended). Stores keep it (`RunSummary.wake_at`) as the timer index
        that lets an engine hold nothing for an idle run (runengine.wakeups). Most events
        leave it as it was; those that begin or end a wait say so."""
        return None if self.terminal else wake


# -- guards shared by several types (each reads the accumulator, never changes it) ----------


def _message_continues(run: RunAccumulator, e: Any) -> str | None:
    open_id = run.open_message_id
    if open_id is not None:
        return None if e.message_id == open_id else f"message {open_id!r} is still streaming"
    return f"message {e.message_id!r} is already completed" if e.message_id in run.message_ids else None


def _open_or_new_message(run: RunAccumulator) -> Passing:
    open_id = run.open_message_id
    return (open_id,) if open_id is not None else Fresh(run.message_ids)


def _answers_open_call(run: RunAccumulator, e: Any) -> str | None:
    done = run.call_done(e.call_id)
    if done is None:
        return f"no tool.call with call_id {e.call_id!r}"
    return f"tool call {e.call_id!r} already has its result" if done else None


@attrs.frozen(kw_only=True)
class RunCreated(Event):
    type: ClassVar[str] = "run.created"
    moves = {None: P}
    agent: str
    input: Any = None
    session_id: str | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)
    mode: str = one_of("sync", "async", "stream")
    #: Who created the run (the auth hook's principal); None when auth is off.
    owner: str | None = None
    #: Seconds the run may take before it fails with code `timeout` (counted from its start).
    timeout: float | None = None
    #: A delayed run stays pending until this time.
    start_at: datetime | None = None
    #: The run that spawned this one (`ctx.spawn`), if any: its `child.spawned` names this run.
    parent_run_id: str | None = None
    #: Flow control (runengine.flow): higher starts first among its agent's waiting runs ...
    priority: int = 0
    #: ... and the key its agent's concurrency and rate limits count it under (None: the agent's).
    concurrency_key: str | None = None

    def fold_into(self, run: RunAccumulator) -> None:
        run.begin(
            run_id=self.run_id, agent=self.agent, status=P, input=self.input, session_id=self.session_id,
            metadata=self.metadata, mode=self.mode, owner=self.owner, timeout=self.timeout,
            start_at=self.start_at, created_at=self.at, parent_run_id=self.parent_run_id,
            priority=self.priority, concurrency_key=self.concurrency_key,
        )

    def wake_after(self, wake: datetime | None) -> datetime | None:
        return self.start_at  # a delayed run idles until its start (None: it starts now)


@attrs.frozen(kw_only=True)
class RunStarted(Event):
    type: ClassVar[str] = "run.started"
    moves = {P: R}
    #: Which engine process (worker) executes this attempt.
    worker: str | None = None
    attempt: int = 1
    #: The agent's version key (`@engine.agent(name, version=...)`), checked when the run resumes.
    version: str | None = None

    def fold_into(self, run: RunAccumulator) -> None:
        if run.get("started_at") is None:
            run.set(started_at=self.at)
        run.set(attempt=self.attempt, worker=self.worker, version=self.version, resumed_seq=self.seq)

    def wake_after(self, wake: datetime | None) -> datetime | None:
        return None


@attrs.frozen(kw_only=True)
class RunResumed(Event):
    """An engine took up an unfinished run again: its agent replays the log, then goes on live."""

    type: ClassVar[str] = "run.resumed"
    moves = {R: R, W: W}
    worker: str | None = None
    attempt: int = 1
    #: "restart" after a graceful stop (run.suspended), "worker_lost" after a crash.
    reason: str = one_of("restart", "worker_lost")
    version: str | None = None

    def fold_into(self, run: RunAccumulator) -> None:
        if self.reason == "worker_lost":  # counted against the previous start or resumption
            run.set(lost_attempts=losses_in_a_row(run.get("lost_attempts"), run.progress_seq, run.get("resumed_seq")))
        run.set(attempt=self.attempt, worker=self.worker, version=self.version, suspended=False, resumed_seq=self.seq)


def wake_after(wake: datetime | None, events: Sequence[Event]) -> datetime | None:
    """The run's wake time after `events` (`Event.wake_after`, in order), from `wake` before them."""
    for event in events:
        wake = event.wake_after(wake)
    return wake


def losses_in_a_row(lost_attempts: int, progress_seq: int, resumed_seq: int) -> int:
    """A run's process losses in a row, counting one more now: the crash-loop bound's count.

    A process runs many runs at once and any of them may bring it down. A loss counts against
    a run that made no progress since its last start or resumption (`progress_seq`, the seq of
    its last event whose type is progress, not past `resumed_seq`: its step was in flight, it
    crashed at once, or it only streamed text again); a run that made progress was not the
    cause, and its count starts again with this loss.
    """
    return lost_attempts + 1 if progress_seq <= resumed_seq else 1


@attrs.frozen(kw_only=True)
class RunSuspended(Event):
    """The executing process stopped gracefully; the run waits, unfinished, for the next engine."""

    type: ClassVar[str] = "run.suspended"
    moves = {R: R, W: W}
    reason: str = "shutdown"

    def fold_into(self, run: RunAccumulator) -> None:
        run.set(suspended=True)


@attrs.frozen(kw_only=True)
class MessageDelta(Event):
    type: ClassVar[str] = "message.delta"
    moves = {R: R}
    progress = False
    guards = (
        Guard("continues the open message, or opens a new one when none is open",
              _message_continues, "message_id", _open_or_new_message),
    )
    message_id: str
    content: str

    def fold_into(self, run: RunAccumulator) -> None:
        run.stream(self.message_id, self.content)


@attrs.frozen(kw_only=True)
class MessageCompleted(Event):
    type: ClassVar[str] = "message.completed"
    moves = {R: R}
    guards = (
        Guard("closes the open message, or records a whole new one when none is open",
              _message_continues, "message_id", _open_or_new_message),
    )
    message_id: str
    role: str = one_of("assistant", "user", "system")
    content: str = ""

    def fold_into(self, run: RunAccumulator) -> None:
        run.complete_message(self.message_id, self.role, self.content)


@attrs.frozen(kw_only=True)
class MessageDiscarded(Event):
    """A message left streaming by a lost process: clients drop its partial text (docs/durability.md)."""

    type: ClassVar[str] = "message.discarded"
    moves = {R: R}
    progress = False
    guards = (
        Guard(
            "names the open message",
            lambda run, e: None if e.message_id == run.open_message_id else f"message {e.message_id!r} is not the one streaming",
            "message_id",
            lambda run: () if run.open_message_id is None else (run.open_message_id,),
        ),
    )
    message_id: str
    reason: str = "resumed"
    #: The message that carries on the discarded one's kept text (what was streamed before the
    #: last recorded durable call, replayed): its first delta is that text. None: nothing kept.
    continued_as: str | None = None

    def fold_into(self, run: RunAccumulator) -> None:
        run.discard_message(self.message_id)


@attrs.frozen(kw_only=True)
class Thought(Event):
    type: ClassVar[str] = "thought"
    moves = {R: R}
    content: str
    source: str | None = None

    def fold_into(self, run: RunAccumulator) -> None:
        run.add_thought(self.content, self.source, self.seq)


@attrs.frozen(kw_only=True)
class ToolCall(Event):
    type: ClassVar[str] = "tool.call"
    moves = {R: R}
    guards = (
        Guard(
            "its call_id is new",
            lambda run, e: f"tool call {e.call_id!r} already exists" if e.call_id in run.call_ids else None,
            "call_id",
            lambda run: Fresh(run.call_ids),
        ),
    )
    call_id: str
    name: str
    arguments: dict[str, Any] = attrs.field(factory=dict)

    def fold_into(self, run: RunAccumulator) -> None:
        run.open_call(self.call_id, self.name, self.arguments)


@attrs.frozen(kw_only=True)
class ToolResult(Event):
    type: ClassVar[str] = "tool.result"
    moves = {R: R}
    guards = (
        Guard("answers an open `tool.call`", _answers_open_call, "call_id", lambda run: run.open_call_ids),
    )
    call_id: str
    output: Any = None
    error: ErrorInfo | None = None

    def fold_into(self, run: RunAccumulator) -> None:
        run.close_call(self.call_id, self.output, self.error)


@attrs.frozen(kw_only=True)
class StepCompleted(Event):
    """The recorded result of `ctx.step`: replayed, never recomputed."""

    type: ClassVar[str] = "step.completed"
    moves = {R: R}
    name: str
    output: Any = None
    error: ErrorInfo | None = None

    def fold_into(self, run: RunAccumulator) -> None:
        run.count_step()


@attrs.frozen(kw_only=True)
class TimerStarted(Event):
    """A durable sleep began; the run wakes at `until`, whatever restarts happen in between."""

    type: ClassVar[str] = "timer.started"
    moves = {R: R}
    guards = (
        Guard(
            "only one timer runs at a time",
            lambda run, e: "a timer is already running" if run.get("timer_id") is not None else None,
        ),
    )
    timer_id: str
    until: datetime

    def fold_into(self, run: RunAccumulator) -> None:
        run.set(sleeping_until=self.until, timer_id=self.timer_id)

    def wake_after(self, wake: datetime | None) -> datetime | None:
        return self.until


@attrs.frozen(kw_only=True)
class TimerFired(Event):
    type: ClassVar[str] = "timer.fired"
    moves = {R: R}
    guards = (
        Guard(
            "answers the running `timer.started`",
            lambda run, e: None if run.get("timer_id") == e.timer_id else f"no running timer {e.timer_id!r}",
            "timer_id",
            lambda run: () if run.get("timer_id") is None else (run.get("timer_id"),),
        ),
    )
    timer_id: str

    def fold_into(self, run: RunAccumulator) -> None:
        run.set(sleeping_until=None, timer_id=None)

    def wake_after(self, wake: datetime | None) -> datetime | None:
        return None


@attrs.frozen(kw_only=True)
class RunWaitingForInput(Event):
    type: ClassVar[str] = "run.waiting_for_input"
    moves = {R: W}
    request: Any = None
    #: Past this time the run resumes without input (`ctx.ask(timeout=...)`).
    expires_at: datetime | None = None

    def fold_into(self, run: RunAccumulator) -> None:
        run.set(await_request=self.request, input_expires_at=self.expires_at)

    def wake_after(self, wake: datetime | None) -> datetime | None:
        return self.expires_at if self.expires_at is not None else NO_DEADLINE


@attrs.frozen(kw_only=True)
class RunInput(Event):
    type: ClassVar[str] = "run.input"
    moves = {W: R}
    content: Any = None

    def fold_into(self, run: RunAccumulator) -> None:
        run.add_input(self.content)
        run.set(await_request=None, input_expires_at=None)

    def wake_after(self, wake: datetime | None) -> datetime | None:
        return None


@attrs.frozen(kw_only=True)
class RunInputTimedOut(Event):
    """No input came before the waiting run's `expires_at`: the agent's `ask` raises InputTimedOut."""

    type: ClassVar[str] = "run.input_timed_out"
    moves = {W: R}

    def fold_into(self, run: RunAccumulator) -> None:
        run.set(await_request=None, input_expires_at=None)

    def wake_after(self, wake: datetime | None) -> datetime | None:
        return None


@attrs.frozen(kw_only=True)
class Usage(Event):
    type: ClassVar[str] = "usage"
    moves = {R: R, W: W}
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    def fold_into(self, run: RunAccumulator) -> None:
        run.add_usage(self.input_tokens, self.output_tokens, self.cost)


@attrs.frozen(kw_only=True)
class Custom(Event):
    type: ClassVar[str] = "custom"
    moves = {R: R, W: W}
    name: str
    data: Any = None


# -- patching (runengine.patching): which side of a code change a run took ------------------


@attrs.frozen(kw_only=True)
class PatchMarked(Event):
    """`ctx.patched(name)` was reached live: this run takes the patched code from here on, also
    when replayed. A log without it at that point predates the patch (the old code replays it)."""

    type: ClassVar[str] = "patch.marked"
    moves = {R: R}
    progress = False  # a decision of the code, not work done
    name: str


@attrs.frozen(kw_only=True)
class RunRequeued(Event):
    """The run's worker was lost and the run goes back to the queue for another attempt."""

    type: ClassVar[str] = "run.requeued"
    moves = {R: P, W: P}  # opt-in policy runs it again from its input
    reason: str = ""

    def fold_into(self, run: RunAccumulator) -> None:
        run.restart_attempt(self.seq)

    def wake_after(self, wake: datetime | None) -> datetime | None:
        return None  # its agent starts again from the beginning


@attrs.frozen(kw_only=True)
class RunCompleted(Event):
    type: ClassVar[str] = "run.completed"
    moves = {R: C}
    output: Any = None

    def fold_into(self, run: RunAccumulator) -> None:
        run.finish(self.at, output=self.output)


@attrs.frozen(kw_only=True)
class RunFailed(Event):
    type: ClassVar[str] = "run.failed"
    moves = {P: F, R: F, W: F}  # e.g. the agent vanished before it started; timeout; worker lost
    error: ErrorInfo

    def fold_into(self, run: RunAccumulator) -> None:
        run.finish(self.at, error=self.error)


@attrs.frozen(kw_only=True)
class RunCancelled(Event):
    type: ClassVar[str] = "run.cancelled"
    moves = {P: X, R: X, W: X}
    reason: str | None = None

    def fold_into(self, run: RunAccumulator) -> None:
        run.finish(self.at, cancel_reason=self.reason)


# -- fork from any event (runengine.fork) ---------------------------------------------------


@attrs.frozen(kw_only=True)
class RunForked(Event):
    """This run's log so far is a copy of `source_run_id`'s up to `source_seq`: the agent replays
    it, then goes on live (`engine.fork`). `replaced`: the copied event at `source_seq` was given
    another result (a tool.result's output, a run.input's content, run.created's input)."""

    type: ClassVar[str] = "run.forked"
    moves = {s: s for s in LIVE}
    source_run_id: str
    source_seq: int
    replaced: bool = False

    def fold_into(self, run: RunAccumulator) -> None:
        # Taken up by its first engine as after a graceful stop (not a crash: no loss counted);
        # its timeout counts from the fork, not from the source's start.
        run.set(forked_from=self.source_run_id, forked_at_seq=self.source_seq, lost_attempts=0)
        if run.get("started_at") is not None:
            run.set(suspended=True, started_at=self.at)


@attrs.frozen(kw_only=True)
class UnknownEvent(Event):
    """An event whose type this version does not know (written by a newer one).

    Readers keep it as raw data instead of crashing; the reducer lets it advance
    the sequence number of a live run and otherwise ignores it.
    """

    #: A live run accepts it and stays where it is (forward compatibility); an ended one does not.
    moves = {s: s for s in LIVE}

    type: str  # type: ignore[misc]  # an instance field here, a class constant elsewhere
    data: dict[str, Any] = attrs.field(factory=dict)


# -- child runs and signals (runengine.children, runengine.signals) ----------------------------


@attrs.frozen(kw_only=True)
class ChildRecord:
    """A child run this run spawned (`child.spawned`), and its end once a join saw it (`child.ended`)."""

    run_id: str
    agent: str
    #: None until the parent's `child.ended`: "completed", "failed" or "cancelled".
    status: str | None = None
    output: Any = None
    error: ErrorInfo | None = None


@attrs.frozen(kw_only=True)
class SignalRecord:
    """A signal sent to this run (`signal.received`), and whether `ctx.receive` took it (`signal.taken`)."""

    signal_id: str
    name: str
    payload: Any = None
    seq: int = 0
    taken: bool = False


def _child(run: RunAccumulator, child_run_id: str) -> Any:
    return next((c for c in run.get("children") if c.run_id == child_run_id), None)


@attrs.frozen(kw_only=True)
class ChildSpawned(Event):
    """`ctx.spawn` started a child run (its `run.created` names this run as its parent)."""

    type: ClassVar[str] = "child.spawned"
    moves = {R: R}
    guards = (
        Guard(
            "its child_run_id is new",
            lambda run, e: f"child {e.child_run_id!r} already spawned" if _child(run, e.child_run_id) else None,
            "child_run_id",
            lambda run: Fresh({c.run_id for c in run.get("children")}),
        ),
    )
    child_run_id: str
    agent: str

    def fold_into(self, run: RunAccumulator) -> None:
        run.set(children=(*run.get("children"), ChildRecord(run_id=self.child_run_id, agent=self.agent)))


def _unended_children(run: RunAccumulator) -> tuple[str, ...]:
    return tuple(c.run_id for c in run.get("children") if c.status is None)


@attrs.frozen(kw_only=True)
class ChildEnded(Event):
    """A child run's end as its parent's join saw it: what `await handle` returns (or raises), replayed."""

    type: ClassVar[str] = "child.ended"
    moves = {R: R}
    guards = (
        Guard(
            "names a spawned child that has not ended",
            lambda run, e: None if e.child_run_id in _unended_children(run) else f"no unended child {e.child_run_id!r}",
            "child_run_id",
            _unended_children,
        ),
    )
    child_run_id: str
    status: str = one_of("completed", "failed", "cancelled")
    output: Any = None
    error: ErrorInfo | None = None

    def fold_into(self, run: RunAccumulator) -> None:
        run.set(children=tuple(
            attrs.evolve(c, status=self.status, output=self.output, error=self.error) if c.run_id == self.child_run_id else c
            for c in run.get("children")
        ))


@attrs.frozen(kw_only=True)
class SignalReceived(Event):
    """`engine.signal` delivered a message to the run: kept in its log until `ctx.receive` takes it."""

    type: ClassVar[str] = "signal.received"
    moves = {P: P, R: R, W: W}
    progress = False  # written by a sender, not by the run: no sign that its agent got on
    guards = (
        Guard(
            "its signal_id is new",
            lambda run, e: f"signal {e.signal_id!r} already received" if any(
                s.signal_id == e.signal_id for s in run.get("signals")) else None,
            "signal_id",
            lambda run: Fresh({s.signal_id for s in run.get("signals")}),
        ),
    )
    signal_id: str
    name: str
    payload: Any = None

    def fold_into(self, run: RunAccumulator) -> None:
        record = SignalRecord(signal_id=self.signal_id, name=self.name, payload=self.payload, seq=self.seq)
        run.set(signals=(*run.get("signals"), record))


@attrs.frozen(kw_only=True)
class SignalWaiting(Event):
    """`ctx.receive` found no signal of `name` and waits for one (until `expires_at`, if given)."""

    type: ClassVar[str] = "signal.waiting"
    moves = {R: R}
    name: str
    expires_at: datetime | None = None


def _next_signals(run: RunAccumulator) -> tuple[str, ...]:
    """Per signal name, the earliest signal not taken yet: the only one a receive can take."""
    first: dict[str, str] = {}
    for s in run.get("signals"):
        if not s.taken:
            first.setdefault(s.name, s.signal_id)
    return tuple(first.values())


@attrs.frozen(kw_only=True)
class SignalTaken(Event):
    """`ctx.receive` (or `ctx.poll`) took this signal: each signal is taken once, in order per name."""

    type: ClassVar[str] = "signal.taken"
    moves = {R: R}
    guards = (
        Guard(
            "takes the earliest signal of its name not taken yet",
            lambda run, e: None if e.signal_id in _next_signals(run) else f"signal {e.signal_id!r} is not the next of its name",
            "signal_id",
            _next_signals,
        ),
    )
    signal_id: str

    def fold_into(self, run: RunAccumulator) -> None:
        run.set(signals=tuple(
            attrs.evolve(s, taken=True) if s.signal_id == self.signal_id else s for s in run.get("signals")
        ))


@attrs.frozen(kw_only=True)
class SignalMissed(Event):
    """`ctx.poll` found no signal of `name`, or `ctx.receive`'s timeout passed first."""

    type: ClassVar[str] = "signal.missed"
    moves = {R: R}
    name: str


#: The event types of child runs and signals, in table order.
COMPOSITION_EVENTS: tuple[type[Event], ...] = (
    ChildSpawned, ChildEnded, SignalReceived, SignalWaiting, SignalTaken, SignalMissed,
)


#: Every known event type; their order is the table's within each status (and the docs').
KNOWN_EVENTS: tuple[type[Event], ...] = (
    RunCreated,
    RunStarted,
    MessageDelta,
    MessageCompleted,
    MessageDiscarded,
    Thought,
    ToolCall,
    ToolResult,
    StepCompleted,
    TimerStarted,
    TimerFired,
    RunResumed,
    RunSuspended,
    RunWaitingForInput,
    RunInput,
    RunInputTimedOut,
    Usage,
    Custom,
    PatchMarked,
    RunRequeued,
    RunCompleted,
    RunFailed,
    RunCancelled,
    *COMPOSITION_EVENTS,
    RunForked,
)

#: Wire name -> event class.
EVENT_TYPES: dict[str, type[Event]] = {cls.type: cls for cls in KNOWN_EVENTS}

for _cls in KNOWN_EVENTS:
    _cls.terminal = bool(_cls.moves) and all(after.terminal for after in _cls.moves.values())

#: The wire names of the events that end a run.
TERMINAL_TYPES: frozenset[str] = frozenset(cls.type for cls in KNOWN_EVENTS if cls.terminal)

#: Base fields every event has; everything else is the event's `data`.
ENVELOPE_FIELDS: tuple[str, ...] = ("run_id", "seq", "at")


def data_fields(cls: type[Event]) -> tuple[str, ...]:
    """The names of an event class's payload fields (those under `data` on the wire)."""
    return tuple(f.name for f in attrs.fields(cls) if f.name not in ENVELOPE_FIELDS)
