"""Who may reach what: the one place every surface asks.

Every run, session (created explicitly or begun by the first run naming it, on any profile),
idempotency record and webhook registration belongs to the principal that created it: its
`owner`. A caller is the owner string of the request's principal, or None when auth is off
(then everything is reachable, as one principal's). Another principal's object is answered
exactly as a missing one (RunNotFound / SessionNotFound: 404), never as forbidden or busy, so
that nothing tells it the object exists.

Client-chosen session (and thread) ids are one namespace per principal: alice's "s1" and bob's
"s1" are two sessions, so nobody can squat an id another will use. A session is named by
(owner, session id); `session_key` is the one place that turns that pair into the id the store
keeps the record under. Runs need no such key: a run's log records its session id and owner,
and every listing of a session's runs filters by both.
"""

from __future__ import annotations

import json

import attrs

from .errors import RunNotFound, SessionNotFound
from .ports import EventStore, RunSummary, SessionRecord, SessionStore
from .state import RunState


def can_access(owner: str | None, caller: str | None) -> bool:
    """Whether `caller` may reach an object owned by `owner` (None caller: auth is off)."""
    return caller is None or owner == caller


def idempotency_principal(caller: str | None) -> str:
    """The principal an idempotency record is kept under ("" when auth is off)."""
    return "" if caller is None else caller


async def run_of(store: EventStore, run_id: str, caller: str | None) -> RunSummary:
    """The run's listing row if `caller` may reach it; RunNotFound otherwise."""
    summary = await store.get_run(run_id)
    if summary is None or not can_access(summary.owner, caller):
        raise RunNotFound(run_id)
    return summary


def session_key(owner: str | None, session_id: str) -> str:
    """The id the store keeps `owner`'s session `session_id` under. No owner (auth off): the id
    itself. Otherwise a JSON pair, which no two (owner, id) pairs spell alike (a joined string
    would: ("acme:alice", "x") and ("acme", "alice:x"))."""
    if owner is None:
        return session_id
    return json.dumps([owner, session_id], ensure_ascii=False, separators=(",", ":"))


def as_seen(record: SessionRecord, session_id: str) -> SessionRecord:
    """A stored record as its owner names it (`session_id`, the id the client chose)."""
    return record if record.session_id == session_id else attrs.evolve(record, session_id=session_id)


def as_stored(record: SessionRecord) -> SessionRecord:
    """A record as the store keeps it: under `session_key` of its owner and id."""
    return attrs.evolve(record, session_id=session_key(record.owner, record.session_id))


async def stored_session(store: SessionStore, owner: str | None, session_id: str) -> SessionRecord | None:
    """`owner`'s session `session_id` as stored (under its key), None if it has none. A record an
    owner made before ids were per principal is kept under the bare id: it is still found there
    (its owner's, no one else's); saving it (`as_stored`) moves it under its key."""
    record = await store.get_session(session_key(owner, session_id))
    if record is None and owner is not None:
        legacy = await store.get_session(session_id)
        if legacy is not None and legacy.owner == owner:
            return legacy
    return record


async def session_of(store: SessionStore, session_id: str, caller: str | None) -> SessionRecord:
    """`caller`'s session `session_id` (the record as the caller names it); SessionNotFound otherwise."""
    record = await stored_session(store, caller, session_id)
    if record is None or not can_access(record.owner, caller):
        raise SessionNotFound(session_id)
    return as_seen(record, session_id)


async def session_of_run(store: SessionStore, state: RunState) -> SessionRecord | None:
    """The session a run belongs to (its owner's session of its session id), if any."""
    if state.session_id is None:
        return None
    record = await stored_session(store, state.owner, state.session_id)
    return None if record is None else as_seen(record, state.session_id)


__all__ = ["as_seen", "as_stored", "can_access", "idempotency_principal", "run_of", "session_key", "session_of", "session_of_run", "stored_session"]
