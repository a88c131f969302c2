"""A session's conversation as data: each run's input, then its kept messages, oldest run first.

Read by `RunEngine.session_history` (the HTTP APIs) and by `RunContext.history` (an agent reading
the turns before its own run), from the store alone, a bounded page at a time: a session of many
large runs is never held in memory whole.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from .errors import InvalidRequest
from .events import StepCompleted
from .ownership import can_access
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


@attrs.frozen
class HistoryPosition:
    """Where a message sits in a session's history: the run, and the message's index in that
    run's turn (0 is the run's input, 1.. its kept messages)."""

    run_id: str
    index: int


@attrs.frozen(kw_only=True)
class HistoryPage:
    """One page of a session's history, oldest first. Pages go back in time: the first is the
    latest messages; `next` (None: nothing older) is where the page before this one ends."""

    messages: list[HistoryMessage]
    positions: list[HistoryPosition]
    next: HistoryPosition | None = None


class HistoryCursorInvalid(InvalidRequest):
    """A history cursor that names no message of the caller's session."""

    def __init__(self) -> None:
        super().__init__("cursor names no message of this session", field="cursor")


def turn(state: RunState) -> list[HistoryMessage]:
    """A run's part of the conversation: its input (role "user"), then its kept messages."""
    messages = [HistoryMessage(role="user", content=state.input, run_id=state.run_id, at=state.created_at, agent=None)]
    for message in state.messages:
        messages.append(
            HistoryMessage(
                role=message.role,
                content=message.content,
                run_id=state.run_id,
                at=state.finished_at or state.updated_at,
                agent=state.agent,
            )
        )
    return messages


async def _session_turn(
    store: EventStore, session_id: str, owner: str | None, run_id: str
) -> list[HistoryMessage] | None:
    """The turn of `run_id` if it is a run of `owner`'s session `session_id` (None otherwise)."""
    summary = await store.get_run(run_id)
    if summary is None or summary.session_id != session_id or not can_access(summary.owner, owner):
        return None
    state = await committed_state(store, run_id)
    return None if state is None else turn(state)


async def session_history(
    store: EventStore,
    session_id: str,
    *,
    owner: str | None = None,
    limit: int,
    before: HistoryPosition | None = None,
    before_run: str | None = None,
) -> HistoryPage:
    """Up to `limit` messages of the session's runs (of `owner`'s, when given): the latest ones
    before `before` (a message's position), or before the run `before_run` (its turn and later
    ones left out), or the latest of all; oldest first.

    Reads one run at a time, newest first, and keeps only the messages it returns: a page costs
    the runs it covers, never the whole session. HistoryCursorInvalid for a `before` that names
    no message of this session (another principal's run, another session's)."""
    if limit < 1:
        raise InvalidRequest("limit must be >= 1", field="limit")
    newest_first: list[tuple[HistoryMessage, HistoryPosition]] = []
    # The first listing starts below a run (`before_run`); the next ones from the page's cursor.
    cursor: str | None = None
    if before is not None:
        messages = await _session_turn(store, session_id, owner, before.run_id)
        if messages is None or not 0 <= before.index <= len(messages):
            raise HistoryCursorInvalid()
        if _take(messages, before.run_id, before.index, limit, newest_first):
            return await _full_page(store, session_id, owner, newest_first)
        before_run = before.run_id
    while True:
        page = await store.list_runs(
            session_id=session_id, owner=owner, limit=min(limit, 200), before=cursor, before_run=before_run
        )
        before_run = None
        for summary in page.runs:
            state = await committed_state(store, summary.run_id)
            if state is None:  # deleted between the listing and the read
                continue
            messages = turn(state)
            if _take(messages, state.run_id, len(messages), limit, newest_first):
                return await _full_page(store, session_id, owner, newest_first)
        cursor = page.next_before
        if cursor is None:
            return _page(newest_first, more=False)


def _take(
    messages: list[HistoryMessage],
    run_id: str,
    end: int,
    limit: int,
    into: list[tuple[HistoryMessage, HistoryPosition]],
) -> bool:
    """Add messages[:end] newest first to `into` until it holds `limit`; whether it is full."""
    for index in range(end - 1, -1, -1):
        if len(into) == limit:
            return True
        into.append((messages[index], HistoryPosition(run_id, index)))
    return len(into) == limit


async def _full_page(
    store: EventStore, session_id: str, owner: str | None, newest_first: list[tuple[HistoryMessage, HistoryPosition]]
) -> HistoryPage:
    """A page that reached its limit: `next` unless its oldest message is the session's first."""
    oldest = newest_first[-1][1]
    more = oldest.index > 0
    if not more:
        more = bool((await store.list_runs(session_id=session_id, owner=owner, limit=1, before_run=oldest.run_id)).runs)
    return _page(newest_first, more=more)


def _page(newest_first: list[tuple[HistoryMessage, HistoryPosition]], *, more: bool) -> HistoryPage:
    newest_first.reverse()
    return HistoryPage(
        messages=[message for message, _ in newest_first],
        positions=[position for _, position in newest_first],
        next=newest_first[0][1] if more and newest_first else None,
    )


async def history_message(
    store: EventStore, session_id: str, position: HistoryPosition, *, owner: str | None = None
) -> HistoryMessage:
    """The one message at `position` of the session (reads that run only); HistoryCursorInvalid
    when there is none."""
    messages = await _session_turn(store, session_id, owner, position.run_id)
    if messages is None or not 0 <= position.index < len(messages):
        raise HistoryCursorInvalid()
    return messages[position.index]


async def session_runs(
    store: EventStore, session_id: str, *, owner: str | None = None, before_run: str | None = None, limit: int
) -> list[RunSummary]:
    """The latest `limit` runs of the session (of `owner`'s, when given) created before the run
    `before_run` (None: the latest of all), oldest first. Reads their summaries, not their logs."""
    newest_first: list[RunSummary] = []
    cursor: str | None = None
    while len(newest_first) < limit:
        page = await store.list_runs(
            session_id=session_id, owner=owner, limit=min(limit - len(newest_first), 200), before=cursor, before_run=before_run
        )
        before_run = None
        newest_first.extend(page.runs)
        cursor = page.next_before
        if cursor is None:
            break
    newest_first.reverse()
    return newest_first


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


__all__ = [
    "HistoryCursorInvalid",
    "HistoryMessage",
    "HistoryPage",
    "HistoryPosition",
    "committed_state",
    "history_message",
    "session_history",
    "session_runs",
    "step_outputs",
    "turn",
]
