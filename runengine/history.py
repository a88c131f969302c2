"""A session's conversation as data: each run's input, then its kept messages, oldest run first.

Read by `RunEngine.session_history` (the HTTP APIs) and by `RunContext.history` (an agent reading
the turns before its own run), from the store alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from .events import StepCompleted
from .ports import EventStore, RunSummary
from .reducer import Fold
from .state import RunState

#: Events read per page while folding a run's state.
PAGE = 1000


@attrs.frozen(kw_only=True)
class HistoryMessage:
    role: str
    content: Any
    run_id: str
    at: datetime | None = None
    agent: str | None = None


async def committed_state(store: EventStore, run_id: str) -> RunState | None:
    """The run's committed state (latest snapshot plus the events after it); None if unknown."""
    fold = Fold(await store.load_snapshot(run_id))
    while True:
        page = await store.read(run_id, after_seq=fold.last_seq, limit=PAGE)
        fold.apply_all(page)
        if len(page) < PAGE:
            return fold.state


async def session_runs(
    store: EventStore, session_id: str, *, owner: str | None = None, before_run: str | None = None
) -> list[RunSummary]:
    """The session's runs (of `owner`'s, when given), oldest first; with `before_run`, only the
    runs created before that one."""
    runs: list[RunSummary] = []
    before: str | None = None
    while True:
        page = await store.list_runs(session_id=session_id, owner=owner, limit=200, before=before)
        runs.extend(page.runs)
        before = page.next_before
        if before is None:
            break
    runs.reverse()
    if before_run is not None:
        ids = [run.run_id for run in runs]
        if before_run in ids:
            runs = runs[: ids.index(before_run)]
    return runs


async def step_outputs(store: EventStore, run_id: str, name: str) -> list[Any]:
    """The recorded outputs of the run's steps named `name` that succeeded, in the order recorded."""
    outputs: list[Any] = []
    after = 0
    while True:
        page = await store.read(run_id, after_seq=after, limit=PAGE)
        outputs.extend(e.output for e in page if isinstance(e, StepCompleted) and e.name == name and e.error is None)
        if len(page) < PAGE:
            return outputs
        after = page[-1].seq


async def session_history(
    store: EventStore, session_id: str, *, owner: str | None = None, before_run: str | None = None
) -> list[HistoryMessage]:
    """The messages of the session's runs (of `owner`'s, when given), oldest first.

    With `before_run`, only the runs created before that one (the run itself and later ones are left out).
    """
    history: list[HistoryMessage] = []
    for summary in await session_runs(store, session_id, owner=owner, before_run=before_run):
        state = await committed_state(store, summary.run_id)
        if state is None:  # deleted between the listing and the read
            continue
        history.append(
            HistoryMessage(role="user", content=state.input, run_id=state.run_id, at=state.created_at, agent=None)
        )
        for message in state.messages:
            history.append(
                HistoryMessage(
                    role=message.role,
                    content=message.content,
                    run_id=state.run_id,
                    at=state.finished_at or state.updated_at,
                    agent=state.agent,
                )
            )
    return history


__all__ = ["HistoryMessage", "committed_state", "session_history", "session_runs", "step_outputs"]
