"""Step limits: named provider quotas (requests and tokens per minute) that every run shares.

    engine = RunEngine(store, flow=Flow(step_limits={"openai": StepLimit(requests_per_minute=500,
                                                                          tokens_per_minute=200_000)}))
    reply = await ctx.step("ask", call_model, limit="openai")      # waits for the budget
    await ctx.usage(input_tokens=..., output_tokens=..., limit="openai")  # spends its tokens

A limited call takes one request from the limit's bucket and waits while its tokens are spent
(in debt); the tokens a call used are taken when the run reports them. Each limit's buckets are
`runengine.flow` token buckets holding a minute's budget, kept by the store when it is shared
(every process takes from the same ones, `TokenBuckets`) or in this process otherwise. Waits go
through the engine's clock.
"""

from __future__ import annotations

from datetime import timedelta

from .clock import Clock
from .errors import InvalidRequest
from .flow import Bucket, Rate, take
from .options import StepLimit
from .ports import TokenBuckets

#: A minute: the period of a step limit's budgets.
MINUTE = 60.0


class LocalBuckets:
    """Token buckets in this process, on the engine's clock (for a store only one engine writes)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}

    async def take_tokens(self, key: str, rate: Rate, cost: float, *, force: bool = False) -> float:
        wait, self._buckets[key] = take(self._buckets.get(key), rate, self._clock().timestamp(), cost, force=force)
        return wait


def _per_minute(count: int) -> Rate:
    return Rate(count, MINUTE, float(count))


class StepLimiter:
    """The engine's named step limits over `buckets`."""

    def __init__(self, limits: dict[str, StepLimit], buckets: TokenBuckets, clock: Clock) -> None:
        self.limits = limits
        self.buckets = buckets
        self._clock = clock

    def _limit(self, name: str) -> StepLimit:
        limit = self.limits.get(name) if isinstance(name, str) else None
        if limit is None:
            raise InvalidRequest(
                f"no step limit named {name!r} (RunEngine(flow=Flow(step_limits=...)) has {sorted(self.limits)})",
                limit=repr(name),
            )
        return limit

    def check(self, name: str) -> None:
        """InvalidRequest for a name the engine has no limit of (before anything waits)."""
        self._limit(name)

    async def _wait(self, key: str, rate: Rate, cost: float) -> None:
        while (wait := await self.buckets.take_tokens(key, rate, cost)) > 0:
            await self._clock.sleep_until(self._clock() + timedelta(seconds=wait))

    async def acquire(self, name: str) -> None:
        """Wait for a request of limit `name`, and until its tokens are not spent."""
        limit = self._limit(name)
        if limit.requests_per_minute is not None:
            await self._wait(f"step:{name}:requests", _per_minute(limit.requests_per_minute), 1.0)
        if limit.tokens_per_minute is not None:
            await self._wait(f"step:{name}:tokens", _per_minute(limit.tokens_per_minute), 0.0)

    async def spend(self, name: str, tokens: int) -> None:
        """`tokens` used by a call of limit `name` (taken now, in debt if need be)."""
        limit = self._limit(name)
        if limit.tokens_per_minute is not None and tokens > 0:
            await self.buckets.take_tokens(f"step:{name}:tokens", _per_minute(limit.tokens_per_minute), tokens, force=True)


__all__ = ["LocalBuckets", "StepLimiter"]
