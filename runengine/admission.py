"""Admission: flow control for an engine that executes its own runs (SQLite, memory).

A pending run of an agent with a concurrency or a rate (runengine.flow) is not launched: it is
put in line in the `Gate` (its id, no task), and one task (`run`) launches the runs the gate
admits as slots free up (a run's end) and tokens come (on the engine's clock). A run under way
when the engine (re)started holds its slot; recovery holds admission until they all have
(`hold`). Debounced starts (`supersede`) cancel the burst's previous run while it has not started.
On a store with a work queue, workers hold runs back at claim instead (runengine.worker).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import anyio
import anyio.abc

from . import observe
from .agents import AgentRegistry
from .clock import Clock
from .driver import ActiveRun, RunDriver
from .errors import ConcurrencyConflict, RunNotFound
from .events import Event, RunCancelled
from .flow import DEBOUNCED, Gate, scope_of
from .keylock import KeyLocks
from .ports import EventStore
from .reducer import Fold
from .state import RunState
from .status import Status


class AdmissionHost(Protocol):
    """What admission needs of its engine (runengine.engine.RunEngine), declared here so that
    this module does not name the engine that imports it."""

    store: EventStore
    agents: AgentRegistry
    driver: RunDriver
    clock: Clock

    def _task_group(self) -> anyio.abc.TaskGroup: ...

    async def _load(self, run_id: str) -> tuple[RunState, list[Event]]: ...

    async def status(self, run_id: str) -> RunState: ...


class Admission:
    """The gate of an engine's limited agents, and the one task that admits from it."""

    def __init__(self, engine: AdmissionHost) -> None:
        self.engine = engine
        self.gate = Gate()
        self._wake: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        #: While above 0 (recovery under way) no run in line is admitted.
        self._holds = 0
        #: The last start of each debounce key (agent, key) in this process.
        self._debounced: dict[tuple[str, str | None], str] = {}
        self._debounce_locks = KeyLocks()

    def launch(
        self, state: RunState, *, after: tuple[str, ...] = (), fold: Fold | None = None,
        first_page: Sequence[Event] = (), woken: bool = False,
    ) -> ActiveRun | None:
        """Execute `state`'s run, or put it in line when its agent's limits hold it back (`woken`:
        an idle run taken up from the store, runengine.idle). The run executing, if it does now."""
        engine = self.engine
        spec = engine.agents.find(state.agent)
        flow = spec.flow if spec is not None else None
        if flow is None or not flow.limited:
            return engine.driver.launch(engine._task_group(), state, after=after, fold=fold, first_page=first_page, woken=woken)
        scope = scope_of(state.agent, state.concurrency_key)
        if state.status is not Status.PENDING:  # under way before a restart: it holds its slot
            self.gate.hold(state.run_id, scope, flow)
            return self._launch_admitted(state, after=after, fold=fold, first_page=first_page, woken=woken)
        if state.start_at is not None and state.start_at > engine.clock():  # in line once it is due
            engine._task_group().start_soon(self._queue_when_due, state, after, name=f"due {state.run_id}")
            return None
        created = state.created_at.timestamp() if state.created_at is not None else 0.0
        self.gate.queue(
            state.run_id, scope, flow, priority=state.priority, created=created, now=engine.clock().timestamp(),
            payload=after,
        )
        observe.current.flow_depth(self.gate.depths())
        self._poke()
        return None

    async def _queue_when_due(self, state: RunState, after: tuple[str, ...]) -> None:
        assert state.start_at is not None
        await self.engine.clock.sleep_until(state.start_at)
        self.launch(state, after=after)

    def _launch_admitted(self, state: RunState, **launch: Any) -> ActiveRun:
        active = self.engine.driver.launch(self.engine._task_group(), state, **launch)
        active.on_done.append(lambda: self._release_slot(state.run_id))
        return active

    def _release_slot(self, run_id: str) -> None:
        self.gate.release(run_id)
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def hold(self) -> None:
        """Admit nothing until as many `unhold` calls (recovery: runs under way take their slots first)."""
        self._holds += 1

    def unhold(self) -> None:
        self._holds -= 1
        self._poke()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the runs in line as slots free up and tokens come (one task for all of them), until `stop`."""
        clock = self.engine.clock
        with anyio.CancelScope() as self._scope:
            self._wake = anyio.Event()
            task_status.started()
            while True:
                admitted, wake = ([], None) if self._holds else self.gate.admit(clock().timestamp())
                for entry in admitted:
                    observe.current.flow_waited(entry.scope, entry.waited)
                    await self._start_admitted(entry.run_id, entry.payload)
                if admitted:
                    observe.current.flow_depth(self.gate.depths())
                when: datetime | None = None if wake is None else clock() + timedelta(seconds=wake)
                with clock.move_on_at(when):
                    await self._wake.wait()
                self._wake = anyio.Event()

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _start_admitted(self, run_id: str, after: tuple[str, ...]) -> None:
        try:
            state: RunState | None
            state, first_page = await self.engine._load(run_id)
        except RunNotFound:
            state = None
        if state is None or state.terminal or run_id in self.engine.driver.active:  # cancelled (or deleted) in line
            self._release_slot(run_id)
            return
        self._launch_admitted(state, after=after or (), first_page=first_page)

    def debounce_lock(self, key: tuple[str, str | None] | None) -> contextlib.AbstractAsyncContextManager[Any]:
        """Serialises the starts of one debounce key (None: no debounce)."""
        return contextlib.nullcontext() if key is None else self._debounce_locks(repr(key))

    async def supersede(self, key: tuple[str, str | None], run_id: str) -> None:
        """A debounced start: the burst's previous run, if it has not started, is cancelled with
        a reason naming the run that takes its place (which a later start may supersede in turn)."""
        engine = self.engine
        previous, self._debounced[key] = self._debounced.get(key), run_id
        if previous is None:
            return
        reason = f"{DEBOUNCED}: superseded by run {run_id}"
        active = engine.driver.active.get(previous)
        if active is not None:  # waiting for its start_at in this process
            if active.writer.state.status is Status.PENDING:
                active.cancel(reason)
                with anyio.CancelScope(shield=True):
                    await active.done.wait()
            return
        while True:
            state = await engine.status(previous)
            if state.status is not Status.PENDING:
                return  # it started (its debounce ran out before this start): it runs
            event = RunCancelled(run_id=previous, seq=state.last_seq + 1, at=engine.clock(), reason=reason)
            try:
                await engine.store.append(previous, [event], expected_seq=state.last_seq)
            except ConcurrencyConflict:
                continue
            self.gate.discard(previous)
            return


__all__ = ["Admission", "AdmissionHost"]
