"""Flow control on PostgreSQL (runengine.flow), shared by every process on the database.

- Token buckets (`runengine_flow_buckets`, the TokenBuckets port): one row per bucket, read
  FOR UPDATE, refilled and taken with `runengine.flow.take` (the one bucket arithmetic) on the
  database clock, so every process takes from the same budget.
- Claims of limited agents (`claim_limited`): one claimer at a time (a transaction-level
  advisory lock), which counts the claimed runs per (agent, concurrency key), skips the keys
  that are full or out of tokens, and claims the rest highest priority, then oldest, first.
  A run held back stays a queue row: no process holds anything for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
import asyncpg

from runengine import observe
from runengine.flow import WAITING_CONCURRENCY, WAITING_RATE, Bucket, FlowSpec, Rate, take

#: Schema: the buckets, and the queue's flow columns (the run's priority and key, when it was queued).
#: IF NOT EXISTS: a migration may meet them already made (a schema written by this version, marked older).
BUCKETS_DDL = """
CREATE TABLE IF NOT EXISTS runengine_flow_buckets (
    key text PRIMARY KEY,
    tokens double precision NOT NULL,
    at double precision NOT NULL
)"""
QUEUE_COLUMNS = (
    "ALTER TABLE runengine_queue ADD COLUMN IF NOT EXISTS priority integer NOT NULL DEFAULT 0,"
    " ADD COLUMN IF NOT EXISTS flow_key text,"
    " ADD COLUMN IF NOT EXISTS queued_at timestamptz NOT NULL DEFAULT clock_timestamp()"
)
#: What a claim reads first: the unclaimed runs, highest priority then oldest.
QUEUE_INDEX = "CREATE INDEX IF NOT EXISTS runengine_queue_next ON runengine_queue (priority DESC, position) WHERE NOT claimed"

#: The advisory lock (a constant key) that makes claims of limited agents one at a time.
_CLAIM_LOCK = 0x72756E_666C6F77  # "run" "flow"
#: Candidates read per claim of limited agents, per run to claim (those of a key found out of
#: tokens meanwhile are passed over).
_WINDOW = 8
#: A scope as one text: agent, unit separator, key ("" for the agent's own limit).
_SCOPE_SQL = "(agent || chr(31) || coalesce(flow_key, ''))"


def _scope_text(agent: str, key: str | None) -> str:
    return f"{agent}\x1f{key or ''}"


def bucket_key(agent: str, key: str | None) -> str:
    """The bucket of an agent's (or key's) start rate."""
    return f"rate:{_scope_text(agent, key)}"


async def take_tokens_in(
    conn: asyncpg.Connection, key: str, rate: Rate, cost: float, *, force: bool = False
) -> float:
    """`TokenBuckets.take_tokens` inside the caller's transaction (the row stays locked until it ends)."""
    await conn.execute(
        "INSERT INTO runengine_flow_buckets (key, tokens, at) VALUES ($1, $2, extract(epoch FROM clock_timestamp()))"
        " ON CONFLICT (key) DO NOTHING",
        key,
        rate.burst,
    )
    row = await conn.fetchrow(
        "SELECT tokens, at, extract(epoch FROM clock_timestamp())::float8 FROM runengine_flow_buckets"
        " WHERE key = $1 FOR UPDATE",
        key,
    )
    assert row is not None
    wait, bucket = take(Bucket(row[0], row[1]), rate, row[2], cost, force=force)
    await conn.execute("UPDATE runengine_flow_buckets SET tokens = $2, at = $3 WHERE key = $1", key, bucket.tokens, bucket.at)
    return wait


async def claim_limited(
    conn: asyncpg.Connection,
    worker: str,
    *,
    agents: Sequence[str],
    limit: int,
    lease: float,
    flow: Mapping[str, FlowSpec],
) -> list[asyncpg.Record]:
    """Claim (in the caller's transaction) up to `limit` runs of `agents`, those of `flow`'s
    agents only within their limits. Rows as the plain claim returns them."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _CLAIM_LOCK)
    counted = [name for name, spec in flow.items() if spec.concurrency is not None]
    taken: dict[str, int] = {}
    if counted:
        for row in await conn.fetch(
            f"SELECT {_SCOPE_SQL}, count(*) FROM runengine_queue WHERE claimed AND agent = ANY($1::text[]) GROUP BY 1",
            counted,
        ):
            taken[row[0]] = row[1]
    full = [
        scope for scope, count in taken.items()
        if (spec := flow.get(scope.split("\x1f", 1)[0])) is not None and spec.concurrency is not None
        and count >= spec.concurrency
    ]
    candidates = await conn.fetch(
        f"SELECT run_id, agent, flow_key, claimed, extract(epoch FROM clock_timestamp() - queued_at)::float8"
        " FROM runengine_queue"
        " WHERE (NOT claimed AND agent = ANY($1::text[])"
        "   AND (not_before IS NULL OR not_before <= clock_timestamp())"
        f"   AND {_SCOPE_SQL} <> ALL($2::text[])"
        "   AND (cardinality(after_runs) = 0 OR NOT EXISTS ("
        "   SELECT 1 FROM runengine_runs AS r WHERE r.run_id = ANY(after_runs)"
        "   AND r.status IN ('pending', 'running', 'waiting_for_input'))))"
        "  OR (claimed AND lease_until < clock_timestamp())"
        " ORDER BY priority DESC, position LIMIT $3 FOR UPDATE SKIP LOCKED",
        list(agents),
        full,
        limit * _WINDOW,
    )
    picked: list[str] = []
    waits: list[tuple[tuple[str, str | None], float]] = []
    out_of_tokens: set[str] = set()
    for run_id, agent, key, taken_over, waited in candidates:
        if len(picked) >= limit:
            break
        spec = flow.get(agent)
        if taken_over or spec is None:  # a lost worker's run holds its slot already
            picked.append(run_id)
            continue
        scope = _scope_text(agent, key)
        if spec.concurrency is not None and taken.get(scope, 0) >= spec.concurrency:
            continue
        if spec.rate is not None:
            if scope in out_of_tokens:
                continue
            if await take_tokens_in(conn, bucket_key(agent, key), spec.rate, 1.0) > 0:
                out_of_tokens.add(scope)
                continue
        taken[scope] = taken.get(scope, 0) + 1
        picked.append(run_id)
        waits.append(((agent, key), waited))
    if not picked:
        return []
    rows = list(
        await conn.fetch(
            "UPDATE runengine_queue AS q SET claimed = true, token = gen_random_uuid(), worker = $1,"
            "  lease_until = clock_timestamp() + $3::interval, claims = q.claims + 1"
            " FROM (SELECT run_id, claimed AS taken_over FROM runengine_queue WHERE run_id = ANY($2::text[])) AS picked"
            " WHERE q.run_id = picked.run_id"
            " RETURNING q.run_id, q.token::text, q.agent, q.claims, picked.taken_over",
            worker,
            picked,
            timedelta(seconds=lease),
        )
    )
    for scope, waited in waits:
        observe.current.flow_waited(scope, waited)
    return rows


async def waiting_for(conn: asyncpg.Connection, run_id: str, flow: FlowSpec) -> str | None:
    """Why the queued run is not claimed: its scope's slots are taken, or its bucket is empty."""
    row = await conn.fetchrow("SELECT agent, flow_key, claimed FROM runengine_queue WHERE run_id = $1", run_id)
    if row is None or row[2]:
        return None
    agent, key = row[0], row[1]
    if flow.concurrency is not None:
        count = await conn.fetchval(
            "SELECT count(*) FROM runengine_queue WHERE claimed AND agent = $1 AND flow_key IS NOT DISTINCT FROM $2",
            agent,
            key,
        )
        if count >= flow.concurrency:
            return WAITING_CONCURRENCY
    if flow.rate is not None:
        bucket = await conn.fetchrow(
            "SELECT tokens, at, extract(epoch FROM clock_timestamp())::float8 FROM runengine_flow_buckets WHERE key = $1",
            bucket_key(agent, key),
        )
        if bucket is not None and take(Bucket(bucket[0], bucket[1]), flow.rate, bucket[2])[0] > 0:
            return WAITING_RATE
    return None


async def depths(conn: asyncpg.Connection) -> dict[tuple[str, str | None], int]:
    """Unclaimed runs per (agent, concurrency key) (what /metrics exports as queue depth)."""
    rows = await conn.fetch("SELECT agent, flow_key, count(*) FROM runengine_queue WHERE NOT claimed GROUP BY 1, 2")
    return {(row[0], row[1]): row[2] for row in rows}


__all__: list[str] = ["BUCKETS_DDL", "QUEUE_COLUMNS", "QUEUE_INDEX", "claim_limited", "depths", "take_tokens_in", "waiting_for"]
