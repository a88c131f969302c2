"""Idempotency keys (IETF draft "The Idempotency-Key HTTP Header Field", and Stripe's practice).

A key belongs to one principal and one entry point (its scope): (principal, scope, key) is kept as
three values. It is recorded only once its request creates a run: a request refused before that
(bad input, session busy or ended, unknown agent ...) leaves no record, and the same key can be
used again. The same key with the same request (its fingerprint) gets the first run's response;
with another request, IdempotencyKeyReused (422 `idempotency_error`). Concurrent duplicates make
exactly one run: the store binds the key atomically, and the others wait for that run.

One key makes one run whatever the timing: a duplicate that finds the key bound to a run not
created yet takes up that run's id, never a new one. If the first request is still pending after
PENDING_FOR (it may have died, or be slow), the duplicate takes the key over and creates that same
run; the store creates a run once (`run.created` at seq 1), so whichever of the two comes second
gets the run the other created.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import attrs

from .errors import IdempotencyKeyReused, InvalidRequest
from .ports import EventStore, IdempotencyRecord

#: How long a key may stay bound to a run that does not exist yet before it is taken to be
#: abandoned (its request died between binding the key and creating the run).
PENDING_FOR = 10.0
#: How often a duplicate waiting for the first request's run looks again (it wakes at once when
#: the run is created; this only bounds how soon it sees a refused first request's key released).
RECHECK = 0.2


@runtime_checkable
class IdempotencyStore(Protocol):
    """Where a store keeps idempotency records (the port this module uses)."""

    async def reserve_idempotency_key(
        self, record: IdempotencyRecord, *, ttl: float, pending_for: float
    ) -> IdempotencyRecord | None:
        """Atomically store `record` unless its (principal, scope, key) is held: by a record created
        less than `ttl` seconds before `record.created_at` whose run exists, or by one created less
        than `pending_for` seconds before whose run does not exist yet (its request is still
        creating it; past that, it is taken to have died). None when `record` was stored (the caller
        holds the key), else the record that holds it; the same record again counts as stored (so a
        call retried after a lost connection holds the key). Raises InvalidRequest for an empty key.
        Deleting a run (EventStore.delete_run) deletes the records bound to it."""

    async def release_idempotency_key(self, record: IdempotencyRecord) -> None:
        """Forget the key of `record` if it is still bound to `record.run_id` (its request was
        refused before creating the run: the key may be used again)."""


def fingerprint(value: Any) -> str:
    """A digest of a request: its canonical JSON (sorted keys, no spaces), SHA-256."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    except RecursionError:
        raise InvalidRequest("the request is nested too deeply") from None
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@attrs.frozen
class KeyBinding:
    """What binding a key gave: the run it names, and whether the caller must create that run."""

    run_id: str
    #: True: the caller holds the key and creates run `run_id` (or releases the key if it does not);
    #: False: the run exists, created by the same request.
    create: bool


async def bind_key(
    store: EventStore,
    keys: IdempotencyStore,
    record: IdempotencyRecord,
    *,
    ttl: float,
    now: Callable[[], datetime],
) -> KeyBinding:
    """Bind `record`'s key to `record.run_id`, or to the run an earlier request with the same key
    bound it to and has not created yet. `now()` gives the time of each attempt."""
    # Until it has seen what the key names, a request takes over nothing that is pending: an
    # expired record (older than `ttl`) only.
    pending_for = ttl
    while True:
        attempt = attrs.evolve(record, created_at=now())
        held = await keys.reserve_idempotency_key(attempt, ttl=ttl, pending_for=pending_for)
        if held is None:
            return KeyBinding(record.run_id, create=True)
        if held.fingerprint != record.fingerprint:
            raise IdempotencyKeyReused(record.key)
        if await store.get_run(held.run_id) is not None:
            return KeyBinding(held.run_id, create=False)
        # Its request is still creating the run, or was refused (then the key is released), or
        # died: should this request take the key over, it creates that same run, not another.
        record, pending_for = attrs.evolve(record, run_id=held.run_id), PENDING_FOR
        await store.wait(held.run_id, after_seq=0, timeout=RECHECK)


__all__ = ["PENDING_FOR", "IdempotencyStore", "KeyBinding", "bind_key", "fingerprint"]
