"""Data lifecycle: deleting ended runs, one by one or when their retention period has passed.

    engine = RunEngine(store, retention=Retention(runs=timedelta(days=30)))  # or seconds; None: kept
    await engine.delete_run(run_id, owner="alice")            # an ended run only

With a retention period the engine runs a sweep in its task group: at start, then every
`Retention.sweep_interval` seconds it deletes the ended runs whose terminal event is older than
`engine.clock() - Retention.runs` (its events, snapshot, run row, idempotency records and any
work-queue row; sessions stay). Active runs are never touched, whatever their age. Several
engines may sweep one store at once: each lists the expired runs and deletes them, and a
run deleted by another engine is simply no longer there (`delete_run` answers False).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import anyio
import structlog

from .errors import InvalidRequest, InvalidRunState
from .ownership import run_of
from .ports import EndedRunPage, EventStore, port_of, required

log = structlog.get_logger("runengine.retention")

#: Seconds between two sweeps unless the engine is given another (`Retention.sweep_interval`).
DEFAULT_SWEEP_INTERVAL = 300.0
#: Ended runs listed (then deleted) per store call during a sweep.
SWEEP_PAGE = 200


@runtime_checkable
class EndedRuns(Protocol):
    """A store that lists its ended runs by end time (the port retention sweeps and pruning use)."""

    async def list_ended_runs(
        self, *, ended_before: datetime, limit: int = 100, after: str | None = None
    ) -> EndedRunPage:
        """Ended runs (a terminal status) whose last event is older than `ended_before` (strictly),
        oldest ended first, paged by an opaque cursor."""
        ...


def ended_runs(store: EventStore) -> EndedRuns:
    """`store` as an EndedRuns; InvalidRequest when it keeps no such listing."""
    return required(port_of(store, EndedRuns), store, "listing of ended runs (needed to delete runs by age)")


def retention_seconds(value: timedelta | float | None, what: str = "retention") -> float | None:
    """A retention period (timedelta or seconds) as positive seconds; None keeps runs forever."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        raise InvalidRequest(f"{what} must be a positive number of seconds or a timedelta, got {value!r}")
    return float(seconds)


async def delete_ended_run(store: EventStore, run_id: str, *, owner: str | None = None) -> None:
    """Delete an ended run. RunNotFound when there is none (or, with `owner`, when it is another
    owner's: answered exactly as a missing run, runengine.ownership); InvalidRunState while it
    is active."""
    summary = await run_of(store, run_id, owner)  # another owner's run: RunNotFound
    if not summary.status.terminal:
        raise InvalidRunState(run_id, summary.status.value, "only an ended run can be deleted")
    await store.delete_run(run_id)  # an ended run never changes again: nothing can race this


async def sweep(store: EventStore, *, ended_before: datetime, page: int = SWEEP_PAGE) -> list[str]:
    """Delete every run that ended before `ended_before`; return the ids this call deleted."""
    listing_port = ended_runs(store)
    deleted: list[str] = []

    async def delete(run_id: str) -> None:
        if await store.delete_run(run_id):  # False: another sweeper got there first
            deleted.append(run_id)

    after: str | None = None
    while True:
        listing = await listing_port.list_ended_runs(ended_before=ended_before, limit=page, after=after)
        # A page's deletes at once: a group-committing store (SQLite) makes them one transaction.
        async with anyio.create_task_group() as group:
            for summary in listing.runs:
                group.start_soon(delete, summary.run_id)
        after = listing.next_after
        if after is None:
            return deleted


class RetentionSweeper:
    """The engine's background sweep: deletes expired ended runs now, then every `interval` seconds."""

    def __init__(self, store: EventStore, clock: Callable[[], datetime], retention: float, interval: float) -> None:
        self.store = store
        self.clock = clock
        self.retention = retention
        self.interval = interval
        self._scope = anyio.CancelScope()
        self._stopped = anyio.Event()

    async def sweep(self) -> list[str]:
        """One sweep, against the engine's clock."""
        cutoff = self.clock() - timedelta(seconds=self.retention)
        deleted = await sweep(self.store, ended_before=cutoff)
        if deleted:
            log.info("deleted expired runs", count=len(deleted), ended_before=cutoff.isoformat())
        return deleted

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._scope:
                task_status.started()
                while True:
                    try:
                        await self.sweep()
                    except Exception:  # a store hiccup: the next sweep tries again
                        log.exception("retention sweep failed")
                    await anyio.sleep(self.interval)
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        self._scope.cancel()
        await self._stopped.wait()


async def start_retention(
    store: EventStore,
    clock: Callable[[], datetime],
    retention: float | None,
    interval: float,
    task_group: anyio.abc.TaskGroup,
) -> RetentionSweeper | None:
    """Start a sweep of `store` in `task_group` if there is a retention period (None: runs are kept)."""
    if retention is None:
        return None
    sweeper = RetentionSweeper(store, clock, retention, interval)
    await task_group.start(sweeper.run)
    return sweeper


__all__ = [
    "DEFAULT_SWEEP_INTERVAL",
    "EndedRuns",
    "ended_runs",
    "RetentionSweeper",
    "delete_ended_run",
    "retention_seconds",
    "start_retention",
    "sweep",
]
