"""Load: 1,000 concurrent SSE subscribers on one run, served by one process, all receive the
identical sequence; the server's memory per subscriber is printed.

`runengine serve` (SQLite) runs a `gate` run that waits for input. 1,000 clients
subscribe to its events and read up to `run.waiting_for_input`; with all of them
connected the server's resident memory is read. Then the run gets its input and
streams its parts to everybody. Every subscriber must end with exactly the run's log
as the store has it: same events, same order, same bytes of data.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import httpx
import pytest

from faultkit import FrameReader, ServeProcess, open_fds, rss_bytes

pytestmark = [pytest.mark.slow]

TESTS = Path(__file__).resolve().parent
SUBSCRIBERS = 1_000
PARTS = 300


ANYIO_BACKENDS = ("asyncio",)


@pytest.mark.anyio
async def test_thousand_subscribers_get_the_identical_sequence(tmp_path: Path) -> None:
    server = ServeProcess(
        # More streams at once than the default --max-connections (1,000) lets one process hold.
        ["--app", "fault_apps:gate", "--log-level", "warning", "--max-connections", str(SUBSCRIBERS + 100)],
        tmp_path / "serve.log",
        env={"RUNENGINE_FAULT_STORE": f"sqlite:///{tmp_path / 'load.db'}"},
        cwd=TESTS,
    )
    server.start()
    try:
        limits = httpx.Limits(max_connections=SUBSCRIBERS + 10, max_keepalive_connections=SUBSCRIBERS + 10)
        async with httpx.AsyncClient(base_url=server.base, timeout=httpx.Timeout(180.0), limits=limits) as client:
            created = await client.post("/runs", json={"agent": "gate", "input": {"n": PARTS}, "mode": "async"})
            assert created.status_code == 202, created.text
            run_id = created.json()["run_id"]
            # One subscriber first, through to the question, so the server's lazy state exists before measuring.
            received: list[list[tuple[int, str, str]]] = [[] for _ in range(SUBSCRIBERS + 1)]
            ready = [0]
            all_ready = anyio.Event()

            async def subscribe(index: int) -> None:
                got = received[index]
                reader = FrameReader()
                async with client.stream(
                    "GET", f"/runs/{run_id}/events", headers={"accept": "text/event-stream"}
                ) as response:
                    assert response.status_code == 200
                    async for chunk in response.aiter_raw():
                        for frame in reader.feed(chunk):
                            event = json.loads(frame.data)
                            got.append((event["seq"], frame.event or "", frame.data))
                            if event["type"] == "run.waiting_for_input":
                                ready[0] += 1
                                if ready[0] == SUBSCRIBERS + 1:
                                    all_ready.set()
                            if event["type"] in ("run.completed", "run.failed", "run.cancelled"):
                                return

            with anyio.fail_after(480):  # bounds everything below, the subscribers reading to the end too
                async with anyio.create_task_group() as tg:
                    tg.start_soon(subscribe, SUBSCRIBERS)
                    with anyio.fail_after(60):
                        while ready[0] < 1:
                            await anyio.sleep(0.01)
                    rss_before, fds_before = rss_bytes(server.pid), open_fds(server.pid)

                    started = time.perf_counter()
                    for index in range(SUBSCRIBERS):
                        tg.start_soon(subscribe, index)
                    with anyio.fail_after(180):
                        await all_ready.wait()
                    connect_s = time.perf_counter() - started
                    rss_with, fds_with = rss_bytes(server.pid), open_fds(server.pid)

                    started = time.perf_counter()
                    resumed = await client.post(f"/runs/{run_id}/input", json={"content": "go"})
                    assert resumed.status_code == 200, resumed.text
            # (leaving the task group waited for every subscriber to read to the terminal event)
            stream_s = time.perf_counter() - started

        # The stored log, on a new connection: the pool's are idle since their streams ended and
        # the server closes an idle one after its keep-alive timeout, which a reuse can race.
        log: list[dict] = []
        after = 0
        async with httpx.AsyncClient(base_url=server.base, timeout=httpx.Timeout(60.0)) as client:
            while True:
                page = (await client.get(f"/runs/{run_id}/events", params={"after_seq": after, "limit": 1000})).json()
                log.extend(page["events"])
                if not page["events"]:
                    break
                after = page["next_after_seq"]

        assert log[-1]["type"] == "run.completed"
        expected = [(e["seq"], e["type"], e) for e in log]
        reference = received[0]
        assert [(seq, name, json.loads(data)) for seq, name, data in reference] == expected
        for index, got in enumerate(received):
            assert got == reference, f"subscriber {index} saw a different sequence"

        per_subscriber = (rss_with - rss_before) / SUBSCRIBERS
        print(
            f"\n{SUBSCRIBERS + 1} subscribers on one run of {len(log)} events, one server process: all identical.\n"
            f"  connect + replay to the question: {connect_s:.1f} s; input to the last subscriber done: {stream_s:.1f} s "
            f"({len(log) * (SUBSCRIBERS + 1) / stream_s:,.0f} events delivered/s)\n"
            f"  server RSS {rss_before / 2**20:.1f} MB with 1 subscriber, {rss_with / 2**20:.1f} MB with {SUBSCRIBERS + 1}: "
            f"{per_subscriber / 1024:.1f} KB per subscriber; fds {fds_before} -> {fds_with}"
        )
        assert fds_with - fds_before >= SUBSCRIBERS  # they really were all connected at once
    finally:
        server.kill()
