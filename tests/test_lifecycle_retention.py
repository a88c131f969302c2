"""The retention sweep, property-tested over random clocks on SQLite and PostgreSQL: it deletes
exactly the ended runs whose terminal event is older than the engine's clock minus the retention,
while other runs are being appended to, and leaves every other run's log whole. On PostgreSQL two
engines (each with its own pool, as two processes have) sweep at once."""

from __future__ import annotations

import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runengine import RunEngine
from runengine.adapters.sqlite import SQLiteStore
from runengine.events import ErrorInfo, Event, MessageDelta, RunCancelled, RunCompleted, RunCreated, RunFailed, RunStarted
from runengine.ports import EventStore
from runengine.testing.conformance import read_all
from runengine.options import Retention

T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)

#: A run: its start (seconds after T0), its length (seconds), how it ends (None: still going),
#: and the UTC offset (hours) its events' times are written in.
runs_strategy = st.lists(
    st.tuples(
        st.integers(-2_000, 2_000),
        st.integers(0, 600),
        st.sampled_from([None, "completed", "failed", "cancelled"]),
        st.sampled_from([0, 0, 2, -5]),
    ),
    min_size=1,
    max_size=12,
)
retentions = st.integers(1, 3_000)
#: How far (µs) the clock is from "a chosen run ended exactly `retention` ago": right at the
#: boundary (where < and <= differ), a microsecond either side, or anywhere.
nudges = st.one_of(st.sampled_from([0, 1, -1]), st.sampled_from([0, 1, -1]), st.integers(-(10**10), 10**10))


def draw_clock(data: st.DataObject, specs: list[tuple[int, int, str | None, int]], retention: int) -> datetime:
    ended_runs = [spec for spec in specs if spec[2] is not None]
    start, length, _, _ = data.draw(st.sampled_from(ended_runs or specs), label="pivot run")
    ended = T0 + timedelta(seconds=start + length)
    return ended + timedelta(seconds=retention, microseconds=data.draw(nudges, label="nudge"))


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def build_log(run_id: str, start: int, length: int, ending: str | None, offset: int) -> list[Event]:
    zone = timezone(timedelta(hours=offset))
    began = (T0 + timedelta(seconds=start)).astimezone(zone)
    ended = began + timedelta(seconds=length)
    log: list[Event] = [
        RunCreated(run_id=run_id, seq=1, at=began, agent="a"),
        RunStarted(run_id=run_id, seq=2, at=began),
        MessageDelta(run_id=run_id, seq=3, at=began, message_id="m", content="hi"),
    ]
    if ending == "completed":
        log.append(RunCompleted(run_id=run_id, seq=4, at=ended, output="ok"))
    elif ending == "failed":
        log.append(RunFailed(run_id=run_id, seq=4, at=ended, error=ErrorInfo(code="x", message="y")))
    elif ending == "cancelled":
        log.append(RunCancelled(run_id=run_id, seq=4, at=ended))
    return log


async def check_sweep(
    engines: list[RunEngine], clock: Clock, specs: list[tuple[int, int, str | None, int]], now: datetime, retention: int
) -> None:
    """Populate through the first engine's store, sweep from every engine at once while live runs
    are appended to, and compare what is left with what the rule says."""
    store: EventStore = engines[0].store
    logs: dict[str, list[Event]] = {}
    for index, spec in enumerate(specs):
        run_id = f"run-{index}"
        logs[run_id] = build_log(run_id, *spec)
        await store.append(run_id, logs[run_id], expected_seq=0)
    cutoff = now - timedelta(seconds=retention)
    expired = {
        run_id for run_id, log in logs.items() if log[-1].terminal and log[-1].at < cutoff
    }
    live = [run_id for run_id, log in logs.items() if not log[-1].terminal]
    clock.now = now
    deleted: list[str] = []

    async def append_to_live_runs() -> None:
        for round_ in range(5):
            for run_id in live:
                log = logs[run_id]
                event = MessageDelta(
                    run_id=run_id, seq=len(log) + 1, at=T0 - timedelta(days=365), message_id="m", content=str(round_)
                )  # an old time: a live run is never expired, whatever its events say
                await store.append(run_id, [event], expected_seq=len(log))
                log.append(event)
            await anyio.sleep(0)

    async def sweep(engine: RunEngine) -> None:
        assert engine.sweeper is not None
        deleted.extend(await engine.sweeper.sweep())

    async with anyio.create_task_group() as tg:
        tg.start_soon(append_to_live_runs)
        for engine in engines:
            tg.start_soon(sweep, engine)
    assert sorted(deleted) == sorted(expired)  # each deleted once, by one of the sweepers
    for run_id, log in logs.items():
        if run_id in expired:
            assert await store.get_run(run_id) is None
            assert await store.read(run_id) == []
            assert await store.load_snapshot(run_id) is None
        else:
            assert await read_all(store, run_id) == log
            assert (await store.get_run(run_id)).last_seq == len(log)  # type: ignore[union-attr]
    for engine in engines:  # another sweep finds nothing more
        assert engine.sweeper is not None
        assert await engine.sweeper.sweep() == []


def engine_on(store: EventStore, clock: Clock, retention: int) -> RunEngine:
    # The background sweep also runs (at start; then rarely): the test sweeps explicitly.
    return RunEngine(store, clock=clock, retention=Retention(runs=retention, sweep_interval=3600))


_SLOW = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


@settings(max_examples=40, deadline=None, suppress_health_check=_SLOW)
@given(specs=runs_strategy, retention=retentions, data=st.data())
def test_sweep_deletes_exactly_the_expired_ended_runs_on_sqlite(
    specs: list[tuple[int, int, str | None, int]], retention: int, data: st.DataObject
) -> None:
    now = draw_clock(data, specs, retention)

    async def body() -> None:
        with tempfile.TemporaryDirectory() as directory:
            clock = Clock(T0 - timedelta(days=3650))  # the sweep at start finds nothing
            engine = engine_on(SQLiteStore(Path(directory) / "r.db", synchronous="NORMAL"), clock, retention)
            async with engine:
                await check_sweep([engine], clock, specs, now, retention)

    anyio.run(body, backend="asyncio")


@pytest.mark.postgres
@settings(max_examples=12, deadline=None, suppress_health_check=_SLOW)
@given(specs=runs_strategy, retention=retentions, data=st.data())
def test_sweep_deletes_exactly_the_expired_ended_runs_on_postgres_with_two_sweepers(
    pg_dsn: str, specs: list[tuple[int, int, str | None, int]], retention: int, data: st.DataObject
) -> None:
    now = draw_clock(data, specs, retention)
    from runengine.adapters.postgres import PostgresStore

    async def body() -> None:
        schema = f"ret_{uuid.uuid4().hex[:12]}"
        clock = Clock(T0 - timedelta(days=3650))
        first = engine_on(PostgresStore(pg_dsn, schema=schema, pool_max=3), clock, retention)
        second = engine_on(PostgresStore(pg_dsn, schema=schema, pool_max=3), clock, retention)
        async with first, second:
            await check_sweep([first, second], clock, specs, now, retention)

    anyio.run(body, backend="asyncio")

