"""Reconnection chaos: 1,000 random disconnects over real HTTP SSE while runs are being written.

Several runs stream at once into the SQLite store behind a real uvicorn server. One
reader per run connects to GET /runs/{id}/events, drops the connection at a random
point (after a random number of whole events, or after a random number of bytes,
often in the middle of a frame), and reconnects from the last seq it saw, with
`?after_seq=` or with `Last-Event-ID` (chosen at random). The agents keep writing
until all 1,000 disconnects have happened, so every one of them is made against a
live run. Each reader must end with exactly the run's log: 0 gaps, 0 duplicates,
every event identical to the stored one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import anyio
import httpx
import pytest

from runengine.context import RunContext
from runengine.engine import RunEngine
from runengine.wire import event_to_json

from faultkit import FrameReader, serve_engine

pytestmark = [pytest.mark.slow]

RUNS = 6
DISCONNECTS = 1_000


ANYIO_BACKENDS = ("asyncio",)  # uvicorn and the SQLite store


@pytest.mark.anyio
async def test_random_disconnects_lose_and_repeat_nothing(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    chaos_over = anyio.Event()
    engine = RunEngine(f"sqlite:///{tmp_path / 'chaos.db'}")

    @engine.agent("chatter")
    async def chatter(ctx: RunContext) -> str:
        # Keeps writing until the chaos is over (then a little more), pacing itself so
        # the log grows while readers come and go; a mix of event types and commit kinds.
        i = 0
        while not chaos_over.is_set() or i < 200:
            await ctx.delta(f"t{i} ")
            if i % 97 == 0:
                await ctx.thought(f"thinking {i}")
            if i % 331 == 0:
                await ctx.custom("progress", {"i": i})
            if i % 20 == 0:
                await anyio.sleep(0.002)
            i += 1
            if i > 200_000:
                raise RuntimeError("the chaos never ended")
        return f"wrote {i} deltas"

    disconnects = {"total": 0, "mid_frame": 0, "by_header": 0, "while_live": 0}

    async def read_with_chaos(client: httpx.AsyncClient, base: str, run_id: str, seen: list[tuple[int, str, str]]) -> None:
        ended = False
        while not ended:
            chaos = disconnects["total"] < DISCONNECTS
            cut_events = rng.randint(1, 60) if chaos and rng.random() < 0.5 else None
            cut_bytes = rng.randint(1, 6_000) if chaos and cut_events is None else None
            last = seen[-1][0] if seen else 0
            headers = {"accept": "text/event-stream"}
            params = {}
            by_header = rng.random() < 0.5
            if by_header and last:
                headers["last-event-id"] = str(last)
            else:
                params["after_seq"] = str(last)
            reader = FrameReader()
            got_events = got_bytes = 0
            cut = False
            async with client.stream("GET", f"{base}/runs/{run_id}/events", headers=headers, params=params) as response:
                if response.status_code == 204:  # nothing after `last`, and the run has ended
                    break
                assert response.status_code == 200, await response.aread()
                async for chunk in response.aiter_raw():
                    if cut_bytes is not None and got_bytes + len(chunk) >= cut_bytes:
                        chunk = chunk[: cut_bytes - got_bytes]
                        cut = True
                    got_bytes += len(chunk)
                    for frame in reader.feed(chunk):
                        payload = json.loads(frame.data)
                        assert frame.id == str(payload["seq"])
                        seen.append((payload["seq"], frame.event or "", frame.data))
                        got_events += 1
                        if payload["type"] in ("run.completed", "run.failed", "run.cancelled"):
                            ended = True
                        if cut_events is not None and got_events >= cut_events:
                            cut = True
                            break
                    if cut or ended:
                        break
                # leaving the block closes the connection mid-stream: the server sees a disconnect
            if cut and not ended:
                disconnects["total"] += 1
                disconnects["mid_frame"] += bool(reader._buffer)
                disconnects["by_header"] += by_header and bool(last)
                summary = await engine.store.get_run(run_id)
                disconnects["while_live"] += summary is not None and not summary.status.terminal
                if disconnects["total"] >= DISCONNECTS:
                    chaos_over.set()

    async with engine:
        async with serve_engine(engine) as base:
            limits = httpx.Limits(max_connections=RUNS * 2, max_keepalive_connections=0)
            async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as client:
                run_ids = []
                for _ in range(RUNS):
                    response = await client.post(f"{base}/runs", json={"agent": "chatter", "input": None, "mode": "async"})
                    assert response.status_code == 202, response.text
                    run_ids.append(response.json()["run_id"])
                seen: dict[str, list[tuple[int, str, str]]] = {run_id: [] for run_id in run_ids}
                with anyio.fail_after(240):
                    async with anyio.create_task_group() as tg:
                        for run_id in run_ids:
                            tg.start_soon(read_with_chaos, client, base, run_id, seen[run_id])

        total_events = 0
        for run_id in run_ids:
            stored = []
            after = 0
            while page := await engine.store.read(run_id, after_seq=after, limit=1000):
                stored.extend(page)
                after = page[-1].seq
            got = seen[run_id]
            seqs = [seq for seq, _, _ in got]
            assert len(seqs) == len(set(seqs)), f"{run_id}: duplicates"
            assert seqs == list(range(1, len(seqs) + 1)), f"{run_id}: gap or disorder"
            assert len(got) == len(stored) and stored[-1].type == "run.completed"
            for (seq, name, data), event in zip(got, stored):
                assert name == event.type and json.loads(data) == json.loads(event_to_json(event)), seq
            total_events += len(stored)

    print(
        f"\n{disconnects['total']} disconnects ({disconnects['mid_frame']} in the middle of a frame, "
        f"{disconnects['by_header']} resumed by Last-Event-ID, {disconnects['while_live']} while the run was live) "
        f"over {RUNS} runs of {total_events} events in all: 0 gaps, 0 duplicates"
    )
    assert disconnects["total"] >= DISCONNECTS
    assert disconnects["while_live"] >= DISCONNECTS * 0.9  # the chaos happened while runs were being written
