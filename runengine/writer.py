"""RunWriter: the single writer of one live run's log, with group commit.

Every event is validated by the run's `Fold` the moment it is produced (so an
illegal event fails in the agent that produced it, and nothing is written), then
queued. So is its payload, as strict JSON: an event holding NaN, Infinity or
anything else JSON cannot carry raises InvalidRequest in the agent, and a run's
output that cannot be JSON ends the run `run.failed` with code `invalid_output`.
Token deltas are committed in groups: the queue is flushed when `flush_max`
events are pending, `flush_window` seconds after the first one, or at once for
any other event. A flush is one `store.append` call, so one transaction,
and nobody sees an event before its batch is durable.

The writer also holds the run to the engine's limits: an event over `max_event_bytes`
of JSON is refused (`EventTooLarge`, nothing recorded), and once the log holds
`max_events - 1` events every further event but the run's end is refused
(`TooManyEvents`), so the run can only end `run.failed` with code `too_many_events`.

If the append meets a conflict, someone else wrote to the run (a cancel, the
recovery of a lost worker ...): the writer re-reads the log, and stops the run's
agent with `RunEndedElsewhere` if the run has ended, or re-numbers its batch after
the new events and tries again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import attrs
import structlog

from . import observe
from .errors import AgentFailed, ConcurrencyConflict, EventTooLarge, InvalidRequest, TooManyEvents
from .events import ErrorInfo, Event, MessageDelta, RunCompleted, RunFailed, RunResumed, RunSuspended
from .limits import MAX_EVENT_BYTES, MAX_EVENTS_PER_RUN
from .ports import MAX_PAGE, EventStore
from .reducer import Fold
from .state import RunState
from .wire import data_to_json

log = structlog.get_logger("runengine.writer")

#: Batches' worth of events (`flush_max` each) an agent may queue while a batch commits.
BACKLOG_BATCHES = 2

#: A run that ends, or rests (a durable wait begins, or a graceful stop suspends it), gets a
#: snapshot only if at least this many events follow the last one.
TERMINAL_SNAPSHOT_MIN = 64


def _scope_class() -> Callable[..., anyio.CancelScope]:
    """The running async backend's CancelScope class, to make a writer's scopes with:
    `anyio.CancelScope(...)` looks the backend up again for every scope (five calls more per
    durable step). Outside an event loop, anyio.CancelScope itself."""
    try:
        return type(anyio.CancelScope())
    except RuntimeError:  # anyio's NoEventLoopError
        return anyio.CancelScope


class RunEndedElsewhere(Exception):
    """The run reached a terminal event written by someone other than this writer."""

    def __init__(self, event: Event) -> None:
        super().__init__(f"run {event.run_id} ended elsewhere with {event.type} (seq {event.seq})")
        self.event = event


class RunWriter:
    def __init__(
        self,
        store: EventStore,
        fold: Fold,
        *,
        flush_window: float,
        flush_max: int,
        snapshot_every: int,
        snapshot_seq: int = 0,
        max_events: int = MAX_EVENTS_PER_RUN,
        max_event_bytes: int = MAX_EVENT_BYTES,
        unsaved: Sequence[Event] = (),
    ) -> None:
        """`unsaved`: the last events `fold` holds, not yet committed (a sync run's run.created,
        which commits in the run's first batch): queued, and committed within the flush window."""
        assert fold.run_id is not None
        self.store = store
        self.run_id: str = fold.run_id
        self.fold = fold
        self.committed_seq = fold.last_seq - len(unsaved)
        self._pending: list[Event] = list(unsaved)
        self._lock = anyio.Lock(fast_acquire=True)  # uncontended (the common case): no yield to the loop
        self._shield_scope = _scope_class()
        self._wake = anyio.Event()
        if unsaved:
            self._wake.set()
        self._full = anyio.Event()  # a whole batch is queued: the flush loop need not wait
        #: Given by `flush_when_needed`: starts `flush_loop` as a task, and a timer (None: the
        #: owner runs the loop from the start).
        self._spawn_loop: Callable[[], None] | None = None
        self._call_later: Callable[[float, Callable[[], None]], Any] | None = None
        self._window: Any = None  # the timer of the first queued event's flush window
        #: Set (and dropped) when an append returns; made only when someone waits for one.
        self._batch_done: anyio.Event | None = None
        self._loop_running = False
        self._flush_window = flush_window
        self._flush_max = flush_max
        self._snapshot_every = snapshot_every
        self._snapshot_seq = snapshot_seq
        self._max_events = max_events
        self._max_event_bytes = max_event_bytes
        #: Longest delta content that is surely within max_event_bytes (6 bytes a character escaped, 1 KiB of fields).
        self._safe_delta_chars = (max_event_bytes - 1024) // 6
        #: The limit the run ran into: its end can then only be a failure with this code.
        self._exceeded: AgentFailed | None = None
        #: Set when a background flush failed; the run's driver reads it.
        self.failure: BaseException | None = None
        self.ended_elsewhere: Event | None = None
        #: Set once the `unsaved` events are committed, or once nothing more will be (`settle`).
        self.saved = anyio.Event()
        #: Whether `saved` is still to be set (known here, not asked of the Event at every flush).
        self._saving = bool(unsaved)
        if not unsaved:
            self.saved.set()

    @property
    def next_seq(self) -> int:
        return self.fold.last_seq + 1

    @property
    def state(self) -> RunState:
        """The run as this writer sees it: committed events plus the ones still queued."""
        state = self.fold.state
        assert state is not None
        return state

    async def add(self, build: Callable[[int], Event], *, durable: bool) -> Event:
        """Number, validate and queue an event; with `durable`, return once it is committed."""
        self._check()
        event = self._within_limits(build(self.fold.last_seq + 1))
        self.fold.apply(event)  # InvalidTransition here leaves everything as it was
        pending = self._pending
        pending.append(event)
        if durable:
            await self.flush()
        elif len(pending) >= self._flush_max:
            await self._hand_over()
        elif len(pending) == 1:
            self._first_queued()
        return event

    async def add_delta(self, message_id: str, content: str, at: Any) -> None:
        """The hot path of token streaming: `add` for a message.delta, without the closure."""
        self._check()
        event = MessageDelta(
            run_id=self.run_id, seq=self.fold.last_seq + 1, at=at, message_id=message_id, content=content
        )
        if event.seq >= self._max_events or len(content) > self._safe_delta_chars:
            self._within_limits(event)
        self.fold.apply(event)
        pending = self._pending
        pending.append(event)
        if len(pending) >= self._flush_max:
            await self._hand_over()
        elif len(pending) == 1:
            self._first_queued()

    def _within_limits(self, event: Event) -> Event:
        """`event` if it is strict JSON within the run's limits; raises for an agent's event that is
        not (InvalidRequest, TooManyEvents, EventTooLarge). A run's end always has room: an output
        that cannot be JSON, is over a limit, or follows an event past one becomes the failure."""
        if event.terminal:
            if isinstance(event, RunCompleted):
                try:
                    self._check_size(event)
                except EventTooLarge as exc:
                    self._exceeded = exc
                except InvalidRequest as exc:
                    error = ErrorInfo(code="invalid_output", message=exc.message)
                    return RunFailed(run_id=event.run_id, seq=event.seq, at=event.at, error=error)
                if self._exceeded is not None:
                    error = ErrorInfo(code=self._exceeded.code, message=self._exceeded.message)
                    return RunFailed(run_id=event.run_id, seq=event.seq, at=event.at, error=error)
            return event
        if event.seq >= self._max_events:  # the last seq is kept for the run's end
            self._exceeded = TooManyEvents(self.run_id, self._max_events)
            raise self._exceeded
        self._check_size(event)
        return event

    def _check_size(self, event: Event) -> None:
        """Encodes the payload once: InvalidRequest if it cannot be strict JSON, EventTooLarge if too big."""
        text = data_to_json(event)
        size = len(text) if text.isascii() else len(text.encode())
        if size > self._max_event_bytes:
            raise EventTooLarge(event.type, size, self._max_event_bytes)

    async def _hand_over(self) -> None:
        """A whole batch is queued: the flush loop commits it while the agent goes on producing.

        The agent goes on while an earlier batch is still committing (the store's fsync overlaps
        the agent's work), queueing up to BACKLOG_BATCHES batches' worth, which the flush under
        way takes next in one append: a slow commit makes the next one larger, not the agent
        stall at every batch. Past that it waits, so memory stays bounded. Without a flush
        loop, flush here.
        """
        if self._lock.locked():
            if len(self._pending) < self._flush_max * BACKLOG_BATCHES:
                return  # the flush under way takes them next (its loop runs while any are pending)
            if self._batch_done is None:
                self._batch_done = anyio.Event()
            await self._batch_done.wait()
        elif self._loop_running:
            self._full.set()
            self._wake.set()
            await anyio.lowlevel.checkpoint()  # let the loop take the batch
        elif self._spawn_loop is not None:
            self._start_loop()
            await anyio.lowlevel.checkpoint()
        else:
            await self.flush()

    def flush_when_needed(
        self, spawn: Callable[[], None] | None, call_later: Callable[[float, Callable[[], None]], Any] | None = None
    ) -> None:
        """Start `flush_loop` (`spawn()`, a task in the run's task group) only once it has work:
        when events are still queued a flush window after the first of them (`call_later(seconds,
        callback)` -> a handle with `cancel()`, the event loop's timer), or a whole batch is. A
        run that ends within the window, as a short one does, commits with its end and makes no
        task. `spawn=None`: no more (the group is closing); the timer is cancelled."""
        self._spawn_loop, self._call_later = spawn, call_later
        if spawn is None:
            self._cancel_window()
        elif self._pending:  # a sync run's unsaved run.created
            self._first_queued()

    def _first_queued(self) -> None:
        """An event is queued with none before it: it commits within the flush window."""
        if self._spawn_loop is None or self._loop_running:
            self._wake.set()
        elif self._window is None and self._call_later is not None:
            self._window = self._call_later(self._flush_window, self._window_ended)

    def _window_ended(self) -> None:
        self._window = None
        if self._pending and not self._loop_running and self._spawn_loop is not None:
            self._start_loop()

    def _start_loop(self) -> None:
        """Start the flush loop, which commits what is queued at once (its window has passed, or a batch is whole)."""
        assert self._spawn_loop is not None
        self._cancel_window()
        self._loop_running = True
        self._full.set()
        self._wake.set()
        self._spawn_loop()

    def _cancel_window(self) -> None:
        window, self._window = self._window, None
        if window is not None:
            window.cancel()

    def _check(self) -> None:
        if self.ended_elsewhere is not None:
            raise RunEndedElsewhere(self.ended_elsewhere)
        if self.failure is not None:
            raise self.failure

    async def flush(self) -> None:
        """Commit everything queued so far (one append, one transaction)."""
        # acquire/release, not `async with`: the same lock (a cancelled agent stops here), two
        # frames fewer per durable step
        await self._lock.acquire()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                last = batch[-1]
                # Nothing else is queued at this instant, so the fold holds the state right
                # after this batch: take it now if a snapshot is due once the batch commits.
                snapshot = self.fold.state if self._snapshot_due(last) else None
                started = time.perf_counter()
                try:
                    # Shielded: a cancel (the run's end, a shutdown) must not leave it unknown
                    # whether a batch was committed; it waits for the commit instead.
                    with self._shield_scope(shield=True):
                        await self.store.append(self.run_id, batch, expected_seq=batch[0].seq - 1)
                except ConcurrencyConflict:
                    await self._rebase(batch)
                    continue
                finally:
                    if self._batch_done is not None:
                        self._batch_returned()
                self.committed_seq = last.seq
                if self._saving:
                    self._saving = False
                    self.saved.set()
                if observe.installed():  # (nobody listening: no report made, no closure)
                    observe.appended(batch, lambda: self.state, time.perf_counter() - started)
                if snapshot is not None and snapshot.last_seq == last.seq:
                    await self.store.save_snapshot(snapshot)
                    self._snapshot_seq = snapshot.last_seq
            if self._window is not None:  # nothing is queued: no window is running
                self._cancel_window()
        finally:
            self._lock.release()

    async def flush_loop(self) -> None:
        """Background task: flush `flush_window` seconds after the first queued event."""
        self._loop_running = True
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                if len(self._pending) < self._flush_max:
                    with anyio.move_on_after(self._flush_window):
                        await self._full.wait()
                self._full = anyio.Event()
                await self.flush()
        except RunEndedElsewhere:
            return  # the agent's next event raises it too
        except Exception as exc:  # e.g. the store is gone: the agent's next event raises it
            self.failure = exc
        finally:
            self._loop_running = False
            self._batch_returned()  # nobody may wait for a loop that has stopped

    def settle(self) -> None:
        """The run's task has ended: nobody waits for `saved` any longer (see `committed_seq`)."""
        self._saving = False
        self.saved.set()

    def _batch_returned(self) -> None:
        done, self._batch_done = self._batch_done, None
        if done is not None:
            done.set()

    async def accept(self, events: list[Event]) -> None:
        """Take in events that someone else committed (a run.input, a cancel ...)."""
        async with self._lock:
            for event in events:
                if event.seq <= self.committed_seq:
                    continue
                self.fold.apply(event)
                self.committed_seq = event.seq
                if event.terminal:
                    self.ended_elsewhere = event

    def _snapshot_due(self, last: Event) -> bool:
        # Every `snapshot_every` events, stretched to 1/8 of the log for very long runs: a
        # snapshot costs the state's size, so a fixed interval would make long streams
        # quadratic, while this keeps the total snapshot work linear and the tail that
        # `status` folds within 1/8 of the log. At the end of a run, a snapshot pays off
        # only when the tail is longer than reading a few events would cost; so it does where
        # a run comes to rest unfinished (a durable wait begins: it gets a wake time; or it is
        # suspended), as the next engine to take it up loads its state from here (issue 22:
        # a 100,000-step run resumed from its sleep folded the ~5,000 events after its last
        # snapshot, ~25 ms of a resume at ~210).
        since = last.seq - self._snapshot_seq
        if last.terminal or last.wake_after(None) is not None or type(last) is RunSuspended:
            return since >= TERMINAL_SNAPSHOT_MIN
        if type(last) is RunResumed:
            # The state was just loaded (its latest snapshot and the tail after it), and this
            # writer counts from seq 0: a snapshot here would be written on the resume's path,
            # before the replay, of a state the next batch holds too. That batch takes it.
            return False
        return since >= max(self._snapshot_every, self._snapshot_seq // 8)

    async def _rebase(self, batch: list[Event]) -> None:
        """After a conflict: refold the committed log, then re-number what we still have to write."""
        unsent = batch + self._pending
        self._pending = []
        fold = Fold(await self.store.load_snapshot(self.run_id))
        while True:
            page = await self.store.read(self.run_id, after_seq=fold.last_seq, limit=MAX_PAGE)
            if not page:
                break
            for event in page:
                fold.apply(event)
                if event.terminal:
                    self.fold, self.committed_seq, self.ended_elsewhere = fold, event.seq, event
                    log.info("run ended elsewhere", run_id=self.run_id, event=event.type, seq=event.seq)
                    raise RunEndedElsewhere(event)
        self.fold, self.committed_seq = fold, fold.last_seq
        for event in unsent:
            renumbered = attrs.evolve(event, seq=fold.last_seq + 1)
            fold.apply(renumbered)
            self._pending.append(renumbered)
