"""RunEngine: the application service. It owns the run lifecycle and is the only writer of events.

    engine = RunEngine(store)

    @engine.agent("echo")
    async def echo(ctx):
        for word in ctx.input.split():
            await ctx.delta(word + " ")

    async with engine:
        state = await engine.execute("echo", "hello world")          # sync
        pending = await engine.execute("echo", "hi", mode="async")   # returns at once
        async for event in engine.events(pending.run_id):            # replay, then live
            ...
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from types import TracebackType
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, overload

import anyio
import attrs
import structlog

from . import observe
from .agents import AgentRegistry, AgentSpec
from .clock import Clock, as_clock
from .collector import CollectorPause
from .context import AgentFn
from .errors import (
    ConcurrencyConflict,
    EngineNotStarted,
    InvalidRequest,
    InvalidRunState,
    RunNotFound,
    SessionExists,
    SessionNotFound,
    StoreError,
)
from .children import cancel_children
from .events import NO_DEADLINE, Event, RunCancelled, RunCreated, RunInput, SignalReceived, SignalRecord
from .history import HistoryMessage, HistoryPage, HistoryPosition
from .history import history_message as read_history_message
from .history import session_history as read_session_history
from .idempotency import IdempotencyStore, bind_key, fingerprint
from .ownership import (
    as_seen,
    as_stored,
    can_access,
    idempotency_principal,
    run_of,
    session_key,
    session_of,
    stored_session,
)
from .ports import (
    DEFAULT_PAGE,
    MAX_PAGE,
    EventStore,
    HeadReader,
    SettledWait,
    IdempotencyRecord,
    QueuedStore,
    RunPage,
    RunSummary,
    SessionRecord,
    SessionRuns,
    SessionStore,
    TokenBuckets,
    WorkQueue,
    port_of,
    required,
)
from .reducer import Fold
from .reducer import fold as fold_log
from .retention import RetentionSweeper, delete_ended_run, ended_runs, start_retention
from .state import RunState
from .status import Status
from .stores import open_store
from .idle import TAKE_UP_BATCH, IdleRuns
from .driver import ActiveRun, AgentFailed, RunDriver, append_at_head
from .writer import RunWriter
from .following import follow_batches
from .keylock import KeyLocks
from .options import Durability, Flow, Retention, RunLimits
from .admission import Admission
from .flow import WAITING_SCHEDULE, KeyFunction, Rate, check_priority, flow_spec
from .step_limits import LocalBuckets, StepLimiter
from .limits import DEFAULT_HISTORY_PAGE
from .signals import check_signal_name
from .validation import check_run_id
from .wire import data_to_json, format_time, to_json
from .fork import fork_events, read_prefix
from .schedules import SCHEDULE_KEY, SLOT_KEY, Schedule, Schedules, ScheduleStore
from .worker import Worker, WorkerOptions, worker_options

log = structlog.get_logger("runengine")

MODES: tuple[str, ...] = ("sync", "async", "stream")
SessionPolicy = Literal["allow", "reject", "enqueue", "interrupt"]
SESSION_POLICIES: tuple[str, ...] = ("allow", "reject", "enqueue", "interrupt")
ACTIVE_STATUSES = (Status.PENDING, Status.RUNNING, Status.WAITING_FOR_INPUT)


#: Recovery reads the logs of up to this many events in bulk (a page of runs per query); a longer
#: log is loaded on its own (from its snapshot), so a bulk read never holds a long log it drops.
RECOVERY_HEAD = 256
#: Unfinished runs listed per store read at recovery.
RECOVERY_PAGE = 200
#: Recovery taking up at least this many runs pauses the cyclic garbage collector
#: (runengine.collector) for RECOVERY_GC_PAUSE seconds at most: their take-up and first turns.
RECOVERY_GC_RUNS = 100
RECOVERY_GC_PAUSE = 1.0


class SessionBusy(InvalidRunState):
    """The session already has an active run and its policy is `reject`."""

    def __init__(self, session_id: str, active: list[str]) -> None:
        super().__init__(active[0], "active", f"session {session_id!r} already has an active run")
        self.details.update(session_id=session_id, active_runs=active)


class SessionEnded(InvalidRunState):
    """The session was ended, or its `expires_at` has passed: it takes no new runs."""

    def __init__(self, session_id: str, *, expired: bool = False) -> None:
        what = "expired" if expired else "ended"
        super().__init__("", what, f"session {session_id!r} has {what}")
        self.message = f"session {session_id!r} has {what}"
        self.details = {"session_id": session_id, "expired": expired}


@attrs.frozen
class RunStream:
    """What execute(mode="stream") returns: the run's id at once, and its events as an async iterator."""

    run_id: str
    events: AsyncGenerator[Event, None]

    def __aiter__(self) -> AsyncGenerator[Event, None]:
        return self.events

    async def aclose(self) -> None:
        await self.events.aclose()


class RunEngine:
    """Executes agent runs and records every step as an event in `store`."""

    def __init__(
        self,
        store: EventStore | str | None = None,
        *,
        clock: Clock | Callable[[], datetime] = Clock(),
        session_policy: SessionPolicy = "allow",
        worker: WorkerOptions | bool | None = None,
        worker_id: str | None = None,
        durability: Durability = Durability(),
        limits: RunLimits = RunLimits(),
        retention: Retention = Retention(),
        flow: Flow = Flow(),
    ) -> None:
        """`store`: an EventStore or a store URL (None: memory://). The options are grouped by what
        they govern (runengine.options): `durability` (group commit, snapshots, stop and restart),
        `limits` (what one run may take), `retention` (how long runs and idempotency keys are kept);
        `flow` names the step limits runs share (runengine.step_limits); `worker` runs queued runs
        (runengine.worker) on a store with a work queue."""
        if session_policy not in SESSION_POLICIES:
            raise InvalidRequest(f"session_policy must be one of {SESSION_POLICIES}")
        for name, value, group in (("durability", durability, Durability), ("limits", limits, RunLimits),
                                   ("retention", retention, Retention), ("flow", flow, Flow)):
            if not isinstance(value, group):
                raise InvalidRequest(f"{name} must be a runengine.options.{group.__name__}", **{name: repr(value)})
        #: Whether whoever built the engine chose its store; without one it is memory://, which
        #: `use_store` may replace before the engine starts (`runengine serve --app ... --store URL`).
        self.store_chosen = store is not None
        store = "memory://" if store is None else store
        self._attach(open_store(store) if isinstance(store, str) else store)
        self.agents = AgentRegistry()
        self.durability = durability
        self.limits = limits
        self.session_policy: SessionPolicy = session_policy
        #: The engine's time (runengine.clock): read it as `engine.clock()`.
        self.clock = clock = as_clock(clock)
        self.worker_id = worker_id or f"engine-{uuid.uuid4().hex[:8]}"
        self.flow = flow
        self.driver = RunDriver(
            self.store, self.agents, clock=clock, worker_id=self.worker_id, sessions=self.session_store,
            durability=durability, limits=limits,
            limiter=StepLimiter(flow.step_limits, self._token_buckets(), clock),
        )
        #: Idle runs (delayed, sleeping, waiting for input) stay in the store until
        #: `durability.delay_horizon` seconds before they are due, or until their input comes
        #: (runengine.idle); only then are they launched, so a hundred thousand of them cost no memory.
        self.idle = self._idle_runs()
        self.driver.on_parked = self._parked if self._can_park() else None
        self.driver.children = self  # the agents' ctx.spawn (runengine.children.ChildHost)
        self.driver.on_ended = self._ended
        self.driver.on_woken_idle = self.idle.release
        self._waking: set[str] = set()  # parked runs a waker task is about to look at
        self._closing = False
        # A run waiting for a child or a signal ends its task, and this engine resumes it (_wake);
        # a queue worker holds its task instead (a parked run would go straight back to the queue).
        self.driver.parking = self.queue is None
        #: Flow control of the runs this engine executes (runengine.admission): pending runs of
        #: limited agents in line, debounced starts. A store with a work queue holds runs back at claim.
        self.admission = Admission(self)
        self._session_locks = KeyLocks()
        self._tg: anyio.abc.TaskGroup | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self.worker_options = worker_options(worker)
        if self.worker_options is not None and self.queue is None:
            raise InvalidRequest("worker mode needs a store with a work queue (e.g. postgresql://)")
        self._worker: Worker | None = None
        #: Ended runs are deleted `retention.runs` seconds after they ended (None: kept), by a
        #: sweep every `retention.sweep_interval` seconds (runengine.retention).
        self.retention = retention
        if retention.runs is not None:
            ended_runs(self.store)  # refused now, not at the first sweep
        self.sweeper: RetentionSweeper | None = None

    def _idle_runs(self) -> IdleRuns:
        return IdleRuns(
            self.store, self.clock, self._wake_all, lambda run_id: run_id in self.driver.active,
            horizon=self.durability.delay_horizon,
        )

    def use_store(self, store: EventStore | str) -> None:
        """Give an engine built without a store (`RunEngine()`) its store, before it starts.
        InvalidRequest when the engine has a store of its own, or has started."""
        if self.store_chosen:
            raise InvalidRequest("this engine was built with a store of its own")
        if self._tg is not None:
            raise InvalidRequest("the engine has started: its store can no longer change")
        chosen = open_store(store) if isinstance(store, str) else store
        if self.worker_options is not None and port_of(chosen, QueuedStore) is None:
            raise InvalidRequest("worker mode needs a store with a work queue (e.g. postgresql://)")
        self._attach(chosen)
        self.driver.store, self.driver.sessions = self.store, self.session_store
        self.idle = self._idle_runs()
        self.driver.on_parked = self._parked if self._can_park() else None
        self.driver.on_woken_idle = self.idle.release
        self.driver.parking = self.queue is None
        assert self.driver.limiter is not None
        self.driver.limiter.buckets = self._token_buckets()
        self.store_chosen = True

    def _attach(self, store: EventStore) -> None:
        """Take `store` as the engine's log, with the small ports it declares beside it (None: it
        keeps no such thing, and what needs it is refused with InvalidRequest)."""
        self.store: EventStore = store
        self.session_store: SessionStore | None = port_of(store, SessionStore)
        self.idempotency_store: IdempotencyStore | None = port_of(store, IdempotencyStore)
        #: The store's work queue, if it has one: execute then enqueues, workers execute.
        queued = port_of(store, QueuedStore)
        self.queue: WorkQueue | None = queued.work_queue if queued is not None else None
        self.schedule_store: ScheduleStore | None = port_of(store, ScheduleStore)
        self._schedules: Schedules | None = None

    def _token_buckets(self) -> TokenBuckets:
        """The store's shared token buckets, or this process's (a store only this engine writes)."""
        return port_of(self.store, TokenBuckets) or LocalBuckets(self.clock)

    # -- agents ---------------------------------------------------------------

    def agent(
        self,
        name: str,
        *,
        description: str = "",
        metadata: dict[str, Any] | None = None,
        version: str | None = None,
        concurrency: int | None = None,
        concurrency_key: KeyFunction | None = None,
        rate: str | Rate | None = None,
        debounce: float | None = None,
        debounce_key: KeyFunction | None = None,
    ) -> Callable[[AgentFn], AgentFn]:
        """Decorator: register an async function `fn(ctx) -> output` as the agent `name`.

        `version`: change it when runs in flight must not replay against the new code
        (they fail `replay_divergence` when resumed by an engine with another version).
        Flow control (runengine.flow, docs/flow-control.md): at most `concurrency` runs execute
        at once (per `concurrency_key(input, metadata)` when given), the rest wait pending in
        order; runs start at most at `rate` ("60/minute"); `debounce` seconds: a burst of starts
        (per `debounce_key(input, metadata)`) runs only its last."""
        flow = flow_spec(
            concurrency=concurrency, concurrency_key=concurrency_key, rate=rate, debounce=debounce,
            debounce_key=debounce_key,
        )

        def register(fn: AgentFn) -> AgentFn:
            self.agents.add(
                AgentSpec(
                    name=name, fn=fn, description=description, metadata=dict(metadata or {}), version=version, flow=flow
                )
            )
            return fn

        return register

    # -- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> RunEngine:
        self._closing = False
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await self.store.open()
            stack.push_async_callback(self.store.close)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._shutdown)
            self.sweeper = await start_retention(
                self.store, self.clock, self.retention.runs, self.retention.sweep_interval, self._tg
            )
            if self.sweeper is not None:
                stack.push_async_callback(self.sweeper.stop)
        except BaseException:
            await stack.aclose()
            raise
        self._exit_stack = stack
        recover = self.durability.recover_on_start
        recover = recover if recover is not None else not self.store.shared
        if self.queue is None:
            await self._tg.start(self.idle.run)
        if self.schedule_store is not None:
            await self._tg.start(self.schedules.run)
            await self._tg.start(self.admission.run)
        if recover:
            await self.recover()  # with the idle runs due now (the scanner then waits for the next)
        if self.queue is not None and self.worker_options is not None:
            self._worker = Worker(self, self.queue, self.worker_options)
            await self._tg.start(self._worker.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._exit_stack = self._exit_stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    @property
    def running(self) -> bool:
        return self._tg is not None

    async def _shutdown(self) -> None:
        """A graceful stop: runs reach their next event (within `drain_timeout`), record
        run.suspended and stay unfinished; the next engine resumes them. Nothing ends a run here."""
        self.idle.stop()
        self._closing = True  # parked runs are no longer woken: the next engine resumes them
        if self._schedules is not None:
            self._schedules.stop()
        self.admission.stop()  # runs in line stay pending in the store for the next engine
        with anyio.CancelScope(shield=True):
            if self._worker is not None:  # queued runs: suspended and handed back to the queue
                await self._worker.stop()
                self._worker = None
            await self.driver.suspend_all(self.durability.drain_timeout)
        self._tg = None

    def _task_group(self) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise EngineNotStarted()
        return self._tg

    async def recover(self) -> list[str]:
        """Take up the runs a previous process left unfinished in a store only it writes:
        pending runs are started, running or waiting ones resumed from their logs, and (with a
        timer index) the idle runs already due: every one listed, and their logs read, before
        any is launched. A run whose agent this engine does not have stays as it is, for an
        engine that has it. Returns the ids of the runs at work it took up (not the idle ones)."""
        if self.queue is not None:  # a shared store: workers take lost runs over (runengine.worker)
            return []
        lost: dict[str, None] = {}
        missing: set[str] = set()
        # No run in line starts before the runs under way have taken their slots back (flow control).
        self.admission.hold()
        try:
            async for page in self._unfinished_runs():
                for summary in page:
                    if summary.run_id in self.driver.active or summary.run_id in lost:
                        continue  # (a run started meanwhile is listed again under its new status)
                    if summary.agent not in self.agents:
                        missing.add(summary.agent)
                        continue
                    lost[summary.run_id] = None
            # The idle runs due now, taken up in the same pass (an agent this engine lacks leaves
            # its run in the store: _take_up reads its state first).
            due, more = await self.idle.take_due()
            due = [run_id for run_id in due if run_id not in lost]
            if len(lost) + len(due) >= RECOVERY_GC_RUNS:
                self._pause_collector(RECOVERY_GC_PAUSE)
            await self._take_up(list(lost), woken=False, also_woken=due)
            if more is not None:
                self.idle.defer(self.clock())  # more due than one batch: the scanner takes the rest
        finally:
            self.admission.unhold()
        if lost or missing:
            log.info("resuming unfinished runs", count=len(lost), agents_missing=sorted(missing))
        return list(lost)

    def _pause_collector(self, seconds: float) -> None:
        """Pause the cyclic garbage collector for the burst of runs being taken up (their objects
        live on while they wait: collections during the burst walk them for nothing), `seconds`
        at most: the launched runs' first turns happen after `recover` returns."""
        pause = CollectorPause()
        pause.start()

        async def end_after() -> None:
            try:
                await anyio.sleep(seconds)
            finally:
                pause.end()  # (also when the engine stops first)

        self._task_group().start_soon(end_after, name="collector pause")

    async def _take_up(self, run_ids: list[str], *, woken: bool, also_woken: Sequence[str] = ()) -> None:
        """Launch these unfinished runs (`woken`: idle ones come due, not lost ones; `also_woken`:
        idle ones taken up beside lost ones), TAKE_UP_BATCH at a time. A batch's short logs are
        read before any of it is launched, in one pass; a run whose log is longer than a page (or
        a store that cannot read heads) reads its own state in its own task. A thousand runs
        resume at once, their run.resumed appends batched by the store."""
        taken = [(run_id, woken) for run_id in run_ids] + [(run_id, True) for run_id in also_woken]
        heads = self.store if isinstance(self.store, HeadReader) else None
        for start in range(0, len(taken), TAKE_UP_BATCH):
            batch = taken[start : start + TAKE_UP_BATCH]
            logs = await heads.read_heads([run_id for run_id, _ in batch], limit=RECOVERY_HEAD) if heads is not None else {}
            for run_id, run_woken in batch:
                log_head = logs.get(run_id, [])
                if 0 < len(log_head) < RECOVERY_HEAD and run_id not in self.driver.active:
                    state = fold_log(log_head)
                    if state is not None and (state.terminal or state.agent not in self.agents or self._defer(state)):
                        continue
                    if state is not None:
                        self._launch(state, first_page=log_head, woken=run_woken)
                        continue
                self.admission.hold()  # admission waits for it: it may hold a slot
                self._task_group().start_soon(
                    functools.partial(self._resume_held, run_id, woken=run_woken), name=f"resume {run_id}"
                )

    async def _resume_held(self, run_id: str, *, woken: bool) -> None:
        """`_resume` for a take-up: admission holds until it is done (the run may hold a slot)."""
        try:
            await self._resume(run_id, woken=woken)
        finally:
            self.admission.unhold()

    async def _unfinished_runs(self) -> AsyncIterator[tuple[RunSummary, ...]]:
        """The unfinished runs recovery takes up, a page at a time: with a timer index only those
        at work (the idle ones wait in the store, runengine.idle), else every unfinished run."""
        index = self.idle.index
        if index is not None:
            before: str | None = None
            while True:
                page = await index.list_busy(limit=RECOVERY_PAGE, before=before)
                yield page.runs
                if (before := page.next_before) is None:
                    return
        for status in ACTIVE_STATUSES:
            before = None
            while True:
                page = await self.store.list_runs(status=status, limit=RECOVERY_PAGE, before=before)
                yield page.runs
                if (before := page.next_before) is None:
                    break

    def waiting_for_agent(self, state: RunState) -> bool | None:
        """Whether an unfinished run waits for an engine that has its agent: True when this
        engine does not have it (the run stays as it is, neither started nor failed, until an
        engine with the agent opens the store). None on a shared store, where another worker
        may have the agent and this engine cannot tell."""
        if state.terminal:
            return False
        if self.store.shared:
            return None
        return state.agent not in self.agents

    async def _resume(self, run_id: str, *, woken: bool = False) -> None:
        """Take up an unfinished run this engine is not executing (`woken`: an idle one, by its
        timer or its input: not a lost one), unless its agent is not this engine's."""
        state, first_page = await self._load(run_id)
        if state.terminal or state.agent not in self.agents:
            return
        if run_id not in self.driver.active and not self._defer(state):
            self._launch(state, first_page=first_page, woken=woken)

    async def _wake(self, run_id: str) -> None:
        await self._resume(run_id, woken=True)

    async def _wake_all(self, run_ids: list[str]) -> None:
        """Take up a page of idle runs come due (runengine.idle)."""
        await self._take_up(run_ids, woken=True)

    def _can_park(self) -> bool:
        """Whether a run idle in memory may be parked in the store: the store keeps a timer index
        (this engine's scanner or input takes it up again) or a work queue (a worker claims it)."""
        return self.queue is not None or self.idle.index is not None

    async def _parked(self, run_id: str, until: datetime) -> None:
        """A run was parked (runengine.driver): the scanner wakes it for its deadline; an input
        that came while it was being parked wakes it now. (On a work queue its worker hands it back.)"""
        if self.queue is not None or self._tg is None:
            return
        summary = await self.store.get_run(run_id)
        if summary is None or summary.status.terminal:
            return
        if summary.wake_at is None or self.idle.due(summary.wake_at):
            await self._wake(run_id)
        elif summary.wake_at < NO_DEADLINE:
            self.idle.defer(summary.wake_at)

    def _defer(self, state: RunState) -> bool:
        """Leave a pending run whose start_at is not near in the store (runengine.idle)."""
        if state.status is Status.PENDING and state.start_at is not None and not self.idle.due(state.start_at):
            self.idle.defer(state.start_at)
            return True
        return False

    # -- flow control (runengine.admission) ----------------------------------------

    def _launch(
        self, state: RunState, *, after: tuple[str, ...] = (), fold: Fold | None = None,
        first_page: Sequence[Event] = (), woken: bool = False,
    ) -> None:
        """Execute `state`'s run, or put it in line when its agent's limits hold it back. A woken
        run takes a place among the woken runs in flight (runengine.idle) until its task ends or
        its agent waits again for what is not due within the horizon."""
        active = self.admission.launch(state, after=after, fold=fold, first_page=first_page, woken=woken)
        if active is not None and active.woken:  # released through driver.on_woken_idle
            self.idle.hold(active.run_id)

    async def waiting_for(self, state: RunState) -> str | None:
        """Why a pending run has not started: "concurrency" (its agent's or key's slots are
        taken, or runs ahead of it wait too), "rate" (the next start's token), "schedule" (its
        start_at, or a debounce); None when nothing holds it back (or it is not pending)."""
        if state.status is not Status.PENDING:
            return None
        if state.start_at is not None and state.start_at > self.clock():
            return WAITING_SCHEDULE
        if self.queue is not None:
            spec = self.agents.find(state.agent)
            if spec is None or spec.flow is None or not spec.flow.limited:
                return None
            return await self.queue.waiting_for(state.run_id, spec.flow)
        return self.admission.gate.waiting_for(state.run_id)

    # -- execute ----------------------------------------------------------------

    @overload
    async def execute(
        self,
        agent: str,
        input: Any = ...,
        *,
        mode: Literal["sync", "async"] = ...,
        session_id: str | None = ...,
        metadata: dict[str, Any] | None = ...,
        timeout: float | None = ...,
        owner: str | None = ...,
        idempotency_key: str | None = ...,
        idempotency_scope: str = ...,
        request_fingerprint: str | None = ...,
        session_policy: SessionPolicy | None = ...,
        run_id: str | None = ...,
        fresh_run_id: bool = ...,
        start_at: datetime | None = ...,
        priority: int = ...,
    ) -> RunState: ...

    @overload
    async def execute(
        self,
        agent: str,
        input: Any = ...,
        *,
        mode: Literal["stream"],
        session_id: str | None = ...,
        metadata: dict[str, Any] | None = ...,
        timeout: float | None = ...,
        owner: str | None = ...,
        idempotency_key: str | None = ...,
        idempotency_scope: str = ...,
        request_fingerprint: str | None = ...,
        session_policy: SessionPolicy | None = ...,
        run_id: str | None = ...,
        fresh_run_id: bool = ...,
        start_at: datetime | None = ...,
        priority: int = ...,
    ) -> RunStream: ...

    async def execute(
        self,
        agent: str,
        input: Any = None,
        *,
        mode: str = "sync",
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        timeout: float | None = None,
        owner: str | None = None,
        idempotency_key: str | None = None,
        idempotency_scope: str = "engine",
        request_fingerprint: str | None = None,
        session_policy: SessionPolicy | None = None,
        run_id: str | None = None,
        fresh_run_id: bool = False,
        start_at: datetime | None = None,
        priority: int = 0,
    ) -> RunState | RunStream:
        """Start a run of `agent`, owned by `owner` (None: no principal, auth off).

        mode="sync": the state once the run ends or waits for input.
        mode="async": the state right after creation (status pending) — at once.
        mode="stream": a RunStream: the run's id, and (iterating it) its events from seq 1 to the last.
        Each mode's answer carries the run id (`.run_id`), a repeated idempotency key's included.
        `fresh_run_id`: `run_id` was made for this call (a new uuid, as the engine makes one), so no
        run can have it: a sync run may then commit its run.created with its first batch, as one
        with an engine-made id does (a sync run's answer is its only acknowledgement).
        start_at: a delayed run stays pending until then (across restarts).
        priority: among its agent's runs waiting for a slot (runengine.flow), higher starts first.

        `session_id` names a session of `owner`'s, or a new one, which this run begins and
        `owner` then owns; another principal's session is SessionNotFound (runengine.ownership).
        `idempotency_key`: kept per (owner, `idempotency_scope`) once the run is created; a
        repeat gets the first run, a reuse with another request (`request_fingerprint`,
        by default one of agent, input, session, metadata, timeout, policy and start_at) raises
        IdempotencyKeyReused (runengine.idempotency).
        """
        self._task_group()
        if mode not in MODES:
            raise InvalidRequest(f"unknown mode {mode!r}; use one of {', '.join(MODES)}", mode=mode)
        spec = self.agents.get(agent)
        if timeout is not None and (not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0):
            raise InvalidRequest("timeout must be a positive number of seconds", timeout=timeout)
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidRequest("metadata must be an object")
        if start_at is not None and (not isinstance(start_at, datetime) or start_at.tzinfo is None):
            raise InvalidRequest("start_at must be a timezone-aware datetime")
        check_priority(priority)
        # Before anything is reserved or written: what cannot be stored as JSON (NaN ...) is refused.
        to_json(input, "input")
        to_json(metadata, "metadata")
        flow = spec.flow
        concurrency_key = flow.key_of(input, dict(metadata or {})) if flow is not None else None
        debounced = None
        if flow is not None and flow.debounce is not None:
            if start_at is not None:
                raise InvalidRequest("a debounced agent's run starts when its burst ends: start_at is not taken")
            debounced = (spec.name, flow.debounce_key_of(input, dict(metadata or {})))
        policy = session_policy or self.session_policy
        if policy not in SESSION_POLICIES:
            raise InvalidRequest(f"session_policy must be one of {SESSION_POLICIES}")
        if run_id is not None:
            check_run_id(run_id)
        new_run_id = run_id or uuid.uuid4().hex

        key_record: IdempotencyRecord | None = None
        if idempotency_key is not None:
            if request_fingerprint is None:
                request_fingerprint = fingerprint(
                    [spec.name, input, session_id, metadata or {}, timeout, session_policy, start_at, priority]
                )
            key_record = IdempotencyRecord(
                principal=idempotency_principal(owner),
                scope=idempotency_scope,
                key=idempotency_key,
                fingerprint=request_fingerprint,
                run_id=new_run_id,
                created_at=self.clock(),
            )
            bound = await bind_key(self.store, self._keys(), key_record, ttl=self.retention.idempotency_ttl, now=self.clock)
            if not bound.create:
                return await self._respond(bound.run_id, mode, after_seq=0)
            # The run an earlier request with this key bound it to, if it has not created it yet.
            new_run_id = bound.run_id
            key_record = attrs.evolve(key_record, run_id=new_run_id)
        try:
            async with self.admission.debounce_lock(debounced):
                if debounced is not None and flow is not None and flow.debounce is not None:
                    start_at = self.clock() + timedelta(seconds=flow.debounce)
                state = await self._create_run(
                    new_run_id, spec.name, input, mode=mode, session_id=session_id, metadata=metadata,
                    timeout=timeout, owner=owner, policy=policy, start_at=start_at, keyed=key_record is not None,
                    priority=priority, concurrency_key=concurrency_key,
                    commit_with_start=(
                        mode == "sync" and (run_id is None or fresh_run_id) and key_record is None and session_id is None
                        and start_at is None and (flow is None or not flow.limited)
                    ),
                )
                if debounced is not None:
                    await self.admission.supersede(debounced, new_run_id)
        except ConcurrencyConflict:
            if key_record is None:
                raise
            # The other request holding this key (taken over from it, or by it) created the run.
            return await self._respond(new_run_id, mode, after_seq=0)
        except BaseException:
            if key_record is not None:  # refused before the run existed: the key stays unused
                with anyio.CancelScope(shield=True):
                    await self._release_key(key_record)
            raise
        if mode == "sync" and (active := self.driver.active.get(new_run_id)) is not None:
            return await self._answer_sync(active)
        return await self._respond(new_run_id, mode, after_seq=0, created=state)

    async def _answer_sync(self, active: ActiveRun) -> RunState:
        """A sync run launched by this request: once its run.created is durable, the state it
        ends (or waits for input) in; straight from its writer when that holds only committed events."""
        writer = active.writer
        await writer.saved.wait()
        if writer.committed_seq == 0:  # its task ended with nothing committed (a store failure, a stop)
            raise StoreError(f"run {active.run_id} could not be recorded")
        return await self._wait(active.run_id, after_seq=0, writer=writer)

    async def _release_key(self, record: IdempotencyRecord) -> None:
        try:
            if await self.store.get_run(record.run_id) is None:
                await self._keys().release_idempotency_key(record)
        except Exception:  # the key frees itself once PENDING_FOR has passed with no run
            log.exception("could not release an idempotency key", key=record.key, scope=record.scope)

    async def _create_run(
        self,
        new_run_id: str,
        agent: str,
        input: Any,
        *,
        mode: str,
        session_id: str | None,
        metadata: dict[str, Any] | None,
        timeout: float | None,
        owner: str | None,
        policy: str,
        start_at: datetime | None,
        keyed: bool = False,
        parent_run_id: str | None = None,
        priority: int = 0,
        concurrency_key: str | None = None,
        commit_with_start: bool = False,
    ) -> RunState:
        """Check the session (claiming a new one for `owner`), apply its policy, record run.created.
        `keyed`: the run id is an idempotency key's, which another request may have created first
        (ConcurrencyConflict, and the session's runs are left alone).
        `commit_with_start`: a sync run whose id nobody else knows, launched at once: its
        run.created is not committed alone but in the run's first batch (within the flush
        window, or with its end: `_answer_sync` waits for it)."""
        async with self._session_lock(owner, session_id):
            if keyed and await self.store.get_run(new_run_id) is not None:
                raise ConcurrencyConflict(new_run_id, 0, 1)
            after: tuple[str, ...] = ()
            if session_id is not None:
                sessions = self._sessions()
                session = await stored_session(sessions, owner, session_id)
                if session is None:  # begun by this run: `owner`'s, unless another request won the race
                    session = await sessions.add_session(
                        SessionRecord(session_id=session_key(owner, session_id), owner=owner, created_at=self.clock())
                    )
                if not can_access(session.owner, owner):
                    raise SessionNotFound(session_id)
                if session.ended:
                    raise SessionEnded(session_id)
                if session.expires_at is not None and session.expires_at <= self.clock():
                    raise SessionEnded(session_id, expired=True)
                after = await self._apply_session_policy(session_id, policy, owner, creating=new_run_id)
            carrier = observe.current.trace_context()  # whoever executes the run continues this trace
            if carrier and observe.TRACE_METADATA_KEY not in (metadata or {}):
                metadata = {**(metadata or {}), observe.TRACE_METADATA_KEY: carrier}
            created = RunCreated(
                run_id=new_run_id,
                seq=1,
                at=self.clock(),
                agent=agent,
                input=input,
                session_id=session_id,
                metadata=dict(metadata or {}),
                mode=mode,
                owner=owner,
                timeout=float(timeout) if timeout is not None else None,
                start_at=start_at,
                parent_run_id=parent_run_id,
                priority=priority,
                concurrency_key=concurrency_key,
            )
            fold = Fold()
            fold.apply(created)
            state = fold.state
            assert state is not None
            if commit_with_start and self.queue is None and not after and not self._defer(state):
                self.driver.launch(self._task_group(), state, fold=fold, unsaved=(created,))
                return state
            started = time.perf_counter()
            if self.queue is not None:  # a worker (in any process) claims and executes it
                await self.queue.enqueue(new_run_id, [created], after=after)
            else:
                await self.store.append(new_run_id, [created], expected_seq=0)
            observe.appended([created], state, time.perf_counter() - started)
            if self.queue is None and not self._defer(state):
                self._launch(state, after=after, fold=fold)
        return state

    async def _respond(
        self, run_id: str, mode: str, *, after_seq: int, created: RunState | None = None
    ) -> RunState | RunStream:
        if mode == "async":
            return created if created is not None else await self.status(run_id)
        if mode == "stream":
            return RunStream(run_id, self.events(run_id, after_seq=after_seq))
        return await self.wait(run_id, after_seq=after_seq)

    def _session_lock(self, owner: str | None, session_id: str | None) -> contextlib.AbstractAsyncContextManager[Any]:
        if session_id is None:
            return contextlib.nullcontext()
        return self._session_locks(session_key(owner, session_id))

    async def _apply_session_policy(
        self, session_id: str, policy: str, owner: str | None, *, creating: str
    ) -> tuple[str, ...]:
        if policy == "allow":
            return ()
        active: list[str] = []
        for status in ACTIVE_STATUSES:  # only the owner's runs (a session older than ownership may hold others')
            page = await self.store.list_runs(session_id=session_id, status=status, owner=owner, limit=MAX_PAGE // 10)
            # `creating` itself, made meanwhile by another request with the same idempotency key, is not interrupted.
            active.extend(r.run_id for r in page.runs if r.run_id != creating)
        if not active:
            return ()
        if policy == "reject":
            raise SessionBusy(session_id, active)
        if policy == "interrupt":
            for other in active:
                await self.cancel(other, reason="interrupted by a newer run in the session")
            return ()
        return tuple(active)  # enqueue: the new run starts after these end

    # -- queries ------------------------------------------------------------------

    async def status(self, run_id: str) -> RunState:
        """The run's committed state: latest snapshot plus the events after it."""
        return (await self._load(run_id))[0]

    async def _load(self, run_id: str) -> tuple[RunState, list[Event]]:
        """The run's committed state, and the first page of its log when the state was folded
        from seq 1 (no snapshot): a resume replays that page instead of reading it again."""
        snapshot = await self.store.load_snapshot(run_id)
        fold = Fold(snapshot)
        first_page: list[Event] = []
        while True:
            page = await self.store.read(run_id, after_seq=fold.last_seq, limit=MAX_PAGE)
            if snapshot is None and fold.last_seq == 0:
                first_page = page
            fold.apply_all(page)
            if len(page) < MAX_PAGE:
                break
        state = fold.state
        if state is None:
            raise RunNotFound(run_id)
        return state, first_page

    async def events(
        self, run_id: str, *, after_seq: int = 0, follow: bool = True, page_size: int = 500
    ) -> AsyncIterator[Event]:
        """The run's events after `after_seq`: replay, then (with follow) live until the terminal one.

        No gap and no duplicate whatever the timing: each page is read after the
        previous one's last seq, and only committed events are ever returned.
        """
        if after_seq < 0:
            raise InvalidRequest("after_seq must be >= 0")
        cursor = after_seq
        while True:
            batch = await self.store.read(run_id, after_seq=cursor, limit=page_size)
            for event in batch:
                yield event
                cursor = event.seq
                if event.terminal:
                    return
            if len(batch) == page_size:
                continue
            if not batch:  # nothing new: is there a run at all, and has it already ended?
                summary = await self.store.get_run(run_id)
                if summary is None:
                    raise RunNotFound(run_id)
                if summary.status.terminal and summary.last_seq <= cursor:
                    return
            if not follow:
                return
            await self.store.wait(run_id, after_seq=cursor, timeout=30.0)

    def follow(
        self, run_id: str, after_seq: int = 0, *, idle: float = 30.0, page_size: int = DEFAULT_PAGE
    ) -> AsyncGenerator[list[Event], None]:
        """The run's committed events after `after_seq`, a batch per store read, live until the
        terminal one; [] after `idle` seconds without news (a stream's keep-alive tick). Ends at once
        for an unknown run. What every profile's event stream reads; close it (aclose) when done."""
        return follow_batches(self.store, run_id, after_seq=after_seq, idle=idle, page_size=page_size)

    async def run_summary(self, run_id: str, *, owner: str | None = None) -> RunSummary:
        """The run's listing row, if `owner` may reach it (runengine.ownership); RunNotFound otherwise."""
        return await run_of(self.store, run_id, owner)

    async def wait(self, run_id: str, *, after_seq: int = 0) -> RunState:
        """Wait until the run ends, or waits for input in an event after `after_seq`."""
        return await self._wait(run_id, after_seq=after_seq, writer=None)

    async def _wait(self, run_id: str, *, after_seq: int, writer: RunWriter | None) -> RunState:
        """`wait`; with the `writer` of the run executing here, its state is the answer whenever it
        folds exactly the committed log and the wait is over there: no read of the log, no fold of
        it again (a long sync run re-read every event it had written)."""

        def reached(status: Status, last_seq: int) -> bool:
            return status.terminal or (status is Status.WAITING_FOR_INPUT and last_seq > after_seq)

        def held() -> RunState | None:
            if writer is not None:
                state = writer.state
                if writer.committed_seq == state.last_seq and reached(state.status, state.last_seq):
                    return state
            return None

        # Each wake-up looks at the run's listing row (its status, cached by the stores that can);
        # the state is loaded once, when the row says the wait is over, not folded event by event.
        # A store that knows each commit's status (SettledWait) wakes us only when the run settles.
        settled = port_of(self.store, SettledWait)
        seen = after_seq
        while True:
            if (state := held()) is not None:
                return state
            summary = await self.store.get_run(run_id)
            if summary is None:
                raise RunNotFound(run_id)
            last_seq = summary.last_seq
            if reached(summary.status, last_seq):
                state = held() or await self.status(run_id)
                if reached(state.status, state.last_seq):
                    return state
                last_seq = state.last_seq  # it moved on meanwhile
            seen = max(seen, last_seq)
            if settled is not None:
                await settled.wait_settled(run_id, after_seq=seen, timeout=30.0)
            else:
                await self.store.wait(run_id, after_seq=seen, timeout=30.0)

    async def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: Status | str | None = None,
        owner: str | None = None,
        limit: int = 50,
        before: str | None = None,
        before_run: str | None = None,
    ) -> RunPage:
        """Runs newest first, paged by `before` (a page's `next_before`) or by `before_run` (a run
        id: the runs older than it, for clients that page by id)."""
        try:
            wanted = Status(status) if status is not None else None
        except ValueError:
            raise InvalidRequest(f"unknown status {status!r}", status=status) from None
        return await self.store.list_runs(
            session_id=session_id, status=wanted, owner=owner, limit=limit, before=before, before_run=before_run
        )

    async def session_history(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        limit: int = DEFAULT_HISTORY_PAGE,
        before: HistoryPosition | None = None,
    ) -> HistoryPage:
        """A page of the messages of a session's runs (each run's input, then its replies): the
        latest `limit` before `before` (a previous page's `next`; None: the latest), oldest first.

        With `owner` (auth on), the session must be that owner's (SessionNotFound otherwise) and only
        its runs count; a `before` naming no message of it is HistoryCursorInvalid (InvalidRequest)."""
        await session_of(self._sessions(), session_id, owner)
        return await read_session_history(self.store, session_id, owner=owner, limit=limit, before=before)

    async def session_message(
        self, session_id: str, position: HistoryPosition, *, owner: str | None = None
    ) -> HistoryMessage:
        """The one message of the session at `position` (a page's `positions`), reading that run only."""
        await session_of(self._sessions(), session_id, owner)
        return await read_history_message(self.store, session_id, position, owner=owner)

    # -- commands -------------------------------------------------------------------

    async def cancel(self, run_id: str, *, reason: str | None = None) -> RunState:
        """Cancel a run (idempotent: an ended run is returned as it is), and its unfinished children."""
        active = self.driver.active.get(run_id)
        if active is not None:
            active.cancel(reason)
            with anyio.CancelScope(shield=True):
                await active.done.wait()
        else:
            await self._append_at_head(
                run_id,
                lambda seq: RunCancelled(run_id=run_id, seq=seq, at=self.clock(), reason=reason or "cancelled"),
            )
        self.admission.gate.discard(run_id)  # if it waited in line for a slot
        state = await self.status(run_id)
        if state.status is Status.CANCELLED:
            await cancel_children(state, lambda child: self.cancel(child, reason="parent cancelled"), self.store.get_run)
            self._ended(state)
        return state

    async def resume(self, run_id: str, input: Any) -> RunState:
        """Give input to a run waiting for it; returns the state with the input recorded."""
        to_json(input, "input")
        while True:
            state = await self.status(run_id)
            if state.status is not Status.WAITING_FOR_INPUT:
                raise InvalidRunState(run_id, state.status.value, "input is only accepted while waiting_for_input")
            event = RunInput(run_id=run_id, seq=state.last_seq + 1, at=self.clock(), content=input)
            fold = Fold(state)
            fold.apply(event)
            started = time.perf_counter()
            try:
                await self.store.append(run_id, [event], expected_seq=state.last_seq)
            except ConcurrencyConflict:
                continue
            assert fold.state is not None
            observe.appended([event], lambda: fold.state, time.perf_counter() - started)
            if self.queue is None and self._tg is not None and run_id not in self.driver.active:
                await self._wake(run_id)  # idle in the store, not in memory: its input wakes it
            return await self.status(run_id)

    async def _append_at_head(self, run_id: str, build: Callable[[int], Event]) -> RunState | None:
        """Append one event after whatever the log holds now, unless the run has ended (then None)."""
        return await append_at_head(self.store, run_id, build, self.status)

    async def delete_run(self, run_id: str, *, owner: str | None = None) -> None:
        """Delete an ended run: its events, snapshot and idempotency records (InvalidRunState while
        it is active; with `owner`, another owner's run is RunNotFound)."""
        await delete_ended_run(self.store, run_id, owner=owner)

    # -- child runs and signals (runengine.children, runengine.signals) ------------------

    async def check_child(
        self, parent: RunState, agent: str, input: Any, *, session_id: str | None, metadata: dict[str, Any] | None
    ) -> None:
        """What `ctx.spawn` checks before it records anything (runengine.children.ChildHost): the
        agent, the input and metadata, and a session the parent's owner may start runs in."""
        self.agents.get(agent)
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidRequest("metadata must be an object")
        to_json(input, "input")
        to_json(metadata, "metadata")
        if session_id is not None:
            session = await stored_session(self._sessions(), parent.owner, session_id)
            if session is not None and not can_access(session.owner, parent.owner):
                raise SessionNotFound(session_id)
            if session is not None and (session.ended or (session.expires_at is not None and session.expires_at <= self.clock())):
                raise SessionEnded(session_id, expired=not session.ended)

    async def create_child(
        self, parent: RunState, child_run_id: str, agent: str, input: Any, *,
        session_id: str | None, metadata: dict[str, Any] | None,
    ) -> None:
        """Create `parent`'s child run `child_run_id`, owned by the parent's owner, unless it exists."""
        if await self.store.get_run(child_run_id) is not None:
            return
        try:
            await self._create_run(
                child_run_id, agent, input, mode="async", session_id=session_id, metadata=metadata, timeout=None,
                owner=parent.owner, policy="allow", start_at=None, keyed=True, parent_run_id=parent.run_id,
            )
        except ConcurrencyConflict:  # created meanwhile (a replay racing the first attempt)
            pass

    async def children(self, run_id: str, *, owner: str | None = None) -> list[RunSummary]:
        """The listing rows of the child runs `run_id` spawned, in spawn order (RunNotFound for
        another owner's run, as everywhere)."""
        await run_of(self.store, run_id, owner)
        state = await self.status(run_id)
        rows = [await self.store.get_run(child.run_id) for child in state.children]
        return [row for row in rows if row is not None]

    async def signal(self, run_id: str, name: str, payload: Any = None, *, owner: str | None = None) -> SignalRecord:
        """Send signal `name` with `payload` to an unfinished run: recorded in its log at once
        (`signal.received`), whether or not a process executes it now; its agent takes it with
        `ctx.receive(name)`. RunNotFound (another owner's run too), InvalidRunState once it ended,
        InvalidRequest for a payload over the run's event size limit, InvalidRunState when its log is full."""
        check_signal_name(name)
        await run_of(self.store, run_id, owner)
        signal_id = f"sig_{uuid.uuid4().hex}"

        def build(seq: int) -> SignalReceived:
            event = SignalReceived(run_id=run_id, seq=seq, at=self.clock(), signal_id=signal_id, name=name, payload=payload)
            size = len(data_to_json(event).encode())  # InvalidRequest for what is not strict JSON
            if size > self.limits.max_event_bytes:
                raise InvalidRequest(
                    f"the signal is {size} bytes of JSON, over the run's limit of {self.limits.max_event_bytes}",
                    size=size, limit=self.limits.max_event_bytes,
                )
            if seq >= self.limits.max_events_per_run:  # the last seq is kept for the run's end
                raise InvalidRunState(run_id, "full", f"its log holds its limit of {self.limits.max_events_per_run} events")
            return event

        after = await self._append_at_head(run_id, build)
        if after is None:
            state = await self.status(run_id)
            raise InvalidRunState(run_id, state.status.value, "signals are only accepted until the run ends")
        self._wake_soon(run_id)
        return next(s for s in reversed(after.signals) if s.signal_id == signal_id)

    def _ended(self, state: RunState) -> None:
        """A run ended: its parent, if it waits parked for it, is resumed."""
        if state.parent_run_id is not None:
            self._wake_soon(state.parent_run_id)

    def _wake_soon(self, run_id: str) -> None:
        if self.driver.parking and self._tg is not None and not self._closing and run_id not in self._waking:
            self._waking.add(run_id)  # one waker per run is enough: it looks once the run is idle
            self._tg.start_soon(self._wake_parked, run_id, name=f"wake {run_id}")

    async def _wake_parked(self, run_id: str) -> None:
        """Resume `run_id` if it is parked (suspended while it waits for a child or a signal). One
        this engine is executing is looked at again once it stops: it may be parking right now."""
        try:
            active = self.driver.active.get(run_id)
            if active is not None:
                await active.done.wait()
            self._waking.discard(run_id)  # from here on, news wakes it again
            state, first_page = await self._load(run_id)
            parked = state.suspended and not state.terminal and state.agent in self.agents
            if parked and run_id not in self.driver.active and self._tg is not None and not self._closing:
                self._launch(state, first_page=first_page)
        except RunNotFound:
            pass
        except Exception:  # a store failure: the run stays parked until the next news or restart
            log.exception("could not resume a parked run", run_id=run_id)
        finally:
            self._waking.discard(run_id)
    # -- fork and schedules (runengine.fork, runengine.schedules) ------------------------------

    async def fork(self, run_id: str, at_seq: int, *, input: Any = None, owner: str | None = None) -> RunState:
        """A new run whose log begins with `run_id`'s events up to `at_seq` and `run.forked`; its
        agent replays them and goes on live (runengine.fork). `input`: another result for the
        event at `at_seq` (a tool.result, a run.input, or run.created at seq 1). With `owner`,
        another owner's run is RunNotFound. Returns the fork's state as created."""
        self._task_group()
        await run_of(self.store, run_id, owner)
        events, state = fork_events(
            await read_prefix(self.store, run_id, at_seq), uuid.uuid4().hex, at=self.clock(), input=input
        )
        self.agents.get(state.agent)
        if self.queue is not None:  # a worker (in any process) claims and resumes it
            await self.queue.enqueue(state.run_id, events)
        else:
            await self.store.append(state.run_id, events, expected_seq=0)
            if not self._defer(state):
                self._launch(state, first_page=events)
        return state

    @property
    def schedules(self) -> Schedules:
        """The store's schedules: get, list, pause, resume, delete (InvalidRequest: it keeps none)."""
        if self._schedules is None:
            store = required(self.schedule_store, self.store, "schedules")
            self._schedules = Schedules(store, self.clock, self._start_scheduled_run)
        return self._schedules

    async def schedule(
        self, schedule_id: str, *, cron: str, agent: str, input: Any = None, timezone: str = "UTC",
        owner: str | None = None, session_id: str | None = None, session_policy: SessionPolicy | None = None,
        metadata: dict[str, Any] | None = None, missed: str = "skip",
    ) -> Schedule:
        """Start a run of `agent` at each slot of `cron` in `timezone` (runengine.schedules): one run
        per slot across every process; `missed` ("skip", "catch_up_one") after downtime; with a
        `session_id`, overlapping runs follow `session_policy`. ScheduleExists for a taken id."""
        self._task_group()
        self.agents.get(agent)
        if session_policy is not None and session_policy not in SESSION_POLICIES:
            raise InvalidRequest(f"session_policy must be one of {SESSION_POLICIES}")
        return await self.schedules.add(Schedule(
            schedule_id=schedule_id, cron=cron, agent=agent, input=input, timezone=timezone, owner=owner,
            session_id=session_id, session_policy=session_policy, metadata=dict(metadata or {}), missed=missed,
            created_at=self.clock(),
        ))

    async def _start_scheduled_run(self, schedule: Schedule, slot: datetime, run_id: str) -> bool:
        if schedule.agent not in self.agents:
            return False  # left to an engine that has the agent
        if await self.store.get_run(run_id) is not None:
            return True  # started already (by another process, or before a restart)
        try:
            await self.execute(
                schedule.agent, schedule.input, mode="async", run_id=run_id, owner=schedule.owner,
                session_id=schedule.session_id, session_policy=schedule.session_policy,
                metadata={**schedule.metadata, SCHEDULE_KEY: schedule.schedule_id, SLOT_KEY: format_time(slot)},
            )
        except ConcurrencyConflict:
            pass  # another process created this slot's run first
        except (SessionBusy, SessionEnded, SessionNotFound) as refused:  # the session's policy: this slot is skipped
            log.info("scheduled run not started", schedule_id=schedule.schedule_id, reason=refused.message)
        return True

    # -- sessions ---------------------------------------------------------------------

    async def create_session(
        self,
        *,
        session_id: str | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
        ttl: float | None = None,
        data: dict[str, Any] | None = None,
    ) -> SessionRecord:
        """Create a session owned by `owner`. SessionExists when `owner` already has a session with
        that id (a session is never replaced); another principal's session of the same id is
        another session (runengine.ownership.session_key)."""
        to_json(metadata, "metadata")
        to_json(data, "data")
        now = self.clock()
        session = SessionRecord(
            session_id=session_id or f"sess_{uuid.uuid4().hex}",
            owner=owner,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl) if ttl else None,
            metadata=dict(metadata or {}),
            data=dict(data or {}),
        )
        stored = await self._sessions().add_session(as_stored(session))
        if as_seen(stored, session.session_id) != session:
            raise SessionExists(session.session_id)
        return session

    async def get_session(self, session_id: str, *, owner: str | None = None) -> SessionRecord:
        """The session, if `owner` may reach it (runengine.ownership); SessionNotFound otherwise."""
        return await session_of(self._sessions(), session_id, owner)

    async def save_session(self, record: SessionRecord) -> None:
        """Store a session record its caller read (get_session) and changed: metadata, data, expiry.
        The caller serialises its own read-modify-write (a runengine.keylock.KeyLocks per session)."""
        await self._sessions().put_session(as_stored(record))

    async def count_session_runs(self, session_id: str, *, owner: str | None = None) -> SessionRuns:
        """The session's runs (only `owner`'s when given) counted by status, at the cost of one read."""
        return await self._sessions().count_session_runs(session_id, owner=owner)

    def _sessions(self) -> SessionStore:
        return required(self.session_store, self.store, "sessions")

    def _keys(self) -> IdempotencyStore:
        return required(self.idempotency_store, self.store, "idempotency records")

    async def end_session(
        self, session_id: str, *, owner: str | None = None, cancel_active: bool = True
    ) -> SessionRecord:
        """Mark a session ended: later runs in it are refused; its owner's active runs are cancelled.
        Another principal's session is SessionNotFound, and stays as it is."""
        async with self._session_lock(owner, session_id):  # no run joins between the check and the end
            session = await session_of(self._sessions(), session_id, owner)
            if session.ended_at is None:
                session = attrs.evolve(session, ended_at=self.clock())
                await self._sessions().put_session(as_stored(session))
        if cancel_active:
            for status in ACTIVE_STATUSES:
                page = await self.store.list_runs(session_id=session_id, status=status, owner=owner, limit=1000)
                for run in page.runs:
                    await self.cancel(run.run_id, reason="session ended")
        return session


__all__ = [
    "RunEngine", "RunStream", "AgentFailed", "HistoryMessage", "HistoryPage", "HistoryPosition", "SessionBusy",
    "SessionEnded",
]
