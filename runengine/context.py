"""RunContext: what an agent function receives. Every method records an event of the run.

A context is live or replaying. Live, each call appends its event. Replaying (the run
was taken up again by another engine), each call is matched against the next event the
agent recorded the first time: it returns what was recorded and appends nothing; a call
that does not match fails the run with `replay_divergence`. When the log runs out the
context goes live, so the agent continues where its log ends. Every recorded call goes
through one record-or-replay step, `runengine.recording.Recorder` (which the driver holds,
with its plumbing); this module is what an agent author sees (docs/durability.md's table).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import random as _random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import structlog

from . import observe
from .errors import InputTimedOut, InvalidRequest, InvalidRunState, InvalidTransition, StepFailed
from .events import (
    Custom,
    ErrorInfo,
    Event,
    MessageCompleted,
    NO_DEADLINE,
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
from .children import ChildHandle, ChildHost, ChildRuns
from .history import HistoryMessage, session_history, session_runs, step_outputs
from .limits import DEFAULT_AGENT_HISTORY
from .patching import Answer, Patches
from .ports import EventStore, SessionRecord
from .recording import Recorder, new_id
from .replay import NOT_AT_HAND
from .signals import SignalInbox, check_signal_name
from .state import RunState
from .step_limits import StepLimiter
from .wire import format_time, parse_time, to_json
from .writer import RunEndedElsewhere


#: The idempotency key of the step or tool function running now (None outside one).
_CALL_KEY: ContextVar[str | None] = ContextVar("runengine_idempotency_key", default=None)


def current_idempotency_key() -> str:
    """The idempotency key of the step or tool call whose function is running (`ctx.idempotency_key()`
    for code that has no `ctx`, such as a Pydantic AI tool). RuntimeError outside one (a misuse)."""
    key = _CALL_KEY.get()
    if key is None:
        raise RuntimeError("an idempotency key exists only while a step or tool function runs")
    return key


@contextlib.contextmanager
def _keyed(key: str) -> Any:
    token = _CALL_KEY.set(key)
    try:
        yield
    finally:
        _CALL_KEY.reset(token)


_SCALARS = (str, int, float, bool, type(None))
#: Exactly these types (no subclass): what `plain` gives back as it is, and is never awaitable.
_SCALAR_TYPES = frozenset(_SCALARS)


def plain(value: Any) -> Any:
    """`value` as it reads back from the log (JSON), so live and replayed calls see the same thing."""
    if isinstance(value, _SCALARS):
        return value
    # InvalidRequest, as the writer refuses such an event: the agent may catch it and go on.
    return json.loads(to_json(value, "a recorded value"))


#: The latest deadline a durable wait can have (`ctx.sleep`, `ctx.ask(timeout=)`): a later one is
#: not a date (past year 9999), so asking for it is refused as InvalidRequest, like a negative wait.
LATEST_DEADLINE = datetime.max.replace(tzinfo=timezone.utc)


def deadline_after(now: datetime, seconds: Any, what: str) -> datetime:
    """`now` plus `seconds`, refused (InvalidRequest) unless a finite number >= 0 reaching no
    later than LATEST_DEADLINE."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise InvalidRequest(f"{what} must be a finite number of seconds >= 0", seconds=seconds)
    try:
        return now + timedelta(seconds=seconds)
    except OverflowError:
        raise InvalidRequest(
            f"{what} of {seconds} s ends after {format_time(LATEST_DEADLINE)}, the latest deadline there is",
            seconds=seconds,
        ) from None


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


class RunContext:
    """The run as its agent sees it. Create one only through the engine.

    Every recorded call goes through the run's `Recorder` (`runengine.recording`): live it
    appends its event, replaying it gets the recorded one back (docs/durability.md has the table).
    """

    def __init__(
        self, recorder: Recorder, store: EventStore, session: SessionRecord | None, *,
        children: ChildHost | None = None, limiter: StepLimiter | None = None, state: RunState | None = None,
    ) -> None:
        """`state`: the run at any point after its run.created (only what that event set is read);
        by default its writer's state."""
        self._rec = recorder
        #: The engine's named step limits (`ctx.step(..., limit=)`; None: it has none).
        self._limiter = limiter
        self._writer = recorder.writer
        self._store = store
        self._clock = recorder.clock
        state = state or self._writer.state
        self.run_id: str = state.run_id
        self.agent: str = state.agent
        self.input: Any = state.input
        self.session_id: str | None = state.session_id
        self.metadata: dict[str, Any] = state.metadata
        self.owner: str | None = state.owner
        #: The session this run belongs to, with its metadata, when there is one.
        self.session = session
        self._children = ChildRuns(recorder, store, children)
        self._signals = SignalInbox(recorder, store, recorder.clock)

    @functools.cached_property
    def log(self) -> Any:
        """A structlog logger bound to the run (its id and agent); made on first use, as most
        agents never log (a thousand runs resumed at once bind none)."""
        return structlog.get_logger("runengine.agent").bind(run_id=self.run_id, agent=self.agent)

    @property
    def replaying(self) -> bool:
        """True while the agent's calls are answered from its log (a resumed run)."""
        return self._rec.replaying

    @property
    def state(self) -> RunState:
        """The run so far: while replaying, as it was at this point the first time."""
        state = self._rec.fold.state
        assert state is not None
        return state

    @property
    def attempt(self) -> int:
        return self._writer.state.attempt

    def idempotency_key(self) -> str:
        """Inside a step or tool function: a key for its side effect that is the same every time this
        call runs, across crashes and resumes (`{run_id}/tool/{call_id}`, `{run_id}/step/{n}` for the
        run's n-th step), so an API that takes one (a payment's `Idempotency-Key`) does it once."""
        return current_idempotency_key()

    async def history(self, *, limit: int = DEFAULT_AGENT_HISTORY) -> list[HistoryMessage]:
        """The session's turns before this run, oldest first: each earlier run's input (role
        "user"), then its messages; the latest `limit` of them (runengine.limits). Empty outside a
        session. Read from the store, not recorded: an earlier run still active shows the messages
        it has so far."""
        if self.session_id is None:
            return []
        page = await session_history(self._store, self.session_id, owner=self.owner, limit=limit, before_run=self.run_id)
        return page.messages

    async def session_steps(self, name: str, *, runs: int = DEFAULT_AGENT_HISTORY) -> list[tuple[str, Any]]:
        """`(run_id, output)` of every step named `name` that the session's latest `runs` earlier
        runs recorded (failed ones left out), oldest run first, each run's in the order recorded:
        what an integration keeps of a turn beyond its text (a framework's own message history).
        Empty outside a session; read from the store, not recorded, like `history()`."""
        if self.session_id is None:
            return []
        earlier = await session_runs(self._store, self.session_id, owner=self.owner, before_run=self.run_id, limit=runs)
        return [(run.run_id, output) for run in earlier for output in await step_outputs(self._store, run.run_id, name)]

    # -- messages -------------------------------------------------------------

    async def delta(self, content: str, *, message_id: str | None = None) -> str:
        """Stream a piece of the assistant's message (opens a message if none is open); its id."""
        if not isinstance(content, str):
            raise TypeError(f"delta content must be str, not {type(content).__name__}")
        call = f"delta({content[:40]!r})"
        recorded = await self._rec.replayed(MessageDelta, call, content=content)
        if recorded is not None:
            same = self._rec.same_message
            if message_id is not None and same(message_id) != same(recorded.message_id):
                raise self._rec.diverge(recorded, call, f"it recorded message_id={recorded.message_id!r}, not {message_id!r}")
            return recorded.message_id
        if message_id is not None:
            message_id = self._rec.same_message(message_id)
        else:
            message_id = self._writer.fold.open_message_id or new_id("msg")
        await self._rec.add_delta(message_id, content)
        return message_id

    async def complete_message(
        self, *, role: str = "assistant", content: str | None = None, durable: bool = True
    ) -> str | None:
        """Close the message being streamed, if any; returns its id."""
        if self._rec.fold.partial() is None:
            return None
        call = "complete_message()"
        # Its deltas were matched one by one: the recorded text is theirs.
        expect: dict[str, Any] = {"role": role} if content is None else {"role": role, "content": content}
        recorded = await self._rec.replayed(MessageCompleted, call, **expect)
        if recorded is not None:
            return recorded.message_id
        partial = self._writer.fold.partial()  # live now: a discarded tail is gone from it
        if partial is None:
            return None
        text = partial.content if content is None else content
        await self._rec.add(
            lambda seq: MessageCompleted(
                run_id=self.run_id, seq=seq, at=self._clock(), message_id=partial.message_id, role=role, content=text
            ),
            durable=durable,
        )
        return partial.message_id

    async def _whole_message(self, content: str, role: str, call: str) -> str:
        # Not durable on its own (like a thought): it commits with the run's next durable event
        # or within the flush window, so `say` then the run's end is one commit, not two. A say
        # lost with its process is said again on resume: nothing outside the run saw it.
        message_id = new_id("msg")
        event = await self._rec.once(
            MessageCompleted,
            call,
            lambda seq: MessageCompleted(
                run_id=self.run_id, seq=seq, at=self._clock(), message_id=message_id, role=role, content=content
            ),
            durable=False,
            role=role,
            content=content,
        )
        return event.message_id

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
        open_id = self._rec.fold.open_message_id
        same = self._rec.same_message
        if stream.message_id is not None and open_id is not None and same(open_id) == same(stream.message_id):
            await self.complete_message(role=role)
        elif not stream.started:
            stream.message_id = await self._whole_message("", role, "message() with no delta")

    # -- the rest of what an agent does ---------------------------------------

    async def thought(self, content: str, *, source: str | None = None) -> None:
        await self._rec.once(
            Thought,
            f"thought({content[:40]!r})",
            lambda seq: Thought(run_id=self.run_id, seq=seq, at=self._clock(), content=content, source=source),
            durable=False,
            content=content,
            source=source,
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
        cid = call_id or new_id("call")
        expect: dict[str, Any] = {"name": name, "arguments": plain(args)}
        if call_id is not None:
            expect["call_id"] = call_id
        recorded = await self._rec.once(
            ToolCall,
            call,
            lambda seq: ToolCall(run_id=self.run_id, seq=seq, at=self._clock(), call_id=cid, name=name, arguments=args),
            **expect,
        )
        cid = recorded.call_id
        if fn is None:
            return None
        result = await self._rec.replayed(ToolResult, call, call_id=cid)
        if result is not None:
            if result.error is not None:
                raise StepFailed(name, result.error.code, result.error.message)
            return result.output
        # Live (or recorded, but in flight when its process stopped: called again, at least once).
        try:
            with observe.current.step_span(kind="tool", name=name, run_id=self.run_id, seq=recorded.seq), _keyed(
                f"{self.run_id}/tool/{cid}"
            ):
                output = plain(await _call(fn, **args))
        except Exception as exc:
            error = ErrorInfo(code="tool_error", message=f"{type(exc).__name__}: {exc}")
            await self._rec.add(
                lambda seq: ToolResult(run_id=self.run_id, seq=seq, at=self._clock(), call_id=cid, error=error)
            )
            raise StepFailed(name, error.code, error.message) from exc
        await self._rec.add(
            lambda seq: ToolResult(run_id=self.run_id, seq=seq, at=self._clock(), call_id=cid, output=output)
        )
        return output

    async def tool_result(self, call_id: str, output: Any = None, *, error: ErrorInfo | None = None) -> None:
        """Record the result of a tool call made with `tool_call(name, arguments)` and no fn."""
        await self._rec.once(
            ToolResult,
            f"tool_result({call_id!r})",
            lambda seq: ToolResult(
                run_id=self.run_id, seq=seq, at=self._clock(), call_id=call_id, output=output, error=error
            ),
            call_id=call_id,
            output=plain(output),
            error=error,
        )

    async def step(
        self, name: str, fn: Callable[..., Any], /, *args: Any, limit: str | None = None, **kwargs: Any
    ) -> Any:
        """Run `fn(*args, **kwargs)` (sync or async) once, durably: its result is recorded before
        this returns, and a resumed run gets the recorded result without calling `fn` again.

        Use it for whatever must not be recomputed: an LLM call, an HTTP request, a payment.
        The result comes back as recorded (JSON data). If `fn` raises, that is recorded too and
        `StepFailed` is raised, live and on replay alike. `limit`: the name of an engine step
        limit (runengine.step_limits) the call waits for, live only (a replay calls nothing).
        """
        rec = self._rec
        if limit is not None:  # (checked inline: a resume replays 100,000 steps through here)
            self._check_limit(limit)
        # Live (the common case) nothing is recorded yet to look for: no replay call made at all.
        if rec.replaying or rec.diverged is not None or rec.replay_only:
            output = rec.step_at_hand(name)
            if output is not NOT_AT_HAND:
                return output
            recorded = await rec.replayed_step(name)
            if recorded is not None:
                return recorded[0] if recorded[1] is None else _step_outcome(name, *recorded)
        if limit is not None:
            await self._acquire(limit)
        # No span made when no observer is installed (nobody would see it).
        span = (
            observe.current.step_span(kind="step", name=name, run_id=self.run_id, seq=self._writer.next_seq)
            if observe.installed() else None
        )
        return await self._record_step(name, fn, args, kwargs, span)

    def _check_limit(self, limit: str | None) -> None:
        if limit is not None:
            if self._limiter is None:
                raise InvalidRequest(f"this engine has no step limits; limit={limit!r} names none", limit=limit)
            self._limiter.check(limit)

    async def _acquire(self, limit: str | None) -> None:
        if limit is not None and self._limiter is not None:
            await self._limiter.acquire(limit)

    async def stream_step(self, name: str, fn: Callable[[StepStream], Awaitable[Any]], *, limit: str | None = None) -> Any:
        """Like `step`, for a call that streams while it runs (an LLM's reply): `fn(stream)` may
        `await stream.delta(text)`, `stream.thought(text)`, `stream.tool_arguments(...)` and
        `stream.custom(name, data)` as its output arrives, and returns the result to record. What it
        streams goes out live; a resumed run gets the recorded result, and the events that came with
        it, without calling `fn` again. A call cut short by a stop is made again (what it had
        streamed of its message is discarded). `limit`: as for `step`."""
        self._check_limit(limit)
        call = f"stream_step({name!r})"
        while (recorded := await self._rec.replayed(Event, call)) is not None:
            if isinstance(recorded, MessageDelta):  # streamed by this call the first time
                self._rec.streamed_again(recorded)
            elif not isinstance(recorded, (Thought, Custom)):
                if not isinstance(recorded, StepCompleted):
                    raise self._rec.diverge(recorded, call, f"the log has {recorded.type}")
                self._rec.step_recorded()
                self._rec.match(recorded, call, name=name)
                return _step_outcome(name, recorded.output, recorded.error)
        await self._acquire(limit)
        return await self._record_step(name, fn, (StepStream(self),), {})  # not recorded to its end: made again

    async def _record_step(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
        span: contextlib.AbstractContextManager[Any] | None = None,
    ) -> Any:
        """Make a step's call live (`fn(*args, **kwargs)`: its result, or an awaitable of it; passed
        apart, not as a closure: a call fewer per step) and record what came of it (`step.completed`
        with its output, or its error, which is raised again as StepFailed); `span` is around the
        call alone."""
        # The run's steps recorded so far: the same number wherever this call runs again.
        token = _CALL_KEY.set(f"{self.run_id}/step/{self._writer.fold.steps}")
        try:
            try:
                if span is None:  # (no null context: two calls fewer per step)
                    output = fn(*args, **kwargs)
                    if type(output) not in _SCALAR_TYPES:
                        output = plain(await output if inspect.isawaitable(output) else output)
                else:
                    with span:
                        output = fn(*args, **kwargs)
                        if inspect.isawaitable(output):
                            output = await output
                        output = plain(output)
            finally:
                _CALL_KEY.reset(token)
        except Exception as exc:
            error = ErrorInfo(code=type(exc).__name__, message=f"{type(exc).__name__}: {exc}")
            await self._rec.add(
                lambda seq: StepCompleted(run_id=self.run_id, seq=seq, at=self._clock(), name=name, error=error)
            )
            raise StepFailed(name, error.code, error.message) from exc
        await self._rec.add(
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
        deadline_after(self._clock(), seconds, "sleep")  # refused at the call, live or replaying
        await self._timer(lambda: deadline_after(self._clock(), seconds, "sleep"), f"sleep({seconds})")

    async def sleep_until(self, when: datetime) -> None:
        """Wait until `when` (timezone-aware), durably."""
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise InvalidRequest("sleep_until takes a timezone-aware datetime")
        await self._timer(lambda: when, f"sleep_until({format_time(when)})")

    async def _timer(self, deadline: Callable[[], datetime], call: str) -> None:
        started = await self._rec.once(  # the id drawn only when the timer is recorded, not replayed
            TimerStarted,
            call,
            lambda seq: TimerStarted(
                run_id=self.run_id, seq=seq, at=self._clock(), timer_id=new_id("timer"), until=deadline()
            ),
        )
        if await self._rec.replayed(TimerFired, call, timer_id=started.timer_id) is not None:
            return
        async with self._rec.durable_wait(started.until):
            await self._clock.sleep_until(started.until)
        await self._rec.add(
            lambda seq: TimerFired(run_id=self.run_id, seq=seq, at=self._clock(), timer_id=started.timer_id),
            durable=False,
        )

    async def ask(self, request: Any = None, *, timeout: float | None = None) -> Any:
        """Wait for input: records run.waiting_for_input, returns what `engine.resume` gives.

        With `timeout` (seconds), raises InputTimedOut when no input came by then; the deadline
        is recorded, so it holds across restarts.
        """
        if timeout is not None:
            deadline_after(self._clock(), timeout, "ask timeout")  # refused at the call, live or replaying
        await self.complete_message()
        call = "ask()"
        waiting = await self._rec.once(
            RunWaitingForInput,
            call,
            lambda seq: RunWaitingForInput(
                run_id=self.run_id,
                seq=seq,
                at=self._clock(),
                request=request,
                expires_at=deadline_after(self._clock(), timeout, "ask timeout") if timeout is not None else None,
            ),
            request=plain(request),
        )
        answer = await self._recorded_answer(call)
        if isinstance(answer, RunInput):
            return answer.content
        if isinstance(answer, RunInputTimedOut):
            raise InputTimedOut("no input came before the deadline")
        return await self._wait_for_input(waiting.expires_at)

    async def _recorded_answer(self, call: str) -> Event | None:
        """While replaying an ask: the recorded input or timeout (None: live, or still waiting at the stop)."""
        while (event := await self._rec.replayed(Event, call)) is not None:
            if isinstance(event, (RunInput, RunInputTimedOut)):
                return event
            if not isinstance(event, (Usage, Custom)):  # others may note usage while the run waits
                raise self._rec.diverge(event, call, f"the log has {event.type} where an input was awaited")
        return None

    async def _wait_for_input(self, expires: datetime | None) -> Any:
        seen = self._writer.committed_seq
        while True:
            async with self._rec.durable_wait(expires if expires is not None else NO_DEADLINE):
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
                    if expires is not None and self._clock() >= expires:
                        break
                    with self._clock.move_on_at(expires):
                        await self._store.wait(self.run_id, after_seq=seen)
            try:
                await self._rec.add(lambda seq: RunInputTimedOut(run_id=self.run_id, seq=seq, at=self._clock()))
            except InvalidTransition:  # an input got in first: read it from where we were
                expires = None
                continue
            raise InputTimedOut("no input came before the deadline")

    # -- child runs and signals (runengine.children, runengine.signals) -------

    @property
    def parent_run_id(self) -> str | None:
        """The run that spawned this one (None: a top-level run)."""
        return self._writer.state.parent_run_id

    async def spawn(
        self, agent: str, input: Any = None, *, session_id: str | None = None, metadata: dict[str, Any] | None = None
    ) -> ChildHandle:
        """Start a child run of `agent` (recorded: replayed, it is the same child, created once);
        `await handle` joins it. Spawn one after the other, join in a fixed order (docs/durability.md)."""
        return await self._children.spawn(agent, input, session_id=session_id, metadata=metadata)

    async def join(self, run_id: str) -> Any:
        """Wait for child run `run_id` to end (a durable wait): its output, or ChildFailed raised."""
        return await self._children.join(run_id)

    async def run(self, agent: str, input: Any = None, **options: Any) -> Any:
        """Spawn a child run and join it: its output."""
        return await (await self.spawn(agent, input, **options))

    async def gather(self, *children: ChildHandle | str, return_exceptions: bool = False) -> list[Any]:
        """Join children in the order given (they run at once; this only collects them): their outputs.
        With `return_exceptions`, a child's ChildFailed is in the list instead of raised."""
        return await self._children.gather(children, return_exceptions)

    async def receive(self, name: str, *, timeout: float | None = None) -> Any:
        """The next signal `name` sent to this run (each once, in order): its payload. Waits
        durably for one; with `timeout` (seconds, recorded) raises SignalTimedOut when none came."""
        check_signal_name(name)
        expires = deadline_after(self._clock(), timeout, "receive timeout") if timeout is not None else None
        return await self._signals.receive(name, expires)

    async def poll(self, name: str, default: Any = None) -> Any:
        """The next signal `name` if one has arrived (taken, as by `receive`), else `default`; never waits."""
        check_signal_name(name)
        return await self._signals.poll(name, default)

    async def custom(self, name: str, data: Any = None) -> None:
        await self._rec.once(
            Custom,
            f"custom({name!r})",
            lambda seq: Custom(run_id=self.run_id, seq=seq, at=self._clock(), name=name, data=data),
            durable=False,
            name=name,
            data=plain(data),
        )

    async def usage(
        self, *, input_tokens: int = 0, output_tokens: int = 0, cost: float = 0.0, limit: str | None = None
    ) -> None:
        """Record tokens and cost used; `limit`: spend the tokens from that step limit's budget
        (live only: a replayed report was spent when it was made)."""
        self._check_limit(limit)
        live = not self.replaying
        await self._rec.once(
            Usage,
            "usage()",
            lambda seq: Usage(
                run_id=self.run_id,
                seq=seq,
                at=self._clock(),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost=cost,
            ),
            durable=False,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost,
        )
        if live and limit is not None and self._limiter is not None:
            await self._limiter.spend(limit, input_tokens + output_tokens)

    async def flush(self) -> None:
        """Make everything recorded so far durable now (normally done for you)."""
        await self._writer.flush()

    # -- patching: code that changed while runs were in flight (runengine.patching) -----------

    @functools.cached_property
    def _patches(self) -> Patches:
        return Patches(self._rec)

    def patched(self, name: str) -> Answer:
        """`if await ctx.patched("new-retrieval"):` new code `else:` the old code. True for a run
        that reaches this point live (recorded as `patch.marked`), and when it replays; False for
        a run replaying a log that predates the patch. The same answer for the rest of the run.
        Awaitable (a truth value only once awaited: `if ctx.patched(...)` raises TypeError)."""
        return Answer(self._patches.patched(name), f"ctx.patched({name!r})")

    async def deprecate_patch(self, name: str) -> None:
        """In place of `patched(name)` once no run that predates the patch is left (its old code
        removed): replays the runs that recorded the marker, records nothing itself."""
        await self._patches.deprecate(name)


def _step_outcome(name: str, output: Any, error: ErrorInfo | None) -> Any:
    """A recorded step's output, or its recorded error raised again."""
    if error is not None:
        raise StepFailed(name, error.code, error.message)
    return output


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

__all__ = [
    "RunContext", "MessageStream", "StepStream", "TOOL_ARGUMENTS_DELTA", "AgentFn", "InvalidRunState", "LATEST_DEADLINE",
    "current_idempotency_key", "deadline_after", "new_id", "plain",
]
