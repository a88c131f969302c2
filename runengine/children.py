"""Child runs: an agent starts other runs (sub-agents) and joins their outputs, durably.

`handle = await ctx.spawn(agent, input)` records `child.spawned` (the child's run id) in the
parent's log first, then creates the child run under that id (its `run.created` names the
parent), so a crash between the two creates it on replay, and never twice (a run id is
created once). `await handle` (or `await ctx.join(run_id)`) waits for the child's end and records
it in the parent's log as `child.ended`: its output is returned, its failure raised as
`ChildFailed`, live and on replay alike. `ctx.gather(*handles)` joins several in the order given.

Deterministic on replay: spawns and joins are recorded calls, matched in order like any other,
so an agent spawns its children one after the other (each spawn only creates a run: they all
run at once) and joins them in a fixed order (`ctx.gather`), not from concurrent tasks.

A waiting parent is in a durable wait, like `ctx.ask`: it holds no run of the store's, a graceful
stop ends the wait at once, and the next engine resumes it where it was. Cancelling a parent
cancels its unfinished children (`cancel_children`, called by `RunEngine.cancel`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol

from .errors import InvalidRequest, RunEngineError
from .events import NO_DEADLINE, ChildEnded, ChildRecord, ChildSpawned, ErrorInfo
from .ports import EventStore, RunSummary
from .recording import Recorder
from .state import RunState


class ChildFailed(RunEngineError):
    """The child run failed or was cancelled: `await handle` raises this (its error in `details`)."""

    code = "child_failed"

    def __init__(self, child_run_id: str, status: str, error: ErrorInfo | None) -> None:
        what = f"{error.code}: {error.message}" if error is not None else status
        super().__init__(
            f"child run {child_run_id!r} {status} ({what})", child_run_id=child_run_id, status=status,
            error=None if error is None else {"code": error.code, "message": error.message},
        )
        self.child_run_id = child_run_id
        self.status = status
        self.error = error


class ChildHost(Protocol):
    """What the agent's side needs of the engine (runengine.engine.RunEngine implements it)."""

    async def check_child(
        self, parent: RunState, agent: str, input: Any, *, session_id: str | None, metadata: dict[str, Any] | None
    ) -> None:
        """Raise (AgentNotFound, InvalidRequest, SessionNotFound, SessionEnded) if `parent` cannot
        have such a child."""

    async def create_child(
        self, parent: RunState, child_run_id: str, agent: str, input: Any, *,
        session_id: str | None, metadata: dict[str, Any] | None,
    ) -> None:
        """Create the child run under `child_run_id` unless it exists already."""

    async def status(self, run_id: str) -> RunState: ...


class ChildHandle:
    """A spawned child run: `await handle` joins it (returns its output, raises ChildFailed)."""

    def __init__(self, run_id: str, agent: str, join: Callable[[str], Awaitable[Any]]) -> None:
        self.run_id = run_id
        self.agent = agent
        self._join = join

    def __await__(self) -> Generator[Any, None, Any]:
        return self._join(self.run_id).__await__()

    def __repr__(self) -> str:
        return f"ChildHandle({self.run_id!r}, agent={self.agent!r})"


def _outcome(ended: ChildEnded | ChildRecord) -> Any:
    if ended.status == "completed":
        return ended.output
    assert ended.status is not None
    raise ChildFailed(ended.child_run_id if isinstance(ended, ChildEnded) else ended.run_id, ended.status, ended.error)


class ChildRuns:
    """The agent's side of its child runs (one per RunContext)."""

    def __init__(self, recorder: Recorder, store: EventStore, host: ChildHost | None) -> None:
        self._rec = recorder
        self._store = store
        self._host = host

    def _engine(self) -> ChildHost:
        if self._host is None:
            raise InvalidRequest("this run's engine cannot start child runs")
        return self._host

    async def spawn(
        self, agent: str, input: Any, *, session_id: str | None, metadata: dict[str, Any] | None
    ) -> ChildHandle:
        rec, writer = self._rec, self._rec.writer
        # The replay checker (runengine.testing) replays a recorded spawn with no engine behind it.
        host = self._host if rec.replay_only else self._engine()
        # Refused before anything is recorded: a recorded spawn creates its child, whatever happens.
        if host is not None:
            await host.check_child(writer.state, agent, input, session_id=session_id, metadata=metadata)
        child_run_id = uuid.uuid4().hex
        spawned = await rec.once(
            ChildSpawned,
            f"spawn({agent!r})",
            lambda seq: ChildSpawned(run_id=writer.run_id, seq=seq, at=rec.clock(), child_run_id=child_run_id, agent=agent),
            agent=agent,
        )
        known = next(c for c in writer.state.children if c.run_id == spawned.child_run_id)
        if known.status is None and host is not None:  # not joined yet: make sure it exists (a crash may have come in between)
            await host.create_child(
                writer.state, spawned.child_run_id, agent, input, session_id=session_id, metadata=metadata
            )
        return ChildHandle(spawned.child_run_id, agent, self.join)

    async def join(self, child_run_id: str) -> Any:
        rec = self._rec
        state = rec.fold.state
        assert state is not None
        child = next((c for c in state.children if c.run_id == child_run_id), None)
        if child is None:
            raise InvalidRequest(f"run {child_run_id!r} is not a child of this run", child_run_id=child_run_id)
        if child.status is not None:  # joined before: the same answer again, nothing recorded
            return _outcome(child)
        call = f"join({child_run_id!r})"
        recorded = await rec.replayed(ChildEnded, call, child_run_id=child_run_id)
        if recorded is None:
            status, output, error = await self._wait_ended(child_run_id)
            recorded = await rec.add(lambda seq: ChildEnded(
                run_id=rec.writer.run_id, seq=seq, at=rec.clock(), child_run_id=child_run_id,
                status=status, output=output, error=error,
            ))
        return _outcome(recorded)

    async def gather(self, children: tuple[ChildHandle | str, ...], return_exceptions: bool) -> list[Any]:
        results: list[Any] = []
        for child in children:
            try:
                results.append(await self.join(child.run_id if isinstance(child, ChildHandle) else child))
            except ChildFailed as exc:
                if not return_exceptions:
                    raise
                results.append(exc)
        return results

    async def _wait_ended(self, child_run_id: str) -> tuple[str, Any, ErrorInfo | None]:
        """Wait (durably) for the child's end: its status, output and error. Where the engine can,
        the parent parks instead (no task; the child's end resumes it, and it replays to here)."""
        host = self._engine()
        if self._rec.can_park:
            summary = await self._store.get_run(child_run_id)
            if summary is not None and not summary.status.terminal:
                await self._rec.park()
        async with self._rec.durable_wait(NO_DEADLINE):  # until the child ends
            while True:
                summary = await self._store.get_run(child_run_id)
                if summary is None:  # deleted by hand before its parent joined it
                    return "failed", None, ErrorInfo(code="not_found", message=f"child run {child_run_id!r} is gone")
                if summary.status.terminal:
                    ended = await host.status(child_run_id)
                    return ended.status.value, ended.output, ended.error
                await self._store.wait(child_run_id, after_seq=summary.last_seq, timeout=30.0)


async def cancel_children(
    state: RunState, cancel: Callable[[str], Awaitable[RunState]], read: Callable[[str], Awaitable[RunSummary | None]]
) -> None:
    """Cancel `state`'s children that have not ended (each cancel cascades to its own children)."""
    for child in state.children:
        if child.status is None:
            summary = await read(child.run_id)
            if summary is not None and not summary.status.terminal:
                await cancel(child.run_id)


__all__ = ["ChildFailed", "ChildHandle", "ChildHost", "ChildRuns", "cancel_children"]
