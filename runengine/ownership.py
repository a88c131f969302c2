"""Who may reach what: the one place every surface asks.

Every run, session (created explicitly or begun by the first run naming it, on any profile),
idempotency record and webhook registration belongs to the principal that created it: its
`owner`. A caller is the owner string of the request's principal, or None when auth is off
(then everything is reachable, as one principal's). Another principal's object is answered
exactly as a missing one (RunNotFound / SessionNotFound: 404), never as forbidden or busy, so
that nothing tells it the object exists.
"""

from __future__ import annotations

from .errors import RunNotFound, SessionNotFound
from .ports import EventStore, RunSummary, SessionRecord, SessionStore


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


async def session_of(store: SessionStore, session_id: str, caller: str | None) -> SessionRecord:
    """The session's record if `caller` may reach it; SessionNotFound otherwise."""
    record = await store.get_session(session_id)
    if record is None or not can_access(record.owner, caller):
        raise SessionNotFound(session_id)
    return record


__all__ = ["can_access", "idempotency_principal", "run_of", "session_of"]
