"""A clock a test moves by hand: `RunEngine(store, clock=VirtualClock())`, then
`await clock.advance(3600)` fires the hour's durable sleeps, ask timeouts, run timeouts and delayed starts
at once, in deadline order, without waiting for them.

Time stands still between advances. `advance` moves to each deadline due in turn, cancelling
the waits that end there, and lets the engine settle (every task blocked again) before the
next, so a run that sleeps twice within one advance wakes twice, at the right times.
"""

from __future__ import annotations

import heapq
import itertools
from datetime import datetime, timedelta, timezone

import anyio
from anyio import wait_all_tasks_blocked

from ..clock import Clock

#: Where a VirtualClock starts unless told: a fixed instant, so runs are reproducible.
EPOCH = datetime(2030, 1, 1, tzinfo=timezone.utc)


class VirtualClock(Clock):
    """Time that moves only when `advance` (or `advance_to`) is awaited."""

    def __init__(self, start: datetime = EPOCH) -> None:
        super().__init__()
        if start.tzinfo is None:
            raise ValueError("a VirtualClock starts at a timezone-aware datetime")
        self._at = start
        self._waits: list[tuple[datetime, int, anyio.CancelScope]] = []
        self._order = itertools.count()  # ties end in the order they began

    def __call__(self) -> datetime:
        return self._at

    def move_on_at(self, when: datetime | None) -> anyio.CancelScope:
        scope = anyio.CancelScope()
        if when is not None:
            if when <= self._at:
                scope.cancel()
            else:
                heapq.heappush(self._waits, (when, next(self._order), scope))
        return scope

    @property
    def next_deadline(self) -> datetime | None:
        """The earliest deadline something waits for (None: nothing waits)."""
        return self._waits[0][0] if self._waits else None

    async def advance(self, seconds: float) -> None:
        """Move time on by `seconds` (>= 0), ending each wait due on the way, in order."""
        if seconds < 0:
            raise ValueError("a VirtualClock does not go back")
        await self.advance_to(self._at + timedelta(seconds=seconds))

    async def advance_to(self, when: datetime) -> None:
        """Move time on to `when`, ending each wait due on the way, in order."""
        if when < self._at:
            raise ValueError("a VirtualClock does not go back")
        await wait_all_tasks_blocked()
        while self._waits and self._waits[0][0] <= when:
            due, _, scope = heapq.heappop(self._waits)
            self._at = max(self._at, due)
            scope.cancel()
            await wait_all_tasks_blocked()
        self._at = when
        await wait_all_tasks_blocked()


__all__ = ["EPOCH", "VirtualClock"]
