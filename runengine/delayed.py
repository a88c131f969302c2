"""Delayed runs (`execute(start_at=)`) wait in the store, not in memory, until they are nearly due.

An engine on a store only it writes (SQLite, memory) executes its runs itself. A delayed run
launched at once would be a task, a writer and a folded state held for days: thousands of them
took hundreds of megabytes at every start. Instead a delayed run is launched only once its
`start_at` is within `horizon` seconds; until then it is a pending run in the store, and one
scanner task pages through the pending runs (a page at a time, the first event of each) when the
earliest one it knows of comes due, launching those that are. (A store with a work queue keeps
delayed runs unclaimable until their start_at instead: runengine.worker.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import anyio
import anyio.abc

from .clock import Clock
from .events import RunCreated
from .ports import EventStore
from .status import Status

#: A delayed run is launched this many seconds before its start_at; later ones stay in the store.
DEFAULT_HORIZON = 60.0
#: Pending runs listed per store read while scanning.
SCAN_PAGE = 200


class DelayedRuns:
    """Launches the delayed runs of a store as they come due, holding none of them meanwhile."""

    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        launch: Callable[[str], Awaitable[None]],
        is_active: Callable[[str], bool],
        *,
        horizon: float = DEFAULT_HORIZON,
    ) -> None:
        self._store = store
        self._clock = clock
        self._launch = launch
        self._is_active = is_active
        self.horizon = timedelta(seconds=horizon)
        #: The earliest start_at of the runs left in the store (None: none known).
        self._earliest: datetime | None = None
        self._wake: anyio.Event | None = None  # made in `run` (an Event needs the running loop)
        self._scope: anyio.CancelScope | None = None

    def due(self, start_at: datetime | None) -> bool:
        """Whether a pending run starting at `start_at` is to be launched now."""
        return start_at is None or start_at <= self._clock() + self.horizon

    def defer(self, start_at: datetime) -> None:
        """A run left in the store until `start_at` nears: the scanner wakes for it."""
        if self._earliest is None or start_at < self._earliest:
            self._earliest = start_at
            if self._wake is not None:
                self._wake.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Scan whenever the earliest deferred run comes due, until `stop`."""
        with anyio.CancelScope() as self._scope:
            self._wake = anyio.Event()
            task_status.started()
            await self._loop()

    def stop(self) -> None:
        """End `run` (the engine stops; the runs left in the store wait for the next engine)."""
        if self._scope is not None:
            self._scope.cancel()

    async def _loop(self) -> None:
        while True:
            due = None if self._earliest is None else self._earliest - self.horizon
            if due is None or due > self._clock():
                with self._clock.move_on_at(due):
                    assert self._wake is not None
                    await self._wake.wait()
                self._wake = anyio.Event()
                continue
            await self.scan()

    async def scan(self) -> None:
        """Launch every pending run that is due; remember when the next one left behind is."""
        self._earliest = None
        before: str | None = None
        while True:
            page = await self._store.list_runs(status=Status.PENDING, limit=SCAN_PAGE, before=before)
            for summary in page.runs:
                if self._is_active(summary.run_id):
                    continue
                first = await self._store.read(summary.run_id, after_seq=0, limit=1)
                start_at = first[0].start_at if first and isinstance(first[0], RunCreated) else None
                if start_at is None:
                    continue  # not a delayed run: its engine launched it (or recovery will)
                if self.due(start_at):
                    await self._launch(summary.run_id)
                else:
                    self.defer(start_at)
            before = page.next_before
            if before is None:
                return


__all__ = ["DEFAULT_HORIZON", "DelayedRuns"]
