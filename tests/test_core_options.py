"""RunEngine's options, grouped by what they govern (issue 21: runengine.options): the common
ones stay plain keywords, the rest come in Durability, RunLimits and Retention, whose bad values
are refused when the group is built."""

from __future__ import annotations

import inspect
from datetime import timedelta

import pytest

from runengine import InvalidRequest, RunEngine
from runengine.options import Durability, Retention, RunLimits


def test_the_constructor_takes_few_plain_keywords_and_the_groups() -> None:
    parameters = inspect.signature(RunEngine).parameters
    assert list(parameters) == [
        "store", "clock", "session_policy", "worker", "worker_id", "durability", "limits", "retention", "flow",
    ]


@pytest.mark.anyio
async def test_the_groups_reach_what_they_govern() -> None:
    engine = RunEngine(
        "memory://",
        durability=Durability(flush_window=0.002, flush_max=16, snapshot_every=10, drain_timeout=0, delay_horizon=5),
        limits=RunLimits(max_attempts=2, max_events_per_run=30, max_event_bytes=2048),
        retention=Retention(runs=timedelta(hours=1), sweep_interval=60, idempotency_ttl=30),
    )
    assert engine.driver.durability.snapshot_every == 10
    assert engine.driver.limits.max_events_per_run == 30
    assert engine.idle.horizon == timedelta(seconds=5)
    assert engine.retention.runs == 3600.0

    @engine.agent("chatty")
    async def chatty(ctx) -> None:  # type: ignore[no-untyped-def]
        for _ in range(100):
            await ctx.delta("x")

    async with engine:
        assert engine.sweeper is not None and engine.sweeper.interval == 60
        state = await engine.execute("chatty", None)
    assert state.error is not None and state.error.code == "too_many_events"
    assert state.last_seq == 30


@pytest.mark.parametrize(
    "build",
    [
        lambda: Durability(flush_window=0),
        lambda: Durability(flush_window=0.5),
        lambda: Durability(flush_max=0),
        lambda: Durability(snapshot_every=0),
        lambda: Durability(drain_timeout=-1),
        lambda: Durability(drain_timeout=float("nan")),
        lambda: Durability(delay_horizon=float("inf")),
        lambda: RunLimits(max_attempts=0),
        lambda: RunLimits(max_attempts=True),
        lambda: RunLimits(max_events_per_run=2),
        lambda: RunLimits(max_event_bytes=10),
        lambda: Retention(runs=0),
        lambda: Retention(runs="30d"),
        lambda: Retention(runs=60, sweep_interval=0),
        lambda: Retention(idempotency_ttl=-5),
        lambda: RunEngine(durability=0.005),  # a group, not a bare value
        lambda: RunEngine(limits={"max_attempts": 2}),
        lambda: RunEngine(retention=60),
    ],
)
def test_a_bad_option_is_refused_with_a_clear_error(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest):
        build()


def test_the_readme_example_still_builds_from_a_url(tmp_path) -> None:
    engine = RunEngine(f"sqlite:///{tmp_path / 'runs.db'}")
    assert engine.durability == Durability() and engine.limits == RunLimits() and engine.retention == Retention()
