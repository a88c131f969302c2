"""The journal a resumed agent is replayed against: its run's log, read lazily, in order.

When an engine takes up an unfinished run it calls the agent function again. Each call
the agent makes on its context is matched against the next event the agent itself
recorded the first time (`Journal.next`); a recorded call returns what was recorded and
appends nothing. Once the journal is exhausted the context goes live.

The journal folds every event it passes into a `Fold` of its own, so that during replay
`ctx.state` is the state the agent saw at that point the first time, not the end of the log.
It skips what the agent did not produce itself (the run's lifecycle bookkeeping).

A message may stay open across durable calls (`delta`, then `step`, then more `delta`s). Its
deltas followed by anything else the agent recorded (a step, a tool call, a timer, a thought,
its own `message.completed`) are replayed like any other call: the agent got past them. The
deltas after the last such event, if the message never completed, are its unrecorded tail:
the journal skips them (text that need not come out the same when streamed again) and keeps
their text in `tail`, so the context can discard the message and carry its kept text on
(`message.discarded` with `continued_as`, docs/durability.md). The first delta of a message
that carries on a discarded one is that kept text, not a call of the agent: skipped too.

It reads the log a page at a time: replaying a long run holds one page in memory (and, while
it looks past an open message's deltas for its next durable call, the events up to it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from .events import (
    Event,
    MessageDelta,
    MessageDiscarded,
    RunCreated,
    RunForked,
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
    RunForked,
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
        first_page: Sequence[Event] = (),
    ) -> None:
        """`first_page`: the log from seq 1 if the caller has just read it (saves reading it again)."""
        self._store = store
        self.run_id = run_id
        self.end_seq = end_seq
        # Before the last run.requeued the agent started afresh: nothing there is replayed.
        self._replay_from = replay_from
        self.fold = Fold()
        self._page: list[Event] = [e for e in first_page if e.seq <= end_seq]
        if self._page and self._page[0].seq != 1:
            raise ValueError("first_page must start at seq 1")
        self._index = 0
        self._read_seq = self._page[-1].seq if self._page else 0
        #: Events read past the one being decided (looking for a delta's durable call), not yet passed.
        self._ahead: deque[Event] = deque()
        #: Deltas up to this seq are known to be replayed (True) or an unrecorded tail (False).
        self._decided: tuple[int, bool] = (0, False)
        #: A message that carries on a discarded one: its first delta (the kept text) comes next.
        self._carried: str | None = None
        #: Discarded message -> the message that carries its kept text on.
        self.continued: dict[str, str] = {}
        #: The text of the open message's unrecorded tail at the end of the journal, skipped.
        self.tail = ""

    @property
    def position(self) -> int:
        """The seq of the last event passed (replayed or skipped)."""
        return self.fold.last_seq

    async def next(self) -> Event | None:
        """The next event the agent recorded (already folded), or None at the end of the journal."""
        while True:
            event = await self._take()
            if event is None:
                return None
            self.fold.apply(event)
            if event.seq <= self._replay_from:
                continue
            if isinstance(event, MessageDiscarded) and event.continued_as is not None:
                self.continued[event.message_id] = event.continued_as
                self._carried = event.continued_as
            if isinstance(event, BOOKKEEPING):
                continue
            if isinstance(event, MessageDelta):
                if event.message_id == self._carried:  # the kept text carried on, not a call
                    self._carried = None
                    continue
                if not await self._replayed(event):
                    if self._in_tail:
                        self.tail += event.content
                    continue
            return event

    @property
    def _in_tail(self) -> bool:
        """Past the last event the agent recorded after the open message's deltas."""
        return self._decided[0] > self.end_seq

    async def _replayed(self, delta: MessageDelta) -> bool:
        """Whether the agent recorded anything after `delta` (looking ahead), its message's discard aside."""
        upto, replayed = self._decided
        if delta.seq <= upto:
            return replayed
        for event in self._ahead:
            if (verdict := _verdict(event)) is not None:
                self._decided = (event.seq, verdict)
                return verdict
        while (event := await self._read()) is not None:
            self._ahead.append(event)
            if (verdict := _verdict(event)) is not None:
                self._decided = (event.seq, verdict)
                return verdict
        self._decided = (self.end_seq + 1, False)  # past the end of the journal: the open message's tail
        return False

    async def _take(self) -> Event | None:
        return self._ahead.popleft() if self._ahead else await self._read()

    async def _read(self) -> Event | None:
        """The next event of the log up to `end_seq`, in order (None past it)."""
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
        return event


def _verdict(event: Event) -> bool | None:
    """What `event`, after an open message's deltas, says of them: replayed (True: the agent went
    on past them), an unrecorded tail (False: the message was discarded), or nothing yet (None)."""
    if isinstance(event, MessageDiscarded):
        return False
    if isinstance(event, (MessageDelta, *BOOKKEEPING)):
        return None
    return True


__all__ = ["BOOKKEEPING", "Journal"]
