"""The state of a run: what the reducer gets by folding the run's log. Never stored as the truth."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from .events import ChildRecord, ErrorInfo, SignalRecord
from .status import Status


@attrs.frozen(kw_only=True)
class Message:
    message_id: str
    role: str = "assistant"
    content: str = ""


@attrs.frozen(kw_only=True)
class ThoughtRecord:
    content: str
    source: str | None = None
    seq: int = 0


@attrs.frozen(kw_only=True)
class ToolCallRecord:
    call_id: str
    name: str
    arguments: dict[str, Any] = attrs.field(factory=dict)
    #: True once its tool.result arrived.
    done: bool = False
    output: Any = None
    error: ErrorInfo | None = None


@attrs.frozen(kw_only=True)
class UsageTotals:
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0


@attrs.frozen(kw_only=True)
class RunState:
    run_id: str
    agent: str
    status: Status
    input: Any = None
    session_id: str | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)
    mode: str = "sync"
    owner: str | None = None
    timeout: float | None = None
    #: Completed messages, in order.
    messages: tuple[Message, ...] = ()
    #: The message being streamed by deltas, if any.
    partial: Message | None = None
    thoughts: tuple[ThoughtRecord, ...] = ()
    tool_calls: tuple[ToolCallRecord, ...] = ()
    usage: UsageTotals = UsageTotals()
    #: Inputs given to the run while it waited (run.input contents), in order.
    inputs: tuple[Any, ...] = ()
    await_request: Any = None
    output: Any = None
    error: ErrorInfo | None = None
    cancel_reason: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    attempt: int = 0
    worker: str | None = None
    #: A delayed run's start time (`execute(start_at=...)`).
    start_at: datetime | None = None
    #: Flow control (runengine.flow): the run's priority and concurrency key (run.created). Why a
    #: pending run waits is not folded from the log: `RunEngine.waiting_for(state)` tells.
    priority: int = 0
    concurrency_key: str | None = None
    #: The agent version key recorded when the run started or last resumed.
    version: str | None = None
    #: While a durable `ctx.sleep` is under way: when it ends.
    sleeping_until: datetime | None = None
    timer_id: str | None = None
    #: While waiting for input with a timeout: when the wait ends without input.
    input_expires_at: datetime | None = None
    #: True after a graceful stop left the run for the next engine (until it resumes).
    suspended: bool = False
    #: How many times the run was taken up again after its process was lost (crash loops end at a bound).
    lost_attempts: int = 0
    #: The seq of the run's last start or resumption, and of its last event that was progress
    #: (`Event.progress`): whether the run made progress since (`events.losses_in_a_row`).
    resumed_seq: int = 0
    progress_seq: int = 0
    #: Messages dropped by `message.discarded` (partial text of a lost process).
    discarded: tuple[str, ...] = ()
    #: Recorded `ctx.step` results so far.
    steps: int = 0
    #: The run that spawned this one (None: a top-level run).
    parent_run_id: str | None = None
    #: The child runs it spawned, in spawn order.
    children: tuple[ChildRecord, ...] = ()
    #: The signals sent to it, in arrival order.
    signals: tuple[SignalRecord, ...] = ()
    #: A fork (`engine.fork`): the run its log was copied from, and the last seq copied.
    forked_from: str | None = None
    forked_at_seq: int | None = None
    #: Replay starts after this seq: the last `run.requeued` (which starts the agent afresh), or 0.
    replay_from: int = 0
    last_seq: int = 0

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def at_rest(self) -> bool:
        """Idle where the next engine takes it up: waiting for input, in a durable sleep, or suspended."""
        return self.status is Status.WAITING_FOR_INPUT or self.timer_id is not None or self.suspended

    @property
    def text(self) -> str:
        """All assistant text so far: completed messages, then the partial one."""
        parts = [m.content for m in self.messages if m.role == "assistant"]
        if self.partial is not None:
            parts.append(self.partial.content)
        return "".join(parts)

    def tool_call(self, call_id: str) -> ToolCallRecord | None:
        for call in self.tool_calls:
            if call.call_id == call_id:
                return call
        return None
