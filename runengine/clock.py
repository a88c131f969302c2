"""The engine's time: what time it is, and waiting for a time.

Everything in the engine that reads the time or waits for one (durable sleeps, ask timeouts,
delayed starts, the idle-run scanner, schedules, a run's timeout) goes through one `Clock`, so a test can
swap in `runengine.testing.VirtualClock` and reach an hour-long deadline without waiting.

`RunEngine(clock=)` takes a `Clock`, or any `() -> datetime` (aware, UTC), which is read
again after each real wait, so a hand-moved test clock is obeyed too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import anyio


class Clock:
    """Time read from `now` and waited for in real time (re-read after each wait)."""

    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        self._now = now

    def __call__(self) -> datetime:
        return self._now() if self._now is not None else datetime.now(timezone.utc)

    def move_on_at(self, when: datetime | None) -> anyio.CancelScope:
        """A cancel scope that ends its block once this clock reaches `when` (None: never).
        The caller re-reads the clock after it: a real wait may end before a moved clock."""
        if when is None:
            return anyio.CancelScope()
        return anyio.move_on_after(max(0.0, (when - self()).total_seconds()))

    async def sleep_until(self, when: datetime) -> None:
        """Return once this clock reads `when` or later."""
        while self() < when:
            with self.move_on_at(when):
                await anyio.sleep_forever()


def as_clock(clock: Clock | Callable[[], datetime]) -> Clock:
    """`clock` itself, or a real-time Clock reading the callable."""
    return clock if isinstance(clock, Clock) else Clock(clock)


__all__ = ["Clock", "as_clock"]
