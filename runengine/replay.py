"""The journal a resumed agent is replayed against: its run's log, read lazily, in order.

When an engine takes up an unfinished run it calls the agent function again. Each call
the agent makes on its context is matched against the next event the agent itself
recorded the first time (`Journal.next`); a recorded call returns what was recorded and
appends nothing. Once the journal is exhausted the context goes live.

The journal folds every event it passes into a `Fold` of its own, so that during replay
`ctx.state` is the state the agent saw at that point the first time, not the end of the log.
It folds lazily: the events passed are kept and folded when the state is asked for (an agent
that never reads `ctx.state` while replaying pays no fold), at most FOLD_BEHIND of them.
It skips what the agent did not produce itself (the run's lifecycle bookkeeping).

A message may stay open across durable calls (`delta`, then `step`, then more `delta`s). Its
deltas followed by anything else the agent recorded (a step, a tool call, a timer, a thought,
its own `message.completed`) are replayed like any other call: the agent got past them. The
deltas after the last such event, if the message never completed, are its unrecorded tail:
the journal skips them (text that need not come out the same when streamed again) and keeps
their text in `tail`, so the context can discard the message and carry its kept text on
(`message.discarded` with `continued_as`, docs/durability.md). The first delta of a message
that carries on a discarded one is that kept text, not a call of the agent: skipped too.

A call recorded on one side of a code change only (`ctx.patched`, runengine.patching) looks at
the next recorded call first (`Journal.peek`) and takes it only if it is its own.

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
    SignalReceived,
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
    SignalReceived,  # a sender's, at whatever point it came: ctx.receive replays signal.taken
    UnknownEvent,
)

#: Events read per page while replaying.
PAGE = 1000
#: Events passed but not yet folded, at most (then they are folded: memory stays bounded).
FOLD_BEHIND = 100_000


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
        self._fold = Fold()
        #: Events passed since the fold last caught up, in order.
        self._unfolded: list[Event] = []
        self._position = 0
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
        #: The next recorded call, found by `peek` and not passed yet.
        self._held: Event | None = None

    @property
    def position(self) -> int:
        """The seq of the last event passed (replayed or skipped)."""
        return self._position

    @property
    def fold(self) -> Fold:
        """The run as it was right after the last event passed."""
        if self._unfolded:
            unfolded, self._unfolded = self._unfolded, []
            self._fold.apply_all(unfolded)
        return self._fold

    async def next(self) -> Event | None:
        """The next event the agent recorded (passed, so in `fold`), or None at the end of the journal."""
        event = await self.peek()
        if event is not None:
            self._held = None
            self._pass(event)
        return event

    async def peek(self) -> Event | None:
        """The event `next` returns, not passed yet (not in `fold`): a call that is recorded only on
        one side of a code change (`ctx.patched`) looks before it takes."""
        if self._held is None:
            self._held = await self._find()
        return self._held

    def _pass(self, event: Event) -> None:
        self._position = event.seq
        unfolded = self._unfolded
        unfolded.append(event)
        if len(unfolded) >= FOLD_BEHIND:
            self.fold  # noqa: B018 - catches up, so memory stays bounded

    async def _find(self) -> Event | None:
        """The next event the agent recorded, not passed yet (those skipped on the way are)."""
        while True:
            # The common case inline (an event of the page in hand): no coroutine per event.
            if self._ahead:
                event: Event | None = self._ahead.popleft()
            elif self._index < len(self._page):
                event = self._page[self._index]
                self._index += 1
            else:
                event = await self._read()
            if event is None:
                return None
            if event.seq > self._replay_from and await self._is_call(event):
                return event
            self._pass(event)

    async def _is_call(self, event: Event) -> bool:
        """Whether `event` (after `replay_from`) answers a call of the agent (else it is skipped)."""
        if isinstance(event, MessageDiscarded) and event.continued_as is not None:
            self.continued[event.message_id] = event.continued_as
            self._carried = event.continued_as
        if isinstance(event, BOOKKEEPING):
            return False
        if isinstance(event, MessageDelta):
            if event.message_id == self._carried:  # the kept text carried on, not a call
                self._carried = None
                return False
            if not await self._replayed(event):
                if self._in_tail:
                    self.tail += event.content
                return False
        return True

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
