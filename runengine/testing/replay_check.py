"""The replay checker: would the agent's new code replay the runs recorded by its old code?

`check_replay(agent_fn, logs)` replays `agent_fn` against each log exactly as an engine resuming
the run would (the engine's own `Recorder` and `Journal`, so "diverges" means one thing), but
with no side effects: steps and tools return their recorded results, nothing is appended, and
the first call past the end of a log ends that log's check (the run would go live there: no
divergence is possible past its log). Use it in CI against logs exported from production
(`runengine export`, `runengine.testing.logs.load_log`), or run `runengine check-replay` on a store.

    from runengine.testing import check_replay
from runengine.testing.logs import load_log

    def test_the_new_code_replays_production_runs():
        assert check_replay(refund_agent, [load_log(path) for path in LOGS]) == []

Outside an event loop it returns the divergences; inside one (an async test) it returns an
awaitable of them: `assert await check_replay(refund_agent, logs) == []`.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
import attrs

from runengine.agents import AgentSpec
from runengine.clock import Clock
from runengine.context import AgentFn, RunContext
from runengine.driver import after_agent, version_mismatch
from runengine.errors import InvalidRequest, ReplayDivergence
from runengine.events import Event, RunResumed, RunStarted
from runengine.ports import EventStore
from runengine.recording import PastTheLog, Recorder
from runengine.reducer import Fold
from runengine.replay import PAGE, Journal
from runengine.wire import event_to_dict
from runengine.writer import RunWriter


@attrs.frozen(kw_only=True)
class Divergence:
    """Where the new code parts from a recorded log: the run would fail `replay_divergence`."""

    run_id: str
    #: The seq of the recorded event the new code does not match.
    seq: int
    #: That event, in the wire format (`{"type", "seq", "data", ...}`).
    recorded: dict[str, Any]
    #: The call the new code made there (`step('rank')`, `return`, a version).
    call: str
    message: str


class _NoStore:
    """The store of a check given none: the agent read something its log does not record."""

    def __getattr__(self, name: str) -> Any:
        raise InvalidRequest(
            "the agent reads the store beyond its own log (ctx.history, ctx.session_steps): "
            "pass check_replay(..., store=) the store the runs were recorded in",
            method=name,
        )


def check_replay(
    agent_fn: AgentFn,
    logs: Iterable[Sequence[Event]],
    *,
    version: str | None = None,
    check_version: bool = False,
    store: EventStore | None = None,
) -> Any:
    """The divergences of `agent_fn` replayed against each of `logs` (each a run's events from seq 1,
    as `engine.events()` yields them), in the order of `logs`; empty when every log replays.

    With `check_version`, a log recorded by another `version` of the agent is a divergence too (a
    resume refuses it). `store`: where the agent reads what its log does not record (a session's
    history). A bad log raises InvalidRequest or InvalidTransition. Called outside an event loop,
    the list; inside one, an awaitable of it."""
    check = _check_all(agent_fn, [list(log) for log in logs], version if check_version else _UNCHECKED, store)
    if _in_event_loop():
        return check
    return anyio.run(lambda: check)


def _in_event_loop() -> bool:
    """Whether this thread runs an event loop (asyncio's, or trio's when trio is in use)."""
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
        return True
    except RuntimeError:
        return False


_UNCHECKED: Any = object()


async def _check_all(
    agent_fn: AgentFn, logs: list[list[Event]], version: Any, store: EventStore | None
) -> list[Divergence]:
    found: list[Divergence] = []
    for log in logs:
        divergence = await check_log(agent_fn, log, version=version, store=store)
        if divergence is not None:
            found.append(divergence)
    return found


async def check_log(
    agent_fn: AgentFn, log: Sequence[Event], *, version: Any = _UNCHECKED, store: EventStore | None = None
) -> Divergence | None:
    """`agent_fn` replayed against one run's `log`: where it diverges (None: it does not)."""
    if not log:
        raise InvalidRequest("a log to check holds a run's events from seq 1; this one is empty")
    fold = Fold()
    fold.apply_all(log)  # a log no engine could have written is refused here
    state = fold.state
    assert state is not None
    starts = [event for event in log if isinstance(event, (RunStarted, RunResumed))]
    if not starts:
        return None  # never started: the agent recorded nothing
    if version is not _UNCHECKED and (why := version_mismatch(state, state.agent, version)) is not None:
        return Divergence(run_id=state.run_id, seq=starts[-1].seq, recorded=event_to_dict(starts[-1]), call=f"version {version!r}", message=why)
    # What the engine wrote after the agent (its end) is no call of the agent's.
    end_seq = state.last_seq - 1 if log[-1].terminal else state.last_seq
    reads: Any = store if store is not None else _NoStore()
    writer = RunWriter(reads, Fold(state), flush_window=0.0, flush_max=1, snapshot_every=0)
    journal = Journal(reads, state.run_id, end_seq=end_seq, replay_from=state.replay_from, first_page=log)
    recorder = Recorder(writer, Clock(), journal=journal, replay_only=True)
    ctx = RunContext(recorder, reads, None)
    try:
        try:
            await agent_fn(ctx)
            await after_agent(ctx, recorder)
        except PastTheLog:
            return None
        except Exception as exc:
            if recorder.diverged is None:
                # The new code raised where the old one went on to make the recorded call `upcoming`.
                upcoming = await recorder.upcoming()  # PastTheLog when the old code stopped there too
                assert upcoming is not None
                raise recorder.diverge(upcoming, f"raise {type(exc).__name__}: {exc}", f"the log goes on with {upcoming.type}") from exc
    except PastTheLog:
        return None
    except ReplayDivergence:
        pass
    diverged = recorder.diverged
    if diverged is None:
        return None
    details = diverged.details
    return Divergence(
        run_id=state.run_id, seq=details["seq"], recorded=details["recorded"], call=details["call"], message=diverged.message
    )


@attrs.frozen(kw_only=True)
class StoreCheck:
    """What `check_store` found: the runs it replayed and where they diverge."""

    checked: tuple[str, ...]
    divergences: tuple[Divergence, ...]


async def check_store(
    store: EventStore,
    agents: Iterable[AgentSpec],
    *,
    since: datetime | None = None,
    in_flight: bool = False,
    page: int = 200,
) -> StoreCheck:
    """Every run in `store` of one of `agents` (created at `since` or later; unfinished ones only with
    `in_flight`), replayed by its agent's code and version (`runengine check-replay`)."""
    by_name = {spec.name: spec for spec in agents}
    checked: list[str] = []
    found: list[Divergence] = []
    before: str | None = None
    while True:
        listing = await store.list_runs(limit=page, before=before)
        for run in listing.runs:
            if run.agent not in by_name or (in_flight and run.status.terminal):
                continue
            if since is not None and run.created_at is not None and run.created_at < since:
                continue
            spec = by_name[run.agent]
            divergence = await check_log(spec.fn, await _whole_log(store, run.run_id), version=spec.version, store=store)
            checked.append(run.run_id)
            if divergence is not None:
                found.append(divergence)
        before = listing.next_before
        if before is None:
            return StoreCheck(checked=tuple(checked), divergences=tuple(found))


async def _whole_log(store: EventStore, run_id: str) -> list[Event]:
    log: list[Event] = []
    while batch := await store.read(run_id, after_seq=log[-1].seq if log else 0, limit=PAGE):
        log.extend(batch)
    return log


__all__ = ["Divergence", "StoreCheck", "check_log", "check_replay", "check_store"]
