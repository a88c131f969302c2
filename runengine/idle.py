"""Idle runs wait in the store, not in memory, until they are nearly due.

An engine on a store only it writes (SQLite, memory) executes its runs itself. A run that is
idle (delayed by `execute(start_at=)`, in a durable `ctx.sleep`, waiting for input) held as a
task, a writer and a folded state costs memory for days: a hundred thousand of them took
gigabytes at every start. Instead an idle run is launched only when it is due within `horizon`
seconds (its start, its timer, its input deadline), or when its input comes (`engine.resume`);
until then it is a row of the store's timer index (`RunSummary.wake_at`, the WakeIndex port),
and one scanner task reads the due ones a page at a time, when the earliest one it knows of
comes due. A run waiting for input without a deadline is never due: only its input wakes it.

A mass wake (a hundred thousand timers due at once) is admitted as earlier runs finish: the
scanner holds at most WAKE_IN_FLIGHT woken runs in memory, and reads the next page of due ones
only when that many minus a page are left (`hold` / `release`), so the wake's memory is bounded
by the limit, not by how many came due.

A store without the index (a third-party one) keeps the earlier way: runs idle at start are
taken up at once, and delayed runs are found by paging through the pending runs, reading the
first event of each. (A store with a work queue keeps idle runs unclaimable until they are due
instead: runengine.worker.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import anyio
import anyio.abc

from .clock import Clock
from .events import RunCreated
from .ports import EventStore, WakeIndex, port_of
from .status import Status

#: An idle run is launched this many seconds before it is due; later ones stay in the store.
DEFAULT_HORIZON = 60.0
#: A run idle this many seconds in memory (and not due within the horizon) is parked in the store.
DEFAULT_PARK_AFTER = 60.0
#: Runs listed per store read while scanning.
SCAN_PAGE = 200
#: Runs taken up at once (recovery, a scan): every page of them is listed, and their logs read,
#: before any is launched, so no store read waits behind the runs just launched. Bounds what is
#: read ahead of the launches when more are due at once.
TAKE_UP_BATCH = 2_000
#: Woken runs (taken up from the store by their timer, start or input) held in memory at once,
#: at most: the scanner takes up more only as these end or go back to a wait past the horizon.
WAKE_IN_FLIGHT = 2_000


class IdleRuns:
    """Launches the idle runs of a store as they come due, holding none of them meanwhile."""

    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        launch: Callable[[list[str]], Awaitable[None]],
        is_active: Callable[[str], bool],
        *,
        horizon: float = DEFAULT_HORIZON,
        in_flight: int = WAKE_IN_FLIGHT,
    ) -> None:
        self._store = store
        #: The store's timer index (None: it keeps none; pending runs are scanned instead).
        self.index: WakeIndex | None = port_of(store, WakeIndex)
        self._clock = clock
        self._launch = launch
        self._is_active = is_active
        self.horizon = timedelta(seconds=horizon)
        #: The earliest wake time of the runs left in the store (None: none known).
        self._earliest: datetime | None = None
        self._wake: anyio.Event | None = None  # made in `run` (an Event needs the running loop)
        self._scope: anyio.CancelScope | None = None
        #: The woken runs in memory now (`hold`), and the limit the scanner keeps them under.
        self._held: set[str] = set()
        self.in_flight = in_flight
        #: Set when a page's worth of places is free again (the scanner waits for it).
        self._room: anyio.Event | None = None

    def due(self, wake_at: datetime | None) -> bool:
        """Whether a run idle until `wake_at` is to be launched now."""
        return wake_at is None or wake_at <= self._clock() + self.horizon

    def defer(self, wake_at: datetime) -> None:
        """A run left in the store until `wake_at` nears: the scanner wakes for it."""
        if self._earliest is None or wake_at < self._earliest:
            self._earliest = wake_at
            if self._wake is not None:
                self._wake.set()

    @property
    def room(self) -> int:
        """How many more woken runs the scanner may take up now."""
        return max(0, self.in_flight - len(self._held))

    def hold(self, run_id: str) -> None:
        """A woken run is in memory: it takes a place until `release`."""
        self._held.add(run_id)

    def release(self, run_id: str, waiting_until: datetime | None = None) -> None:
        """A woken run ended, or its agent waits `waiting_until` again: unless that is due (the
        run is about to go on), its place is free."""
        if waiting_until is not None and self.due(waiting_until):
            return
        self._held.discard(run_id)
        if self._room is not None and self.room >= self._refill:
            self._room.set()

    @property
    def _refill(self) -> int:
        """Free places the scanner waits for before it reads on: a page (fewer under a lower limit)."""
        return max(1, min(SCAN_PAGE, self.in_flight))

    async def _wait_for_room(self) -> None:
        while self.room < self._refill:
            self._room = anyio.Event()
            await self._room.wait()
        self._room = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Scan whenever the earliest idle run comes due, until `stop`."""
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
        """Launch every idle run that is due; remember when the next one left behind is."""
        self._earliest = None
        if self.index is None:
            await self._scan_pending()
            return
        after: str | None = None
        while True:
            await self._wait_for_room()  # a mass wake is admitted as earlier runs end
            due, after = await self.take_due(after)
            if due:
                await self._launch(due)  # a batch at a time (their logs read in one pass)
            if after is None:
                return

    async def take_due(self, after: str | None = None) -> tuple[list[str], str | None]:
        """The due idle runs not executing here, in wake order from the cursor `after`, up to
        TAKE_UP_BATCH of them and no more than there is room for, read page after page with
        nothing launched in between; and the cursor to go on from when more may be due (None: all
        listed, and the earliest run left behind is deferred to). Without a timer index: none."""
        if self.index is None:
            return [], None
        limit = min(self.room, TAKE_UP_BATCH)
        if limit == 0:  # no room: the scanner takes them up as places free
            self.defer(self._clock())
            return [], None
        due: list[str] = []
        while len(due) < limit:
            page = await self.index.list_waking(limit=min(SCAN_PAGE, limit - len(due)), after=after)
            for summary in page.runs:
                assert summary.wake_at is not None
                if not self.due(summary.wake_at):
                    self.defer(summary.wake_at)  # the earliest left: the index is in wake order
                    return due, None
                if not self._is_active(summary.run_id):
                    due.append(summary.run_id)
            after = page.next_before
            if after is None:
                return due, None
        return due, after

    async def _scan_pending(self) -> None:
        """Without a timer index: page through the pending runs, reading each one's start_at."""
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
                    await self._wait_for_room()
                    await self._launch([summary.run_id])
                else:
                    self.defer(start_at)
            before = page.next_before
            if before is None:
                return


__all__ = ["DEFAULT_HORIZON", "DEFAULT_PARK_AFTER", "TAKE_UP_BATCH", "WAKE_IN_FLIGHT", "IdleRuns"]
