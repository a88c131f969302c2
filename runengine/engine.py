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
import math
import uuid
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, overload

import anyio
import attrs
import structlog

from .agents import AgentRegistry, AgentSpec
from .context import AgentFn, RunContext
from .errors import (
    ConcurrencyConflict,
    EngineNotStarted,
    InvalidRequest,
    InvalidRunState,
    RunNotFound,
    SessionNotFound,
)
from .events import (
    ErrorInfo,
    Event,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunInput,
    RunRequeued,
    RunStarted,
)
from .ports import MAX_PAGE, EventStore, LeaseLost, RunPage, RunSummary, SessionRecord, WorkQueue
from .reducer import Fold
from .retention import DEFAULT_SWEEP_INTERVAL, RetentionSweeper, delete_ended_run, retention_seconds, start_retention
from .state import RunState
from .status import Status
from .stores import open_store
from .worker import Worker, WorkerOptions, worker_options
from .writer import RunEndedElsewhere, RunWriter

log = structlog.get_logger("runengine")

Mode = Literal["sync", "async", "stream"]
MODES: tuple[str, ...] = ("sync", "async", "stream")
SessionPolicy = Literal["allow", "reject", "enqueue", "interrupt"]
SESSION_POLICIES: tuple[str, ...] = ("allow", "reject", "enqueue", "interrupt")
ACTIVE_STATUSES = (Status.PENDING, Status.RUNNING, Status.WAITING_FOR_INPUT)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


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


class AgentFailed(Exception):
    """Raise from an agent to fail its run with a chosen error code (instead of `agent_error`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.define
class _ActiveRun:
    """A run this engine is executing: its writer, its cancel scope and when it is done."""

    run_id: str
    writer: RunWriter
    scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    done: anyio.Event = attrs.field(factory=anyio.Event)
    cancel_reason: str | None = None
    after: tuple[str, ...] = ()  # runs of the same session to wait for (policy "enqueue")
    # Set by a queue worker: stop without writing (the lease is gone), or hand the run back.
    abandoned: bool = False
    hand_back: bool = False

    def cancel(self, reason: str | None) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason or "cancelled"
        self.scope.cancel()


class RunEngine:
    """Executes agent runs and records every step as an event in `store`."""

    def __init__(
        self,
        store: EventStore | str = "memory://",
        *,
        flush_window: float = 0.005,
        flush_max: int = 512,
        snapshot_every: int = 1000,
        session_policy: SessionPolicy = "allow",
        idempotency_ttl: float = 24 * 3600.0,
        recover_on_start: bool | None = None,
        clock: Callable[[], datetime] = utc_now,
        worker_id: str | None = None,
        worker: WorkerOptions | bool | None = None,
        retention: timedelta | float | None = None,
        retention_interval: float = DEFAULT_SWEEP_INTERVAL,
    ) -> None:
        if session_policy not in SESSION_POLICIES:
            raise InvalidRequest(f"session_policy must be one of {SESSION_POLICIES}")
        if not 0 < flush_window <= 0.010:
            raise InvalidRequest("flush_window must be in (0, 0.010] seconds")
        self.store: EventStore = open_store(store) if isinstance(store, str) else store
        self.agents = AgentRegistry()
        self.flush_window = flush_window
        self.flush_max = flush_max
        self.snapshot_every = snapshot_every
        self.session_policy: SessionPolicy = session_policy
        self.idempotency_ttl = idempotency_ttl
        self.recover_on_start = recover_on_start
        self.clock = clock
        self.worker_id = worker_id or f"engine-{uuid.uuid4().hex[:8]}"
        self._active: dict[str, _ActiveRun] = {}
        self._session_locks: dict[str, anyio.Lock] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        #: The store's work queue, if it has one: execute then enqueues, workers execute.
        self.queue: WorkQueue | None = getattr(self.store, "work_queue", None)
        self.worker_options = worker_options(worker)
        if self.worker_options is not None and self.queue is None:
            raise InvalidRequest("worker mode needs a store with a work queue (e.g. postgresql://)")
        self._worker: Worker | None = None
        #: Ended runs are deleted this many seconds after they ended (None: kept), by a sweep
        #: every `retention_interval` seconds (runengine.retention).
        self.retention = retention_seconds(retention)
        self.retention_interval = retention_seconds(retention_interval, "retention_interval") or DEFAULT_SWEEP_INTERVAL
        self.sweeper: RetentionSweeper | None = None

    # -- agents ---------------------------------------------------------------

    def agent(
        self, name: str, *, description: str = "", metadata: dict[str, Any] | None = None
    ) -> Callable[[AgentFn], AgentFn]:
        """Decorator: register an async function `fn(ctx) -> output` as the agent `name`."""

        def register(fn: AgentFn) -> AgentFn:
            self.agents.add(AgentSpec(name=name, fn=fn, description=description, metadata=dict(metadata or {})))
            return fn

        return register

    # -- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> RunEngine:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await self.store.open()
            stack.push_async_callback(self.store.close)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._shutdown)
            stack.push_async_callback(await start_retention(self, self._tg))
        except BaseException:
            await stack.aclose()
            raise
        self._exit_stack = stack
        recover = self.recover_on_start if self.recover_on_start is not None else not self.store.shared
        if recover:
            await self.recover()
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
        """Cancel the runs still in flight (each records run.cancelled), then stop."""
        with anyio.CancelScope(shield=True):
            if self._worker is not None:  # queued runs are finished or handed back, not cancelled
                await self._worker.stop()
                self._worker = None
            for active in list(self._active.values()):
                active.cancel("engine shutdown")
            for active in list(self._active.values()):
                await active.done.wait()
        self._tg = None

    def _task_group(self) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise EngineNotStarted()
        return self._tg

    async def recover(self) -> list[str]:
        """Settle the runs a previous process left unfinished in a store only it writes:
        pending runs are started, running or waiting ones fail with code `worker_lost`."""
        if self.queue is not None:  # a shared store: leases settle lost runs (runengine.worker)
            return []
        recovered: list[str] = []
        for status in ACTIVE_STATUSES:
            before: str | None = None
            while True:
                page = await self.store.list_runs(status=status, limit=200, before=before)
                for summary in page.runs:
                    if summary.run_id in self._active:
                        continue
                    recovered.append(summary.run_id)
                    if status is Status.PENDING and summary.agent in self.agents:
                        self._launch(await self.status(summary.run_id))
                    else:
                        code = "worker_lost" if status is not Status.PENDING else "agent_not_found"
                        await self._fail_at_head(summary.run_id, code, "the process executing this run stopped")
                before = page.next_before
                if before is None:
                    break
        if recovered:
            log.info("recovered unfinished runs", count=len(recovered))
        return recovered

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
        session_policy: SessionPolicy | None = ...,
        run_id: str | None = ...,
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
        session_policy: SessionPolicy | None = ...,
        run_id: str | None = ...,
    ) -> AsyncIterator[Event]: ...

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
        session_policy: SessionPolicy | None = None,
        run_id: str | None = None,
    ) -> RunState | AsyncIterator[Event]:
        """Start a run of `agent`.

        mode="sync": the state once the run ends or waits for input.
        mode="async": the state right after creation (status pending) — at once.
        mode="stream": an async iterator of the run's events from seq 1, ending after the last.
        """
        self._task_group()
        if mode not in MODES:
            raise InvalidRequest(f"unknown mode {mode!r}; use one of {', '.join(MODES)}", mode=mode)
        spec = self.agents.get(agent)
        if timeout is not None and (not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0):
            raise InvalidRequest("timeout must be a positive number of seconds", timeout=timeout)
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidRequest("metadata must be an object")
        policy = session_policy or self.session_policy
        if policy not in SESSION_POLICIES:
            raise InvalidRequest(f"session_policy must be one of {SESSION_POLICIES}")
        new_run_id = run_id or uuid.uuid4().hex

        if idempotency_key is not None:
            bound = await self.store.reserve_idempotency_key(
                f"{owner or ''}:{idempotency_key}", new_run_id, now=self.clock(), ttl=self.idempotency_ttl
            )
            if bound != new_run_id:
                await self.store.wait(bound, after_seq=0, timeout=10.0)  # its creator may still be writing it
                return await self._respond(bound, mode, after_seq=0)

        async with self._session_lock(session_id):
            after: tuple[str, ...] = ()
            session: SessionRecord | None = None
            if session_id is not None:
                session = await self.store.get_session(session_id)
                if session is not None and session.ended:
                    raise SessionEnded(session_id)
                if session is not None and session.expires_at is not None and session.expires_at <= self.clock():
                    raise SessionEnded(session_id, expired=True)
                after = await self._apply_session_policy(session_id, policy)
            created = RunCreated(
                run_id=new_run_id,
                seq=1,
                at=self.clock(),
                agent=spec.name,
                input=input,
                session_id=session_id,
                metadata=dict(metadata or {}),
                mode=mode,
                owner=owner,
                timeout=float(timeout) if timeout is not None else None,
            )
            fold = Fold()
            fold.apply(created)
            state = fold.state
            assert state is not None
            if self.queue is not None:  # a worker (in any process) claims and executes it
                await self.queue.enqueue(new_run_id, [created], after=after)
            else:
                await self.store.append(new_run_id, [created], expected_seq=0)
                self._launch(state, after=after, fold=fold)
        return await self._respond(new_run_id, mode, after_seq=0, created=state)

    async def _respond(
        self, run_id: str, mode: str, *, after_seq: int, created: RunState | None = None
    ) -> RunState | AsyncIterator[Event]:
        if mode == "async":
            return created if created is not None else await self.status(run_id)
        if mode == "stream":
            return self.events(run_id, after_seq=after_seq)
        return await self.wait(run_id, after_seq=after_seq)

    def _session_lock(self, session_id: str | None) -> contextlib.AbstractAsyncContextManager[Any]:
        if session_id is None:
            return contextlib.nullcontext()
        lock = self._session_locks.get(session_id)
        if lock is None:
            lock = self._session_locks[session_id] = anyio.Lock()
        return _ReleasingLock(self._session_locks, session_id, lock)

    async def _apply_session_policy(self, session_id: str, policy: str) -> tuple[str, ...]:
        if policy == "allow":
            return ()
        active: list[str] = []
        for status in ACTIVE_STATUSES:
            page = await self.store.list_runs(session_id=session_id, status=status, limit=MAX_PAGE // 10)
            active.extend(r.run_id for r in page.runs)
        if not active:
            return ()
        if policy == "reject":
            raise SessionBusy(session_id, active)
        if policy == "interrupt":
            for other in active:
                await self.cancel(other, reason="interrupted by a newer run in the session")
            return ()
        return tuple(active)  # enqueue: the new run starts after these end

    def _launch(
        self,
        state: RunState,
        *,
        after: tuple[str, ...] = (),
        fold: Fold | None = None,
        store: EventStore | None = None,
    ) -> _ActiveRun:
        """Start executing a pending run in this engine's task group (`store`: a worker's leased view)."""
        writer = RunWriter(
            store or self.store,
            fold or Fold(state),
            flush_window=self.flush_window,
            flush_max=self.flush_max,
            snapshot_every=self.snapshot_every,
        )
        active = _ActiveRun(run_id=state.run_id, writer=writer, after=after)
        self._active[state.run_id] = active
        self._task_group().start_soon(self._drive, active, name=f"run {state.run_id}")
        return active

    # -- the driver: one task per executing run --------------------------------

    async def _drive(self, active: _ActiveRun) -> None:
        writer = active.writer
        state = writer.state
        run_log = log.bind(run_id=active.run_id, agent=state.agent)
        try:
            terminal = await self._run_agent(active, state, run_log)
            if terminal is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        await writer.add(terminal, durable=True)
                    except RunEndedElsewhere:
                        pass
                    except LeaseLost:  # a queue worker that lost its lease: the run is someone else's
                        active.abandoned = True
        except Exception:  # a store failure: the run stays unfinished and is recovered later
            run_log.exception("run driver failed")
        finally:
            self._active.pop(active.run_id, None)
            active.done.set()

    async def _run_agent(
        self, active: _ActiveRun, state: RunState, run_log: Any
    ) -> Callable[[int], Event] | None:
        """Run the agent; return how to build the terminal event (None if the run ended elsewhere)."""
        writer = active.writer
        run_id = active.run_id

        def failed(code: str, message: str) -> Callable[[int], Event]:
            return lambda seq: RunFailed(run_id=run_id, seq=seq, at=self.clock(), error=ErrorInfo(code=code, message=message))

        spec = self.agents.find(state.agent)
        try:
            with active.scope:
                for other in active.after:  # session policy "enqueue"
                    await self._wait_terminal(other)
                if spec is None:
                    return failed("agent_not_found", f"no agent named {state.agent!r}")
                session = await self.store.get_session(state.session_id) if state.session_id else None
                await writer.add(
                    lambda seq: RunStarted(
                        run_id=run_id, seq=seq, at=self.clock(), worker=self.worker_id, attempt=state.attempt + 1
                    ),
                    durable=False,  # commits with the agent's first events (or within the flush window)
                )
                ctx = RunContext(writer, self.store, self.clock, session)
                failure: Exception | None = None
                async with anyio.create_task_group() as background:
                    background.start_soon(writer.flush_loop)
                    try:
                        deadline = anyio.fail_after(state.timeout) if state.timeout else contextlib.nullcontext()
                        with deadline:
                            result = await spec.fn(ctx)
                        # The last message commits in one batch with the terminal event below.
                        await ctx.complete_message(durable=False)
                    except Exception as exc:  # re-raised below, outside the group (no ExceptionGroup)
                        failure = exc
                    finally:
                        background.cancel_scope.cancel()
                if failure is not None:
                    raise failure
                if writer.ended_elsewhere is not None:
                    return None
                output = result if result is not None else _last_message(writer.state)
                return lambda seq: RunCompleted(run_id=run_id, seq=seq, at=self.clock(), output=output)
        except RunEndedElsewhere:
            return None
        except LeaseLost:
            active.abandoned = True
            return None
        except TimeoutError:
            run_log.info("run timed out", timeout=state.timeout)
            return failed("timeout", f"the run took longer than its timeout of {state.timeout} s")
        except Exception as exc:  # the agent's own failure ends the run, with what it said
            if isinstance(writer.failure, LeaseLost):
                active.abandoned = True
            if writer.ended_elsewhere is not None or active.abandoned:
                return None
            if isinstance(exc, AgentFailed):
                return failed(exc.code, exc.message)
            return failed("agent_error", f"{type(exc).__name__}: {exc}")
        finally:
            if active.scope.cancelled_caught and writer.ended_elsewhere is None and active.abandoned:
                return None  # noqa: B012 - the lease is gone: someone else owns the run now
            if active.scope.cancelled_caught and writer.ended_elsewhere is None and active.hand_back:
                if writer.state.status is Status.PENDING:
                    return None  # noqa: B012 - never started: back on the queue as it is
                return lambda seq: RunRequeued(run_id=run_id, seq=seq, at=self.clock(), reason="worker shutdown")  # noqa: B012
            if active.scope.cancelled_caught and writer.ended_elsewhere is None:
                reason = active.cancel_reason
                # `return` from finally is deliberate: a cancel wins over whatever was under way.
                return lambda seq: RunCancelled(run_id=run_id, seq=seq, at=self.clock(), reason=reason)  # noqa: B012
        return None  # pragma: no cover - every path above returns

    async def _wait_terminal(self, run_id: str) -> None:
        while True:
            summary = await self.store.get_run(run_id)
            if summary is None or summary.status.terminal:
                return
            await self.store.wait(run_id, after_seq=summary.last_seq, timeout=1.0)

    # -- queries ------------------------------------------------------------------

    async def status(self, run_id: str) -> RunState:
        """The run's committed state: latest snapshot plus the events after it."""
        fold = Fold(await self.store.load_snapshot(run_id))
        while True:
            page = await self.store.read(run_id, after_seq=fold.last_seq, limit=MAX_PAGE)
            fold.apply_all(page)
            if len(page) < MAX_PAGE:
                break
        state = fold.state
        if state is None:
            raise RunNotFound(run_id)
        return state

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

    async def wait(self, run_id: str, *, after_seq: int = 0) -> RunState:
        """Wait until the run ends, or waits for input in an event after `after_seq`."""
        state = await self.status(run_id)
        fold = Fold(state)
        while True:
            status = fold.status
            if status is not None and (
                status.terminal or (status is Status.WAITING_FOR_INPUT and fold.last_seq > after_seq)
            ):
                result = fold.state
                assert result is not None
                return result
            await self.store.wait(run_id, after_seq=fold.last_seq, timeout=30.0)
            fold.apply_all(await self.store.read(run_id, after_seq=fold.last_seq, limit=MAX_PAGE))

    async def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: Status | str | None = None,
        owner: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> RunPage:
        try:
            wanted = Status(status) if status is not None else None
        except ValueError:
            raise InvalidRequest(f"unknown status {status!r}", status=status) from None
        return await self.store.list_runs(
            session_id=session_id, status=wanted, owner=owner, limit=limit, before=before
        )

    async def session_history(self, session_id: str, *, owner: str | None = None) -> list[HistoryMessage]:
        """The messages of every run of a session, oldest first: each run's input, then its replies.

        With `owner`, only that owner's runs count (a session nobody else can see is not found)."""
        runs: list[RunSummary] = []
        before: str | None = None
        while True:
            page = await self.store.list_runs(session_id=session_id, owner=owner, limit=200, before=before)
            runs.extend(page.runs)
            before = page.next_before
            if before is None:
                break
        if not runs:
            session = await self.store.get_session(session_id)
            if session is None or (owner is not None and session.owner != owner):
                raise SessionNotFound(session_id)
        history: list[HistoryMessage] = []
        for summary in reversed(runs):
            state = await self.status(summary.run_id)
            history.append(
                HistoryMessage(role="user", content=state.input, run_id=state.run_id, at=state.created_at, agent=None)
            )
            for message in state.messages:
                history.append(
                    HistoryMessage(
                        role=message.role,
                        content=message.content,
                        run_id=state.run_id,
                        at=state.finished_at or state.updated_at,
                        agent=state.agent,
                    )
                )
        return history

    # -- commands -------------------------------------------------------------------

    async def cancel(self, run_id: str, *, reason: str | None = None) -> RunState:
        """Cancel a run (idempotent: an ended run is returned as it is)."""
        active = self._active.get(run_id)
        if active is not None:
            active.cancel(reason)
            with anyio.CancelScope(shield=True):
                await active.done.wait()
            return await self.status(run_id)
        await self._append_at_head(
            run_id,
            lambda seq: RunCancelled(run_id=run_id, seq=seq, at=self.clock(), reason=reason or "cancelled"),
        )
        return await self.status(run_id)

    async def resume(self, run_id: str, input: Any) -> RunState:
        """Give input to a run waiting for it; returns the state with the input recorded."""
        while True:
            state = await self.status(run_id)
            if state.status is not Status.WAITING_FOR_INPUT:
                raise InvalidRunState(run_id, state.status.value, "input is only accepted while waiting_for_input")
            event = RunInput(run_id=run_id, seq=state.last_seq + 1, at=self.clock(), content=input)
            Fold(state).apply(event)
            try:
                await self.store.append(run_id, [event], expected_seq=state.last_seq)
            except ConcurrencyConflict:
                continue
            return await self.status(run_id)

    async def _fail_at_head(self, run_id: str, code: str, message: str) -> None:
        error = ErrorInfo(code=code, message=message)
        await self._append_at_head(
            run_id, lambda seq: RunFailed(run_id=run_id, seq=seq, at=self.clock(), error=error)
        )

    async def _append_at_head(self, run_id: str, build: Callable[[int], Event]) -> None:
        """Append one event after whatever the log holds now, unless the run has ended."""
        while True:
            state = await self.status(run_id)
            if state.terminal:
                return
            event = build(state.last_seq + 1)
            Fold(state).apply(event)
            try:
                await self.store.append(run_id, [event], expected_seq=state.last_seq)
                return
            except ConcurrencyConflict:
                continue

    async def delete_run(self, run_id: str, *, owner: str | None = None) -> None:
        """Delete an ended run: its events, snapshot and idempotency records (InvalidRunState while
        it is active; with `owner`, another owner's run is RunNotFound)."""
        await delete_ended_run(self.store, run_id, owner=owner)

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
        now = self.clock()
        session = SessionRecord(
            session_id=session_id or f"sess_{uuid.uuid4().hex}",
            owner=owner,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl) if ttl else None,
            metadata=dict(metadata or {}),
            data=dict(data or {}),
        )
        await self.store.put_session(session)
        return session

    async def get_session(self, session_id: str) -> SessionRecord:
        session = await self.store.get_session(session_id)
        if session is None:
            raise SessionNotFound(session_id)
        return session

    async def end_session(self, session_id: str, *, cancel_active: bool = True) -> SessionRecord:
        """Mark a session ended: later runs in it are refused; active ones are cancelled."""
        session = await self.store.get_session(session_id)
        if session is None:
            if not (await self.store.list_runs(session_id=session_id, limit=1)).runs:
                raise SessionNotFound(session_id)
            session = SessionRecord(session_id=session_id, created_at=self.clock())
        if session.ended_at is None:
            session = attrs.evolve(session, ended_at=self.clock())
            await self.store.put_session(session)
        if cancel_active:
            for status in ACTIVE_STATUSES:
                for run in (await self.store.list_runs(session_id=session_id, status=status, limit=1000)).runs:
                    await self.cancel(run.run_id, reason="session ended")
        return session


@attrs.frozen(kw_only=True)
class HistoryMessage:
    role: str
    content: Any
    run_id: str
    at: datetime | None = None
    agent: str | None = None


def _last_message(state: RunState) -> Any:
    for message in reversed(state.messages):
        if message.role == "assistant":
            return message.content
    return None



class _ReleasingLock:
    """An async context manager over a per-session lock that forgets the lock when unused."""

    def __init__(self, locks: dict[str, anyio.Lock], key: str, lock: anyio.Lock) -> None:
        self._locks, self._key, self._lock = locks, key, lock

    async def __aenter__(self) -> None:
        await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        if not self._lock.locked() and self._lock.statistics().tasks_waiting == 0:
            self._locks.pop(self._key, None)


__all__ = ["RunEngine", "AgentFailed", "HistoryMessage", "SessionBusy", "SessionEnded"]
