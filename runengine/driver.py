"""The run driver: executes runs, one task per run, for the engine and for queue workers alike.

A pending run is started: `run.started`, then its agent, live. An unfinished run that an
engine takes up again (after a restart, a crash, or a worker's lost lease) is resumed:
`run.resumed`, then its agent is called again with a context that replays its log
(`runengine.replay`) and goes live where the log ends. Nothing here ends a run because a process stops: a graceful stop lets
each run reach its next event, records `run.suspended` and leaves the run to the next engine.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.abc
import attrs
import structlog
import structlog.contextvars

from . import observe
from .agents import AgentRegistry
from .children import ChildHost
from .clock import Clock
from .context import RunContext
from .errors import AgentFailed, ConcurrencyConflict, ReplayDivergence
from .events import (
    ErrorInfo,
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunResumed,
    RunStarted,
    RunSuspended,
    losses_in_a_row,
)
from .options import Durability, RunLimits
from .ownership import session_of_run
from .ports import EventStore, LeaseLost, SessionStore
from .recording import Recorder
from .reducer import Fold
from .replay import Journal
from .state import Message, RunState
from .status import Status
from .step_limits import StepLimiter
from .writer import RunEndedElsewhere, RunWriter

log = structlog.get_logger("runengine")

try:  # anyio asks sniffio which event loop runs for every primitive it makes (~1.5 µs a sniff)
    import sniffio
except ImportError:  # pragma: no cover - anyio then asks asyncio directly
    sniffio = None


class _Helpers:
    """A run's helper tasks (its flush loop, its park watcher), started only when needed, in the
    task group that runs the run's own task, each under a cancel scope of its own. A run that
    needs none (most: a short one, or one with no long durable wait) makes no task group, no
    cancel scope and no task for them; `stop()` cancels those started and waits for them (as
    leaving a task group of the run's own did). A helper that fails is logged, and the run goes
    on without it (a flush loop keeps its failure for the agent's next event itself)."""

    __slots__ = ("_group", "_scopes", "_running", "_ended")

    def __init__(self, group: anyio.abc.TaskGroup) -> None:
        self._group = group
        self._scopes: list[anyio.CancelScope] = []
        self._running = 0
        self._ended: anyio.Event | None = None

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        scope = anyio.CancelScope()
        self._scopes.append(scope)
        self._running += 1
        self._group.start_soon(self._run, scope, fn, args, name=getattr(fn, "__qualname__", None))

    async def _run(self, scope: anyio.CancelScope, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            with scope:
                await fn(*args)
        except Exception:
            log.exception("a run's helper task failed", helper=getattr(fn, "__qualname__", repr(fn)))
        finally:
            self._running -= 1
            if self._running == 0 and self._ended is not None:
                self._ended.set()

    async def stop(self) -> None:
        """Cancel the helpers started and wait until they have ended (nothing to do: no wait)."""
        for scope in self._scopes:
            scope.cancel()
        if self._running:
            self._ended = anyio.Event()
            with anyio.CancelScope(shield=True):  # as a task group's exit, even when the run is cancelled
                await self._ended.wait()


class RunDone:
    """When a run's task has ended: `set`, `is_set`, `wait` as an anyio Event's, but the Event is
    made only for a waiter (most runs end with nobody waiting: one backend look-up and Event
    fewer a run)."""

    __slots__ = ("_set", "_event")

    def __init__(self) -> None:
        self._set = False
        self._event: anyio.Event | None = None

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            await anyio.lowlevel.checkpoint()  # as an Event already set: still a cancellation point
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


@attrs.define(eq=False)
class ActiveRun:
    """A run this process is executing: its writer, its cancel scope and when it is done."""

    run_id: str
    writer: RunWriter
    scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    done: RunDone = attrs.field(factory=RunDone)
    cancel_reason: str | None = None
    after: tuple[str, ...] = ()  # runs of the same session to wait for (policy "enqueue")
    #: What records the agent's calls (or replays them), once it runs.
    recorder: Recorder | None = None
    #: Set by a queue worker: stop without writing (the lease is gone).
    abandoned: bool = False
    #: A graceful stop: end at the next event, record run.suspended, leave the run unfinished.
    suspending: bool = False
    #: The log from seq 1, when whoever loaded the run's state has just read it (a resume replays it).
    first_page: Sequence[Event] = ()
    #: Taken up from the store where it was idle (its timer or input woke it), not after a loss.
    woken: bool = False
    #: Set when the run was parked: idle long enough, its task ended, writing nothing (the time it
    #: waits until: NO_DEADLINE for input only).
    parked_until: datetime | None = None

    #: Parked (`Recorder.park`): its agent waits for a child or a signal, with no task.
    parked: bool = False
    #: Called once the run's task ends, whatever the outcome (flow control frees its slot).
    on_done: list[Callable[[], None]] = attrs.field(factory=list)
    #: Its agent's task group, until the park watcher starts in it: at the first durable wait not
    #: due within the horizon (a run that never waits that long never needs a watcher).
    park_watch: _Helpers | None = None

    def cancel(self, reason: str | None) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason or "cancelled"
        self.scope.cancel()

    def park(self, until: datetime) -> None:
        """End the task of a run idle in a durable wait, writing nothing: it waits in the store."""
        if self.cancel_reason is None and not self.suspending:
            self.parked_until = until
            self.scope.cancel()

    def park_suspended(self) -> None:
        """End the task of a run waiting for a child or a signal, recording run.suspended (reason
        "waiting"): the engine resumes it by replay when what it waits for comes."""
        self.parked = self.suspending = True
        self.scope.cancel()

    def suspend(self, *, now: bool) -> None:
        """Stop for a restart: at once (`now`, or while the agent waits durably), else at its next event."""
        self.suspending = True
        recorder = self.recorder
        if now or recorder is None or recorder.waiting:
            self.scope.cancel()
        else:
            recorder.stop_requested = True


def version_mismatch(state: RunState, agent: str, version: str | None) -> str | None:
    """Why `version` of `agent` cannot replay the run (None: it can): its log was recorded by another."""
    if state.version == version:
        return None
    return f"the run was recorded by version {state.version!r} of agent {agent!r}, this engine has version {version!r}"


async def after_agent(ctx: RunContext, recorder: Recorder) -> None:
    """What follows the agent's return, live and replaying alike (the replay checker's too): its
    open message completes (committing in one batch with the run's last event), and a replay
    checks that the agent made every call its log recorded."""
    await ctx.complete_message(durable=False)
    await recorder.finish_replay()


class RunDriver:
    """Executes runs in a task group with the agents of `agents`, writing to `store`."""

    def __init__(
        self,
        store: EventStore,
        agents: AgentRegistry,
        *,
        clock: Clock,
        worker_id: str,
        durability: Durability,
        limits: RunLimits,
        sessions: SessionStore | None = None,
        on_parked: Callable[[str, datetime], Awaitable[None]] | None = None,
        limiter: StepLimiter | None = None,
    ) -> None:
        """`on_parked(run_id, until)`: told once a parked run's task has ended (None: runs are
        never parked, `durability.park_after` notwithstanding)."""
        self.store = store
        self.on_parked = on_parked
        #: The engine's named step limits, given to every run's context.
        self.limiter = limiter
        #: Where the sessions runs belong to are kept (None: the store keeps none).
        self.sessions = sessions
        self.agents = agents
        self.clock = clock
        self.worker_id = worker_id
        self.durability = durability
        self.limits = limits
        self.active: dict[str, ActiveRun] = {}
        #: What creates and reads child runs for the agents' `ctx.spawn` (the engine sets itself).
        self.children: ChildHost | None = None
        #: Whether a run waiting for a child or a signal ends its task (`Recorder.park`); the engine
        #: resumes it (on a store only it writes: a queue worker would hand it straight back).
        self.parking = False
        #: Told of each run this driver ended, with its state (the engine wakes a waiting parent).
        self.on_ended: Callable[[RunState], None] | None = None
        #: Told, for a run taken up from the store (`woken`), when its agent begins a durable wait
        #: (with when it is due) and when its task ends (None): the engine frees its place among
        #: the woken runs in flight (runengine.idle). One callable for every run: none made per run.
        self.on_woken_idle: Callable[[str, datetime | None], None] | None = None
        self._on_wait = self._waits  # made once: every run's recorder is given this one

    def launch(
        self,
        tg: anyio.abc.TaskGroup,
        state: RunState,
        *,
        after: tuple[str, ...] = (),
        fold: Fold | None = None,
        store: EventStore | None = None,
        max_attempts: int | None = None,
        first_page: Sequence[Event] = (),
        woken: bool = False,
        unsaved: Sequence[Event] = (),
    ) -> ActiveRun:
        """Execute `state`'s run: start it if pending, else resume it (`store`: a worker's leased
        view; `woken`: it was idle in the store, not lost; `unsaved`: its run.created, not yet
        committed: it commits with the run's first batch, RunWriter). A run already executing here is left
        as it is (its creator and the idle scanner may both find a run that is due at once)."""
        if state.run_id in self.active:
            return self.active[state.run_id]
        writer = RunWriter(
            store or self.store,
            fold or Fold(state),
            flush_window=self.durability.flush_window,
            flush_max=self.durability.flush_max,
            snapshot_every=self.durability.snapshot_every,
            max_events=self.limits.max_events_per_run,
            max_event_bytes=self.limits.max_event_bytes,
            unsaved=unsaved,
        )
        active = ActiveRun(run_id=state.run_id, writer=writer, after=after, first_page=first_page, woken=woken)
        self.active[state.run_id] = active
        attempts = max_attempts if max_attempts is not None else self.limits.max_attempts
        tg.start_soon(self._drive, active, attempts, tg, name=f"run {state.run_id}")
        return active

    async def suspend_all(self, drain_timeout: float) -> None:
        """A graceful stop: every run ends at its next event (waits at once), within `drain_timeout`."""
        actives = list(self.active.values())
        for active in actives:
            active.suspend(now=False)
        with anyio.move_on_after(drain_timeout):
            for active in actives:
                await active.done.wait()
        for active in actives:
            if not active.done.is_set():
                active.suspend(now=True)  # in flight past the drain: redone when it resumes
        for active in actives:
            await active.done.wait()

    # -- one task per executing run ----------------------------------------------------

    async def _drive(self, active: ActiveRun, max_attempts: int, tg: anyio.abc.TaskGroup) -> None:
        """Execute the run in this task; `tg`, the group running it, runs its helper tasks too."""
        if sniffio is not None:  # said once in this task's own context: its ~15 look-ups read it
            sniffio.current_async_library_cvar.set(sniffio.current_async_library())
        writer = active.writer
        state = writer.state
        # Bound only when a line is logged (most runs log none): every line carries the run anyway.
        run_log = functools.partial(log.bind, run_id=active.run_id, agent=state.agent)
        observer = observe.current
        observer.active_runs(1)
        carrier = state.metadata.get(observe.TRACE_METADATA_KEY)
        # Every log line of the run (the agent's, the engine's, a library's) carries its id: bound
        # in this task's own context (made for the run, so nothing needs undoing), not with
        # `bound_contextvars`, which copies and scans the whole context to restore it afterwards.
        structlog.contextvars.bind_contextvars(run_id=active.run_id, agent=state.agent)
        try:
            with observer.run_span(
                run_id=active.run_id,
                agent=state.agent,
                attempt=state.attempt + 1,
                carrier=carrier if isinstance(carrier, dict) else {},
            ):
                last = await self._run_agent(active, state, max_attempts, run_log, _Helpers(tg))
                if last is not None:
                    with anyio.CancelScope(shield=True):
                        try:
                            if len(self.active) > 1:
                                # Other runs are under way: one turn of the loop lets those that end
                                # now queue their ends too, so that one commit takes them together
                                # (group commit); a run alone commits at once.
                                await anyio.lowlevel.cancel_shielded_checkpoint()
                            await writer.add(last, durable=True)
                            if self.on_ended is not None and writer.state.terminal:
                                self.on_ended(writer.state)
                        except RunEndedElsewhere:
                            pass
                        except LeaseLost:  # a queue worker that lost its lease: the run is someone else's
                            active.abandoned = True
        except Exception:  # a store failure: the run stays unfinished and is resumed later
            run_log().exception("run driver failed")
        finally:
            observer.active_runs(-1)
            self.active.pop(active.run_id, None)
            writer.settle()
            active.done.set()
            for callback in active.on_done:
                callback()
            if active.woken and self.on_woken_idle is not None:
                self.on_woken_idle(active.run_id, None)
        if active.parked_until is not None and self.on_parked is not None:
            try:  # after it left the active set: an input that came meanwhile is seen by one of the two
                await self.on_parked(active.run_id, active.parked_until)
            except Exception:
                run_log().exception("taking up a parked run failed")

    async def _begin(self, active: ActiveRun, state: RunState, max_attempts: int) -> Journal | Callable[[int], Event] | None:
        """Record the start or the resumption; the journal to replay (None: live from the start),
        or the event that ends the run instead."""
        writer, run_id = active.writer, active.run_id
        spec = self.agents.get(state.agent)  # the caller checked that this engine has it
        if state.status is Status.PENDING:
            for other in active.after:  # session policy "enqueue"
                await self._wait_terminal(other)
            if state.start_at is not None:  # a delayed run: pending until then
                await self.clock.sleep_until(state.start_at)
            await writer.add(
                lambda seq: RunStarted(
                    run_id=run_id,
                    seq=seq,
                    at=self.clock(),
                    worker=self.worker_id,
                    attempt=state.attempt + 1,
                    version=spec.version,
                ),
                durable=False,  # commits with the agent's first events (or within the flush window)
            )
            observe.current.run_started(agent=state.agent, resumed=False)
            return None
        # A run idle in a durable wait (for input, or a timer) cannot have brought its process down:
        # only a loss while its agent was working counts towards the crash-loop bound.
        idle = active.woken or state.at_rest
        # Of the runs a lost process was executing, only those that made no progress count it.
        reason = "restart" if idle else "worker_lost"
        losses = losses_in_a_row(state.lost_attempts, state.progress_seq, state.resumed_seq)
        if reason == "worker_lost" and losses >= max_attempts:
            return self._failed(
                run_id, "worker_lost", f"the process executing this run was lost {losses} times in a row without progress"
            )
        if (other_version := version_mismatch(state, spec.name, spec.version)) is not None:
            return self._failed(run_id, "replay_divergence", other_version)
        await writer.add(
            lambda seq: RunResumed(
                run_id=run_id,
                seq=seq,
                at=self.clock(),
                worker=self.worker_id,
                attempt=state.attempt + 1,
                reason=reason,
                version=spec.version,
            ),
            durable=True,
        )
        observe.current.run_started(agent=state.agent, resumed=True)
        # A message left open stays open while the agent replays: the context discards its unrecorded
        # tail, if any, when it goes live (runengine.replay). The journal ends where the log ended when the run was taken up (what follows is bookkeeping).
        journal = Journal(
            writer.store,
            run_id,
            end_seq=state.last_seq,
            replay_from=state.replay_from,
            first_page=active.first_page,
        )
        active.first_page = ()
        return journal

    def _failed(self, run_id: str, code: str, message: str) -> Callable[[int], Event]:
        return lambda seq: RunFailed(run_id=run_id, seq=seq, at=self.clock(), error=ErrorInfo(code=code, message=message))

    def _deadline(self, state: RunState) -> datetime | None:
        """When the run times out: its timeout counts from its first start, across resumptions
        (None: no timeout, or one ending past the latest date there is)."""
        if state.timeout is None:
            return None
        try:
            return (state.started_at or self.clock()) + timedelta(seconds=state.timeout)
        except OverflowError:
            return None

    async def _run_agent(
        self, active: ActiveRun, state: RunState, max_attempts: int, run_log: Callable[[], Any], background: _Helpers
    ) -> Callable[[int], Event] | None:
        """Run the agent; return how to build the run's last event (None: nothing to write).
        `background` starts the run's helper tasks (its flush loop, its park watcher)."""
        writer = active.writer
        run_id = active.run_id
        recorder: Recorder | None = None
        try:
            with active.scope:
                begun = await self._begin(active, state, max_attempts)
                if begun is not None and not isinstance(begun, Journal):
                    return begun
                spec = self.agents.get(state.agent)
                session = await session_of_run(self.sessions, state) if self.sessions is not None else None
                parks = self.on_parked is not None and self.durability.park_after is not None
                recorder = active.recorder = Recorder(
                    writer, self.clock, journal=begun, on_stop=active.scope.cancel,
                    # A run with a timeout waits in its task: the timeout is counted while it waits.
                    on_park=active.park_suspended if self.parking and state.timeout is None else None,
                    on_wait=self._on_wait if parks or active.woken else None,
                )
                # What the context reads of the run is run.created's: the state it was launched with
                # serves (the state after run.started would be frozen again just for it).
                ctx = RunContext(recorder, self.store, session, children=self.children, limiter=self.limiter, state=state)
                call_later = _loop_timer()
                if call_later is not None:  # the flush loop is a task only once it has work
                    writer.flush_when_needed(functools.partial(background.start_soon, writer.flush_loop), call_later)
                else:
                    background.start_soon(writer.flush_loop)
                if parks:
                    active.park_watch = background
                try:
                    # The timeout counts from the first start (run.started's time): only then is the state after it read.
                    deadline = self._deadline(writer.state) if state.timeout is not None else None
                    if deadline is not None and deadline <= self.clock():
                        raise TimeoutError
                    if deadline is None:  # no cancel scope for a timeout that cannot come
                        result = await spec.fn(ctx)
                    else:  # waited for on the engine's clock, so a test's VirtualClock reaches it too
                        with self.clock.move_on_at(deadline) as timer:
                            result = await spec.fn(ctx)
                        if timer.cancelled_caught:
                            raise TimeoutError
                    await after_agent(ctx, recorder)
                finally:
                    if isinstance(begun, Journal):
                        begun.release()  # a replay cut short (an error, a stop) ends its collector pause
                    active.park_watch = None
                    writer.flush_when_needed(None)
                    await background.stop()
                if writer.ended_elsewhere is not None:
                    return None
                output = result if result is not None else _last_message(writer.fold.messages)  # no state frozen
                return lambda seq: RunCompleted(run_id=run_id, seq=seq, at=self.clock(), output=output)
        except RunEndedElsewhere:
            return None
        except LeaseLost:
            active.abandoned = True
            return None
        except TimeoutError:
            if recorder is not None and recorder.diverged is not None:
                return self._failed(run_id, recorder.diverged.code, recorder.diverged.message)
            run_log().info("run timed out", timeout=state.timeout)
            return self._failed(run_id, "timeout", f"the run took longer than its timeout of {state.timeout} s")
        except Exception as exc:  # the agent's own failure ends the run, with what it said
            if isinstance(writer.failure, LeaseLost):
                active.abandoned = True
            if writer.ended_elsewhere is not None or active.abandoned:
                return None
            if recorder is not None and recorder.diverged is not None:  # even if the agent caught it
                run_log().warning("replay diverged", **recorder.diverged.details)
                return self._failed(run_id, recorder.diverged.code, recorder.diverged.message)
            if isinstance(exc, ReplayDivergence):
                return self._failed(run_id, exc.code, exc.message)
            if isinstance(exc, AgentFailed):  # the agent's own verdict: no traceback to show
                run_log().info("agent failed the run", code=exc.code, message=exc.message)
                return self._failed(run_id, exc.code, exc.message)
            run_log().error("agent raised an exception; the run fails agent_error", exc_info=exc)
            return self._failed(run_id, "agent_error", f"{type(exc).__name__}: {exc}")
        finally:
            if active.scope.cancelled_caught and writer.ended_elsewhere is None:
                # `return` from finally is deliberate: a cancel or a stop wins over what was under way.
                if active.abandoned:
                    return None  # noqa: B012 - the lease is gone: someone else owns the run now
                if active.cancel_reason is not None:
                    reason = active.cancel_reason
                    return lambda seq: RunCancelled(run_id=run_id, seq=seq, at=self.clock(), reason=reason)  # noqa: B012
                if active.parked_until is not None:
                    return None  # noqa: B012 - parked: its log already says what it waits for
                if active.suspending:
                    if writer.state.status is Status.PENDING:
                        return None  # noqa: B012 - never started: the next engine starts it
                    why = "waiting" if active.parked else "shutdown"
                    return lambda seq: RunSuspended(run_id=run_id, seq=seq, at=self.clock(), reason=why)  # noqa: B012
        return None  # pragma: no cover - every path above returns

    def _waits(self, run_id: str, until: datetime) -> None:
        """A run's agent begins a durable wait until `until`: a woken run's place among those in
        flight is freed (`on_woken_idle`), and a wait not due within the horizon starts the run's
        park watcher (once)."""
        active = self.active.get(run_id)
        if active is None:
            return
        if active.woken and self.on_woken_idle is not None:
            self.on_woken_idle(run_id, until)
        group, recorder = active.park_watch, active.recorder
        if group is not None and recorder is not None and until - self.clock() > timedelta(seconds=self.durability.delay_horizon):
            active.park_watch = None
            group.start_soon(self._park_when_idle, active, recorder)

    async def _park_when_idle(self, active: ActiveRun, recorder: Recorder) -> None:
        """Park the run once its agent has waited `park_after` seconds durably for what is not due
        within `delay_horizon` (the idle scanner or a worker takes it up again in time)."""
        park_after = self.durability.park_after
        assert park_after is not None
        horizon = timedelta(seconds=self.durability.delay_horizon)
        while True:
            since, until = recorder.waiting_since, recorder.waiting_until
            if since is None or until is None:
                await anyio.sleep(max(park_after, 0.05))
                continue
            idle_for = time.monotonic() - since
            if idle_for < park_after:
                await anyio.sleep(park_after - idle_for)
                continue
            summary = await self.store.get_run(active.run_id)
            # Due soon, or a wait the store's timer index does not know (begun before it had one): it stays.
            if until - self.clock() <= horizon or summary is None or summary.wake_at is None:
                await anyio.sleep(max(park_after, 0.05))
                continue
            active.park(until)
            return

    async def _wait_terminal(self, run_id: str) -> None:
        while True:
            summary = await self.store.get_run(run_id)
            if summary is None or summary.status.terminal:
                return
            await self.store.wait(run_id, after_seq=summary.last_seq, timeout=1.0)


async def append_at_head(
    store: EventStore,
    run_id: str,
    build: Callable[[int], Event],
    load: Callable[[str], Awaitable[RunState]],
) -> RunState | None:
    """Append one event (`build(seq)`) after whatever the log holds now, unless the run has
    ended (then None); the state after it. `load` reads the run's committed state; `store` is
    where to append (a queue worker's leased view, or the engine's store)."""
    while True:
        state = await load(run_id)
        if state.terminal:
            return None
        event = build(state.last_seq + 1)
        fold = Fold(state)
        fold.apply(event)  # InvalidTransition here: nothing written
        started = time.perf_counter()
        try:
            await store.append(run_id, [event], expected_seq=state.last_seq)
        except ConcurrencyConflict:
            continue
        observe.appended([event], lambda: fold.state, time.perf_counter() - started)
        return fold.state


def _loop_timer() -> Callable[[float, Callable[[], None]], Any] | None:
    """The event loop's `call_later` on asyncio (None elsewhere: a run's flush loop then runs from its start)."""
    try:
        return asyncio.get_running_loop().call_later
    except RuntimeError:
        return None


def _last_message(messages: Sequence[Message]) -> Any:
    for message in reversed(messages):
        if message.role == "assistant":
            return message.content
    return None


__all__ = ["ActiveRun", "AgentFailed", "RunDriver", "after_agent", "append_at_head", "version_mismatch"]
