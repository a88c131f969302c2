"""The ports: async protocols that storage adapters implement.

The engine is the only writer of events; a store keeps them durable, ordered and
gapless, and tells waiters when there is news. Every store passes the conformance
suite in `runengine.testing.conformance`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

import attrs

from .errors import InvalidRequest, RunEngineError
from .events import Event
from .flow import FlowSpec, Rate
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
    #: While the run is idle (a durable wait, or delayed): when it is due to go on
    #: (events.NO_DEADLINE: when input comes); None while it is at work or has ended.
    wake_at: datetime | None = None


@attrs.frozen(kw_only=True)
class RunPage:
    """One page of a run listing, newest first; pass `next_before` as `before` for the next page."""

    runs: tuple[RunSummary, ...]
    next_before: str | None = None


@attrs.frozen(kw_only=True)
class EndedRunPage:
    """One page of ended runs, oldest ended first; pass `next_after` as `after` for the next page."""

    runs: tuple[RunSummary, ...]
    next_after: str | None = None


@attrs.frozen(kw_only=True)
class SessionRuns:
    """A session's runs counted by status by the store (no row per run is read), and when the first began."""

    by_status: dict[Status, int] = attrs.field(factory=dict)
    first_created_at: datetime | None = None

    @property
    def count(self) -> int:
        return sum(self.by_status.values())


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


@attrs.frozen(kw_only=True)
class IdempotencyRecord:
    """An Idempotency-Key bound to the run its first request created.

    A key is one principal's, in one entry point's key space: (principal, scope, key) is the
    identity, three separate values (never one joined string, which two principals could spell
    alike). `fingerprint` identifies the request that used the key (its body), so a reuse with
    another request is told apart from a retry."""

    #: The owner of the request ("" when auth is off).
    principal: str
    #: The entry point's key space: "native", "acp", "kore", "platform", "engine" ...
    scope: str
    key: str
    fingerprint: str
    run_id: str
    created_at: datetime


@runtime_checkable
class HeadReader(Protocol):
    """Optional, for a store that can read the start of many runs' logs in one query: an engine
    taking up many unfinished runs at start (recovery) reads them this way instead of one by one."""

    async def read_heads(self, run_ids: Sequence[str], *, limit: int) -> dict[str, list[Event]]:
        """Each run's events with seq 1 .. `limit`, in order (a run with none is left out)."""
        ...


class RecordedPage:
    """A page of a run's log as its store keeps it, for a replay that passes most rows by.

    `rows`: one sequence per event, in order, `(seq, type, at, payload)`: its seq and type at
    once; `payload` as the store holds it, the stored JSON text, that text already decoded (a
    dict, the event's data as `runengine.wire.event_data` writes it) or, for a store that keeps
    events, the event itself; `at` the store's own form of the time. `event(row)` builds a row's
    event (only when asked for: a replayed step compares and returns its payload as it is).
    Plain tuples or lists, no object per row: a long resume passes 100,000 of them."""

    __slots__ = ("rows", "event")

    def __init__(self, rows: list[Sequence[Any]], event: Callable[[Sequence[Any]], Event]) -> None:
        self.rows = rows
        #: Builds the event of one of `rows` (a fresh one each call).
        self.event = event

    @classmethod
    def of(cls, events: Sequence[Event]) -> RecordedPage:
        """Events already decoded: each row's payload is the event."""
        return cls([(event.seq, event.type, None, event) for event in events], _the_event)

    def __len__(self) -> int:
        return len(self.rows)


def _the_event(row: Sequence[Any]) -> Event:
    return row[3]  # type: ignore[no-any-return]


@runtime_checkable
class RecordedReader(Protocol):
    """Optional, for a store that can hand a run's log to a replay undecoded (`RecordedPage`): a
    resumed run replays its log without building an event for each row it passes
    (runengine.replay). A store without it is read with `read`, every event decoded."""

    async def read_recorded(self, run_id: str, *, after_seq: int = 0, limit: int = DEFAULT_PAGE) -> RecordedPage:
        """What `read` returns, as a `RecordedPage` (the same arguments, checks and order)."""
        ...


@runtime_checkable
class PackedLog(Protocol):
    """Optional, for a store that keeps a packed copy of a run's rows beside its log (written
    where the run came to rest, one chunk of rows at a time, in the commit of its snapshot
    there): a long resume reads it at about a third of the cost of the rows themselves.
    A chunk that does not follow on from `after_seq` or does not hold exactly the seqs it
    names is not given: the journal then reads the log itself from there."""

    async def read_packed(self, run_id: str, *, after_seq: int, upto_seq: int, limit: int) -> RecordedPage:
        """The packed rows right after `after_seq`, whole chunks ending at `upto_seq` at the
        latest, about `limit` rows (at least one chunk when one is there; none: no rows)."""
        ...


@runtime_checkable
class SettledWait(Protocol):
    """Optional, for a store that knows the status each commit left a run in: a waiter for a run's
    end (or its wait for input) is then woken by those commits only, not by each of its steps."""

    async def wait_settled(self, run_id: str, *, after_seq: int, timeout: float | None = None) -> bool:
        """Return True once the run may be settled (`Status.settled`) with an event after
        `after_seq` (a hint: the caller reads the run again), False on timeout."""
        ...


@runtime_checkable
class WakeIndex(Protocol):
    """Optional, for a store that indexes its runs' wake times (`RunSummary.wake_at`, kept on
    each append from `Event.wake_after`): an engine then holds nothing for an idle run (a durable
    wait, a delayed start) and finds the due ones a page at a time (runengine.wakeups)."""

    async def list_waking(self, *, limit: int, after: str | None = None) -> RunPage:
        """Unfinished runs whose wake time is before NO_DEADLINE, earliest first (then oldest),
        paged: pass a page's `next_before` as `after`."""
        ...

    async def list_busy(self, *, limit: int, before: str | None = None) -> RunPage:
        """Unfinished runs with no wake time (at work, or pending to start now), newest first,
        paged by `before` (a page's `next_before`)."""
        ...


@runtime_checkable
class EventStore(Protocol):
    """The run log: durable, per-run, gapless event logs with each run's summary, a listing and
    snapshots. Everything else a store may keep (sessions, idempotency records, a work queue,
    ...) is a small port of its own, below and in the modules that use it: a store declares it
    by having its methods, and its users check with `isinstance(store, Port)`."""

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

    async def wait(self, run_id: str, *, after_seq: int, timeout: float | None = None) -> bool:
        """Return True once the run has a committed event with seq > after_seq, False on timeout."""

    async def get_run(self, run_id: str) -> RunSummary | None:
        """The run's summary (its last seq included), kept current by every append; None when unknown."""

    async def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: Status | None = None,
        owner: str | None = None,
        limit: int = 50,
        before: str | None = None,
        before_run: str | None = None,
    ) -> RunPage:
        """Runs newest first, filtered, paged by an opaque cursor (`before`: a page's
        `next_before`) or by a run id (`before_run`: the runs older than that run, for APIs whose
        clients page by run id; none for an unknown run). Not both: InvalidRequest."""

    async def save_snapshot(self, state: RunState) -> None:
        """Keep `state` (the fold up to state.last_seq) so reads need not fold from seq 1."""

    async def load_snapshot(self, run_id: str) -> RunState | None:
        """The latest snapshot of the run, if any."""

    async def delete_run(self, run_id: str) -> bool:
        """Delete the run atomically: its events, snapshot, run row and whatever else the store
        keeps of it (idempotency records bound to its id, its queue row ...), whether or not a run
        row exists. Returns whether there was a run row. Callers decide whether a run may go (the
        engine only deletes ended runs)."""


_Port = TypeVar("_Port")


def port_of(store: object, port: type[_Port]) -> _Port | None:
    """`store` as the small port `port` (a runtime-checkable Protocol) if it declares it, else None."""
    return store if isinstance(store, port) else None  # type: ignore[misc]


def required(found: _Port | None, store: object, what: str) -> _Port:
    """A port the caller needs: InvalidRequest naming what the store lacks when it has none."""
    if found is None:
        raise InvalidRequest(f"this store ({type(store).__name__}) keeps no {what}")
    return found


async def last_seq(store: EventStore, run_id: str) -> int:
    """The seq of the run's last committed event; 0 when the run does not exist."""
    summary = await store.get_run(run_id)
    return summary.last_seq if summary is not None else 0


@runtime_checkable
class SessionStore(Protocol):
    """Conversation sessions (the engine's sessions: `create_session`, runs naming a session)."""

    async def put_session(self, session: SessionRecord) -> None:
        """Create or replace a session record."""

    async def add_session(self, session: SessionRecord) -> SessionRecord:
        """Create `session` unless a session with its id exists (atomic: of two callers racing for
        a new id, exactly one creates it). Returns the record stored after the call: `session`
        itself, or the one that was there."""

    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    async def count_session_runs(self, session_id: str, *, owner: str | None = None) -> SessionRuns:
        """The session's runs (only `owner`'s when given) counted by status, in one query: what a
        session read shows, at a cost that does not grow with rows sent back per run."""


# -- the work queue: background runs executed by workers, possibly in other processes ----------


class LeaseLost(RunEngineError):
    """An append under a lease that is no longer held (it expired, or another worker took the
    run over, or the run ended). Nothing was written: the worker must stop the run."""

    code = "conflict"

    def __init__(self, run_id: str, worker: str) -> None:
        super().__init__(f"run {run_id!r}: worker {worker!r} no longer holds its lease", run_id=run_id, worker=worker)
        self.run_id = run_id


@attrs.frozen(kw_only=True)
class Lease:
    """A worker's claim on one run: valid while the queue holds this token and it has not expired."""

    run_id: str
    token: str
    worker: str
    agent: str
    #: How many times the run has been claimed, this claim included.
    claims: int = 1


@runtime_checkable
class WorkQueue(Protocol):
    """A durable queue of pending runs, shared by every engine process of one store.

    A store that has one exposes it as `store.work_queue` (a QueuedStore); the engine then
    enqueues runs instead of executing them itself, and workers claim them. Any append whose
    batch ends a run (a terminal event, by anyone) removes the run from the queue.
    """

    async def enqueue(self, run_id: str, events: Sequence[Event], *, after: Sequence[str] = ()) -> None:
        """Append a new run's first events (expected_seq 0) and queue it, atomically. It is not
        claimed before the runs in `after` have ended (session policy "enqueue")."""

    async def claim(
        self, worker: str, *, agents: Sequence[str], limit: int, lease: float, flow: Mapping[str, FlowSpec] | None = None
    ) -> list[Lease]:
        """Claim up to `limit` runs, highest priority then oldest first: queued ones whose agent
        is in `agents`, and any run whose lease has expired (its worker is presumed lost). Never
        blocks on runs other workers are claiming. `flow`: the limits of the agents that have
        some (runengine.flow): a run is claimed only while its agent (or key) has a free slot
        and a token, counted over every process."""

    async def waiting_for(self, run_id: str, flow: FlowSpec) -> str | None:
        """Why the queued run `run_id` of an agent limited by `flow` is not claimed: "concurrency"
        or "rate" (None: it is claimable, or not queued)."""

    async def renew(self, leases: Sequence[Lease], *, lease: float) -> set[str]:
        """Heartbeat: extend the leases still held by `lease` seconds; return their run ids."""

    async def append_leased(self, lease: Lease, events: Sequence[Event], *, expected_seq: int) -> None:
        """`EventStore.append`, only while `lease` holds, checked in the same transaction.
        Raises LeaseLost (writing nothing) when it does not."""

    async def release(self, lease: Lease) -> None:
        """Put a claimed run back on the queue for any worker (hand-back, requeue)."""

    async def wait_for_work(self, timeout: float) -> None:
        """Return when runs may have been queued (a wake-up from any process), or after `timeout`."""

    async def wait_lost(self, lease: Lease, timeout: float) -> bool:
        """Return True as soon as `lease` is no longer held (the run ended elsewhere, or was
        taken over), False if it still is after `timeout` seconds."""


@runtime_checkable
class TokenBuckets(Protocol):
    """Token buckets (runengine.flow.take) kept where every process of a shared store sees them:
    a step limit's budget is the provider's, not one process's. A store only one engine writes
    needs none (the engine keeps its buckets in memory)."""

    async def take_tokens(self, key: str, rate: Rate, cost: float, *, force: bool = False) -> float:
        """Take `cost` tokens from bucket `key` (made full at `rate`): 0.0 when taken, else the
        seconds until they will be there (nothing taken). `force`: take them anyway (a debt)."""


@runtime_checkable
class QueuedStore(Protocol):
    """A store with a work queue shared by every engine process on it (e.g. PostgreSQL)."""

    @property
    def work_queue(self) -> WorkQueue: ...
