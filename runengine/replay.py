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
it looks past an open message's deltas for its next durable call, the events up to it). A store
that can (the RecordedReader port) hands it a page of rows undecoded (`RecordedPage`: tuples
`(seq, type, at, payload)` as fetched, no object per row): the journal decides on each row's
type alone, and builds an event only for what needs one (a delta, a discard, a call the agent
takes as an event, a fold the agent asks for); a replayed `ctx.step` that returned takes its
recorded output from the stored payload, without a wait (`Journal.returned_step`).

A long journal (GC_PAUSE_ROWS rows or more left to read) pauses the cyclic garbage collector
while it reads them (runengine.collector): the rows it keeps for its lazy fold are a burst that
the collections walk for nothing. The pause ends once the last row is read, when the recorder
stops replaying (`release`), or after GC_PAUSE_SECONDS, whichever comes first.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from .collector import CollectorPause
from .events import (
    EVENT_TYPES,
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
    StepCompleted,
    UnknownEvent,
)
from .ports import EventStore, PackedLog, RecordedPage, RecordedReader, port_of
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

#: Event types that answer a call of the agent, told by type alone (a delta needs a look ahead;
#: every type not known here is an UnknownEvent, bookkeeping).
_CALLS = frozenset(EVENT_TYPES) - {cls.type for cls in BOOKKEEPING if cls is not UnknownEvent} - {MessageDelta.type}
_DELTA = MessageDelta.type
_DISCARDED = MessageDiscarded.type
_STEP = StepCompleted.type

#: What `Journal.returned_step` answers when the next recorded call is not at hand as a step that
#: returned (then the caller takes the long way: `Recorder.replayed_step`).
NOT_AT_HAND: Any = object()


class _Returned(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The stored payload of a step that returned, exactly (`StepCompleted`'s fields, the error
    null): anything else fails to decode as one. (gc=False: decoded JSON holds no cycles.)"""

    name: str
    output: Any
    error: None


#: Not looked up yet.
_UNKNOWN: Any = object()

#: Decodes a stored step payload straight into its three fields: no dict made and looked into.
_decode_returned = msgspec.json.Decoder(_Returned).decode

#: A row of a RecordedPage: (seq, type, at, payload).
Row = Sequence[Any]

#: Events read per page while replaying.
PAGE = 1000
#: Rows passed but not yet folded, at most (looked at as each page is read: past it they are
#: folded, so memory stays bounded). A passed row is kept as the store gave it (a tuple with
#: the payload's text, smaller than its event).
FOLD_BEHIND = 200_000
#: A journal with at least this many rows left to read pauses the collector while it reads them,
#: GC_PAUSE_SECONDS at most (a replay of 100,000 steps reads and replays in ~0.15 s).
GC_PAUSE_ROWS = 10_000
GC_PAUSE_SECONDS = 1.0
#: A journal with at least this many rows to read takes them from the store's packed copy first,
#: where it keeps one (the PackedLog port), about PACKED_PAGE rows a read; the log after it as
#: before. Fewer: from the log (the look-up would cost about what the pack saves).
PACKED_FROM = 5_000
PACKED_PAGE = 50_000


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
        #: The store as a RecordedReader (None: it is not one), looked up at the first read.
        self._rows: Any = _UNKNOWN
        #: The store as a PackedLog while its packed rows are read (None: it is not one, or they
        #: ran out, or the journal is too short to use them).
        self._packs: PackedLog | None = None
        self.run_id = run_id
        self.end_seq = end_seq
        # Before the last run.requeued the agent started afresh: nothing there is replayed.
        self._replay_from = replay_from
        self._fold = Fold()
        #: Rows passed since the fold last caught up, in order; `_position` is the seq of the last
        #: row passed before them.
        self._unfolded: list[Row] = []
        self._position = 0
        #: The rows of the page in hand (RecordedPage rows: (seq, type, at, payload)).
        self._page: list[Row] = RecordedPage.of([e for e in first_page if e.seq <= end_seq]).rows
        if self._page and self._page[0][0] != 1:
            raise ValueError("first_page must start at seq 1")
        #: Builds a row's event (the store's page decoder; a row holding its event needs none).
        self._decode: Callable[[Row], Event] | None = None
        self._index = 0
        self._read_seq = self._page[-1][0] if self._page else 0
        #: Rows read past the one being decided (looking for a delta's durable call), not yet passed.
        self._ahead: deque[Row] = deque()
        #: Deltas up to this seq are known to be replayed (True) or an unrecorded tail (False).
        self._decided: tuple[int, bool] = (0, False)
        #: A message that carries on a discarded one: its first delta (the kept text) comes next.
        self._carried: str | None = None
        #: Discarded message -> the message that carries its kept text on.
        self.continued: dict[str, str] = {}
        #: The text of the open message's unrecorded tail at the end of the journal, skipped.
        self.tail = ""
        #: The next recorded call, found by `peek` and not passed yet.
        self._held: Row | None = None
        #: The last row whose event was built, and that event (peek, then next: built once).
        self._built: tuple[Row, Event] | None = None
        #: The collector's pause while a long journal is read, and the timer that ends it.
        self._pause: CollectorPause | None = None
        self._pause_timer: asyncio.TimerHandle | None = None

    @property
    def position(self) -> int:
        """The seq of the last event passed (replayed or skipped)."""
        return self._unfolded[-1][0] if self._unfolded else self._position

    @property
    def fold(self) -> Fold:
        """The run as it was right after the last event passed."""
        if self._unfolded:
            unfolded, self._unfolded = self._unfolded, []
            self._position = unfolded[-1][0]
            apply, event_of = self._fold.apply, self._fresh_event
            for row in unfolded:
                apply(event_of(row))
        return self._fold

    def event_of(self, row: Row) -> Event:
        """The event of one of the journal's rows (built once for the row last asked about)."""
        built = self._built
        if built is not None and built[0] is row:
            return built[1]
        event = self._fresh_event(row)
        self._built = (row, event)
        return event

    def _fresh_event(self, row: Row) -> Event:
        payload = row[3]
        if isinstance(payload, Event):
            return payload
        assert self._decode is not None  # a stored row came from a page, with its decoder
        return self._decode(row)

    async def next(self) -> Event | None:
        """The next event the agent recorded (passed, so in `fold`), or None at the end of the journal."""
        row = await self._peek_row()
        if row is None:
            return None
        self._held = None
        self._pass(row)
        return self.event_of(row)

    async def peek(self) -> Event | None:
        """The event `next` returns, not passed yet (not in `fold`): a call that is recorded only on
        one side of a code change (`ctx.patched`) looks before it takes."""
        row = await self._peek_row()
        return None if row is None else self.event_of(row)

    def returned_step(self, name: str) -> Any:
        """`ctx.step(name)` replayed without a wait, for the common case: the output of the next
        recorded call, passed, when it is in the page in hand and is step `name` that returned;
        taken from the stored payload (decoded into its fields, no event built) or the event a
        row holds. NOT_AT_HAND (nothing passed) when there is more to do first (a page to read, a
        delta or bookkeeping to pass, a call already peeked) or anything else is recorded (an
        error, another call, another name or layout, a value msgspec refuses): then `next`
        decides, builds the event and matches it."""
        index = self._index
        try:
            row = self._page[index]
        except IndexError:  # (no len() asked first: this is once per replayed step)
            return NOT_AT_HAND
        seq, event_type, _, stored = row
        if event_type != _STEP or seq <= self._replay_from or self._held is not None or self._ahead:
            return NOT_AT_HAND
        if type(stored) is str:
            try:
                returned = _decode_returned(stored)
            except msgspec.DecodeError:  # (a ValidationError is one too)
                return NOT_AT_HAND
            if returned.name != name:
                return NOT_AT_HAND
            output = returned.output
        elif type(stored) is StepCompleted and stored.name == name and stored.error is None:
            output = stored.output
        else:
            return NOT_AT_HAND
        self._index = index + 1
        self._unfolded.append(row)  # passed (`_pass` inline: this is once per replayed step)
        return output

    async def _peek_row(self) -> Row | None:
        if self._held is None:
            self._held = await self._find()
        return self._held

    def _pass(self, row: Row) -> None:
        self._unfolded.append(row)

    async def _find(self) -> Row | None:
        """The next row the agent recorded, not passed yet (those skipped on the way are)."""
        while True:
            # The common case inline (a row of the page in hand): no coroutine per row.
            if self._ahead:
                row: Row | None = self._ahead.popleft()
            elif self._index < len(self._page):
                row = self._page[self._index]
                self._index += 1
            else:
                row = await self._read()
            if row is None:
                return None
            if row[0] > self._replay_from and (row[1] in _CALLS or await self._is_call(row)):
                return row
            self._pass(row)

    async def _is_call(self, row: Row) -> bool:
        """Whether `row` (after `replay_from`, not of a type that always is) answers a call of the
        agent (else it is skipped)."""
        if row[1] == _DISCARDED:
            discarded = self.event_of(row)
            assert isinstance(discarded, MessageDiscarded)
            if discarded.continued_as is not None:
                self.continued[discarded.message_id] = discarded.continued_as
                self._carried = discarded.continued_as
            return False
        if row[1] != _DELTA:
            return False  # bookkeeping
        delta = self.event_of(row)
        assert isinstance(delta, MessageDelta)
        if delta.message_id == self._carried:  # the kept text carried on, not a call
            self._carried = None
            return False
        if not await self._replayed(delta):
            if self._in_tail:
                self.tail += delta.content
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
        for row in self._ahead:
            if (verdict := _verdict(row[1])) is not None:
                self._decided = (row[0], verdict)
                return verdict
        while (row := await self._read()) is not None:
            self._ahead.append(row)
            if (verdict := _verdict(row[1])) is not None:
                self._decided = (row[0], verdict)
                return verdict
        self._decided = (self.end_seq + 1, False)  # past the end of the journal: the open message's tail
        return False

    async def _read(self) -> Row | None:
        """The next row of the log up to `end_seq`, in order (None past it)."""
        if self._index >= len(self._page):
            if self._read_seq >= self.end_seq:
                return None
            limit = min(PAGE, self.end_seq - self._read_seq)
            # Looked up here, not before: a log given whole (`first_page`) needs no store at all;
            # once (a runtime-checkable Protocol's isinstance walks its members: not per page).
            if self._rows is _UNKNOWN:
                self._rows = port_of(self._store, RecordedReader)
                if self.end_seq - self._read_seq >= PACKED_FROM:
                    self._packs = port_of(self._store, PackedLog)
                if self.end_seq - self._read_seq >= GC_PAUSE_ROWS:
                    self._pause_collector()
            page = None
            if self._packs is not None:
                page = await self._packs.read_packed(
                    self.run_id, after_seq=self._read_seq, upto_seq=self.end_seq, limit=PACKED_PAGE
                )
                if not page.rows:  # no (more) packed rows from here: the log itself
                    self._packs, page = None, None
            if page is None:
                if (rows := self._rows) is not None:
                    page = await rows.read_recorded(self.run_id, after_seq=self._read_seq, limit=limit)
                else:
                    page = RecordedPage.of(await self._store.read(self.run_id, after_seq=self._read_seq, limit=limit))
            self._page, self._index = page.rows, 0
            if self._page and not isinstance(self._page[0][3], Event):  # stored rows (else events)
                self._decode = page.event
            if not self._page:  # the log is shorter than it was when the resume began
                self._read_seq = self.end_seq
                self.release()
                return None
            self._read_seq = self._page[-1][0]
            if self._read_seq >= self.end_seq:
                self.release()  # every row read
            if len(self._unfolded) >= FOLD_BEHIND:
                self.fold  # noqa: B018 - catches up, so memory stays bounded
        row = self._page[self._index]
        self._index += 1
        return row

    def _pause_collector(self) -> None:
        self._pause = CollectorPause()
        self._pause.start()
        try:
            self._pause_timer = asyncio.get_running_loop().call_later(GC_PAUSE_SECONDS, self.release)
        except RuntimeError:  # not on asyncio: ended by the last read or `release` only
            pass

    def release(self) -> None:
        """Done with the store: the collector's pause, if any, ends (idempotent; the recorder
        calls it when it stops replaying, the driver when the run's agent is done)."""
        pause, self._pause = self._pause, None
        if pause is not None:
            pause.end()
        timer, self._pause_timer = self._pause_timer, None
        if timer is not None:
            timer.cancel()


def _verdict(event_type: str) -> bool | None:
    """What an event of `event_type`, after an open message's deltas, says of them: replayed (True:
    the agent went on past them), an unrecorded tail (False: the message was discarded), or nothing
    yet (None)."""
    if event_type == _DISCARDED:
        return False
    if event_type in _CALLS:
        return True
    return None  # a delta, or bookkeeping


__all__ = ["BOOKKEEPING", "NOT_AT_HAND", "Journal"]
