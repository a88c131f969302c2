"""Patching: change an agent's code while runs recorded by the old code are still in flight.

A run replays its agent against its log, so new code must make the same calls at the places
the log has already recorded. `ctx.patched(name)` tells the two apart where the code changes:

- reached live (a new run, or a replay that has gone past its recorded log): it records
  `patch.marked` and returns True, so the run takes the new code, and keeps taking it when it
  is replayed later (the marker is in its log at that point);
- replaying a log whose next recorded call is not that marker (the log predates the patch):
  it records nothing and returns False, so the run goes on with the old code it was recorded by.

A run takes one side of a patch: the answer is kept for the rest of the execution (as
Temporal's `workflow.patched` is memoized). Once no run that predates the patch is left, the
old code goes and `ctx.deprecate_patch(name)` stays in its place: it takes the marker of a run
that recorded one and records nothing, so it too can go once those runs are gone
(docs/durability.md, "When the agent's code changes").
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any

from .errors import InvalidRequest
from .events import Event, PatchMarked
from .recording import Recorder


def _marks(event: Event | None, name: str) -> bool:
    return isinstance(event, PatchMarked) and event.name == name


class Patches:
    """The patches one execution of a run's agent has reached, and which side it took of each."""

    def __init__(self, recorder: Recorder) -> None:
        self._rec = recorder
        #: Patch name -> whether this run takes the patched code.
        self._taken: dict[str, bool] = {}

    async def patched(self, name: str) -> bool:
        """True: take the new code (a live run, marked now; or a replayed one that marked it);
        False: the log predates the patch, take the old code."""
        _check(name)
        if name not in self._taken:
            self._taken[name] = await self._decide(name)
        return self._taken[name]

    async def deprecate(self, name: str) -> None:
        """The old code of patch `name` is gone: take the marker a replayed run recorded here, if any."""
        _check(name)
        if name not in self._taken:
            self._taken[name] = True
            if _marks(await self._rec.upcoming(), name):
                await self._rec.replayed(PatchMarked, f"deprecate_patch({name!r})", name=name)

    async def _decide(self, name: str) -> bool:
        upcoming = await self._rec.upcoming()
        if _marks(upcoming, name):
            await self._rec.replayed(PatchMarked, f"patched({name!r})", name=name)
            return True
        if upcoming is not None:  # a recorded call of the old code comes here: the log predates the patch
            return False
        run_id = self._rec.writer.state.run_id
        await self._rec.add(
            lambda seq: PatchMarked(run_id=run_id, seq=seq, at=self._rec.clock(), name=name),
            durable=False,  # commits with the run's next event: lost with it, it is marked again
        )
        return True


class Answer:
    """What `ctx.patched(name)` returns: awaited, the answer. Used as a truth value unawaited (a
    coroutine is always true: every run would take the new code), it raises TypeError instead."""

    def __init__(self, answer: Coroutine[Any, Any, bool], call: str) -> None:
        self._answer = answer
        self._call = call

    def __await__(self) -> Generator[Any, None, bool]:
        return self._answer.__await__()

    def __bool__(self) -> bool:
        self._answer.close()
        raise TypeError(f"{self._call} must be awaited: `if await {self._call}:`")


def _check(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidRequest("a patch name must be a non-empty string", name=repr(name))


__all__ = ["Answer", "Patches"]
