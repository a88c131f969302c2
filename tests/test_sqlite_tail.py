"""The SQLite store's committed tail (adapters/log_cache.py): a commit decodes nothing; the first
read of a cached event decodes it, once, exactly as a read of the database gives it back."""

from __future__ import annotations

from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from runengine.adapters import sql_log
from runengine.adapters.sqlite import SQLiteStore
from runengine.events import StepCompleted
from runengine.testing.conformance import T0
from runengine.testing.conformance import created as created_run

ANYIO_BACKENDS = ("asyncio",)  # the SQLite store needs asyncio

STEPS = 20


@pytest.mark.anyio
async def test_a_commit_decodes_nothing_and_a_read_of_the_tail_decodes_each_event_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    real_decode = sql_log.decode_event

    def counting_decode(*args: Any) -> Any:
        decoded.append(args[1])
        return real_decode(*args)

    monkeypatch.setattr(sql_log, "decode_event", counting_decode)
    path = tmp_path / "runs.db"
    east = timezone(timedelta(hours=3))  # read back in UTC: the tail must not hand out this object
    async with SQLiteStore(path, synchronous="NORMAL") as store:
        await store.append("r1", [created_run("r1")], expected_seq=0)
        for seq in range(2, STEPS + 2):
            step = StepCompleted(run_id="r1", seq=seq, at=T0.astimezone(east), name="s", output={"n": seq})
            await store.append("r1", [step], expected_seq=seq - 1)
        assert decoded == []  # committed, cached, not decoded
        cached = await store.read("r1", after_seq=1, limit=STEPS)
        assert decoded == list(range(2, STEPS + 2))
        assert await store.read("r1", after_seq=1, limit=STEPS) == cached
        assert len(decoded) == STEPS  # decoded once, kept decoded
    async with SQLiteStore(path, synchronous="NORMAL") as reopened:  # no tail: read from the file
        from_file = await reopened.read("r1", after_seq=1, limit=STEPS)
    assert cached == from_file
    assert all(event.at.tzinfo is timezone.utc and event.at == T0 for event in cached)
