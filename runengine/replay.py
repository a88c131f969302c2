"""The journal a resumed agent is replayed against: its run's log, read lazily, in order.

When an engine takes up an unfinished run it calls the agent function again. Each call
the agent makes on its context is matched against the next event the agent itself
recorded the first time (`Journal.next`); a recorded call returns what was recorded and
appends nothing. Once the journal is exhausted the context goes live.

The journal folds every event it passes into a `Fold` of its own, so that during replay
`ctx.state` is the state the agent saw at that point the first time, not the end of the log.
It skips what the agent did not produce itself (the run's lifecycle bookkeeping) and the
deltas of messages a resume discarded. It reads the log a page at a time: replaying a long
run holds one page in memory, not the log.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from .events import (
    Event,
    MessageDelta,
    MessageDiscarded,
    RunCreated,
    RunRequeued,
    RunResumed,
    RunStarted,
    RunSuspended,
    UnknownEvent,
)
from .ports import EventStore
from .reducer import Fold

#: Events an engine writes around the agent, never in answer to one of its calls.
BOOKKEEPING: tuple[type[Event], ...] = (
    RunCreated,
    RunStarted,
    RunResumed,
    RunSuspended,
    RunRequeued,
    MessageDiscarded,
    UnknownEvent,
)

#: Events read per page while replaying.
PAGE = 1000


class Journal:
    """The agent's recorded calls in a run's log up to `end_seq`, one at a time."""

    def __init__(
        self,
        store: EventStore,
        run_id: str,
        *,
        end_seq: int,
        replay_from: int = 0,
        discarded: Collection[str] = (),
        first_page: Sequence[Event] = (),
    ) -> None:
        """`first_page`: the log from seq 1 if the caller has just read it (saves reading it again)."""
        self._store = store
        self.run_id = run_id
        self.end_seq = end_seq
        # Before the last run.requeued the agent started afresh: nothing there is replayed.
        self._replay_from = replay_from
        self._discarded = frozenset(discarded)
        self.fold = Fold()
        self._page: list[Event] = [e for e in first_page if e.seq <= end_seq]
        if self._page and self._page[0].seq != 1:
            raise ValueError("first_page must start at seq 1")
        self._index = 0
        self._read_seq = self._page[-1].seq if self._page else 0

    @property
    def position(self) -> int:
        """The seq of the last event passed (replayed or skipped)."""
        return self.fold.last_seq

    async def next(self) -> Event | None:
        """The next event the agent recorded (already folded), or None at the end of the journal."""
        while True:
            if self._index >= len(self._page):
                if self._read_seq >= self.end_seq:
                    return None
                limit = min(PAGE, self.end_seq - self._read_seq)
                self._page = await self._store.read(self.run_id, after_seq=self._read_seq, limit=limit)
                self._index = 0
                if not self._page:  # the log is shorter than it was when the resume began
                    self._read_seq = self.end_seq
                    return None
                self._read_seq = self._page[-1].seq
            event = self._page[self._index]
            self._index += 1
            self.fold.apply(event)
            if event.seq <= self._replay_from or isinstance(event, BOOKKEEPING):
                continue
            if isinstance(event, MessageDelta) and event.message_id in self._discarded:
                continue
            return event


__all__ = ["BOOKKEEPING", "Journal"]
