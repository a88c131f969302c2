"""Per-run wake-ups behind every store's `wait(run_id, after_seq=, timeout=)`.

A store calls `notify(run_id)` after it committed events of a run (and `notify_all()` when it
may have missed some, or closes); `wait` sleeps until woken or a re-check is due, then asks the
store whether the run has news. The news check is the truth: a wake-up is only a hint, so a
missed or spurious one delays a waiter, never misleads it.

A waiter may ask for settled news only (`settled=True`: the run ended or waits for input,
`Status.settled`): it sleeps through the commits that left the run at work, when the store says
so (`notify(..., status=)`); a notify without a status (a PostgreSQL NOTIFY, `notify_all`) wakes
it as any other, to look for itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from runengine.status import SETTLED_STATUSES, Status


class _Signal:
    """One run's wake-up: the highest seq notified (and the highest known settled), the events its
    waiters sleep on (any news; settled news), and how many wait. An event is made by a waiter
    (inside a task, where anyio knows the event loop), never by `fire`, which may run in a plain
    callback (a PostgreSQL NOTIFY)."""

    __slots__ = ("_event", "_settled_event", "seq", "settled_seq", "waiters")

    def __init__(self) -> None:
        self._event: anyio.Event | None = None
        self._settled_event: anyio.Event | None = None
        self.seq = 0
        self.settled_seq = 0
        self.waiters = 0

    def event(self, settled: bool) -> anyio.Event:
        if settled:
            if self._settled_event is None:
                self._settled_event = anyio.Event()
            return self._settled_event
        if self._event is None:
            self._event = anyio.Event()
        return self._event

    def fire(self, seq: int, status: Status | None = None) -> None:
        """News up to `seq` (0: unknown), that left the run in `status` (None: unknown)."""
        if seq > self.seq:
            self.seq = seq
        if self._event is not None:
            self._event.set()
            self._event = None
        if status is None or status in SETTLED_STATUSES:  # unknown: settled waiters look for themselves
            if status is not None and seq > self.settled_seq:
                self.settled_seq = seq
            if self._settled_event is not None:
                self._settled_event.set()
                self._settled_event = None


class RunWakeups:
    """The wake-ups of the runs someone is waiting on (a run nobody waits on costs nothing)."""

    def __init__(self) -> None:
        self._signals: dict[str, _Signal] = {}

    def notify(self, run_id: str, seq: int = 0, *, status: Status | None = None) -> None:
        """Wake the waiters of `run_id`; `seq` and `status` (what the commit left the run at), when
        known, let them return without a check, and let settled waiters sleep on through a step."""
        signal = self._signals.get(run_id)
        if signal is not None:
            signal.fire(seq, status)

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
        settled: bool = False,
    ) -> bool:
        """Whether the run has events after `after_seq` (`has_news()`) within `timeout` seconds
        (None: no limit), checking again on each wake-up and every `recheck()` seconds. With
        `settled`, only settled news counts (`has_news` must check for that) and wakes."""
        signal = self._signals.get(run_id)
        if signal is None:
            signal = self._signals[run_id] = _Signal()
        signal.waiters += 1
        try:
            deadline = None if timeout is None else anyio.current_time() + timeout
            while True:
                if (signal.settled_seq if settled else signal.seq) > after_seq:
                    return True
                woken = signal.event(settled)  # taken before the check, so news during it still wakes us
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
