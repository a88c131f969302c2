"""The engine's options, grouped by what they govern (`RunEngine(durability=, limits=, retention=)`).

    engine = RunEngine(
        "sqlite:///runs.db",
        durability=Durability(flush_window=0.002, drain_timeout=5),
        limits=RunLimits(max_attempts=5),
        retention=Retention(runs=timedelta(days=30)),
    )

Each group is a frozen attrs class whose defaults are the engine's; a bad value is refused with
InvalidRequest when the group is built, so an engine never starts with one.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import attrs

from .idle import DEFAULT_HORIZON, DEFAULT_PARK_AFTER
from .errors import InvalidRequest
from .limits import MAX_EVENT_BYTES, MAX_EVENTS_PER_RUN
from .retention import DEFAULT_SWEEP_INTERVAL, retention_seconds


def _seconds(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidRequest(f"{attribute.name} must be a number of seconds >= 0", **{attribute.name: value})


def _at_least(least: int, why: str = "") -> Any:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InvalidRequest(f"{attribute.name} must be an integer >= {least}{why}", **{attribute.name: value})

    return check


def _flush_window(_instance: object, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 0.010:
        raise InvalidRequest("flush_window must be in (0, 0.010] seconds", flush_window=value)


@attrs.frozen(kw_only=True)
class Durability:
    """How the engine writes, stops and starts again."""

    #: Group commit: an agent's events are written together within this many seconds ...
    flush_window: float = attrs.field(default=0.005, validator=_flush_window)
    #: ... or as soon as this many are waiting.
    flush_max: int = attrs.field(default=512, validator=_at_least(1))
    #: A snapshot of the state every this many events (a resume folds from it).
    snapshot_every: int = attrs.field(default=1000, validator=_at_least(1))
    #: Graceful stop: how long runs get to reach their next event before they are left as they are.
    drain_timeout: float = attrs.field(default=10.0, validator=_seconds, converter=float)
    #: Take up the runs a previous process left unfinished (None: when the store is not shared).
    recover_on_start: bool | None = None
    #: Idle runs (delayed, in a durable sleep, waiting for input with a deadline) stay in the store
    #: until this many seconds before they are due (runengine.idle).
    delay_horizon: float = attrs.field(default=DEFAULT_HORIZON, validator=_seconds)
    #: A run idle this many seconds in a durable wait that is not due within `delay_horizon` is
    #: parked: its task ends, writing nothing, and it waits in the store for its timer or input
    #: (runengine.idle; a worker hands it back to the queue). None: idle runs stay in memory.
    park_after: float | None = attrs.field(default=DEFAULT_PARK_AFTER, validator=attrs.validators.optional(_seconds))


@attrs.frozen(kw_only=True)
class RunLimits:
    """What one run may take (runengine.limits has the defaults and docs/security.md the table)."""

    #: Executions in all of a run whose process keeps getting lost; then it fails `worker_lost`.
    max_attempts: int = attrs.field(default=3, validator=_at_least(1))
    #: The writer refuses an agent's event past these.
    max_events_per_run: int = attrs.field(
        default=MAX_EVENTS_PER_RUN, validator=_at_least(3, " (room for run.created, run.started and an end)")
    )
    max_event_bytes: int = attrs.field(default=MAX_EVENT_BYTES, validator=_at_least(1024))


def _period(value: timedelta | float | None) -> float | None:
    return retention_seconds(value, "retention")


def _interval(value: timedelta | float) -> float:
    return retention_seconds(value, "sweep_interval") or DEFAULT_SWEEP_INTERVAL


@attrs.frozen(kw_only=True)
class Retention:
    """How long what the engine keeps is kept (runengine.retention)."""

    #: Ended runs are deleted this many seconds (or a timedelta) after they ended; None keeps them.
    runs: float | None = attrs.field(default=None, converter=_period)
    #: Seconds between two sweeps for expired runs.
    sweep_interval: float = attrs.field(default=DEFAULT_SWEEP_INTERVAL, converter=_interval)
    #: Seconds an idempotency key stays bound to its run.
    idempotency_ttl: float = attrs.field(default=24 * 3600.0, validator=_seconds)


def _per_minute(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidRequest(f"{attribute.name} must be an integer >= 1 (or None: no limit)", **{attribute.name: value})


@attrs.frozen(kw_only=True)
class StepLimit:
    """A provider's quota, shared by every run that names it (`ctx.step(..., limit=name)`)."""

    requests_per_minute: int | None = attrs.field(default=None, validator=_per_minute)
    #: Tokens are counted as the runs report them (`ctx.usage(..., limit=name)`): a call waits
    #: while the minute's tokens are spent.
    tokens_per_minute: int | None = attrs.field(default=None, validator=_per_minute)


def _step_limits(_instance: object, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dict) or not all(
        isinstance(name, str) and name and isinstance(limit, StepLimit) for name, limit in value.items()
    ):
        raise InvalidRequest("step_limits must map names to runengine.options.StepLimit", step_limits=repr(value))


@attrs.frozen(kw_only=True)
class Flow:
    """Load the engine puts on what its runs call (runengine.flow; agents declare their own limits)."""

    #: Named step limits: `Flow(step_limits={"openai": StepLimit(requests_per_minute=500)})`.
    step_limits: dict[str, StepLimit] = attrs.field(factory=dict, validator=_step_limits)


__all__ = ["Durability", "Flow", "Retention", "RunLimits", "StepLimit"]
