"""Session lifetimes in the engine: an expired session takes no new runs, like an ended one."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from runengine import RunEngine, Status
from runengine.engine import SessionEnded
from runengine.adapters.memory import MemoryStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Clock:
    """A clock the test moves by hand (expiry is about time, so the test owns it)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def make_engine(clock: Clock) -> RunEngine:
    engine = RunEngine(MemoryStore(), clock=clock)

    @engine.agent("echo")
    async def echo(ctx):
        await ctx.say(str(ctx.input))

    return engine


async def test_a_session_takes_runs_until_it_expires_then_refuses_them():
    clock = Clock()
    async with make_engine(clock) as engine:
        session = await engine.create_session(ttl=60)
        assert session.expires_at == T0 + timedelta(seconds=60)
        clock.now = T0 + timedelta(seconds=59)
        assert (await engine.execute("echo", "in time", session_id=session.session_id)).status is Status.COMPLETED
        clock.now = T0 + timedelta(seconds=60)
        with pytest.raises(SessionEnded) as refused:
            await engine.execute("echo", "too late", session_id=session.session_id)
        assert refused.value.code == "conflict"
        assert refused.value.details == {"session_id": session.session_id, "expired": True}
        assert "expired" in refused.value.message
        # Nothing was written for the refused run; the history stays readable.
        assert len((await engine.list_runs(session_id=session.session_id)).runs) == 1
        history = (await engine.session_history(session.session_id)).messages
        assert [m.content for m in history if m.role == "user"] == ["in time"]


async def test_a_session_without_ttl_never_expires_and_an_ended_one_says_ended():
    clock = Clock()
    async with make_engine(clock) as engine:
        session = await engine.create_session()
        assert session.expires_at is None
        clock.now = T0 + timedelta(days=3650)
        assert (await engine.execute("echo", "later", session_id=session.session_id)).status is Status.COMPLETED
        await engine.end_session(session.session_id)
        with pytest.raises(SessionEnded) as refused:
            await engine.execute("echo", "after the end", session_id=session.session_id)
        assert refused.value.details == {"session_id": session.session_id, "expired": False}
        assert "ended" in refused.value.message
