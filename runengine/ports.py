"""The ports: async protocols that storage adapters implement.

The engine is the only writer of events; a store keeps them durable, ordered and
gapless, and tells waiters when there is news. Every store passes the conformance
suite in `runengine.testing.conformance`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import attrs

from .events import Event
from .state import RunState
from .status import Status

#: Default and largest page of a paged read.
DEFAULT_PAGE = 500
MAX_PAGE = 10_000


@attrs.frozen(kw_only=True)
class RunSummary:
    """A row of the run listing: kept current by the store on each append, never by folding."""

    run_id: str
    agent: str
    status: Status
    session_id: str | None = None
    owner: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_seq: int = 0


@attrs.frozen(kw_only=True)
class RunPage:
    """One page of a run listing, newest first; pass `next_before` as `before` for the next page."""

    runs: tuple[RunSummary, ...]
    next_before: str | None = None


@attrs.frozen(kw_only=True)
class SessionRecord:
    """A conversation session that runs can belong to (created explicitly or on first use)."""

    session_id: str
    owner: str | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)
    #: Profile-specific data (attachments, user reference ...), opaque to the core.
    data: dict[str, Any] = attrs.field(factory=dict)

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


@runtime_checkable
class EventStore(Protocol):
    """Durable, per-run, gapless event logs with a run listing, snapshots and sessions."""

    #: True when several processes may write the same store (the engine then leaves
    #: crash recovery to leases instead of failing every unfinished run at start-up).
    shared: bool

    async def open(self) -> None:
        """Connect and create the schema if needed. Idempotent."""

    async def close(self) -> None:
        """Flush what is pending and release every resource. Idempotent."""

    async def append(self, run_id: str, events: Sequence[Event], *, expected_seq: int) -> None:
        """Append `events` (seq expected_seq+1, +2 ...) atomically, durable when this returns.

        Raises ConcurrencyConflict, writing nothing, when the log's last seq is not
        `expected_seq`. The first append of a run starts with run.created at seq 1.
        """

    async def read(self, run_id: str, *, after_seq: int = 0, limit: int = DEFAULT_PAGE) -> list[Event]:
        """Up to `limit` committed events with seq > after_seq, in order. [] for an unknown run."""

    async def last_seq(self, run_id: str) -> int:
        """The seq of the run's last committed event; 0 when the run does not exist."""

    async def wait(self, run_id: str, *, after_seq: int, timeout: float | None = None) -> bool:
        """Return True once the run has a committed event with seq > after_seq, False on timeout."""

    async def get_run(self, run_id: str) -> RunSummary | None: ...

    async def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: Status | None = None,
        owner: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> RunPage:
        """Runs newest first, filtered, paged by an opaque cursor."""

    async def save_snapshot(self, state: RunState) -> None:
        """Keep `state` (the fold up to state.last_seq) so reads need not fold from seq 1."""

    async def load_snapshot(self, run_id: str) -> RunState | None:
        """The latest snapshot of the run, if any."""

    async def reserve_idempotency_key(
        self, key: str, run_id: str, *, now: datetime, ttl: float
    ) -> str:
        """Bind `key` to `run_id` unless it is bound to a run already and not older than
        `ttl` seconds; return the run id the key is bound to after the call (atomic)."""

    async def put_session(self, session: SessionRecord) -> None:
        """Create or replace a session record."""

    async def get_session(self, session_id: str) -> SessionRecord | None: ...
