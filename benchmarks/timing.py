"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def median_time(call: Callable[[], Awaitable[Any]], repeat: int) -> float:
    """The median wall time of `repeat` awaited calls, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
