"""Flow control: how many runs of an agent execute at once, how fast they start, in which order.

Declared on the agent (`@engine.agent(name, concurrency=2, concurrency_key=..., rate="60/minute",
debounce=5, debounce_key=...)`) and per call (`execute(..., priority=10)`). This module holds the
declarations and the pure admission logic; no clock, no I/O: the time is always passed in.

- `Rate` and `take`: a token bucket, as data and one pure function. Every bucket (an agent's
  start rate, a step limit's requests and tokens) is this one, wherever it is kept (in memory on
  a store only one engine writes; a table on PostgreSQL, shared by every process).
- `Gate`: the admission of pending runs for an engine that executes its runs itself (SQLite,
  memory). A run past its limit is an entry in a heap (its id), not a task.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Callable
from typing import Any

import attrs

from .errors import InvalidRequest

#: The units a rate is written in ("60/minute"), in seconds.
RATE_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*(second|minute|hour|day)s?\s*$")
#: `priority=` on execute: an integer in [-PRIORITY_BOUND, PRIORITY_BOUND]; higher goes first.
PRIORITY_BOUND = 1_000_000
#: Longest concurrency or debounce key (what a key function returns, as text).
MAX_KEY_LENGTH = 200
#: A bucket this close to a token counts as having it (float refill arithmetic).
_EPSILON = 1e-9

#: Why a pending run waits (the run object's `waiting_for`).
WAITING_CONCURRENCY = "concurrency"
WAITING_RATE = "rate"
WAITING_SCHEDULE = "schedule"
#: How a debounced run that a later start replaced ends: cancelled, its reason starting with this.
DEBOUNCED = "debounced"


@attrs.frozen
class Rate:
    """`count` per `per` seconds; a full bucket holds `burst` tokens (1: evenly spaced)."""

    count: int
    per: float
    burst: float = 1.0

    @classmethod
    def parse(cls, value: str | Rate, *, burst: float | None = None) -> Rate:
        """`"60/minute"`, `"10/second"`, `"1000/5minutes"`... (InvalidRequest otherwise)."""
        if isinstance(value, Rate):
            return value
        match = _RATE.match(value) if isinstance(value, str) else None
        if match is None or int(match[1]) < 1:
            raise InvalidRequest(
                "a rate is written like '60/minute' (a count >= 1, '/', an optional number of "
                f"{', '.join(RATE_UNITS)})", rate=repr(value),
            )
        count = int(match[1])
        return cls(count, float(match[2] or 1) * RATE_UNITS[match[3]], float(burst if burst is not None else 1))

    @property
    def per_second(self) -> float:
        return self.count / self.per


@attrs.frozen
class Bucket:
    """A token bucket's state: its tokens at `at` (seconds, on whatever clock the caller reads)."""

    tokens: float
    at: float


def take(bucket: Bucket | None, rate: Rate, now: float, cost: float = 1.0, *, force: bool = False) -> tuple[float, Bucket]:
    """Take `cost` tokens at `now`: (0.0, the bucket after) when they are there, else (seconds
    until they will be, the bucket refilled to now). A new bucket (None) is full. A cost above
    the bucket's size is taken once it is full, leaving it in debt (a big request waits, then goes);
    `force` takes it at once, in debt if need be (tokens already spent, reported after the call)."""
    full = rate.burst
    tokens = full if bucket is None else min(full, bucket.tokens + max(0.0, now - bucket.at) * rate.per_second)
    need = min(cost, full)
    if force or tokens + _EPSILON >= need:
        return 0.0, Bucket(tokens - cost, now)
    return (need - tokens) / rate.per_second, Bucket(tokens, now)


KeyFunction = Callable[[Any, dict[str, Any]], Any]


def _key_text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if not text or len(text) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"{what} must give a non-empty key of at most {MAX_KEY_LENGTH} characters", key=text[:80])
    return text


@attrs.frozen(kw_only=True)
class FlowSpec:
    """An agent's flow control (see the module docstring). A key function takes the run's
    (input, metadata) and returns its key (None: the agent-wide one)."""

    concurrency: int | None = None
    concurrency_key: KeyFunction | None = None
    rate: Rate | None = None
    debounce: float | None = None
    debounce_key: KeyFunction | None = None

    @property
    def limited(self) -> bool:
        """Whether its runs are admitted (a concurrency or a rate), not started at once."""
        return self.concurrency is not None or self.rate is not None

    def key_of(self, input: Any, metadata: dict[str, Any]) -> str | None:
        """The run's concurrency (and rate) key."""
        if self.concurrency_key is None:
            return None
        return _key_text(self.concurrency_key(input, metadata), "concurrency_key")

    def debounce_key_of(self, input: Any, metadata: dict[str, Any]) -> str | None:
        if self.debounce_key is None:
            return None
        return _key_text(self.debounce_key(input, metadata), "debounce_key")


def flow_spec(
    *,
    concurrency: int | None = None,
    concurrency_key: KeyFunction | None = None,
    rate: str | Rate | None = None,
    debounce: float | None = None,
    debounce_key: KeyFunction | None = None,
) -> FlowSpec | None:
    """The agent declaration's flow options, checked (InvalidRequest); None when there are none."""
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1):
        raise InvalidRequest("concurrency must be an integer >= 1", concurrency=repr(concurrency))
    for name, fn in (("concurrency_key", concurrency_key), ("debounce_key", debounce_key)):
        if fn is not None and not callable(fn):
            raise InvalidRequest(f"{name} must be a function of (input, metadata)", **{name: repr(fn)})
    if debounce is not None and (
        isinstance(debounce, bool) or not isinstance(debounce, (int, float)) or not math.isfinite(debounce) or debounce <= 0
    ):
        raise InvalidRequest("debounce must be a positive number of seconds", debounce=repr(debounce))
    if debounce_key is not None and debounce is None:
        raise InvalidRequest("debounce_key needs debounce= (seconds)")
    if concurrency_key is not None and concurrency is None and rate is None:
        raise InvalidRequest("concurrency_key needs concurrency= or rate=")
    parsed = Rate.parse(rate) if rate is not None else None
    if concurrency is None and parsed is None and debounce is None:
        return None
    return FlowSpec(
        concurrency=concurrency, concurrency_key=concurrency_key, rate=parsed,
        debounce=float(debounce) if debounce is not None else None, debounce_key=debounce_key,
    )


def check_priority(priority: Any) -> int:
    """`execute(priority=)`: an integer in [-PRIORITY_BOUND, PRIORITY_BOUND] (InvalidRequest)."""
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > PRIORITY_BOUND:
        raise InvalidRequest(
            f"priority must be an integer from {-PRIORITY_BOUND} to {PRIORITY_BOUND}", priority=repr(priority)
        )
    return priority


def scope_of(agent: str, key: str | None) -> tuple[str, str | None]:
    """What a limit counts over: the agent, or the agent and the run's key."""
    return (agent, key)


# -- admission for an engine that executes its own runs --------------------------------------


@attrs.define(eq=False)
class _Scope:
    concurrency: int | None
    rate: Rate | None
    running: set[str] = attrs.field(factory=set)
    #: (-priority, created, arrival, run_id): higher priority first, then older first.
    waiting: list[tuple[int, float, int, str]] = attrs.field(factory=list)
    bucket: Bucket | None = None
    #: Set by `admit` when the head of the line waits for a token.
    rate_blocked: bool = False


@attrs.frozen
class Admitted:
    run_id: str
    scope: tuple[str, str | None]
    #: Seconds it waited in line.
    waited: float
    payload: Any


class Gate:
    """Pending runs of limited agents in line per scope, admitted as slots and tokens allow.
    Pure: the caller passes the time (seconds) and launches what `admit` returns."""

    def __init__(self) -> None:
        self._scopes: dict[tuple[str, str | None], _Scope] = {}
        #: Waiting run -> (scope, queued at, payload); a run gone from here is skipped in the heap.
        self._waiting: dict[str, tuple[tuple[str, str | None], float, Any]] = {}
        self._running: dict[str, tuple[str, str | None]] = {}
        #: Runs in line per scope, kept as they come and go (read at every change, for metrics).
        self._depths: dict[tuple[str, str | None], int] = {}
        self._arrivals = 0

    def _scope(self, scope: tuple[str, str | None], flow: FlowSpec) -> _Scope:
        found = self._scopes.get(scope)
        if found is None:
            found = self._scopes[scope] = _Scope(flow.concurrency, flow.rate)
        return found

    def hold(self, run_id: str, scope: tuple[str, str | None], flow: FlowSpec) -> None:
        """A run already under way (resumed) takes a slot whatever the limit: it was admitted before."""
        self._scope(scope, flow).running.add(run_id)
        self._running[run_id] = scope

    def queue(
        self, run_id: str, scope: tuple[str, str | None], flow: FlowSpec, *, priority: int, created: float,
        now: float, payload: Any = None,
    ) -> None:
        if run_id in self._waiting or run_id in self._running:
            return
        self._arrivals += 1
        heapq.heappush(self._scope(scope, flow).waiting, (-priority, created, self._arrivals, run_id))
        self._waiting[run_id] = (scope, now, payload)
        self._depths[scope] = self._depths.get(scope, 0) + 1

    def _leave_line(self, run_id: str) -> None:
        entry = self._waiting.pop(run_id, None)
        if entry is not None:
            self._depths[entry[0]] -= 1

    def discard(self, run_id: str) -> None:
        """A waiting run that ended meanwhile (cancelled) leaves the line."""
        self._leave_line(run_id)

    def release(self, run_id: str) -> None:
        """A run that held a slot ended (or stopped): its slot is free."""
        scope = self._running.pop(run_id, None)
        if scope is not None:
            line = self._scopes[scope]
            line.running.discard(run_id)
            if not line.running and not line.waiting and line.rate is None:  # a key seen once costs nothing after
                del self._scopes[scope]
                self._depths.pop(scope, None)
        self._leave_line(run_id)

    def admit(self, now: float) -> tuple[list[Admitted], float | None]:
        """The runs that may start now (each then holds a slot until `release`), and when to
        call again for a token (seconds from now; None: only when something changes)."""
        admitted: list[Admitted] = []
        wake: float | None = None
        for scope, line in self._scopes.items():
            line.rate_blocked = False
            while line.waiting and (line.concurrency is None or len(line.running) < line.concurrency):
                run_id = line.waiting[0][3]
                entry = self._waiting.get(run_id)
                if entry is None or entry[0] != scope:  # discarded
                    heapq.heappop(line.waiting)
                    continue
                if line.rate is not None:
                    wait, line.bucket = take(line.bucket, line.rate, now)
                    if wait > 0:
                        line.rate_blocked = True
                        wake = wait if wake is None else min(wake, wait)
                        break
                heapq.heappop(line.waiting)
                self._leave_line(run_id)
                line.running.add(run_id)
                self._running[run_id] = scope
                admitted.append(Admitted(run_id, scope, max(0.0, now - entry[1]), entry[2]))
        return admitted, wake

    def waiting_for(self, run_id: str) -> str | None:
        """Why a run in line waits: "concurrency" (no free slot, or runs ahead of it) or "rate"."""
        entry = self._waiting.get(run_id)
        if entry is None:
            return None
        line = self._scopes[entry[0]]
        return WAITING_RATE if line.rate_blocked and line.waiting and line.waiting[0][3] == run_id else WAITING_CONCURRENCY

    def depths(self) -> dict[tuple[str, str | None], int]:
        """Runs in line per scope (what /metrics exports as queue depth)."""
        return {scope: count for scope, count in self._depths.items() if count}


__all__ = [
    "Admitted", "Bucket", "DEBOUNCED", "KeyFunction", "FlowSpec", "Gate", "PRIORITY_BOUND", "RATE_UNITS", "Rate", "WAITING_CONCURRENCY",
    "WAITING_RATE", "WAITING_SCHEDULE", "check_priority", "flow_spec", "scope_of", "take",
]
