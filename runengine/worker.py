"""Workers: executing queued runs from a shared store's work queue, in any number of processes.

When an engine's store has a work queue (`store.work_queue`, e.g. PostgreSQL), `execute`
puts the run on the queue; an engine started with `worker=True` (or `runengine worker`)
claims runs and executes them. The policy:

- Claim: oldest first, only runs of agents this worker has, at most `concurrency` at once.
- Lease: a claim holds for `lease` seconds (by the database clock) and is renewed every
  `heartbeat` seconds. Every append of the run's events checks the lease in the same
  transaction (fencing): a worker that lost it gets `LeaseLost` and its agent is stopped.
- Cancel and input reach the executing worker through the database: a terminal event
  appended by any process removes the run from the queue, the worker is told (a
  wake-up, or at the latest its next heartbeat) and stops the agent without writing.
- A lost worker (its lease expired): the next claimer takes the run over. Policy `resume`
  (default) resumes it from its log (`runengine.driver`: recorded steps, tool calls, inputs
  and timers are replayed, not redone), up to `max_attempts` executions in all, then it
  fails with code `worker_lost`. Policy `fail` fails it at once; `requeue` appends
  `run.requeued` and runs the agent again from the start.
- Graceful stop: no more claims; in-flight runs get `drain_timeout` seconds to reach their
  next event; then each records `run.suspended` and goes back on the queue, where another
  worker resumes it (a run waiting for input keeps waiting).
- Idle runs: a run idle in a durable wait (`ctx.ask`, `ctx.sleep`) for `durability.park_after`
  seconds is parked (runengine.driver): its task ends, writing nothing, and its lease goes back
  to the queue, where it is claimable again once its timer is due or its input came. A waiting
  run holds no worker slot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

import anyio
import attrs
import structlog

from .errors import InvalidRequest
from .events import ErrorInfo, Event, RunFailed, RunRequeued
from .ports import DEFAULT_PAGE, EventStore, Lease, LeaseLost, RunPage, RunSummary, WorkQueue
from .state import RunState
from .status import Status

from .agents import AgentRegistry
from .driver import ActiveRun, RunDriver, append_at_head

log = structlog.get_logger("runengine.worker")


class WorkerEngine(Protocol):
    """What a worker needs of its engine (runengine.engine.RunEngine), declared here so that this
    module does not name the engine that imports it."""

    store: EventStore
    agents: AgentRegistry
    driver: RunDriver
    clock: Callable[[], datetime]
    worker_id: str

    async def status(self, run_id: str) -> RunState: ...


LostPolicy = Literal["resume", "fail", "requeue"]
LOST_POLICIES: tuple[str, ...] = ("resume", "fail", "requeue")


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0):
        raise InvalidRequest(f"{attribute.name} must be a positive number", **{attribute.name: value})


def _policy(_instance: object, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in LOST_POLICIES:
        raise InvalidRequest(f"on_lost must be one of {', '.join(LOST_POLICIES)}", on_lost=value)


@attrs.frozen(kw_only=True)
class WorkerOptions:
    """How a worker claims, holds and gives back runs (seconds unless said otherwise)."""

    #: How long a claim holds without a heartbeat; a lost worker's runs are settled after it.
    lease: float = attrs.field(default=30.0, validator=_positive)
    #: How often leases are renewed (default lease / 3).
    heartbeat: float | None = attrs.field(default=None, validator=_positive)
    #: Runs executed at once by this worker.
    concurrency: int = attrs.field(default=16, validator=_positive)
    #: Runs claimed per query: small, so that other idle workers get their share of a burst.
    claim_batch: int = attrs.field(default=4, validator=_positive)
    #: Look at the queue at least this often, even without a wake-up (expired leases).
    poll: float = attrs.field(default=1.0, validator=_positive)
    #: What happens to a run whose worker was lost: "resume" (from its log), "fail" (code
    #: worker_lost) or "requeue" (its agent starts again from the beginning).
    on_lost: LostPolicy = attrs.field(default="resume", validator=_policy)
    #: With "resume" or "requeue": executions in all before the run fails with worker_lost.
    max_attempts: int = attrs.field(default=3, validator=_positive)
    #: Graceful stop: how long in-flight runs get to reach their next event before they are handed back.
    drain_timeout: float = attrs.field(default=10.0, validator=_positive)

    @property
    def heartbeat_every(self) -> float:
        return self.heartbeat if self.heartbeat is not None else self.lease / 3


class LeasedStore:
    """The store as one leased run sees it: its appends are fenced by the lease, the rest is shared."""

    shared = True

    def __init__(self, store: EventStore, queue: WorkQueue, lease: Lease) -> None:
        self._store = store
        self._queue = queue
        self.lease = lease

    async def append(self, run_id: str, events: Sequence[Event], *, expected_seq: int) -> None:
        if run_id != self.lease.run_id:
            raise InvalidRequest(f"this store writes run {self.lease.run_id!r} only")
        await self._queue.append_leased(self.lease, events, expected_seq=expected_seq)

    async def open(self) -> None:
        await self._store.open()

    async def close(self) -> None:
        await self._store.close()

    async def read(self, run_id: str, *, after_seq: int = 0, limit: int = DEFAULT_PAGE) -> list[Event]:
        return await self._store.read(run_id, after_seq=after_seq, limit=limit)

    async def wait(self, run_id: str, *, after_seq: int, timeout: float | None = None) -> bool:
        return await self._store.wait(run_id, after_seq=after_seq, timeout=timeout)

    async def get_run(self, run_id: str) -> RunSummary | None:
        return await self._store.get_run(run_id)

    async def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: Status | None = None,
        owner: str | None = None,
        limit: int = 50,
        before: str | None = None,
        before_run: str | None = None,
    ) -> RunPage:
        return await self._store.list_runs(
            session_id=session_id, status=status, owner=owner, limit=limit, before=before, before_run=before_run
        )

    async def save_snapshot(self, state: RunState) -> None:
        await self._store.save_snapshot(state)

    async def load_snapshot(self, run_id: str) -> RunState | None:
        return await self._store.load_snapshot(run_id)

    async def delete_run(self, run_id: str) -> bool:
        return await self._store.delete_run(run_id)


@attrs.define(eq=False)
class _Held:
    lease: Lease
    active: ActiveRun | None = None
    lost: bool = False


class Worker:
    """Claims runs from `queue` and executes them with `engine`'s agents."""

    def __init__(self, engine: WorkerEngine, queue: WorkQueue, options: WorkerOptions) -> None:
        self.engine = engine
        self.queue = queue
        self.options = options
        self.worker_id = engine.worker_id
        self._held: dict[str, _Held] = {}
        self._wake = anyio.Event()
        self._stopping = False
        self._stopped = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def in_flight(self) -> int:
        return len(self._held)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Claim and execute until `stop()`; then return once every held run is finished or handed back."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._heartbeat_loop)
                task_status.started()
                await self._claim_loop()
                while self._held:
                    await self._wait_change(None)
                tg.cancel_scope.cancel()
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Stop claiming; runs reach their next event within `drain_timeout`, record
        run.suspended and go back on the queue for another worker to resume."""
        self._stopping = True
        self._poke()
        actives = [held.active for held in self._held.values() if held.active is not None]
        for active in actives:
            active.suspend(now=False)
        with anyio.move_on_after(self.options.drain_timeout):
            for active in actives:
                await active.done.wait()
        for held in list(self._held.values()):
            if held.active is not None and not held.active.done.is_set():
                log.info("handing back a run", run_id=held.lease.run_id)
                held.active.suspend(now=True)
        await self._stopped.wait()

    def _poke(self) -> None:
        self._wake.set()
        self._wake = anyio.Event()

    async def _wait_change(self, timeout: float | None) -> None:
        with anyio.move_on_after(timeout):
            await self._wake.wait()

    # -- claiming -----------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        options = self.options
        while not self._stopping:
            free = options.concurrency - len(self._held)
            if free <= 0:
                await self._wait_change(options.poll)
                continue
            try:
                leases = await self.queue.claim(
                    self.worker_id,
                    agents=[spec.name for spec in self.engine.agents],
                    limit=min(free, options.claim_batch),
                    lease=options.lease,
                    flow={s.name: s.flow for s in self.engine.agents if s.flow is not None and s.flow.limited},
                )
            except Exception as exc:  # the database is away: try again later
                log.warning("claim failed", error=repr(exc))
                await self._wait_change(options.poll)
                continue
            for lease in leases:
                held = self._held[lease.run_id] = _Held(lease)
                assert self._tg is not None
                self._tg.start_soon(self._execute, held, name=f"worker run {lease.run_id}")
            if leases:
                continue
            await self._wait_for_work(options.poll)

    async def _wait_for_work(self, timeout: float) -> None:
        async with anyio.create_task_group() as race:

            async def queued() -> None:
                await self.queue.wait_for_work(timeout)
                race.cancel_scope.cancel()

            async def local() -> None:
                await self._wait_change(timeout)
                race.cancel_scope.cancel()

            race.start_soon(queued)
            race.start_soon(local)

    # -- one claimed run ------------------------------------------------------------------

    async def _execute(self, held: _Held) -> None:
        run_id = held.lease.run_id
        try:
            await self._settle_and_run(held)
        except LeaseLost:
            log.info("lease lost", run_id=run_id)
        except Exception:
            log.exception("worker failed to execute a run", run_id=run_id)
        finally:
            self._held.pop(run_id, None)
            self._poke()

    async def _settle_and_run(self, held: _Held) -> None:
        engine, lease = self.engine, held.lease
        store = LeasedStore(engine.store, self.queue, lease)
        state: RunState | None = await engine.status(lease.run_id)
        assert state is not None
        if state.terminal:
            return  # ended while queued: the terminal append has taken it off the queue
        spec = engine.agents.find(state.agent)
        if spec is None or held.lost:  # not an agent of ours (claimed through an expired lease)
            await self.queue.release(lease)
            return
        if state.status is not Status.PENDING and not state.suspended:  # its worker was lost
            policy = self.options.on_lost
            log.info("taking over a run whose worker was lost", run_id=lease.run_id, policy=policy)
            if policy == "requeue" and state.attempt < self.options.max_attempts:
                state = await append_at_head(
                    store,
                    lease.run_id,
                    lambda seq: RunRequeued(run_id=lease.run_id, seq=seq, at=engine.clock(), reason="worker_lost"),
                    engine.status,
                )
            elif policy != "resume":
                await append_at_head(
                    store,
                    lease.run_id,
                    lambda seq: RunFailed(
                        run_id=lease.run_id,
                        seq=seq,
                        at=engine.clock(),
                        error=ErrorInfo(code="worker_lost", message="the worker executing this run was lost"),
                    ),
                    engine.status,
                )
                return
            if state is None:
                return
        active = held.active = engine.driver.launch(
            self._runs(), state, store=store, max_attempts=self.options.max_attempts
        )
        async with anyio.create_task_group() as watch:
            watch.start_soon(self._watch, held)
            await active.done.wait()
            watch.cancel_scope.cancel()
        if active.abandoned:
            log.info("run stopped: lease lost", run_id=lease.run_id)
        elif active.suspending or active.parked_until is not None:
            # Back on the queue: a parked run is claimable again once its wait is over (its input
            # came, or its timer is due), by whichever worker is free then.
            await self.queue.release(lease)

    def _runs(self) -> anyio.abc.TaskGroup:
        assert self._tg is not None
        return self._tg

    async def _watch(self, held: _Held) -> None:
        """Stop the run as soon as the lease is gone (a cancel from any process, a takeover)."""
        while not held.lost:
            if await self.queue.wait_lost(held.lease, self.options.heartbeat_every):
                break
        await self._stop_lost(held)

    async def _stop_lost(self, held: _Held) -> None:
        held.lost = True
        active = held.active
        if active is None or active.done.is_set():
            return
        if active.writer.state.terminal:
            # Its own end is queued or committed, and that commit took the run off the queue: the
            # lease went with it. (Were the lease lost before, the end's commit is fenced off and
            # the run stops on LeaseLost as ever.)
            return
        store = self.engine.store
        summary = await store.get_run(held.lease.run_id)
        if summary is not None and summary.status.terminal and summary.last_seq > 0:
            last = await store.read(held.lease.run_id, after_seq=summary.last_seq - 1, limit=1)
            if last and last[0].terminal and active.writer.ended_elsewhere is None:
                active.writer.ended_elsewhere = last[0]  # the agent's next event raises RunEndedElsewhere
        log.info("run stopped: lease gone", run_id=held.lease.run_id, ended=active.writer.ended_elsewhere is not None)
        active.abandoned = True
        active.scope.cancel()

    async def _heartbeat_loop(self) -> None:
        options = self.options
        while True:
            await anyio.sleep(options.heartbeat_every)
            held = [h for h in self._held.values() if not h.lost]
            if not held:
                continue
            try:
                alive = await self.queue.renew([h.lease for h in held], lease=options.lease)
            except Exception as exc:  # the database is away; fencing keeps us honest meanwhile
                log.warning("heartbeat failed", error=repr(exc))
                continue
            for h in held:
                if h.lease.run_id not in alive and self._held.get(h.lease.run_id) is h:
                    await self._stop_lost(h)


def worker_options(value: WorkerOptions | bool | None) -> WorkerOptions | None:
    """Normalise the engine's `worker` argument."""
    if value is None or value is False:
        return None
    if value is True:
        return WorkerOptions()
    if isinstance(value, WorkerOptions):
        return value
    raise InvalidRequest("worker must be True, False or a WorkerOptions")


__all__ = ["Worker", "WorkerOptions", "LeasedStore", "LostPolicy", "worker_options"]
