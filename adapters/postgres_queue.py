"""PostgresWorkQueue: the durable queue of pending runs on PostgreSQL (the WorkQueue port).

Claims with FOR UPDATE SKIP LOCKED, leases as database-clock deadlines renewed by heartbeats,
fencing checked in the append's own transaction (see runengine.worker for the policy around it).
It shares its PostgresStore's pool, writer task and listening connection (`store.work_queue`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import asyncpg

from runengine import observe
from runengine.adapters import postgres_flow
from runengine.errors import InvalidRequest
from runengine.events import Event, RunCreated
from runengine.flow import FlowSpec
from runengine.ports import Lease
from runengine.validation import check_append

_T = TypeVar("_T")


class QueueHost(Protocol):
    """What the queue uses of its PostgresStore (so this module does not import it)."""

    queue_channel: str
    _work: asyncio.Event
    _lost: dict[str, asyncio.Event]

    def _require_pool(self) -> asyncpg.Pool: ...

    async def _retry(self, operation: Callable[[], Awaitable[_T]]) -> _T: ...

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[asyncpg.Record]: ...

    async def _fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Any] | None: ...

    def _notify_after_commit(self, notices: Sequence[tuple[str, str]]) -> None: ...

    async def _append_for_queue(
        self, run_id: str, events: Sequence[Event], expected_seq: int, *, lease: Lease | None = None,
        enqueue: bool = False, after: Sequence[str] = (),
    ) -> None: ...


class PostgresWorkQueue:
    """The durable queue of pending runs (the WorkQueue port), sharing its store's pool and writer."""

    def __init__(self, store: QueueHost) -> None:
        self._store = store

    async def enqueue(self, run_id: str, events: Sequence[Event], *, after: Sequence[str] = ()) -> None:
        check_append(run_id, events, 0)
        if not isinstance(events[0], RunCreated):  # pragma: no cover - check_append ensures it
            raise InvalidRequest("a queued run starts with run.created")
        await self._store._append_for_queue(run_id, events, 0, enqueue=True, after=after)

    async def claim(
        self, worker: str, *, agents: Sequence[str], limit: int, lease: float, flow: Mapping[str, FlowSpec] | None = None
    ) -> list[Lease]:
        if limit < 1:
            return []
        store = self._store
        limited = {name: spec for name, spec in (flow or {}).items() if spec.limited and name in agents}

        async def run() -> list[asyncpg.Record]:
            if limited:
                async with store._require_pool().acquire() as conn, conn.transaction():
                    return await postgres_flow.claim_limited(conn, worker, agents=agents, limit=limit, lease=lease, flow=limited)
            async with store._require_pool().acquire() as conn:
                # One statement, its own transaction: one round trip. It does not wait for its WAL
                # flush: the claimer's first append (run.started) is durable only once the WAL up to
                # it, this claim included, is flushed; a claim lost in a crash is a lease run out.
                return list(await conn.fetch(
                    "WITH picked AS ("
                    "  SELECT run_id, claimed AS taken_over FROM runengine_queue"
                    "  WHERE ((NOT claimed AND agent = ANY($2::text[])"
                    "    AND (not_before IS NULL OR not_before <= clock_timestamp())"
                    "    AND (cardinality(after_runs) = 0 OR NOT EXISTS ("
                    "    SELECT 1 FROM runengine_runs AS r WHERE r.run_id = ANY(after_runs)"
                    "    AND r.status IN ('pending', 'running', 'waiting_for_input'))))"
                    "   OR (claimed AND lease_until < clock_timestamp()))"
                    # A parked run (idle in a durable wait) is claimable once its timer is due or its input came.
                    "   AND NOT EXISTS (SELECT 1 FROM runengine_runs AS w WHERE w.run_id = runengine_queue.run_id"
                    "    AND w.wake_at > clock_timestamp())"
                    "  ORDER BY priority DESC, position LIMIT $3 FOR UPDATE SKIP LOCKED)"
                    ", claimed AS (UPDATE runengine_queue AS q SET claimed = true, token = gen_random_uuid(), worker = $1,"
                    "  lease_until = clock_timestamp() + $4::interval, claims = q.claims + 1"
                    " FROM picked WHERE q.run_id = picked.run_id"
                    " RETURNING q.run_id, q.token::text AS token, q.agent, q.claims, picked.taken_over)"
                    " SELECT c.*, set_config('synchronous_commit', 'off', true) FROM claimed AS c",
                    worker,
                    list(agents),
                    limit,
                    timedelta(seconds=lease),
                ))

        rows = await store._retry(run)
        taken = [(store.queue_channel, f"gone {row[0]}") for row in rows if row[4]]
        if taken:  # the lost holder (if it is only slow) stops at once
            observe.current.leases_expired(len(taken))
            store._notify_after_commit(taken)
        return [Lease(run_id=r[0], token=r[1], worker=worker, agent=r[2], claims=r[3]) for r in rows]

    async def depth(self) -> tuple[int, int]:
        """(queued, claimed): runs waiting for a worker, runs a worker holds; reported to observers."""
        row = await self._store._fetch_one(
            "SELECT count(*) FILTER (WHERE NOT claimed), count(*) FILTER (WHERE claimed) FROM runengine_queue"
        )
        assert row is not None
        queued, claimed = int(row[0]), int(row[1])
        observe.current.queue_depth(queued=queued, claimed=claimed)
        async with self._store._require_pool().acquire() as conn:
            observe.current.flow_depth(await postgres_flow.depths(conn))
        return queued, claimed

    async def waiting_for(self, run_id: str, flow: FlowSpec) -> str | None:
        async with self._store._require_pool().acquire() as conn:
            return await postgres_flow.waiting_for(conn, run_id, flow)

    async def renew(self, leases: Sequence[Lease], *, lease: float) -> set[str]:
        if not leases:
            return set()
        rows = await self._store._fetch(
            "UPDATE runengine_queue AS q SET lease_until = clock_timestamp() + $3::interval"
            " FROM unnest($1::text[], $2::uuid[]) AS l(run_id, token)"
            " WHERE q.run_id = l.run_id AND q.token = l.token AND q.claimed RETURNING q.run_id",
            ([x.run_id for x in leases], [x.token for x in leases], timedelta(seconds=lease)),
        )
        return {row[0] for row in rows}

    async def append_leased(self, lease: Lease, events: Sequence[Event], *, expected_seq: int) -> None:
        check_append(lease.run_id, events, expected_seq)
        await self._store._append_for_queue(lease.run_id, events, expected_seq, lease=lease)

    async def release(self, lease: Lease) -> None:
        store = self._store

        async def run() -> None:
            async with store._require_pool().acquire() as conn, conn.transaction():
                await conn.execute(
                    "UPDATE runengine_queue SET claimed = false, token = NULL, worker = NULL, lease_until = NULL"
                    " WHERE run_id = $1 AND token = $2::uuid",
                    lease.run_id,
                    lease.token,
                )
                await conn.execute("SELECT pg_notify($1, 'work')", store.queue_channel)

        await store._retry(run)
        store._lost.pop(lease.run_id, None)

    async def wait_for_work(self, timeout: float) -> None:
        work = self._store._work
        # No notice comes when a delayed run's start_at arrives, nor when a parked run's timer comes
        # due: wake for the earliest of either (one statement).
        row = await self._store._fetch_one(
            "SELECT extract(epoch FROM least("
            "(SELECT min(not_before) FROM runengine_queue WHERE NOT claimed AND not_before > clock_timestamp()),"
            " (SELECT min(r.wake_at) FROM runengine_queue AS q JOIN runengine_runs AS r ON r.run_id = q.run_id"
            "  WHERE NOT q.claimed AND r.wake_at > clock_timestamp() AND r.wake_at < 'infinity')"
            ") - clock_timestamp())"
        )
        if row is not None and row[0] is not None:
            timeout = min(timeout, max(float(row[0]), 0.0))
        try:
            await asyncio.wait_for(work.wait(), timeout)
        except asyncio.TimeoutError:
            return
        work.clear()

    async def wait_lost(self, lease: Lease, timeout: float) -> bool:
        store = self._store
        event = store._lost.get(lease.run_id)
        if event is None:
            event = store._lost[lease.run_id] = asyncio.Event()
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        if store._lost.get(lease.run_id) is event:  # woken by a re-listen: arm a fresh one
            store._lost[lease.run_id] = asyncio.Event()
        # A wake-up is a hint: the queue row says whether we still hold the run.
        row = await store._fetch_one(
            "SELECT 1 FROM runengine_queue WHERE run_id = $1 AND token = $2::uuid AND claimed", (lease.run_id, lease.token)
        )
        if row is None:
            store._lost.pop(lease.run_id, None)
            return True
        return False

    async def held(self, lease: Lease) -> bool:
        """Whether `lease` is still held (token current and not expired), by the database clock."""
        row = await self._store._fetch_one(
            "SELECT 1 FROM runengine_queue WHERE run_id = $1 AND token = $2::uuid AND claimed"
            " AND lease_until > clock_timestamp()",
            (lease.run_id, lease.token),
        )
        return row is not None
