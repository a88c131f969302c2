"""The storage conformance suite: what every store must do, as pytest tests.

One suite per port: `LogConformance` (the run log, `runengine.ports.EventStore`: what every
store must pass), `SessionConformance`, `IdempotencyConformance` and `EndedRunsConformance` (the
small ports a store may keep beside its log), `ScheduleConformance` (runengine.schedules'
ScheduleStore); `StoreConformance` is all five (a full store).
A store passes when a test module subclasses the suites of the ports it declares and provides
a `store_factory` fixture: a zero-argument callable returning an async context manager that
yields an opened, EMPTY store (a new one on every call):

    import contextlib, pytest
    from runengine.testing.conformance import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store_factory(self, tmp_path):
            counter = iter(range(1_000_000))

            @contextlib.asynccontextmanager
            async def factory():
                async with MyStore(tmp_path / f"db{next(counter)}") as store:
                    yield store

            return factory

The tests are `@pytest.mark.anyio` tests, run on the backends your `anyio_backend`
fixture gives. The state-machine test enters the factory in an anyio blocking
portal (its own event loop, in another thread), so the factory must create
everything it uses when entered. Needs pytest and hypothesis (`runengine[testing]`).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import attrs
import anyio.from_thread
import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from runengine.errors import ConcurrencyConflict, InvalidRequest, RunEngineError
from runengine.events import (
    ChildEnded,
    ChildSpawned,
    Custom,
    ErrorInfo,
    Event,
    MessageCompleted,
    MessageDelta,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunInput,
    RunInputTimedOut,
    RunForked,
    RunStarted,
    RunWaitingForInput,
    SignalMissed,
    SignalReceived,
    SignalTaken,
    SignalWaiting,
    StepCompleted,
    Thought,
    TimerFired,
    ToolCall,
    ToolResult,
    UnknownEvent,
    Usage,
)
from runengine.idempotency import IdempotencyStore
from runengine.ports import (
    MAX_PAGE, EventStore, IdempotencyRecord, RecordedReader, RunSummary, SessionRecord, SessionStore, WakeIndex, last_seq,
)
from runengine.retention import EndedRuns
from runengine.schedules import Schedule, ScheduleStore
from runengine.reducer import Fold
from runengine.reducer import fold as fold_log
from runengine.status import Status
from runengine.stores import open_store
from runengine.testing.strategies import next_event
from runengine.transitions import status_after
from runengine.wire import event_data, loads_stored

StoreFactory = Callable[[], AbstractAsyncContextManager[EventStore]]

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: Generous: the suite must not be flaky on a loaded machine.
TIMEOUT = 30.0


# -- building events -------------------------------------------------------------------


def created(run_id: str, *, agent: str = "agent", session_id: str | None = None, owner: str | None = None,
            input: Any = None, at: datetime = T0) -> RunCreated:
    return RunCreated(run_id=run_id, seq=1, at=at, agent=agent, session_id=session_id, owner=owner, input=input)


def started(run_id: str, seq: int = 2, at: datetime = T0) -> RunStarted:
    return RunStarted(run_id=run_id, seq=seq, at=at, worker="w1", attempt=1)


def deltas(run_id: str, first_seq: int, count: int, *, message_id: str = "m1", at: datetime = T0) -> list[Event]:
    return [
        MessageDelta(run_id=run_id, seq=first_seq + i, at=at + timedelta(microseconds=i), message_id=message_id, content=f"t{first_seq + i} ")
        for i in range(count)
    ]


def new_log(run_id: str, count: int, **created_args: Any) -> list[Event]:
    """run.created, run.started and `count - 2` deltas: a valid log of `count` events."""
    assert count >= 2
    return [created(run_id, **created_args), started(run_id), *deltas(run_id, 3, count - 2)]


def key_record(
    key: str, run_id: str, *, at: datetime = T0, principal: str = "", scope: str = "native", fingerprint: str = "f"
) -> IdempotencyRecord:
    return IdempotencyRecord(
        principal=principal, scope=scope, key=key, fingerprint=fingerprint, run_id=run_id, created_at=at
    )


async def read_all(store: EventStore, run_id: str, *, page: int = 500) -> list[Event]:
    out: list[Event] = []
    while True:
        batch = await store.read(run_id, after_seq=out[-1].seq if out else 0, limit=page)
        out.extend(batch)
        if len(batch) < page:
            return out


async def list_all(store: EventStore, *, limit: int = 3, **filters: Any) -> list[list[RunSummary]]:
    """Every page of a listing (each page as a list), following the cursor to the end."""
    pages: list[list[RunSummary]] = []
    before: str | None = None
    while True:
        page = await store.list_runs(limit=limit, before=before, **filters)
        pages.append(list(page.runs))
        before = page.next_before
        if before is None:
            return pages
        assert len(pages) < 10_000, "the listing cursor does not advance"


async def list_ended_all(store: EndedRuns, *, ended_before: datetime, limit: int = 3) -> list[list[RunSummary]]:
    """Every page of `list_ended_runs` (each page as a list), following the cursor to the end."""
    pages: list[list[RunSummary]] = []
    after: str | None = None
    while True:
        page = await store.list_ended_runs(ended_before=ended_before, limit=limit, after=after)
        pages.append(list(page.runs))
        after = page.next_after
        if after is None:
            return pages
        assert len(pages) < 10_000, "the listing cursor does not advance"


async def idle_listings(store: WakeIndex, *, limit: int = 3) -> tuple[list[list[RunSummary]], list[list[RunSummary]]]:
    """Every page of `list_waking` and of `list_busy` (the timer index), following the cursors."""
    waking: list[list[RunSummary]] = []
    busy: list[list[RunSummary]] = []
    cursor: str | None = None
    while True:
        page = await store.list_waking(limit=limit, after=cursor)
        waking.append(list(page.runs))
        if (cursor := page.next_before) is None:
            break
        assert len(waking) < 10_000, "the listing cursor does not advance"
    while True:
        page = await store.list_busy(limit=limit, before=cursor)
        busy.append(list(page.runs))
        if (cursor := page.next_before) is None:
            return waking, busy
        assert len(busy) < 10_000, "the listing cursor does not advance"


def without_wake(value: Any) -> Any:
    """`value` with every run summary's wake time dropped: how a store that keeps no timer index
    (no WakeIndex) is compared with the model."""
    if isinstance(value, RunSummary):
        return attrs.evolve(value, wake_at=None)
    if isinstance(value, (list, tuple)):
        return type(value)(without_wake(item) for item in value)
    if attrs.has(type(value)) and hasattr(value, "runs"):
        return attrs.evolve(value, runs=without_wake(value.runs))
    return value


# -- hypothesis: valid next events for a run ---------------------------------------------

_texts = st.text(max_size=12)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=6,
)
_times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc))


#: How often a type comes, against 1 for the others (a run streams mostly deltas, a pending run mostly starts).
# A durable wait's end (a timer firing, an input timing out) can follow only its own start, and
# competes there with every other allowed type: weighted up so that many generated logs hold one.
_WEIGHTS = {
    MessageDelta.type: 8, RunStarted.type: 6, RunInput.type: 3, ToolResult.type: 2,
    TimerFired.type: 4, RunInputTimedOut.type: 3,
}
#: Runs the listing tests filter on: a few agents, sessions and owners; no delayed runs or timeouts.
_OVERRIDES = {
    RunCreated.type: {
        "agent": st.sampled_from(["a", "b"]),
        "input": _json_values,
        "session_id": st.sampled_from([None, "s1", "s2"]),
        "owner": st.sampled_from([None, "alice", "bob"]),
        "metadata": st.dictionaries(_texts, _texts, max_size=2),
        "start_at": st.none(),
        "timeout": st.none(),
    }
}


def draw_next_event(data: st.DataObject, fold: Fold, run_id: str) -> Event | None:
    """A random event that `fold` accepts next (None once the run has ended): any type the table
    and the guards allow now (runengine.testing.strategies.next_event)."""
    if fold.status is not None and fold.status.terminal:
        return None
    at = data.draw(_times)
    event: Event = data.draw(next_event(fold, run_id, at=at, weights=_WEIGHTS, overrides=_OVERRIDES))
    return event


def draw_events(data: st.DataObject, fold: Fold, run_id: str, count: int) -> list[Event]:
    """Up to `count` valid next events, folded into `fold` as they are drawn."""
    out: list[Event] = []
    for _ in range(count):
        event = draw_next_event(data, fold, run_id)
        if event is None:
            break
        fold.apply(event)
        out.append(event)
    return out


@st.composite
def _snapshot_cases(draw: st.DrawFn) -> tuple[list[Event], list[int], int]:
    """A log, the sizes of the batches it is appended in, and where a snapshot cuts it. Drawn
    before the test's coroutine starts: hypothesis ends an example by raising from a draw, which
    must not cross the anyio runner's task (it reports the exception as never retrieved)."""
    data = draw(st.data())
    log = draw_events(data, Fold(), "r", draw(st.integers(1, 60)))
    batches: list[int] = []
    while sum(batches) < len(log):
        batches.append(draw(st.integers(1, 10)))
    return log, batches, draw(st.integers(1, len(log)))


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """A comparable result of a store call: its value, or its error's type and key facts."""
    try:
        return ("ok", call())
    except ConcurrencyConflict as exc:
        return ("conflict", exc.actual_seq)
    except RunEngineError as exc:
        return (type(exc).__name__, exc.code)


_slow = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]


# -- the suite -------------------------------------------------------------------------


class LogConformance:
    """Every behaviour of the run log, `runengine.ports.EventStore`. Subclass it and provide
    `store_factory`. (StoreConformance adds the small ports a full store keeps beside it.)"""

    #: Examples for the property test and the state machine (lower it for slow stores).
    max_examples = 40
    stateful_step_count = 25

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("provide a `store_factory` fixture in your conformance subclass")

    # -- empty store, append, read ----------------------------------------------

    @pytest.mark.anyio
    async def test_empty_store(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            assert await store.read("nope") == []
            assert await last_seq(store, "nope") == 0
            assert await store.get_run("nope") is None
            assert (await store.list_runs()).runs == ()
            assert (await store.list_runs()).next_before is None
            assert await store.load_snapshot("nope") is None
            assert await store.wait("nope", after_seq=0, timeout=0.05) is False

    @pytest.mark.anyio
    async def test_append_then_read(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            log = new_log("r1", 10, agent="echo", session_id="s", owner="o", input={"q": "hi"})
            await store.append("r1", log[:1], expected_seq=0)
            await store.append("r1", log[1:], expected_seq=1)
            assert await store.read("r1") == log
            assert await store.read("r1", after_seq=4) == log[4:]
            assert await store.read("r1", after_seq=4, limit=2) == log[4:6]
            assert await store.read("r1", after_seq=10) == []
            assert await store.read("r1", after_seq=99) == []
            assert await last_seq(store, "r1") == 10
            summary = await store.get_run("r1")
            assert summary == RunSummary(
                run_id="r1", agent="echo", status=Status.RUNNING, session_id="s", owner="o",
                created_at=log[0].at, updated_at=log[-1].at, last_seq=10,
            )
            assert await store.read("other") == []

    @pytest.mark.anyio
    async def test_every_event_type_reads_back_equal(self, store_factory: StoreFactory) -> None:
        at = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=timezone.utc)
        log: list[Event] = [
            RunCreated(run_id="r", seq=1, at=at, agent="a", input={"x": [1, "two", None], "big": -(10**40), "max": 1.7976931348623157e308}, metadata={"k": "v", "n": 2**64}, mode="stream", timeout=2.5),
            RunStarted(run_id="r", seq=2, at=at, worker="w", attempt=1),
            MessageDelta(run_id="r", seq=3, at=at, message_id="m", content="héllo \u2603 \"q\" \n"),
            MessageCompleted(run_id="r", seq=4, at=at, message_id="m", content="héllo"),
            Thought(run_id="r", seq=5, at=at, content="t", source="s"),
            ToolCall(run_id="r", seq=6, at=at, call_id="c", name="n", arguments={"a": 1}),
            ToolResult(run_id="r", seq=7, at=at, call_id="c", output=[1, 2]),
            Usage(run_id="r", seq=8, at=at, input_tokens=3, output_tokens=4, cost=0.25),
            Custom(run_id="r", seq=9, at=at, name="c", data={"d": True, "n": 10**100}),
            UnknownEvent(run_id="r", seq=10, at=at, type="x.from_the_future", data={"v": 2}),
            RunWaitingForInput(run_id="r", seq=11, at=at, request={"ask": "?"}),
            RunInput(run_id="r", seq=12, at=at, content="answer"),
            RunFailed(run_id="r", seq=13, at=at, error=ErrorInfo(code="boom", message="m")),
        ]
        async with store_factory() as store:
            for event in log:
                await store.append("r", [event], expected_seq=event.seq - 1)
            assert await store.read("r") == log
            assert (await store.get_run("r")).status is Status.FAILED  # type: ignore[union-attr]

    @pytest.mark.anyio
    async def test_read_recorded_gives_what_read_gives(self, store_factory: StoreFactory) -> None:
        """The RecordedReader port (optional): the same rows as `read`, in the same pages, each
        decoding to the event `read` gives (as often as asked); a row's payload is the event's
        stored data (as JSON text or decoded), or the event itself."""
        at = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=timezone.utc)
        log: list[Event] = [
            *new_log("r", 3),
            StepCompleted(run_id="r", seq=4, at=at, name="s", output={"big": 10**40, "list": [1, "two", None]}),
            StepCompleted(run_id="r", seq=5, at=at, name="s", error=ErrorInfo(code="ValueError", message="no")),
            UnknownEvent(run_id="r", seq=6, at=at, type="x.from_the_future", data={"v": 2}),
            *deltas("r", 7, 600),
        ]
        async with store_factory() as store:
            if not isinstance(store, RecordedReader):
                pytest.skip("this store has no RecordedReader port (a replay reads it with `read`)")
            await store.append("r", log[:5], expected_seq=0)
            await store.append("r", log[5:], expected_seq=5)
            for after_seq, limit in ((0, MAX_PAGE), (0, 500), (3, 2), (500, 1000), (606, 10), (99, 1)):
                events = await store.read("r", after_seq=after_seq, limit=limit)
                page = await store.read_recorded("r", after_seq=after_seq, limit=limit)
                assert [(row[0], row[1]) for row in page.rows] == [(event.seq, event.type) for event in events]
                for row, event in zip(page.rows, events):
                    payload = row[3]
                    if isinstance(payload, (str, bytes)):
                        payload = loads_stored(payload)
                    assert payload == event or payload == event_data(event)
                    assert page.event(row) == event
                    assert page.event(row) == event  # built afresh, the row unchanged
            assert (await store.read_recorded("other")).rows == []
            for bad in ({"after_seq": -1}, {"limit": 0}):
                with pytest.raises(InvalidRequest):
                    await store.read_recorded("r", **bad)

    @pytest.mark.anyio
    async def test_child_run_and_signal_events_read_back_equal(self, store_factory: StoreFactory) -> None:
        """The events of child runs and signals (runengine.children, runengine.signals), and the
        state they fold to (its children and signals, in a snapshot), come back as written."""
        at = datetime(2026, 5, 4, 3, 2, 1, tzinfo=timezone.utc)
        log: list[Event] = [
            RunCreated(run_id="r", seq=1, at=at, agent="a", parent_run_id="the-parent"),
            SignalReceived(run_id="r", seq=2, at=at, signal_id="s1", name="early", payload={"n": [1, None]}),
            RunStarted(run_id="r", seq=3, at=at, worker="w"),
            ChildSpawned(run_id="r", seq=4, at=at, child_run_id="c1", agent="sub"),
            ChildSpawned(run_id="r", seq=5, at=at, child_run_id="c2", agent="sub"),
            SignalWaiting(run_id="r", seq=6, at=at, name="late", expires_at=at + timedelta(seconds=5)),
            SignalReceived(run_id="r", seq=7, at=at, signal_id="s2", name="late", payload="hi"),
            SignalTaken(run_id="r", seq=8, at=at, signal_id="s2"),
            SignalMissed(run_id="r", seq=9, at=at, name="never"),
            ChildEnded(run_id="r", seq=10, at=at, child_run_id="c1", status="completed", output={"x": 1}),
            ChildEnded(run_id="r", seq=11, at=at, child_run_id="c2", status="failed", error=ErrorInfo(code="e", message="m")),
        ]
        async with store_factory() as store:
            await store.append("r", log[:5], expected_seq=0)
            await store.append("r", log[5:], expected_seq=5)
            assert await store.read("r") == log
            state = fold_log(log)
            assert state is not None and state.parent_run_id == "the-parent"
            assert [(c.run_id, c.status) for c in state.children] == [("c1", "completed"), ("c2", "failed")]
            assert [(s.signal_id, s.taken) for s in state.signals] == [("s1", False), ("s2", True)]
            await store.save_snapshot(state)
            assert await store.load_snapshot("r") == state

    # -- optimistic concurrency ---------------------------------------------------

    @pytest.mark.anyio
    async def test_conflict_writes_nothing(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            log = new_log("r", 5)
            await store.append("r", log, expected_seq=0)
            before = await store.get_run("r")
            with pytest.raises(ConcurrencyConflict) as stale:
                await store.append("r", deltas("r", 4, 3), expected_seq=3)
            assert stale.value.actual_seq == 5 and stale.value.expected_seq == 3
            with pytest.raises(ConcurrencyConflict) as ahead:
                await store.append("r", deltas("r", 8, 1), expected_seq=7)
            assert ahead.value.actual_seq == 5
            with pytest.raises(ConcurrencyConflict) as again:
                await store.append("r", [created("r")], expected_seq=0)
            assert again.value.actual_seq == 5
            with pytest.raises(ConcurrencyConflict) as missing:
                await store.append("ghost", deltas("ghost", 3, 1), expected_seq=2)
            assert missing.value.actual_seq == 0
            assert await store.read("r") == log
            assert await store.get_run("r") == before
            assert await store.get_run("ghost") is None
            assert await store.read("ghost") == []

    @pytest.mark.anyio
    async def test_bad_arguments_raise_invalid_request_and_change_nothing(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            log = new_log("r", 4)
            await store.append("r", log, expected_seq=0)
            before = await store.get_run("r")
            bad_appends: list[tuple[str, list[Event], int]] = [
                ("r", [], 4),  # nothing
                ("r", deltas("r", 5, 1), -1),  # negative expected
                ("r", deltas("other", 5, 1), 4),  # another run's event
                ("r", deltas("r", 6, 1), 4),  # gap
                ("r", [*deltas("r", 5, 1), *deltas("r", 5, 1)], 4),  # duplicate seq
                ("r", [created("r")], 4),  # run.created later
                ("new", deltas("new", 1, 1), 0),  # a log not starting with run.created
                ("new", [created("new"), created("new")], 0),
                # not JSON: NaN and Infinity cannot be written back (and a good event beside them is not kept)
                ("r", [*deltas("r", 5, 1), Custom(run_id="r", seq=6, at=T0, name="c", data={"x": float("nan")})], 4),
                ("r", [Custom(run_id="r", seq=5, at=T0, name="c", data=[float("-inf")])], 4),
            ]
            for run_id, events, expected in bad_appends:
                with pytest.raises(InvalidRequest):
                    await store.append(run_id, events, expected_seq=expected)
            for after_seq, limit in [(-1, 10), (0, 0), (0, -5), (0, MAX_PAGE + 1)]:
                with pytest.raises(InvalidRequest):
                    await store.read("r", after_seq=after_seq, limit=limit)
            for limit in (0, MAX_PAGE + 1):
                with pytest.raises(InvalidRequest):
                    await store.list_runs(limit=limit)
            for cursor in ("x", "-1", "1.5"):
                with pytest.raises(InvalidRequest):
                    await store.list_runs(before=cursor)
            assert await store.read("r") == log
            assert await store.get_run("r") == before
            assert await store.get_run("new") is None
            assert [r.run_id for r in (await store.list_runs()).runs] == ["r"]

    # -- paging and waiting -------------------------------------------------------

    @pytest.mark.anyio
    async def test_paged_reads_cover_the_log_exactly(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            log = new_log("r", 1234)
            for start in range(0, len(log), 300):
                await store.append("r", log[start : start + 300], expected_seq=start)
            for page in (1, 7, 500, MAX_PAGE):
                if page == 1:
                    got = [e for after in range(0, 1234, 97) for e in await store.read("r", after_seq=after, limit=1)]
                    assert got == [log[after] for after in range(0, 1234, 97)]
                    continue
                assert await read_all(store, "r", page=page) == log
            assert len(await store.read("r", limit=MAX_PAGE)) == 1234
            assert await store.read("r", after_seq=1230, limit=500) == log[1230:]

    @pytest.mark.anyio
    async def test_wait(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            log = new_log("r", 3)
            await store.append("r", log, expected_seq=0)
            with anyio.fail_after(TIMEOUT):
                assert await store.wait("r", after_seq=2) is True
                assert await store.wait("r", after_seq=3, timeout=0.05) is False
                woke: list[bool] = []

                async def waiter(after: int) -> None:
                    woke.append(await store.wait("r", after_seq=after, timeout=TIMEOUT))

                async with anyio.create_task_group() as tg:
                    for _ in range(5):
                        tg.start_soon(waiter, 3)
                    tg.start_soon(waiter, 4)  # must NOT wake for seq 4; the last append satisfies it
                    await anyio.wait_all_tasks_blocked()  # the waiters are waiting: the appends must wake them
                    await store.append("r", deltas("r", 4, 1), expected_seq=3)
                    await store.append("r", deltas("r", 5, 1), expected_seq=4)
                assert woke == [True] * 6
                # a wait that starts before the run exists wakes when it is created
                async with anyio.create_task_group() as tg:
                    tg.start_soon(waiter, 0)
                    await store.append("later", new_log("later", 2), expected_seq=0)

    # -- listing -----------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_list_runs_filters_and_cursor(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            spec = [  # run id, session, owner, how far it gets
                ("r1", "s1", "alice", "running"),
                ("r2", "s1", "bob", "pending"),
                ("r3", "s2", "alice", "completed"),
                ("r4", None, None, "running"),
                ("r5", "s1", "alice", "cancelled"),
                ("r6", "s2", "bob", "running"),
                ("r7", "s1", "alice", "running"),
            ]
            for i, (run_id, session, owner, goal) in enumerate(spec):
                at = T0 + timedelta(seconds=i)
                await store.append(run_id, [created(run_id, session_id=session, owner=owner, at=at)], expected_seq=0)
                if goal != "pending":
                    await store.append(run_id, [started(run_id, at=at)], expected_seq=1)
                if goal == "completed":
                    await store.append(run_id, [RunCompleted(run_id=run_id, seq=3, at=at, output="ok")], expected_seq=2)
                if goal == "cancelled":
                    await store.append(run_id, [RunCancelled(run_id=run_id, seq=3, at=at)], expected_seq=2)
            everything = [s[0] for s in reversed(spec)]
            assert [r.run_id for r in (await store.list_runs()).runs] == everything
            for limit in (1, 2, 3, 7, 50):
                pages = await list_all(store, limit=limit)
                assert [r.run_id for page in pages for r in page] == everything
                assert all(len(page) == limit for page in pages[:-1])
            cases: list[dict[str, Any]] = [
                {"session_id": "s1"},
                {"session_id": "s2", "status": Status.RUNNING},
                {"status": Status.RUNNING},
                {"owner": "alice"},
                {"owner": "alice", "session_id": "s1", "status": Status.RUNNING},
                {"status": Status.PENDING},
                {"session_id": "none-such"},
            ]
            goals = {"running": Status.RUNNING, "pending": Status.PENDING, "completed": Status.COMPLETED, "cancelled": Status.CANCELLED}
            for filters in cases:
                expected = [
                    run_id for run_id, session, owner, goal in reversed(spec)
                    if filters.get("session_id", session) == session
                    and filters.get("owner", owner) == owner
                    and filters.get("status", goals[goal]) == goals[goal]
                ]
                for limit in (1, 2, 50):
                    pages = await list_all(store, limit=limit, **filters)
                    assert [r.run_id for page in pages for r in page] == expected, filters
            summary = await store.get_run("r3")
            assert summary is not None and summary.status is Status.COMPLETED and summary.last_seq == 3
            assert summary.session_id == "s2" and summary.owner == "alice" and summary.agent == "agent"
            if not isinstance(store, SessionStore):
                return
            # A session's runs counted by status, as the listing shows them (one query, no row per run).
            for session, owner in (("s1", None), ("s1", "alice"), ("s2", "bob"), ("none-such", None)):
                mine = [(i, goal) for i, (_, s, o, goal) in enumerate(spec) if s == session and owner in (None, o)]
                counted = await store.count_session_runs(session, owner=owner)
                by_status: dict[Status, int] = {}
                for _, goal in mine:
                    by_status[goals[goal]] = by_status.get(goals[goal], 0) + 1
                assert counted.by_status == by_status and counted.count == len(mine), (session, owner)
                first = T0 + timedelta(seconds=mine[0][0]) if mine else None
                assert counted.first_created_at == first, (session, owner)

    @pytest.mark.anyio
    async def test_listing_pages_before_a_run_id(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            ids = [f"c{i}" for i in range(7)]
            owners = {run_id: "alice" if i % 2 else "bob" for i, run_id in enumerate(ids)}
            for i, run_id in enumerate(ids):
                await store.append(run_id, [created(run_id, owner=owners[run_id], at=T0 + timedelta(seconds=i))], expected_seq=0)
            assert (await store.list_runs(before_run="none-such")).runs == ()
            with pytest.raises(InvalidRequest):
                await store.list_runs(before="1", before_run="c3")
            for filters in ({}, {"owner": "alice"}):
                expected = [r for r in reversed(ids) if filters.get("owner", owners[r]) == owners[r]]
                for limit in (1, 2, 3):
                    seen: list[str] = []
                    before_run: str | None = None
                    while True:  # page by the last run id of each page, as a client that has only ids does
                        runs = (await store.list_runs(limit=limit, before_run=before_run, **filters)).runs
                        seen += [r.run_id for r in runs]
                        if len(runs) < limit:
                            break
                        before_run = runs[-1].run_id
                        assert len(seen) <= len(ids)
                    assert seen == expected, (filters, limit)

    @pytest.mark.anyio
    async def test_listing_status_follows_the_transition_table(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            steps: list[Event] = [
                created("r"), started("r"), *deltas("r", 3, 2),
                RunWaitingForInput(run_id="r", seq=5, at=T0), Usage(run_id="r", seq=6, at=T0),
                RunInput(run_id="r", seq=7, at=T0, content="x"), RunCompleted(run_id="r", seq=8, at=T0),
            ]
            status: Status | None = None
            for event in steps:
                await store.append("r", [event], expected_seq=event.seq - 1)
                status = status_after(status, [event.type])
                summary = await store.get_run("r")
                assert summary is not None and summary.status is status and summary.last_seq == event.seq
                assert [r.run_id for r in (await store.list_runs(status=status)).runs] == ["r"]

    # -- snapshots -----------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_snapshots_keep_the_latest(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            log = new_log("r", 20)
            await store.append("r", log, expected_seq=0)
            fold = Fold()
            fold.apply_all(log[:10])
            at_10 = fold.state
            fold.apply_all(log[10:])
            at_20 = fold.state
            assert at_10 is not None and at_20 is not None
            await store.save_snapshot(at_10)
            assert await store.load_snapshot("r") == at_10
            await store.save_snapshot(at_20)
            assert await store.load_snapshot("r") == at_20
            await store.save_snapshot(at_10)  # an older snapshot never replaces a newer one
            assert await store.load_snapshot("r") == at_20
            assert await store.load_snapshot("other") is None

    @settings(max_examples=20, deadline=None, suppress_health_check=_slow)
    @given(case=_snapshot_cases())
    @pytest.mark.anyio
    async def test_snapshot_plus_tail_equals_full_fold(
        self, store_factory: StoreFactory, case: tuple[list[Event], list[int], int]
    ) -> None:
        log, batches, split = case
        async with store_factory() as store:
            cut = 0
            for size in batches:
                await store.append("r", log[cut : cut + size], expected_seq=cut)
                cut += size
            stored = await read_all(store, "r", page=7)
            assert stored == log
            head = Fold()
            head.apply_all(stored[:split])
            assert head.state is not None
            await store.save_snapshot(head.state)
            snapshot = await store.load_snapshot("r")
            assert snapshot == head.state
            resumed = Fold(snapshot)
            resumed.apply_all(await store.read("r", after_seq=resumed.last_seq, limit=MAX_PAGE))
            whole = Fold()
            whole.apply_all(stored)
            assert resumed.state == whole.state

    # -- deleting runs ---------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_delete_run_removes_everything_of_that_run_only(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            for run_id in ("gone", "kept"):
                await store.append(run_id, [*new_log(run_id, 6), RunCompleted(run_id=run_id, seq=7, at=T0)], expected_seq=0)
                head = Fold()
                head.apply_all(await store.read(run_id, limit=4))
                assert head.state is not None
                await store.save_snapshot(head.state)
            kept_log, kept_run = await read_all(store, "kept"), await store.get_run("kept")
            kept_snapshot = await store.load_snapshot("kept")

            assert await store.delete_run("gone") is True
            assert await store.read("gone") == []
            assert await last_seq(store, "gone") == 0
            assert await store.get_run("gone") is None
            assert await store.load_snapshot("gone") is None
            assert [r.run_id for r in (await store.list_runs()).runs] == ["kept"]
            assert await store.delete_run("gone") is False  # idempotent
            assert await store.delete_run("never") is False

            assert await read_all(store, "kept") == kept_log
            assert await store.get_run("kept") == kept_run
            assert await store.load_snapshot("kept") == kept_snapshot
            # the id may be used again, as a new run
            await store.append("gone", new_log("gone", 3), expected_seq=0)
            assert await last_seq(store, "gone") == 3

    # -- concurrency ------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_concurrent_appenders_never_duplicate_or_gap(self, store_factory: StoreFactory) -> None:
        writers, each = 8, 25
        async with store_factory() as store:
            await store.append("r", [created("r"), started("r")], expected_seq=0)
            conflicts = 0

            async def appender(writer: int) -> None:
                nonlocal conflicts
                done = 0
                while done < each:
                    last = await last_seq(store, "r")
                    size = min(1 + (writer + done) % 3, each - done)
                    batch = [
                        MessageDelta(run_id="r", seq=last + 1 + i, at=T0, message_id="m", content=f"{writer}:{done + i}")
                        for i in range(size)
                    ]
                    try:
                        await store.append("r", batch, expected_seq=last)
                    except ConcurrencyConflict as exc:
                        assert exc.actual_seq > last
                        conflicts += 1
                        continue
                    done += size

            with anyio.fail_after(TIMEOUT):
                async with anyio.create_task_group() as tg:
                    for writer in range(writers):
                        tg.start_soon(appender, writer)
            log = await read_all(store, "r", page=50)
            assert [e.seq for e in log] == list(range(1, 3 + writers * each))
            contents = sorted(e.content for e in log[2:] if isinstance(e, MessageDelta))
            assert contents == sorted(f"{w}:{i}" for w in range(writers) for i in range(each))
            assert await last_seq(store, "r") == 2 + writers * each
            assert (await store.get_run("r")).last_seq == 2 + writers * each  # type: ignore[union-attr]

    @pytest.mark.anyio
    async def test_many_runs_at_once_and_a_conflict_fails_alone(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            runs = [f"run-{i}" for i in range(20)]

            written: dict[str, list[Event]] = {}

            async def stream(run_id: str) -> None:
                log = written[run_id] = [created(run_id), started(run_id)]
                await store.append(run_id, log[:], expected_seq=0)
                seq = 2
                for size in (1, 5, 2, 10, 1, 3):
                    batch = deltas(run_id, seq + 1, size)
                    await store.append(run_id, batch, expected_seq=seq)
                    log.extend(batch)
                    seq += size

            async def loser() -> None:  # same expected seq as a winner, racing in the same batches
                await store.append("contested", [created("contested")], expected_seq=0)
                results: list[str] = []

                async def attempt(i: int) -> None:
                    try:
                        await store.append("contested", [started("contested")], expected_seq=1)
                        results.append("won")
                    except ConcurrencyConflict as exc:
                        assert exc.actual_seq == 2
                        results.append("lost")

                async with anyio.create_task_group() as inner:
                    for i in range(4):
                        inner.start_soon(attempt, i)
                assert sorted(results) == ["lost", "lost", "lost", "won"]

            with anyio.fail_after(TIMEOUT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(loser)
                    for run_id in runs:
                        tg.start_soon(stream, run_id)
            for run_id in runs:
                log = await read_all(store, run_id)
                assert [e.seq for e in log] == list(range(1, 25))
                assert log == written[run_id]
            assert await last_seq(store, "contested") == 2
            assert len((await store.list_runs(limit=50)).runs) == 21

    @pytest.mark.anyio
    async def test_replay_during_write_gets_exactly_the_log(self, store_factory: StoreFactory) -> None:
        total = 600
        async with store_factory() as store:
            seen: list[Event] = []
            rng = random.Random(7)

            async def writer() -> None:
                await store.append("r", [created("r"), started("r")], expected_seq=0)
                seq = 2
                while seq < total - 1:
                    size = min(rng.choice([1, 1, 2, 5, 17, 40]), total - 1 - seq)
                    await store.append("r", deltas("r", seq + 1, size), expected_seq=seq)
                    seq += size
                    if rng.random() < 0.3:
                        await anyio.sleep(0)
                await store.append("r", [RunCompleted(run_id="r", seq=total, at=T0)], expected_seq=total - 1)

            async def reader(page: int) -> None:
                cursor = 0
                while True:
                    batch = await store.read("r", after_seq=cursor, limit=page)
                    for event in batch:
                        assert event.seq == cursor + 1, "a gap or a duplicate in the replay"
                        cursor = event.seq
                        if page == 13:
                            seen.append(event)
                        if event.terminal:
                            return
                    if not batch:
                        await store.wait("r", after_seq=cursor, timeout=TIMEOUT)

            with anyio.fail_after(TIMEOUT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(reader, 13)
                    tg.start_soon(reader, 500)
                    tg.start_soon(writer)
            assert seen == await read_all(store, "r")
            assert len(seen) == total

    # -- the model: a state machine against MemoryStore ---------------------------------------

    def test_behaves_like_the_memory_store(self, store_factory: StoreFactory, anyio_backend: Any) -> None:
        backend = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]
        with anyio.from_thread.start_blocking_portal(backend=backend) as portal:
            machine = _model_machine(portal, store_factory)

            def new_machine() -> RuleBasedStateMachine:
                return machine()

            # A function, not the class: hypothesis digests its factory's source, and finding a
            # class's source parses its whole module with `ast`, which CPython 3.11 can fail
            # with "AST constructor recursion depth mismatch" while another thread (the portal's
            # event loop) runs (python/cpython#106905); a function's source is found by line.
            run_state_machine_as_test(
                new_machine,
                settings=settings(
                    max_examples=self.max_examples,
                    stateful_step_count=self.stateful_step_count,
                    deadline=None,
                    suppress_health_check=_slow,
                ),
            )




class SessionConformance:
    """Every behaviour of `runengine.ports.SessionStore` (with `store_factory`, as LogConformance)."""

    @pytest.mark.anyio
    async def test_unknown_session(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            assert await store.get_session("nope") is None

    @pytest.mark.anyio
    async def test_add_session_never_replaces(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            alice = SessionRecord(session_id="s1", owner="alice", created_at=T0, metadata={"a": 1})
            assert await store.add_session(alice) == alice
            bob = SessionRecord(session_id="s1", owner="bob", created_at=T0 + timedelta(seconds=1))
            assert await store.add_session(bob) == alice
            assert await store.get_session("s1") == alice

    @pytest.mark.anyio
    async def test_add_session_race_has_one_owner(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            results: list[SessionRecord] = []

            async def add(i: int) -> None:
                results.append(await store.add_session(SessionRecord(session_id="new", owner=f"p{i}", created_at=T0)))

            with anyio.fail_after(TIMEOUT):
                async with anyio.create_task_group() as tg:
                    for i in range(8):
                        tg.start_soon(add, i)
            owners = {r.owner for r in results}
            assert len(results) == 8 and len(owners) == 1
            stored = await store.get_session("new")
            assert stored is not None and stored.owner in owners

    @pytest.mark.anyio
    async def test_sessions(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            session = SessionRecord(
                session_id="s1", owner="alice", created_at=T0, expires_at=T0 + timedelta(hours=1),
                metadata={"topic": "x", "n": [1, 2]}, data={"user": {"id": 7}},
            )
            await store.put_session(session)
            assert await store.get_session("s1") == session
            ended = SessionRecord(session_id="s1", owner="alice", created_at=T0, ended_at=T0 + timedelta(minutes=5))
            await store.put_session(ended)
            got = await store.get_session("s1")
            assert got == ended and got is not None and got.ended
            assert await store.get_session("s2") is None
            for bad in ({"x": float("nan")}, {"x": [float("inf")]}):  # not JSON: refused, nothing changes
                with pytest.raises(InvalidRequest):
                    await store.put_session(SessionRecord(session_id="s1", created_at=T0, metadata=bad))
                with pytest.raises(InvalidRequest):
                    await store.put_session(SessionRecord(session_id="s3", created_at=T0, data=bad))
            assert await store.get_session("s1") == ended and await store.get_session("s3") is None
            huge = SessionRecord(session_id="s4", created_at=T0, metadata={"n": 10**40, "f": 1e308}, data={"m": -(10**30)})
            await store.put_session(huge)  # JSON integers of any size, doubles up to their limit
            assert await store.get_session("s4") == huge


class IdempotencyConformance:
    """Every behaviour of `runengine.idempotency.IdempotencyStore` (with `store_factory`)."""

    @pytest.mark.anyio
    async def test_the_same_record_again_still_holds_the_key(self, store_factory: StoreFactory) -> None:
        # A call retried (say after a lost connection) with the record it stored holds the key;
        # the same key for the same run at another time is a second request, answered with the first.
        async with store_factory() as store:
            record = key_record("k", "r", at=T0)
            assert await store.reserve_idempotency_key(record, ttl=60, pending_for=10) is None
            assert await store.reserve_idempotency_key(record, ttl=60, pending_for=10) is None
            later = key_record("k", "r", at=T0 + timedelta(seconds=1))
            assert await store.reserve_idempotency_key(later, ttl=60, pending_for=10) == record

    @pytest.mark.anyio
    async def test_an_empty_key_is_refused(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            with pytest.raises(InvalidRequest):
                await store.reserve_idempotency_key(key_record("", "r"), ttl=60, pending_for=10)

    @pytest.mark.anyio
    async def test_idempotency_keys(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            for run_id in ("run-a", "run-d"):
                await store.append(run_id, [created(run_id)], expected_seq=0)

            async def reserve(run_id: str, seconds: float, key: str = "k", **identity: str) -> IdempotencyRecord | None:
                record = key_record(key, run_id, at=T0 + timedelta(seconds=seconds), **identity)
                return await store.reserve_idempotency_key(record, ttl=60, pending_for=10)

            first = key_record("k", "run-a", at=T0)
            assert await reserve("run-a", 0) is None  # stored: the caller holds the key
            assert await reserve("run-b", 30) == first  # held: the record that holds it, as stored
            assert await reserve("run-c", 60) == first
            # expired: the key now belongs to the new run
            assert await reserve("run-d", 61) is None
            assert (await reserve("run-e", 62)).run_id == "run-d"  # type: ignore[union-attr]
            # (principal, scope, key) is the identity: each part on its own makes another key
            assert await reserve("run-f", 0, key="other") is None
            assert await reserve("run-g", 62, principal="acme:alice") is None
            assert await reserve("run-h", 62, scope="acp") is None
            assert await reserve("run-i", 62, principal="acme", key="alice:k") is None
            assert (await reserve("run-j", 63, principal="acme:alice")).run_id == "run-g"  # type: ignore[union-attr]

    @pytest.mark.anyio
    async def test_idempotency_key_whose_run_never_came(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            pending = key_record("k", "never", at=T0)
            assert await store.reserve_idempotency_key(pending, ttl=60, pending_for=10) is None
            # Its request may still be creating the run: held, even with another fingerprint
            later = key_record("k", "run-b", at=T0 + timedelta(seconds=10), fingerprint="f2")
            assert await store.reserve_idempotency_key(later, ttl=60, pending_for=10) == pending
            # Past pending_for with no run: its request died, the key is free
            taken = key_record("k", "run-c", at=T0 + timedelta(seconds=11), fingerprint="f2")
            assert await store.reserve_idempotency_key(taken, ttl=60, pending_for=10) is None

    @pytest.mark.anyio
    async def test_released_key_can_be_used_again(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            refused = key_record("k", "refused", at=T0)
            assert await store.reserve_idempotency_key(refused, ttl=60, pending_for=10) is None
            await store.release_idempotency_key(key_record("k", "someone-else", at=T0))  # not bound to it: kept
            again = key_record("k", "retry", at=T0 + timedelta(seconds=1))
            assert await store.reserve_idempotency_key(again, ttl=60, pending_for=10) == refused
            await store.release_idempotency_key(refused)
            assert await store.reserve_idempotency_key(again, ttl=60, pending_for=10) is None
            await store.release_idempotency_key(key_record("never-held", "x"))  # nothing to forget: no error

    @pytest.mark.anyio
    async def test_idempotency_key_race_has_one_winner(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            results: list[IdempotencyRecord | None] = []

            async def reserve(i: int) -> None:
                record = key_record("same", f"run-{i}", fingerprint=f"f{i}")
                results.append(await store.reserve_idempotency_key(record, ttl=60, pending_for=10))

            with anyio.fail_after(TIMEOUT):
                async with anyio.create_task_group() as tg:
                    for i in range(8):
                        tg.start_soon(reserve, i)
            assert len(results) == 8 and results.count(None) == 1
            holders = {r.run_id for r in results if r is not None}
            assert len(holders) == 1 and int(holders.pop().removeprefix("run-")) in range(8)

    @pytest.mark.anyio
    async def test_deleting_a_run_frees_its_keys_only(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            for run_id in ("gone", "kept"):
                await store.append(run_id, [*new_log(run_id, 6), RunCompleted(run_id=run_id, seq=7, at=T0)], expected_seq=0)
                assert await store.reserve_idempotency_key(key_record(f"key-{run_id}", run_id), ttl=3600, pending_for=60) is None
            assert await store.delete_run("gone") is True
            # the key bound to the deleted run is free again (not even held as pending); the other holds
            assert await store.reserve_idempotency_key(key_record("key-gone", "new"), ttl=3600, pending_for=60) is None
            held = await store.reserve_idempotency_key(key_record("key-kept", "new"), ttl=3600, pending_for=60)
            assert held is not None and held.run_id == "kept"


class EndedRunsConformance:
    """Every behaviour of `runengine.retention.EndedRuns` (with `store_factory`)."""

    @pytest.mark.anyio
    async def test_list_ended_runs_by_end_time_paged(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            cutoff = T0 + timedelta(hours=1)
            # (run id, when its last event happened, how it ends: None = still active)
            spec = [
                ("old-done", cutoff - timedelta(minutes=30), "completed"),
                ("old-active", cutoff - timedelta(hours=5), None),
                ("at-cutoff", cutoff, "failed"),
                ("older-cancelled", cutoff - timedelta(minutes=50), "cancelled"),
                ("new-done", cutoff + timedelta(minutes=1), "completed"),
                ("tie-a", cutoff - timedelta(minutes=40), "failed"),
                ("tie-b", cutoff - timedelta(minutes=40), "completed"),
                ("just-before", cutoff - timedelta(microseconds=1), "cancelled"),
            ]
            for run_id, ended, how in spec:
                log: list[Event] = [created(run_id, at=ended - timedelta(minutes=10)), started(run_id, at=ended)]
                if how == "completed":
                    log.append(RunCompleted(run_id=run_id, seq=3, at=ended))
                elif how == "failed":
                    log.append(RunFailed(run_id=run_id, seq=3, at=ended, error=ErrorInfo(code="x", message="y")))
                elif how == "cancelled":
                    log.append(RunCancelled(run_id=run_id, seq=3, at=ended))
                await store.append(run_id, log, expected_seq=0)
            expected = ["older-cancelled", "tie-a", "tie-b", "old-done", "just-before"]
            for limit in (1, 2, 3, 5, 100):
                seen: list[RunSummary] = []
                after: str | None = None
                while True:
                    page = await store.list_ended_runs(ended_before=cutoff, limit=limit, after=after)
                    assert len(page.runs) <= limit
                    seen.extend(page.runs)
                    after = page.next_after
                    if after is None:
                        break
                    assert len(seen) < 100, "the cursor does not advance"
                assert [r.run_id for r in seen] == expected
                assert all(r.status.terminal and r.updated_at is not None and r.updated_at < cutoff for r in seen)
                assert seen == [await store.get_run(r.run_id) for r in seen]
            assert (await store.list_ended_runs(ended_before=T0 - timedelta(days=1))).runs == ()
            for cursor in ("x", "1", "1_-2", "1.5_2", " 1_2"):
                with pytest.raises(InvalidRequest):
                    await store.list_ended_runs(ended_before=cutoff, after=cursor)
            for limit in (0, MAX_PAGE + 1):
                with pytest.raises(InvalidRequest):
                    await store.list_ended_runs(ended_before=cutoff, limit=limit)

    @pytest.mark.anyio
    async def test_a_deleted_run_is_no_longer_listed_as_ended(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            for run_id in ("gone", "kept"):
                await store.append(run_id, [*new_log(run_id, 6), RunCompleted(run_id=run_id, seq=7, at=T0)], expected_seq=0)
            kept_run = await store.get_run("kept")
            assert await store.delete_run("gone") is True
            assert (await store.list_ended_runs(ended_before=T0 + timedelta(days=1))).runs == (kept_run,)


class ScheduleConformance:
    """Every behaviour of `runengine.schedules.ScheduleStore` (with `store_factory`), and a fork's
    first batch (a copied log, then `run.forked`) kept as any log."""

    @staticmethod
    def _schedule(schedule_id: str, owner: str | None = None, **changes: Any) -> Schedule:
        return Schedule(schedule_id=schedule_id, owner=owner, cron="*/5 * * * *", agent="a",
                        input={"n": [1, "two", None], "big": 10**30}, timezone="Europe/Paris", session_id="s",
                        session_policy="reject", metadata={"k": "v"}, missed="catch_up_one",
                        created_at=T0 + timedelta(microseconds=123456), **changes)

    @pytest.mark.anyio
    async def test_schedules_are_kept_by_key_and_never_replaced(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            assert isinstance(store, ScheduleStore)
            alice = self._schedule("daily", "alice")
            assert await store.add_schedule(alice) is True
            assert await store.add_schedule(attrs.evolve(alice, cron="0 * * * *")) is False
            assert await store.add_schedule(self._schedule("daily", None)) is True  # another key
            assert await store.get_schedule(alice.key) == alice
            assert await store.get_schedule("nothing") is None
            assert await store.set_schedule_paused(alice.key, True) is True
            assert (await store.get_schedule(alice.key)).paused is True  # type: ignore[union-attr]
            assert await store.set_schedule_paused("nothing", True) is False
            assert await store.delete_schedule(alice.key) is True
            assert await store.delete_schedule(alice.key) is False
            assert await store.get_schedule(alice.key) is None
            assert await store.get_schedule(self._schedule("daily").key) is not None

    @pytest.mark.anyio
    async def test_a_schedule_only_moves_forward(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            schedule = self._schedule("s")
            await store.add_schedule(schedule)
            slot = T0 + timedelta(minutes=5)
            assert await store.advance_schedule(schedule.key, slot) is True
            assert await store.advance_schedule(schedule.key, slot) is False
            assert await store.advance_schedule(schedule.key, slot - timedelta(microseconds=1)) is False
            assert (await store.get_schedule(schedule.key)).last_slot == slot  # type: ignore[union-attr]
            later = slot + timedelta(minutes=5, microseconds=7)
            assert await store.advance_schedule(schedule.key, later) is True
            assert await store.get_schedule(schedule.key) == attrs.evolve(schedule, last_slot=later)
            assert await store.advance_schedule("nothing", later) is False

    @pytest.mark.anyio
    async def test_list_schedules_by_key_paged_and_by_owner(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            made = [self._schedule(f"s{i}", owner) for i in range(5) for owner in ("alice", "bob", None)]
            for schedule in made:
                await store.add_schedule(schedule)
            by_key = sorted(made, key=lambda s: s.key)
            for limit in (1, 2, 7, 100):
                seen: list[Schedule] = []
                after: str | None = None
                while True:
                    page = await store.list_schedules(after=after, limit=limit)
                    assert len(page) <= limit
                    seen.extend(page)
                    if len(page) < limit:
                        break
                    after = page[-1].key
                assert seen == by_key
            alice = await store.list_schedules(owner="alice", limit=100)
            assert alice == [s for s in by_key if s.owner == "alice"]
            assert await store.list_schedules(owner="alice", after=alice[1].key, limit=2) == alice[2:4]

    @pytest.mark.anyio
    async def test_a_forked_log_reads_back_equal(self, store_factory: StoreFactory) -> None:
        async with store_factory() as store:
            source = [*new_log("src", 5), ToolCall(run_id="src", seq=6, at=T0, call_id="c", name="n")]
            forked = [attrs.evolve(e, run_id="fork") for e in source]
            forked.append(RunForked(run_id="fork", seq=7, at=T0, source_run_id="src", source_seq=6, replaced=True))
            await store.append("fork", forked, expected_seq=0)
            assert await store.read("fork") == forked
            summary = await store.get_run("fork")
            assert summary is not None and summary.status is Status.RUNNING and summary.last_seq == 7


class StoreConformance(LogConformance, SessionConformance, IdempotencyConformance, EndedRunsConformance, ScheduleConformance):
    """A full store: the run log and every small port of the core (sessions, idempotency records,
    the ended-run listing, schedules). Subclass it and provide `store_factory`."""

def _model_machine(portal: anyio.from_thread.BlockingPortal, factory: StoreFactory) -> type[RuleBasedStateMachine]:
    """A state machine doing the same random operations on the store and on MemoryStore (the model)."""

    class StoreMachine(RuleBasedStateMachine):
        runs = Bundle("runs")

        def __init__(self) -> None:
            super().__init__()
            self._cm = portal.wrap_async_context_manager(factory())
            self.store: EventStore = self._cm.__enter__()
            self.model = open_store("memory://")  # MemoryStore, found like any store (the core never imports adapters)
            self.folds: dict[str, Fold] = {}
            self.now = T0
            self.counter = 0

        def teardown(self) -> None:
            self._cm.__exit__(None, None, None)

        def both(self, name: str, *args: Any, **kwargs: Any) -> tuple[str, Any]:
            got = _outcome(lambda: portal.call(lambda: getattr(self.store, name)(*args, **kwargs)))
            want = _outcome(lambda: portal.call(lambda: getattr(self.model, name)(*args, **kwargs)))
            if not isinstance(self.store, WakeIndex):
                want = without_wake(want)
            assert got == want, f"{name}{args}{kwargs}: store gave {got!r}, the model {want!r}"
            return got

        @rule(target=runs, data=st.data())
        def create_run(self, data: st.DataObject) -> str:
            self.counter += 1
            run_id = f"run-{self.counter}"
            fold = Fold()
            events = draw_events(data, fold, run_id, data.draw(st.integers(1, 4), label="events"))
            self.both("append", run_id, events, expected_seq=0)
            self.folds[run_id] = fold
            return run_id

        @rule(run_id=runs, data=st.data(), skew=st.sampled_from([0, 0, 0, 0, -1, 1]))
        def append(self, run_id: str, data: st.DataObject, skew: int) -> None:
            fold = self.folds[run_id]
            trial = Fold(fold.state)
            events = draw_events(data, trial, run_id, data.draw(st.integers(1, 6), label="events"))
            if not events:
                return
            expected = fold.last_seq + skew
            if skew:  # a stale or future expected seq: both must refuse, writing nothing
                events = [_renumber(e, e.seq + skew) for e in events]
            outcome = self.both("append", run_id, events, expected_seq=expected)
            if outcome[0] == "ok":
                self.folds[run_id] = trial

        @rule(run_id=runs, count=st.integers(1, 300))
        def burst_of_deltas(self, run_id: str, count: int) -> None:
            fold = self.folds[run_id]
            if fold.status is not Status.RUNNING:
                return
            message_id = fold.open_message_id or f"burst{fold.last_seq}"
            events = [
                MessageDelta(run_id=run_id, seq=fold.last_seq + 1 + i, at=self.now, message_id=message_id, content=str(i))
                for i in range(count)
            ]
            self.both("append", run_id, events, expected_seq=fold.last_seq)
            fold.apply_all(events)

        @rule(run_id=runs, data=st.data())
        def bad_append(self, run_id: str, data: st.DataObject) -> None:
            fold = self.folds[run_id]
            if fold.status is None:  # deleted: "created again" would be a good append
                return
            kind = data.draw(st.sampled_from(["empty", "gap", "wrong run", "negative", "created again"]))
            last = fold.last_seq
            delta = MessageDelta(run_id=run_id, seq=last + 1, at=self.now, message_id="x", content="x")
            args = {
                "empty": ([], last),
                "gap": ([_renumber(delta, last + 2)], last),
                "wrong run": ([MessageDelta(run_id="elsewhere", seq=last + 1, at=self.now, message_id="x", content="")], last),
                "negative": ([delta], -1),
                "created again": ([created(run_id)], 0),
            }[kind]
            outcome = self.both("append", run_id, args[0], expected_seq=args[1])
            assert outcome[0] != "ok"

        @rule(run_id=runs, after=st.integers(0, 400), limit=st.integers(1, 600))
        def read(self, run_id: str, after: int, limit: int) -> None:
            self.both("read", run_id, after_seq=after, limit=limit)

        @rule(
            session_id=st.sampled_from([None, "s1", "s2", "s3"]),
            status=st.sampled_from([None, *Status]),
            owner=st.sampled_from([None, "alice", "bob"]),
            limit=st.integers(1, 4),
        )
        def list_runs(self, session_id: str | None, status: Status | None, owner: str | None, limit: int) -> None:
            filters = {"session_id": session_id, "status": status, "owner": owner}
            got = portal.call(lambda: list_all(self.store, limit=limit, **filters))
            want = portal.call(lambda: list_all(self.model, limit=limit, **filters))
            assert got == (want if isinstance(self.store, WakeIndex) else without_wake(want))

        @rule(limit=st.integers(1, 4))
        def idle_runs(self, limit: int) -> None:
            if isinstance(self.store, WakeIndex):
                got = portal.call(lambda: idle_listings(self.store, limit=limit))  # type: ignore[arg-type]
                assert got == portal.call(lambda: idle_listings(self.model, limit=limit))  # type: ignore[arg-type]

        @rule(run_id=runs, data=st.data())
        def snapshot(self, run_id: str, data: st.DataObject) -> None:
            state = self.folds[run_id].state
            if state is None:  # deleted
                return
            log = portal.call(lambda: read_all(self.model, run_id))
            cut = data.draw(st.integers(1, len(log)), label="snapshot at")
            head = Fold()
            head.apply_all(log[:cut])
            assert head.state is not None
            self.both("save_snapshot", head.state)
            self.both("load_snapshot", run_id)

        @precondition(lambda self: isinstance(self.store, IdempotencyStore))
        @rule(key=st.sampled_from(["k1", "k2", "k3"]), principal=st.sampled_from(["", "a", "a:b"]),
              run_id=runs | st.just("no-such-run"), advance=st.integers(0, 40), release=st.booleans())
        def reserve_key(self, key: str, principal: str, run_id: str, advance: int, release: bool) -> None:
            self.now += timedelta(seconds=advance)
            record = key_record(key, run_id, at=self.now, principal=principal, fingerprint=f"f-{run_id}")
            self.both("reserve_idempotency_key", record, ttl=60.0, pending_for=10.0)
            if release:
                self.both("release_idempotency_key", record)

        @precondition(lambda self: isinstance(self.store, SessionStore))
        @rule(session_id=st.sampled_from(["s1", "s2", "s3"]), owner=st.none() | st.sampled_from(["alice", "bob"]))
        def add_session(self, session_id: str, owner: str | None) -> None:
            self.both("add_session", SessionRecord(session_id=session_id, owner=owner, created_at=self.now))

        @precondition(lambda self: isinstance(self.store, SessionStore))
        @rule(session_id=st.sampled_from(["s1", "s2", "s3"]), owner=st.none() | st.just("alice"),
              metadata=st.dictionaries(_texts, _json_values, max_size=2), ended=st.booleans())
        def put_session(self, session_id: str, owner: str | None, metadata: dict[str, Any], ended: bool) -> None:
            record = SessionRecord(session_id=session_id, owner=owner, created_at=self.now, metadata=metadata,
                                   ended_at=self.now if ended else None)
            self.both("put_session", record)
            self.both("get_session", session_id)

        @rule(run_id=runs)
        def delete_run(self, run_id: str) -> None:
            self.both("delete_run", run_id)
            self.folds[run_id] = Fold()  # gone: the id may start a new run

        @precondition(lambda self: isinstance(self.store, EndedRuns))
        @rule(ended_before=_times, limit=st.integers(1, 4))
        def list_ended_runs(self, ended_before: datetime, limit: int) -> None:
            got = portal.call(lambda: list_ended_all(self.store, ended_before=ended_before, limit=limit))
            want = portal.call(lambda: list_ended_all(self.model, ended_before=ended_before, limit=limit))
            assert got == (want if isinstance(self.store, WakeIndex) else without_wake(want))

        @invariant()
        def runs_agree(self) -> None:
            for run_id in self.folds:
                self.both("get_run", run_id)

    return StoreMachine


def _renumber(event: Event, seq: int) -> Event:
    import attrs

    return attrs.evolve(event, seq=seq)


@contextlib.asynccontextmanager
async def memory_store() -> AsyncIterator[EventStore]:
    """A store factory for MemoryStore (the suite's own reference run)."""
    store = open_store("memory://")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


__all__ = [
    "EndedRunsConformance",
    "IdempotencyConformance",
    "LogConformance",
    "ScheduleConformance",
    "SessionConformance",
    "StoreConformance",
    "StoreFactory",
    "draw_events",
    "draw_next_event",
    "memory_store",
    "new_log",
    "read_all",
    "list_all",
    "list_ended_all",
]
