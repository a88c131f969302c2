"""Signals: messages sent to a run while it runs, taken by its agent in order, each once.

A sender (`engine.signal(run_id, name, payload)`, `POST /runs/{id}/signals/{name}`) appends
`signal.received` to the run's log, whether or not any process executes the run at that moment:
the log is the mailbox, so a signal sent while the run's process is down is there when it
resumes. The agent takes them with `await ctx.receive(name, timeout=None)` (waits) or
`await ctx.poll(name)` (does not), which record what they took:

- `signal.taken` (the signal's id): the earliest signal of that name not taken yet;
- `signal.missed`: a poll found none, or the receive's timeout passed first;
- `signal.waiting` (with its deadline): a receive found none and waits, so the deadline holds
  across restarts.

Replayed, these return what was taken the first time, whatever arrived since. The agent's side
lives in `SignalInbox` (the context's `receive` and `poll` call it); the sender's side is the
engine's (`RunEngine.signal`), checked here (`check_signal_name`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from .clock import Clock
from .errors import InvalidRequest, RunEngineError
from .events import NO_DEADLINE, Event, SignalMissed, SignalRecord, SignalTaken, SignalWaiting
from .ports import EventStore
from .recording import Recorder
from .writer import RunEndedElsewhere

#: What a signal's name may be: it is a URL path segment too (`POST /runs/{id}/signals/{name}`).
SIGNAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def check_signal_name(name: object) -> str:
    """`name` if it can name a signal; InvalidRequest otherwise."""
    if not isinstance(name, str) or SIGNAL_NAME.fullmatch(name) is None:
        shown = name[:80] if isinstance(name, str) else name
        raise InvalidRequest(
            "a signal name is 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
            field="name", name=shown,
        )
    return name


class SignalTimedOut(RunEngineError):
    """`ctx.receive(name, timeout=...)`: no signal of that name came before the deadline."""

    code = "signal_timed_out"


def next_signal(signals: tuple[SignalRecord, ...], name: str) -> SignalRecord | None:
    """The earliest signal of `name` not taken yet."""
    return next((s for s in signals if s.name == name and not s.taken), None)


_MISSED = object()


class SignalInbox:
    """The agent's side of its run's signals (one per RunContext)."""

    def __init__(self, recorder: Recorder, store: EventStore, clock: Clock) -> None:
        self._rec = recorder
        self._store = store
        self._clock = clock

    async def receive(self, name: str, expires: datetime | None) -> Any:
        outcome = await self._take(name, expires, block=True)
        if outcome is _MISSED:
            raise SignalTimedOut(f"no signal {name!r} came before the deadline", name=name)
        return outcome

    async def poll(self, name: str, default: Any) -> Any:
        outcome = await self._take(name, None, block=False)
        return default if outcome is _MISSED else outcome

    async def _take(self, name: str, expires: datetime | None, *, block: bool) -> Any:
        rec, call = self._rec, f"{'receive' if block else 'poll'}({name!r})"
        recorded = await rec.replayed(Event, call)
        if isinstance(recorded, SignalWaiting) and block:
            rec.match(recorded, call, name=name)
            expires = recorded.expires_at  # the deadline recorded the first time
            waiting = True
            recorded = await rec.replayed(Event, call)
        else:
            waiting = False
        if recorded is not None:
            return self._recorded(recorded, name, call)
        # Live: what has arrived so far, then (a receive) wait for the log to bring one.
        writer = rec.writer
        await self._catch_up()
        if next_signal(writer.state.signals, name) is None and block:
            if not waiting:
                await rec.add(lambda seq: SignalWaiting(
                    run_id=writer.run_id, seq=seq, at=self._clock(), name=name, expires_at=expires))
            if expires is None and rec.can_park:
                await rec.park()  # no task while it waits: the signal's arrival resumes the run (replayed to here)
            async with rec.durable_wait(expires if expires is not None else NO_DEADLINE):
                while next_signal(writer.state.signals, name) is None and (expires is None or self._clock() < expires):
                    with self._clock.move_on_at(expires):
                        await self._store.wait(writer.run_id, after_seq=writer.committed_seq)
                    await self._catch_up()
        found = next_signal(writer.state.signals, name)
        if found is None:
            await rec.add(lambda seq: SignalMissed(run_id=writer.run_id, seq=seq, at=self._clock(), name=name))
            return _MISSED
        await rec.add(lambda seq: SignalTaken(run_id=writer.run_id, seq=seq, at=self._clock(), signal_id=found.signal_id))
        return found.payload

    def _recorded(self, event: Event, name: str, call: str) -> Any:
        """What a recorded receive or poll returned: the signal it took, or that it missed."""
        rec = self._rec
        if isinstance(event, SignalMissed):
            rec.match(event, call, name=name)
            return _MISSED
        if isinstance(event, SignalTaken):
            state = rec.fold.state
            assert state is not None
            taken = next(s for s in state.signals if s.signal_id == event.signal_id)  # the guard saw to it
            if taken.name != name:
                raise rec.diverge(event, call, f"it took signal {taken.name!r}")
            return taken.payload
        raise rec.diverge(event, call, f"the log has {event.type}")

    async def _catch_up(self) -> None:
        """Commit what the run queued, then take in what others appended since (signals, a cancel)."""
        writer = self._rec.writer
        await writer.flush()
        news = await self._store.read(writer.run_id, after_seq=writer.committed_seq)
        if news:
            await writer.accept(news)
        if writer.ended_elsewhere is not None:
            raise RunEndedElsewhere(writer.ended_elsewhere)


__all__ = ["SIGNAL_NAME", "SignalInbox", "SignalTimedOut", "check_signal_name", "next_signal"]
