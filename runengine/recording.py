"""Record or replay: the one step every recorded call of an agent's context goes through.

A `Recorder` is the engine's side of a run's `RunContext`, held by the driver. Live, a call
appends its event (`Recorder.once`). Replaying (the run was taken up again by another engine),
the call is matched against the next event the agent recorded the first time
(`runengine.replay.Journal`): it gets that event back and appends nothing; a call that does not
match fails the run with `replay_divergence`. When the journal runs out the recorder goes live,
so the agent continues where its log ends: a message left open whose last deltas are streamed
again is then discarded and its kept text carried on by a new message (docs/durability.md).

The replay checker (runengine.testing.check_replay) uses a replay-only recorder: it judges a
log exactly as a resume would, and where a resume would go live it stops instead (PastTheLog).

The driver's plumbing lives here too, not on the agent's context: the graceful-stop flag, the
durable-wait flag, the divergence and the check that a replayed agent made every recorded call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import anyio

from .clock import Clock
from .errors import ReplayDivergence
from .events import ErrorInfo, Event, MessageDelta, MessageDiscarded, StepCompleted
from .reducer import Fold
from .replay import NOT_AT_HAND, Journal
from .wire import event_to_dict
from .writer import RunWriter

E = TypeVar("E", bound=Event)

class PastTheLog(Exception):
    """A replay-only recorder (`Recorder(replay_only=True)`) was asked for a call its log does not
    hold: the replay ends there, having diverged nowhere before it."""

    def __init__(self) -> None:
        super().__init__("the agent made a call past the end of its recorded log")


def _not_at_hand(name: str) -> Any:
    """`Recorder.step_at_hand` while there is no journal to answer from at once."""
    return NOT_AT_HAND


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


class Recorder:
    """Records a run's agent calls, or replays them from `journal` until it runs out."""

    def __init__(
        self,
        writer: RunWriter,
        clock: Clock,
        *,
        journal: Journal | None = None,
        on_stop: Callable[[], None] | None = None,
        replay_only: bool = False,
        on_park: Callable[[], None] | None = None,
        on_wait: Callable[[str, datetime], None] | None = None,
    ) -> None:
        """`replay_only` (the replay checker, runengine.testing): the log is all there is, nothing is
        made or appended; the first call past it raises PastTheLog, and so does every call after."""
        self.writer = writer
        self.replay_only = replay_only
        self.clock = clock
        self._on_stop = on_stop
        #: Ends the agent's task for a wait that something else resumes (None: this engine cannot).
        self._on_park = on_park
        #: Told when the agent begins a durable wait, with the run and when it is due (the engine
        #: frees a woken run's place among those in flight when the wait is long: runengine.idle).
        self._on_wait = on_wait
        self._diverged: ReplayDivergence | None = None
        #: Discarded message -> the message carrying its kept text on (filled while replaying).
        self._continued: dict[str, str] = journal.continued if journal is not None else {}
        #: The deltas a replayed `stream_step` went through (message id, text): made again if cut short.
        self._remade: tuple[str | None, str] = (None, "")
        self._stop_requested = False
        self._journal: Journal | None = None
        #: Whether the agent's calls are answered from the journal (set with it, `_use`: read
        #: once per `ctx.step`, live or replaying, so an attribute, not a property).
        self.replaying = False
        #: `ctx.step`'s way to a recorded step without a wait: the journal's `returned_step` while
        #: it replays and no stop is requested, else an answer of NOT_AT_HAND (then
        #: `replayed_step`). Set with the journal and the stop (one call per replayed step).
        self.step_at_hand: Callable[[str], Any] = _not_at_hand
        self._use(journal)
        #: True while the agent is in a durable wait (ask, sleep) that a stop need not wait out.
        self.waiting = False
        #: While it waits: since when (monotonic seconds), and until when (NO_DEADLINE: input only).
        self.waiting_since: float | None = None
        self.waiting_until: datetime | None = None

    def _use(self, journal: Journal | None) -> None:
        """Replay from `journal` on (None: live from here on)."""
        if journal is None and self._journal is not None:
            self._journal.release()
        self._journal = journal
        self.replaying = journal is not None
        self.step_at_hand = journal.returned_step if journal is not None and not self._stop_requested else _not_at_hand

    @property
    def stop_requested(self) -> bool:
        """Set by the driver on a graceful stop: the run stops at its next recorded event."""
        return self._stop_requested

    @stop_requested.setter
    def stop_requested(self, requested: bool) -> None:
        self._stop_requested = requested
        self._use(self._journal)  # a replayed step then takes the long way, which stops

    @property
    def fold(self) -> Fold:
        """The run as the agent sees it: while replaying, as it was at this point the first time."""
        return self._journal.fold if self._journal is not None else self.writer.fold

    @property
    def diverged(self) -> ReplayDivergence | None:
        return self._diverged

    # -- the primitive ----------------------------------------------------------------------

    async def upcoming(self) -> Event | None:
        """While replaying: the next recorded event, left for the call that takes it (`replayed`);
        None once live. Past the end of the log this goes live (a replay-only one raises PastTheLog)."""
        if self._diverged is not None:
            raise self._diverged
        journal = self._journal
        if journal is None:
            if self.replay_only:
                raise PastTheLog()
            return None
        if self._stop_requested:
            await self._stop()
        event = await journal.peek()
        if event is None:
            await self._go_live()
        return event

    async def replayed(self, kind: type[E], call: str, **expect: Any) -> E | None:
        """While replaying: the next recorded event, which must be a `kind` with the `expect`ed
        fields (else the run diverges); None once live (the call is to be made and recorded)."""
        if await self.upcoming() is None:
            return None
        assert self._journal is not None
        event = await self._journal.next()
        assert event is not None  # the one `upcoming` found
        if not isinstance(event, kind):
            raise self.diverge(event, call, f"the log has {event.type}")
        self.match(event, call, **expect)
        return event

    async def replayed_step(self, name: str) -> tuple[Any, ErrorInfo | None] | None:
        """`ctx.step`'s recorded (output, error) while replaying (`replayed`); None once live."""
        event = await self.replayed(StepCompleted, f"step({name!r})", name=name)
        return None if event is None else (event.output, event.error)

    async def once(self, kind: type[E], call: str, build: Callable[[int], E], *, durable: bool = True, **expect: Any) -> E:
        """Record-or-replay in one: the recorded `kind` event (matching `expect`), or `build(seq)` appended."""
        recorded = await self.replayed(kind, call, **expect)
        if recorded is not None:
            return recorded
        return await self.add(build, durable=durable)

    async def add(self, build: Callable[[int], E], *, durable: bool = True) -> E:
        """Append `build(seq)` live (a graceful stop ends the agent right after it)."""
        if self.replay_only:
            raise PastTheLog()
        event = await self.writer.add(build, durable=durable)
        if self._stop_requested:
            await self._stop()
        return event  # type: ignore[return-value]

    async def add_delta(self, message_id: str, content: str) -> None:
        if self.replay_only:
            raise PastTheLog()
        await self.writer.add_delta(message_id, content, self.clock())
        if self._stop_requested:
            await self._stop()

    def match(self, event: Event, call: str, **expected: Any) -> None:
        for name, value in expected.items():
            recorded = getattr(event, name)
            if recorded != value:
                raise self.diverge(event, call, f"it recorded {name}={recorded!r}, not {value!r}")

    def diverge(self, event: Event, call: str, why: str) -> ReplayDivergence:
        self._diverged = ReplayDivergence(
            f"replay diverged at seq {event.seq}: the agent called {call}, but {why}",
            seq=event.seq,
            recorded=event_to_dict(event),
            call=call,
        )
        self._use(None)
        return self._diverged

    # -- messages across a resume -------------------------------------------------------------

    def same_message(self, message_id: str) -> str:
        """The message that `message_id` goes on as now (itself, unless a resume discarded it)."""
        while message_id in self._continued:
            message_id = self._continued[message_id]
        return message_id

    def streamed_again(self, delta: MessageDelta) -> None:
        """A replayed `stream_step` went through `delta`: if the step turns out cut short, it is made
        again and the delta's text with it."""
        same = self._remade[0] == delta.message_id
        self._remade = (delta.message_id, (self._remade[1] if same else "") + delta.content)

    def step_recorded(self) -> None:
        """The replayed `stream_step` reached its `step.completed`: nothing it streamed is made again."""
        self._remade = (None, "")

    async def _go_live(self) -> None:
        """Past the end of the log: live from here on. A message left open whose last deltas are
        streamed again (the journal's tail, or a cut-short stream_step's) is discarded, and its kept
        text, what was replayed, carried on by a new message that the agent goes on streaming."""
        journal = self._journal
        self._use(None)
        if self.replay_only:
            raise PastTheLog()
        open_message = self.writer.fold.partial()
        if journal is None or open_message is None:
            return
        # Dropped: the tail the journal skipped, and what a replayed stream_step, cut short, streamed before it.
        dropped = (self._remade[1] if self._remade[0] == open_message.message_id else "") + journal.tail
        if not dropped:
            return
        kept = open_message.content[: len(open_message.content) - len(dropped)]
        continued = new_id("msg") if kept else None
        await self.writer.add(
            lambda seq: MessageDiscarded(
                run_id=journal.run_id, seq=seq, at=self.clock(), message_id=open_message.message_id, continued_as=continued
            ),
            durable=False,
        )
        if continued is not None:
            self._continued[open_message.message_id] = continued
            await self.writer.add_delta(continued, kept, self.clock())

    # -- the driver's plumbing ----------------------------------------------------------------

    async def finish_replay(self) -> None:
        """The agent returned: recorded calls it did not make again mean it diverged."""
        if self._diverged is not None:
            raise self._diverged
        if self._journal is not None:
            event = await self._journal.next()
            if event is None:
                await self._go_live()
            else:
                raise self.diverge(event, "return", f"the log goes on with {event.type}")

    @asynccontextmanager
    async def durable_wait(self, until: datetime) -> AsyncIterator[None]:
        """Mark a wait that survives a restart, until `until`: a graceful stop ends it at once (and
        the driver may park a long one, runengine.driver)."""
        if self._stop_requested:
            await self._stop()
        self.waiting, self.waiting_since, self.waiting_until = True, time.monotonic(), until
        if self._on_wait is not None:
            self._on_wait(self.writer.run_id, until)
        try:
            yield
        finally:
            self.waiting, self.waiting_since, self.waiting_until = False, None, None

    @property
    def can_park(self) -> bool:
        """Whether a wait may end the agent's task (`park`) instead of holding it."""
        return self._on_park is not None

    async def park(self) -> None:
        """End the agent here, its run unfinished (`run.suspended`, reason "waiting"), holding no
        task: the engine resumes it, replaying its log, when what it waits for comes
        (runengine.children, runengine.signals)."""
        assert self._on_park is not None
        await self.writer.flush()
        self._on_park()
        await anyio.lowlevel.checkpoint()  # raises the cancellation the park just requested

    async def _stop(self) -> None:
        """A graceful stop reached this run's next event: end the agent here (it resumes later)."""
        assert self._on_stop is not None
        self._on_stop()
        await anyio.lowlevel.checkpoint()  # raises the cancellation the stop just requested


__all__ = ["PastTheLog", "Recorder", "new_id"]
