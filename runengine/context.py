"""RunContext: what an agent function receives. Every method records an event of the run.

A context is live or replaying. Live, each call appends its event. Replaying (the run
was taken up again by another engine), each call is matched against the next event the
agent recorded the first time (`runengine.replay.Journal`): it returns what was recorded
and appends nothing; a call that does not match fails the run with `replay_divergence`.
When the journal runs out the context goes live, so the agent continues where its log ends.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import random as _random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import anyio
import structlog

from . import observe
from .errors import InputTimedOut, InvalidRequest, InvalidRunState, InvalidTransition, ReplayDivergence, StepFailed
from .events import (
    Custom,
    ErrorInfo,
    Event,
    MessageCompleted,
    MessageDelta,
    RunInput,
    RunInputTimedOut,
    RunWaitingForInput,
    StepCompleted,
    Thought,
    TimerFired,
    TimerStarted,
    ToolCall,
    ToolResult,
    Usage,
)
from .history import HistoryMessage, session_history, session_runs, step_outputs
from .ports import EventStore, SessionRecord
from .reducer import Fold
from .replay import Journal
from .state import RunState
from .wire import dumps, event_to_dict, format_time, parse_time
from .writer import RunEndedElsewhere, RunWriter


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


_SCALARS = (str, int, float, bool, type(None))


def plain(value: Any) -> Any:
    """`value` as it reads back from the log (JSON), so live and replayed calls see the same thing."""
    if isinstance(value, _SCALARS):
        return value
    try:
        return json.loads(dumps(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a recorded value must be JSON data: {exc}") from exc


async def sleep_until(clock: Callable[[], datetime], when: datetime) -> None:
    """Sleep until `clock()` reaches `when` (re-checked after each sleep: the clock decides)."""
    while (remaining := (when - clock()).total_seconds()) > 0:
        await anyio.sleep(remaining)


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


class RunContext:
    """The run as its agent sees it. Create one only through the engine."""

    def __init__(
        self,
        writer: RunWriter,
        store: EventStore,
        clock: Callable[[], datetime],
        session: SessionRecord | None,
        *,
        journal: Journal | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self._writer = writer
        self._store = store
        self._clock = clock
        self._journal = journal
        self._diverged: ReplayDivergence | None = None
        self._on_stop = on_stop
        #: Set by the engine on a graceful stop: the run stops at its next recorded event.
        self.stop_requested = False
        #: True while the agent is in a durable wait (ask, sleep) that a stop need not wait out.
        self.waiting = False
        state = writer.state
        self.run_id: str = state.run_id
        self.agent: str = state.agent
        self.input: Any = state.input
        self.session_id: str | None = state.session_id
        self.metadata: dict[str, Any] = state.metadata
        self.owner: str | None = state.owner
        #: The session this run belongs to, with its metadata, when there is one.
        self.session = session
        self.log = structlog.get_logger("runengine.agent").bind(run_id=self.run_id, agent=self.agent)

    @property
    def replaying(self) -> bool:
        """True while the agent's calls are answered from its log (a resumed run)."""
        return self._journal is not None

    @property
    def _fold(self) -> Fold:
        return self._journal.fold if self._journal is not None else self._writer.fold

    @property
    def state(self) -> RunState:
        """The run so far: while replaying, as it was at this point the first time."""
        state = self._fold.state
        assert state is not None
        return state

    @property
    def attempt(self) -> int:
        return self._writer.state.attempt

    async def history(self) -> list[HistoryMessage]:
        """The session's turns before this run, oldest first: each earlier run's input (role
        "user"), then its messages. Empty outside a session. Read from the store, not recorded:
        an earlier run still active shows the messages it has so far."""
        if self.session_id is None:
            return []
        return await session_history(self._store, self.session_id, owner=self.owner, before_run=self.run_id)

    async def session_steps(self, name: str) -> list[tuple[str, Any]]:
        """`(run_id, output)` of every step named `name` that the session's earlier runs recorded
        (failed ones left out), oldest run first, each run's in the order recorded: what an
        integration keeps of a turn beyond its text (a framework's own message history). Empty
        outside a session; read from the store, not recorded, like `history()`."""
        if self.session_id is None:
            return []
        runs = await session_runs(self._store, self.session_id, owner=self.owner, before_run=self.run_id)
        return [(run.run_id, output) for run in runs for output in await step_outputs(self._store, run.run_id, name)]

    # -- recording and replaying ------------------------------------------------

    async def _add(self, build: Callable[[int], Event], durable: bool = True) -> Event:
        event = await self._writer.add(build, durable=durable)
        if self.stop_requested:
            await self._stop()
        return event

    async def _stop(self) -> None:
        """A graceful stop reached this run's next event: end the agent here (it resumes later)."""
        assert self._on_stop is not None
        self._on_stop()
        await anyio.lowlevel.checkpoint()  # raises the cancellation the stop just requested

    async def _recorded(self, kind: type[Event], call: str) -> Any:
        """While replaying: the next recorded event, which must be a `kind`; None once live."""
        if self._diverged is not None:
            raise self._diverged
        journal = self._journal
        if journal is None:
            return None
        if self.stop_requested:
            await self._stop()
        event = await journal.next()
        if event is None:
            self._journal = None  # past the end of the log: live from here on
            return None
        if not isinstance(event, kind):
            raise self._diverge(event, call, f"the log has {event.type}")
        return event

    def _diverge(self, event: Event, call: str, why: str) -> ReplayDivergence:
        self._diverged = ReplayDivergence(
            f"replay diverged at seq {event.seq}: the agent called {call}, but {why}",
            seq=event.seq,
            recorded=event_to_dict(event),
            call=call,
        )
        self._journal = None
        return self._diverged

    def _match(self, event: Event, call: str, **expected: Any) -> None:
        for name, value in expected.items():
            recorded = getattr(event, name)
            if recorded != value:
                raise self._diverge(event, call, f"it recorded {name}={recorded!r}, not {value!r}")

    async def finish_replay(self) -> None:
        """The agent returned: recorded calls it did not make again mean it diverged."""
        if self._diverged is not None:
            raise self._diverged
        if self._journal is not None:
            event = await self._journal.next()
            self._journal = None
            if event is not None:
                raise self._diverge(event, "return", f"the log goes on with {event.type}")

    @property
    def diverged(self) -> ReplayDivergence | None:
        return self._diverged

    # -- messages -------------------------------------------------------------

    async def delta(self, content: str, *, message_id: str | None = None) -> str:
        """Stream a piece of the assistant's message (opens a message if none is open); its id."""
        if not isinstance(content, str):
            raise TypeError(f"delta content must be str, not {type(content).__name__}")
        if self._journal is not None or self._diverged is not None:
            recorded = await self._recorded(MessageDelta, f"delta({content[:40]!r})")
            if recorded is not None:
                if message_id is not None:
                    self._match(recorded, "delta", message_id=message_id)
                self._match(recorded, "delta", content=content)
                return str(recorded.message_id)
        if message_id is None:
            message_id = self._writer.fold.open_message_id or new_id("msg")
        await self._writer.add_delta(message_id, content, self._clock())
        if self.stop_requested:
            await self._stop()
        return message_id

    async def complete_message(
        self, *, role: str = "assistant", content: str | None = None, durable: bool = True
    ) -> str | None:
        """Close the message being streamed, if any; returns its id."""
        partial = self._fold.partial()
        if partial is None:
            return None
        text = partial.content if content is None else content
        recorded = await self._recorded(MessageCompleted, "complete_message()")
        if recorded is not None:
            self._match(recorded, "complete_message()", message_id=partial.message_id, role=role, content=text)
            return partial.message_id
        await self._add(
            lambda seq: MessageCompleted(
                run_id=self.run_id, seq=seq, at=self._clock(), message_id=partial.message_id, role=role, content=text
            ),
            durable,
        )
        return partial.message_id

    async def _whole_message(self, content: str, role: str, call: str) -> str:
        recorded = await self._recorded(MessageCompleted, call)
        if recorded is not None:
            self._match(recorded, call, role=role, content=content)
            return str(recorded.message_id)
        message_id = new_id("msg")
        await self._add(
            lambda seq: MessageCompleted(
                run_id=self.run_id, seq=seq, at=self._clock(), message_id=message_id, role=role, content=content
            )
        )
        return message_id

    async def say(self, content: str, *, role: str = "assistant") -> str:
        """Record a whole message at once (no deltas)."""
        await self.complete_message()
        return await self._whole_message(content, role, f"say({content[:40]!r})")

    @asynccontextmanager
    async def message(self, *, role: str = "assistant") -> AsyncIterator[MessageStream]:
        """`async with ctx.message() as m: await m.delta("...")` streams one message and completes it."""
        await self.complete_message()
        stream = MessageStream(self)
        yield stream
        if stream.message_id is not None and self._fold.open_message_id == stream.message_id:
            await self.complete_message(role=role)
        elif not stream.started:
            stream.message_id = await self._whole_message("", role, "message() with no delta")

    # -- the rest of what an agent does ---------------------------------------

    async def thought(self, content: str, *, source: str | None = None) -> None:
        recorded = await self._recorded(Thought, f"thought({content[:40]!r})")
        if recorded is not None:
            self._match(recorded, "thought", content=content, source=source)
            return
        await self._add(
            lambda seq: Thought(run_id=self.run_id, seq=seq, at=self._clock(), content=content, source=source),
            durable=False,
        )

    async def tool_call(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        fn: Callable[..., Any] | None = None,
        *,
        call_id: str | None = None,
    ) -> Any:
        """Record a tool call, run `fn(**arguments)` (sync or async), record its result, return it.

        The result is returned as it is recorded (JSON data). If `fn` raises, the error is
        recorded as the tool's result and `StepFailed` is raised (the original as its cause).
        On a resumed run, a call whose result is recorded returns it without calling `fn`.
        """
        args = dict(arguments or {})
        call = f"tool_call({name!r})"
        recorded = await self._recorded(ToolCall, call)
        if recorded is not None:
            self._match(recorded, call, name=name, arguments=plain(args))
            if call_id is not None:
                self._match(recorded, call, call_id=call_id)
            cid: str = recorded.call_id
            if fn is None:
                return None
            result = await self._recorded(ToolResult, call)
            if result is not None:
                self._match(result, call, call_id=cid)
                if result.error is not None:
                    raise StepFailed(name, result.error.code, result.error.message)
                return result.output
            # Recorded, but in flight when its process stopped: called again (at least once).
        else:
            cid = call_id or new_id("call")
            recorded = await self._add(
                lambda seq: ToolCall(run_id=self.run_id, seq=seq, at=self._clock(), call_id=cid, name=name, arguments=args)
            )
            if fn is None:
                return None
        try:
            with observe.current.step_span(kind="tool", name=name, run_id=self.run_id, seq=recorded.seq):
                output = plain(await _call(fn, **args))
        except Exception as exc:
            error = ErrorInfo(code="tool_error", message=f"{type(exc).__name__}: {exc}")
            await self._add(
                lambda seq: ToolResult(run_id=self.run_id, seq=seq, at=self._clock(), call_id=cid, error=error)
            )
            raise StepFailed(name, error.code, error.message) from exc
        await self._add(
            lambda seq: ToolResult(run_id=self.run_id, seq=seq, at=self._clock(), call_id=cid, output=output)
        )
        return output

    async def tool_result(self, call_id: str, output: Any = None, *, error: ErrorInfo | None = None) -> None:
        """Record the result of a tool call made with `tool_call(name, arguments)` and no fn."""
        recorded = await self._recorded(ToolResult, f"tool_result({call_id!r})")
        if recorded is not None:
            self._match(recorded, "tool_result", call_id=call_id, output=plain(output), error=error)
            return
        await self._add(
            lambda seq: ToolResult(
                run_id=self.run_id, seq=seq, at=self._clock(), call_id=call_id, output=output, error=error
            )
        )

    async def step(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` (sync or async) once, durably: its result is recorded before
        this returns, and a resumed run gets the recorded result without calling `fn` again.

        Use it for whatever must not be recomputed: an LLM call, an HTTP request, a payment.
        The result comes back as recorded (JSON data). If `fn` raises, that is recorded too and
        `StepFailed` is raised, live and on replay alike.
        """
        call = f"step({name!r})"
        recorded = await self._recorded(StepCompleted, call)
        if recorded is not None:
            self._match(recorded, call, name=name)
            if recorded.error is not None:
                raise StepFailed(name, recorded.error.code, recorded.error.message)
            return recorded.output
        span = observe.current.step_span(kind="step", name=name, run_id=self.run_id, seq=self._writer.next_seq)
        return await self._record_step(name, lambda: _call(fn, *args, **kwargs), span)

    async def stream_step(self, name: str, fn: Callable[[StepStream], Awaitable[Any]]) -> Any:
        """Like `step`, for a call that streams while it runs (an LLM's reply): `fn(stream)` may
        `await stream.delta(text)`, `stream.thought(text)`, `stream.tool_arguments(...)` and
        `stream.custom(name, data)` as its output arrives, and returns the result to record. What it
        streams goes out live; a resumed run gets the recorded result, and the events that came with
        it, without calling `fn` again. A call cut short by a stop is made again (its half-streamed
        message is discarded, as any other)."""
        call = f"stream_step({name!r})"
        while self._journal is not None or self._diverged is not None:
            recorded = await self._recorded(Event, call)
            if recorded is None:
                break  # not recorded to its end: made again, live
            if isinstance(recorded, (MessageDelta, Thought, Custom)):
                continue  # streamed by this call the first time
            if not isinstance(recorded, StepCompleted):
                raise self._diverge(recorded, call, f"the log has {recorded.type}")
            self._match(recorded, call, name=name)
            if recorded.error is not None:
                raise StepFailed(name, recorded.error.code, recorded.error.message)
            return recorded.output
        return await self._record_step(name, lambda: fn(StepStream(self)))

    async def _record_step(
        self, name: str, call: Callable[[], Awaitable[Any]], span: contextlib.AbstractContextManager[Any] | None = None
    ) -> Any:
        """Make a step's call live and record what came of it (`step.completed` with its output, or
        its error, which is raised again as StepFailed); `span` is around the call alone."""
        try:
            with span if span is not None else contextlib.nullcontext():
                output = plain(await call())
        except Exception as exc:
            error = ErrorInfo(code=type(exc).__name__, message=f"{type(exc).__name__}: {exc}")
            await self._add(
                lambda seq: StepCompleted(run_id=self.run_id, seq=seq, at=self._clock(), name=name, error=error)
            )
            raise StepFailed(name, error.code, error.message) from exc
        await self._add(
            lambda seq: StepCompleted(run_id=self.run_id, seq=seq, at=self._clock(), name=name, output=output)
        )
        return output

    async def now(self) -> datetime:
        """The current time, recorded: a resumed run sees the same time again."""
        return parse_time(await self.step("runengine.now", lambda: format_time(self._clock())))

    async def uuid(self) -> str:
        """A random UUID (hex), recorded."""
        return str(await self.step("runengine.uuid", lambda: uuid.uuid4().hex))

    async def random(self) -> float:
        """A random float in [0, 1), recorded."""
        return float(await self.step("runengine.random", _random.random))

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`, durably: a restart in the middle wakes at the original deadline,
        and a wait that finished is not repeated."""
        if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
            raise InvalidRequest("sleep takes a finite number of seconds >= 0", seconds=seconds)
        await self._timer(lambda: self._clock() + timedelta(seconds=seconds), f"sleep({seconds})")

    async def sleep_until(self, when: datetime) -> None:
        """Wait until `when` (timezone-aware), durably."""
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise InvalidRequest("sleep_until takes a timezone-aware datetime")
        await self._timer(lambda: when, f"sleep_until({format_time(when)})")

    async def _timer(self, deadline: Callable[[], datetime], call: str) -> None:
        recorded = await self._recorded(TimerStarted, call)
        if recorded is not None:
            until: datetime = recorded.until
            timer_id: str = recorded.timer_id
            fired = await self._recorded(TimerFired, call)
            if fired is not None:
                self._match(fired, call, timer_id=timer_id)
                return
        else:
            until, timer_id = deadline(), new_id("timer")
            await self._add(
                lambda seq: TimerStarted(run_id=self.run_id, seq=seq, at=self._clock(), timer_id=timer_id, until=until)
            )
        async with self._durable_wait():
            await sleep_until(self._clock, until)
        await self._add(
            lambda seq: TimerFired(run_id=self.run_id, seq=seq, at=self._clock(), timer_id=timer_id), durable=False
        )

    @asynccontextmanager
    async def _durable_wait(self) -> AsyncIterator[None]:
        """Mark a wait that survives a restart: a graceful stop ends it at once."""
        if self.stop_requested:
            await self._stop()
        self.waiting = True
        try:
            yield
        finally:
            self.waiting = False

    async def ask(self, request: Any = None, *, timeout: float | None = None) -> Any:
        """Wait for input: records run.waiting_for_input, returns what `engine.resume` gives.

        With `timeout` (seconds), raises InputTimedOut when no input came by then; the deadline
        is recorded, so it holds across restarts.
        """
        if timeout is not None and (not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout < 0):
            raise InvalidRequest("ask timeout must be a finite number of seconds >= 0", timeout=timeout)
        await self.complete_message()
        call = "ask()"
        recorded = await self._recorded(RunWaitingForInput, call)
        if recorded is not None:
            self._match(recorded, call, request=plain(request))
            expires: datetime | None = recorded.expires_at
            answer = await self._recorded_answer(call)
            if isinstance(answer, RunInput):
                return answer.content
            if isinstance(answer, RunInputTimedOut):
                raise InputTimedOut("no input came before the deadline")
        else:
            expires = self._clock() + timedelta(seconds=timeout) if timeout is not None else None
            await self._add(
                lambda seq: RunWaitingForInput(
                    run_id=self.run_id, seq=seq, at=self._clock(), request=request, expires_at=expires
                )
            )
        return await self._wait_for_input(expires)

    async def _recorded_answer(self, call: str) -> Event | None:
        """While replaying an ask: the recorded input or timeout (None: still waiting at the stop)."""
        while True:
            event = await self._recorded(Event, call)
            if event is None or isinstance(event, (RunInput, RunInputTimedOut)):
                return event
            if not isinstance(event, (Usage, Custom)):  # others may note usage while the run waits
                raise self._diverge(event, call, f"the log has {event.type} where an input was awaited")

    async def _wait_for_input(self, expires: datetime | None) -> Any:
        seen = self._writer.committed_seq
        while True:
            async with self._durable_wait():
                while True:
                    news = await self._store.read(self.run_id, after_seq=seen)
                    if news:
                        await self._writer.accept(news)
                        seen = news[-1].seq
                        for event in news:
                            if isinstance(event, RunInput):
                                return event.content
                            if event.terminal:
                                raise RunEndedElsewhere(event)
                        continue
                    remaining = None if expires is None else (expires - self._clock()).total_seconds()
                    if remaining is not None and remaining <= 0:
                        break
                    await self._store.wait(self.run_id, after_seq=seen, timeout=remaining)
            try:
                await self._add(lambda seq: RunInputTimedOut(run_id=self.run_id, seq=seq, at=self._clock()))
            except InvalidTransition:  # an input got in first: read it from where we were
                expires = None
                continue
            raise InputTimedOut("no input came before the deadline")

    async def custom(self, name: str, data: Any = None) -> None:
        recorded = await self._recorded(Custom, f"custom({name!r})")
        if recorded is not None:
            self._match(recorded, "custom", name=name, data=plain(data))
            return
        await self._add(
            lambda seq: Custom(run_id=self.run_id, seq=seq, at=self._clock(), name=name, data=data), durable=False
        )

    async def usage(self, *, input_tokens: int = 0, output_tokens: int = 0, cost: float = 0.0) -> None:
        recorded = await self._recorded(Usage, "usage()")
        if recorded is not None:
            self._match(recorded, "usage", input_tokens=input_tokens, output_tokens=output_tokens, cost=cost)
            return
        await self._add(
            lambda seq: Usage(
                run_id=self.run_id,
                seq=seq,
                at=self._clock(),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost=cost,
            ),
            durable=False,
        )

    async def flush(self) -> None:
        """Make everything recorded so far durable now (normally done for you)."""
        await self._writer.flush()


class MessageStream:
    """One message being streamed inside `async with ctx.message()`."""

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx
        #: The message's id, known once its first delta is recorded.
        self.message_id: str | None = None
        self.started = False

    async def delta(self, content: str) -> None:
        self.message_id = await self._ctx.delta(content, message_id=self.message_id)
        self.started = True


#: The `custom` event of a streamed piece of a tool call's arguments: `{"call_id", "tool", "delta"}`.
TOOL_ARGUMENTS_DELTA = "tool.arguments.delta"


class StepStream:
    """What a `stream_step` function streams through while it runs (live only)."""

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx

    async def delta(self, content: str) -> None:
        await self._ctx.delta(content)

    async def thought(self, content: str) -> None:
        await self._ctx.thought(content)

    async def custom(self, name: str, data: Any = None) -> None:
        await self._ctx.custom(name, data)

    async def tool_arguments(self, call_id: str, tool: str | None, delta: str) -> None:
        """A piece of a tool call's arguments (JSON text) as the model streams it: a `custom` event
        named TOOL_ARGUMENTS_DELTA, so a client can show the call before it is made."""
        await self._ctx.custom(TOOL_ARGUMENTS_DELTA, {"call_id": call_id, "tool": tool, "delta": delta})


AgentFn = Callable[[RunContext], Awaitable[Any]]

__all__ = ["RunContext", "MessageStream", "StepStream", "TOOL_ARGUMENTS_DELTA", "AgentFn", "InvalidRunState", "new_id", "plain", "sleep_until"]
