"""Per-run wake-ups behind every store's `wait(run_id, after_seq=, timeout=)`.

A store calls `notify(run_id)` after it committed events of a run (and `notify_all()` when it
may have missed some, or closes); `wait` sleeps until woken or a re-check is due, then asks the
store whether the run has news. The news check is the truth: a wake-up is only a hint, so a
missed or spurious one delays a waiter, never misleads it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio


class _Signal:
    """One run's wake-up: the highest seq notified, the event its waiters sleep on, and how many
    wait. The event is made by a waiter (inside a task, where anyio knows the event loop), never
    by `fire`, which may run in a plain callback (a PostgreSQL NOTIFY)."""

    __slots__ = ("_event", "seq", "waiters")

    def __init__(self) -> None:
        self._event: anyio.Event | None = None
        self.seq = 0
        self.waiters = 0

    def event(self) -> anyio.Event:
        if self._event is None:
            self._event = anyio.Event()
        return self._event

    def fire(self, seq: int) -> None:
        if seq > self.seq:
            self.seq = seq
        if self._event is not None:
            self._event.set()
            self._event = None


class RunWakeups:
    """The wake-ups of the runs someone is waiting on (a run nobody waits on costs nothing)."""

    def __init__(self) -> None:
        self._signals: dict[str, _Signal] = {}

    def notify(self, run_id: str, seq: int = 0) -> None:
        """Wake the waiters of `run_id`; `seq`, when known, lets them return without a check."""
        signal = self._signals.get(run_id)
        if signal is not None:
            signal.fire(seq)

    def notify_all(self) -> None:
        """Wake every waiter to re-check (notifications may have been missed, or the store closes)."""
        for signal in list(self._signals.values()):
            signal.fire(0)

    async def wait(
        self,
        run_id: str,
        *,
        after_seq: int,
        timeout: float | None,
        has_news: Callable[[], Awaitable[bool]],
        recheck: Callable[[], float | None] = lambda: None,
    ) -> bool:
        """Whether the run has events after `after_seq` (`has_news()`) within `timeout` seconds
        (None: no limit), checking again on each wake-up and every `recheck()` seconds."""
        signal = self._signals.get(run_id)
        if signal is None:
            signal = self._signals[run_id] = _Signal()
        signal.waiters += 1
        try:
            deadline = None if timeout is None else anyio.current_time() + timeout
            while True:
                if signal.seq > after_seq:
                    return True
                woken = signal.event()  # taken before the check, so news during it still wakes us
                if await has_news():
                    return True
                remaining = None if deadline is None else deadline - anyio.current_time()
                if remaining is not None and remaining <= 0:
                    return False
                pause = recheck()
                if pause is not None and (remaining is None or pause < remaining):
                    remaining = pause
                with anyio.move_on_after(remaining):
                    await woken.wait()
        finally:
            signal.waiters -= 1
            if signal.waiters == 0 and self._signals.get(run_id) is signal:
                del self._signals[run_id]
