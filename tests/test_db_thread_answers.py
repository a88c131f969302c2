"""adapters/db_thread.py answers the loop through an eventfd it watches, not call_soon_threadsafe:
one loop wake-up per commit with no self-pipe and no handle per answer. What must hold: every
answer arrives, in order; one that fails is reported and the rest still run; a future of another
loop is answered on its own loop."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from runengine.adapters.db_thread import DatabaseThread, _Answers
from runengine.adapters.sqlite import SQLiteStore
from runengine.events import StepCompleted
from runengine.testing.conformance import T0
from runengine.testing.conformance import created as created_run

ANYIO_BACKENDS = ("asyncio",)  # the SQLite store needs asyncio

pytestmark = pytest.mark.skipif(not hasattr(os, "eventfd"), reason="eventfd is Linux's")


@pytest.mark.anyio
async def test_a_commit_is_answered_without_call_soon_threadsafe(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    handed: list[Any] = []
    real = loop.call_soon_threadsafe

    def counted(callback: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(callback)
        return real(callback, *args, **kwargs)

    async with SQLiteStore(tmp_path / "runs.db", synchronous="NORMAL") as store:
        await store.append("r1", [created_run("r1")], expected_seq=0)
        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        try:
            for seq in range(2, 52):
                await store.append("r1", [StepCompleted(run_id="r1", seq=seq, at=T0, name="s", output=seq)], expected_seq=seq - 1)
            assert [e.seq for e in await store.read("r1", after_seq=0, limit=100)] == list(range(1, 52))
        finally:
            del loop.call_soon_threadsafe
    assert handed == []


@pytest.mark.anyio
async def test_a_failing_answer_is_reported_and_the_ones_after_it_still_run() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    answers = _Answers.on(loop)
    assert answers is not None
    ran: list[int] = []
    done = loop.create_future()

    def fail() -> None:
        raise ValueError("broken answer")

    try:
        answers.post(ran.append, (1,))
        answers.post(fail, ())
        answers.post(ran.append, (2,))
        answers.post(done.set_result, (None,))
        await asyncio.wait_for(done, 5)
    finally:
        answers.close()
        loop.set_exception_handler(None)
    assert ran == [1, 2]
    assert [type(c["exception"]) for c in reported] == [ValueError]


@pytest.mark.anyio
async def test_a_call_from_another_loop_is_answered_on_that_loop() -> None:
    db: DatabaseThread[Any] = DatabaseThread("test-db")
    await db.connect(lambda: sqlite3.connect(":memory:", check_same_thread=False))
    try:
        async def elsewhere() -> Any:
            return await db.call(lambda raw: raw.execute("SELECT 41 + 1").fetchone()[0])

        assert await asyncio.to_thread(asyncio.run, elsewhere()) == 42
        assert await db.call(lambda raw: raw.execute("SELECT 1").fetchone()[0]) == 1
    finally:
        await db.close()


class _Write:
    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future


@pytest.mark.anyio
async def test_the_bookkeeping_after_a_commit_keeps_no_caller_waiting() -> None:
    """`after` (the SQLite store remembers the rows a batch left) runs on the thread once the
    batch's answer is posted: the caller is answered while it runs, not after it."""
    loop = asyncio.get_running_loop()
    db: DatabaseThread[_Write] = DatabaseThread("test writer")
    await db.connect(lambda: sqlite3.connect(":memory:", check_same_thread=False))
    answered = threading.Event()
    seen: list[tuple[Any, bool]] = []

    def committed(batch: list[_Write], outcome: Any, _seconds: float) -> None:
        for write in batch:
            write.future.set_result(outcome)
        answered.set()

    def after(outcome: Any) -> None:  # on the thread: was the answer already out?
        seen.append((outcome, answered.wait(timeout=5)))

    db.start_writes(lambda _raw, batch: len(batch), committed, after=after)
    try:
        write = _Write(loop.create_future())
        db.write(write)
        assert await write.future == 1
    finally:
        await db.close()
    assert seen == [(1, True)]


@pytest.mark.anyio
async def test_a_failing_bookkeeping_after_a_commit_is_reported_and_the_writes_go_on() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    db: DatabaseThread[_Write] = DatabaseThread("test writer")
    await db.connect(lambda: sqlite3.connect(":memory:", check_same_thread=False))

    def committed(batch: list[_Write], outcome: Any, _seconds: float) -> None:
        for write in batch:
            write.future.set_result(outcome)

    def after(_outcome: Any) -> None:
        raise ValueError("broken bookkeeping")

    db.start_writes(lambda _raw, batch: len(batch), committed, after=after)
    try:
        for _ in range(2):  # the second is served too: the thread did not die with the first
            write = _Write(loop.create_future())
            db.write(write)
            assert await asyncio.wait_for(write.future, timeout=5) == 1
    finally:
        await asyncio.wait_for(db.close(), timeout=5)  # a dead thread would never close
        loop.set_exception_handler(None)
    assert [str(context["exception"]) for context in reported] == ["broken bookkeeping"] * 2
