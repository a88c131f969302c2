"""Stateful (RuleBasedStateMachine) tests of runs.

`LogMachine` drives the reducer alone: each step appends a valid event chosen
from the transition table or tries an arbitrary one, and checks that illegal
events are refused with the state unchanged and that step-by-step `apply`
always equals `fold` of the whole log.

`EngineMachine` is the one to subclass for your own agents: it starts runs on a
real `RunEngine` (in an event loop on a helper thread), resumes the ones that
wait for input, cancels some, and checks after every step that each run's log is
gapless and that its folded state is what `status` reports:

    class MyAgentMachine(EngineMachine):
        def make_engine(self):
            engine = RunEngine("memory://")
            register_my_agents(engine)
            return engine
        agents = ("support",)
        inputs = st.text(max_size=50)

    TestMyAgent = MyAgentMachine.TestCase
"""

from __future__ import annotations

from typing import Any, ClassVar

import anyio
import anyio.from_thread
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ..engine import RunEngine
from ..errors import InvalidRunState, InvalidTransition
from ..events import Event, UnknownEvent
from ..reducer import Fold, fold
from ..state import RunState
from ..status import Status
from ..transitions import TRANSITIONS, UNKNOWN
from .strategies import BASE_TIME, any_event, next_event


class LogMachine(RuleBasedStateMachine):
    """The reducer against the transition table, one event at a time.

    Valid events are drawn from the machine's own fold (the table and the guards it
    accepts next), so an arbitrary event it accepted is part of what the next one follows.
    """

    run_id = "run-under-test"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []
        self.fold = Fold()

    @rule(data=st.data())
    def append_valid(self, data: st.DataObject) -> None:
        if self.fold.status is not None and self.fold.status.terminal:
            return
        event = data.draw(next_event(self.fold, self.run_id, at=BASE_TIME))
        before = self.fold.status
        self.fold.apply(event)
        self.events.append(event)
        known = not isinstance(event, UnknownEvent)
        assert self.fold.status == TRANSITIONS[(before, event.type if known else UNKNOWN)]

    @rule(event=any_event(run_id=run_id))
    def append_arbitrary(self, event: Event) -> None:
        before = self.fold.state
        try:
            self.fold.apply(event)
        except InvalidTransition:
            assert self.fold.state == before, "a refused event changed the state"
            return
        self.events.append(event)

    @invariant()
    def apply_equals_fold(self) -> None:
        assert self.fold.last_seq == len(self.events)
        assert [e.seq for e in self.events] == list(range(1, len(self.events) + 1))
        if self.events:
            assert fold(self.events) == self.fold.state


class EngineMachine(RuleBasedStateMachine):
    """Runs of a real engine under random starts, inputs and cancels. Subclass it (see module doc)."""

    #: Agents to start (names registered by make_engine).
    agents: ClassVar[tuple[str, ...]] = ()
    #: What to pass as a run's input.
    inputs: ClassVar[st.SearchStrategy[Any]] = st.text(max_size=30)
    #: What to give a run waiting for input.
    answers: ClassVar[st.SearchStrategy[Any]] = st.text(max_size=30)
    #: anyio backend the engine runs on.
    backend: ClassVar[str] = "asyncio"

    def make_engine(self) -> RunEngine:
        raise NotImplementedError("return a RunEngine with your agents registered")

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = anyio.from_thread.start_blocking_portal(self.backend)
        self.portal = self._portal_cm.__enter__()
        self.engine = self.make_engine()
        # enter and leave the engine in one task of the portal's loop (task groups require it)
        self._engine_cm = self.portal.wrap_async_context_manager(self.engine)
        self._engine_cm.__enter__()
        self.run_ids: list[str] = []
        self.finished: dict[str, RunState] = {}

    def teardown(self) -> None:
        try:
            self._engine_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)

    @initialize()
    def check_agents(self) -> None:
        assert self.agents, "set `agents` to the names of the agents to exercise"

    @rule(data=st.data())
    def start_run(self, data: st.DataObject) -> None:
        agent = data.draw(st.sampled_from(self.agents))
        value = data.draw(self.inputs)
        state = self.portal.call(lambda: self.engine.execute(agent, value, mode="async"))
        assert isinstance(state, RunState) and state.status is Status.PENDING
        self.run_ids.append(state.run_id)

    @precondition(lambda self: bool(self.run_ids))
    @rule(data=st.data())
    def settle_and_answer(self, data: st.DataObject) -> None:
        run_id = data.draw(st.sampled_from(self.run_ids))
        state = self.portal.call(lambda: self.engine.wait(run_id))
        if state.status is Status.WAITING_FOR_INPUT:
            answer = data.draw(self.answers)
            try:
                self.portal.call(lambda: self.engine.resume(run_id, answer))
            except InvalidRunState:
                pass  # it was cancelled or ended meanwhile

    @precondition(lambda self: bool(self.run_ids))
    @rule(data=st.data())
    def cancel_run(self, data: st.DataObject) -> None:
        run_id = data.draw(st.sampled_from(self.run_ids))
        state = self.portal.call(lambda: self.engine.cancel(run_id))
        assert state.terminal
        again = self.portal.call(lambda: self.engine.cancel(run_id))
        assert again == state, "cancel must be idempotent"

    @precondition(lambda self: bool(self.run_ids))
    @rule(data=st.data())
    def send_signal(self, data: st.DataObject) -> None:
        """A signal (runengine.signals) to a run in any state: recorded until it ends, then refused
        (InvalidRunState) with nothing written."""
        run_id = data.draw(st.sampled_from(self.run_ids))
        payload = data.draw(self.inputs)
        try:
            self.portal.call(lambda: self.engine.signal(run_id, "machine", payload))
        except InvalidRunState:
            assert self.portal.call(lambda: self.engine.status(run_id)).terminal

    @invariant()
    def logs_are_gapless_and_fold_to_status(self) -> None:
        for run_id in self.run_ids:
            events, state = self.portal.call(self._log_and_status, run_id)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert fold(events) == state
            if run_id in self.finished:
                assert state == self.finished[run_id], "an ended run changed"
            elif state.terminal:
                self.finished[run_id] = state

    async def _log_and_status(self, run_id: str) -> tuple[list[Event], RunState]:
        # The run may move on while we read: take the state first, then its log up to that seq
        # (a log only grows, so that prefix is fixed).
        state = await self.engine.status(run_id)
        events = [e async for e in self.engine.events(run_id, follow=False)][: state.last_seq]
        assert len(events) == state.last_seq, "status reports events the log does not have"
        return events, state
