"""Helpers every kind of test uses: wait for a condition (never for a fixed time), a free port,
hypothesis settings for examples that drive real servers, a run's whole log."""

from __future__ import annotations

import inspect
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from pathlib import Path

    from runengine import RunEngine
    from runengine.events import Event

#: For property tests whose examples drive real servers or stores: slow, and with fixtures shared
#: across examples on purpose, so no deadline and no health check. `@settings(SERVERS, max_examples=...)`.
settings.register_profile("servers", deadline=None, suppress_health_check=list(HealthCheck))
SERVERS = settings.get_profile("servers")


async def until(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.02) -> Any:
    """The first true value of `check()` (a function or a coroutine function), within `timeout`
    seconds (TimeoutError otherwise)."""
    with anyio.fail_after(timeout):
        while True:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await anyio.sleep(every)


def until_sync(check: Callable[[], Any], timeout: float = 60.0, every: float = 0.05) -> Any:
    """`until` for plain threads (tests driving processes without an event loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def full_log(engine: RunEngine, run_id: str) -> list[Event]:
    """Every committed event of the run, from seq 1 (not following it)."""
    return [event async for event in engine.events(run_id, follow=False)]


def echo_engine(path: Path, *, pause: bool = False) -> RunEngine:
    """An engine on a SQLite file at `path` with the agent `echo` (says its input back) and, with
    `pause`, the agent `pause` (says "before", then sleeps four flush windows: its run's flush
    loop starts meanwhile)."""
    from runengine.adapters.sqlite import SQLiteStore
    from runengine.engine import RunEngine

    engine = RunEngine(SQLiteStore(path))

    @engine.agent("echo")
    async def echo(ctx: Any) -> None:
        await ctx.say(str(ctx.input))

    if pause:

        @engine.agent("pause")
        async def paused(ctx: Any) -> None:
            await ctx.say("before")
            await anyio.sleep(engine.durability.flush_window * 4)

    return engine


class CallCount:
    """How many times a function was called since `count_calls` wrapped it."""

    def __init__(self) -> None:
        self.count = 0


def count_calls(monkeypatch: Any, owner: Any, name: str) -> CallCount:
    """Count the calls of `owner.name` from now on (a method, `__init__` or `__new__` too); the real
    one still runs. Undone with the monkeypatch."""
    real = getattr(owner, name)
    calls = CallCount()

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.count += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


class PythonCalls:
    """A `sys.setprofile` function counting the calls made while it is set: Python frames entered
    (a coroutine's resumption included), and with `"c_call"` in `events` calls of C functions too."""

    def __init__(self, *events: str) -> None:
        self.events = frozenset(events or ("call",))
        self.count = 0

    def __call__(self, _frame: Any, event: str, _arg: Any) -> None:
        if event in self.events:
            self.count += 1
