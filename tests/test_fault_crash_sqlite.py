"""Crash: SIGKILL `runengine serve` (SQLite) in the middle of streams, restart it, check the log.

Each cycle starts runs of the demo `echo` agent (a long input, streamed token by token),
one `approval` run left waiting for input and one short run that completes, follows
one stream over SSE, and kills the server's process with SIGKILL at a random point
of that stream. Then it starts the server again on the same file and checks:

- every acknowledged event is there, unchanged: each event a subscriber received
  (subscribers only ever see committed events) and every run whose creation was
  answered with 202;
- the runs that were running or waiting when the process died are recovered per
  policy: `run.failed` with code `worker_lost`, appended after what was committed,
  and a subscriber resuming from its last seq gets exactly the rest;
- the run that had completed is still completed, with the same log.
"""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from faultkit import FrameReader, ServeProcess

pytestmark = [pytest.mark.slow]

CYCLES = 3
STREAMS = 3
WORDS = 4_000


def all_events(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        response = client.get(f"/runs/{run_id}/events", params={"after_seq": after, "limit": 1000})
        assert response.status_code == 200, response.text
        page = response.json()
        events.extend(page["events"])
        if not page["events"]:
            return events
        after = page["next_after_seq"]


def read_stream(
    client: httpx.Client, run_id: str, after_seq: int, stop_after: int | None, stop_at_type: str | None = None
) -> list[dict[str, Any]]:
    """Events from an SSE stream after `after_seq`; stops after `stop_after` events, at an event of
    type `stop_at_type`, at the terminal event, or when the connection breaks (the server was killed)."""
    got: list[dict[str, Any]] = []
    reader = FrameReader()
    try:
        with client.stream(
            "GET", f"/runs/{run_id}/events", params={"after_seq": after_seq}, headers={"accept": "text/event-stream"}
        ) as response:
            if response.status_code == 204:
                return got
            assert response.status_code == 200
            for chunk in response.iter_raw():
                for frame in reader.feed(chunk):
                    event = json.loads(frame.data)
                    got.append(event)
                    if event["type"] in ("run.completed", "run.failed", "run.cancelled"):
                        return got
                    if (stop_after is not None and len(got) >= stop_after) or event["type"] == stop_at_type:
                        return got
    except httpx.TransportError:
        pass  # the server died under us: what we got is what was acknowledged
    return got


def test_sigkill_mid_stream_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(7)
    db = tmp_path / "crash.db"
    server = ServeProcess(["--store", f"sqlite:///{db}", "--delay", "0.001", "--log-level", "warning"], tmp_path / "serve.log")
    text = " ".join(f"w{i}" for i in range(WORDS))
    history: dict[str, list[dict[str, Any]]] = {}  # every run's log as last seen, across cycles
    try:
        for cycle in range(CYCLES):
            server.start()
            with httpx.Client(base_url=server.base, timeout=httpx.Timeout(30.0)) as client:
                # Earlier cycles' runs survived every kill since, unchanged.
                for run_id, events in history.items():
                    assert all_events(client, run_id) == events, f"cycle {cycle}: run {run_id} changed"

                done = client.post("/runs", json={"agent": "echo", "input": "short and complete", "mode": "sync"})
                assert done.status_code == 200 and done.json()["status"] == "completed", done.text
                done_id = done.json()["run_id"]
                done_log = all_events(client, done_id)

                waiting = client.post("/runs", json={"agent": "approval", "input": "restart the world", "mode": "async"})
                assert waiting.status_code == 202, waiting.text
                waiting_id = waiting.json()["run_id"]
                streaming: list[str] = []
                for _ in range(STREAMS):
                    response = client.post("/runs", json={"agent": "echo", "input": text, "mode": "async"})
                    assert response.status_code == 202, response.text  # acknowledged: it must exist after the crash
                    streaming.append(response.json()["run_id"])

                # Follow the approval run until it waits for input.
                asked = read_stream(client, waiting_id, 0, stop_after=None, stop_at_type="run.waiting_for_input")
                assert asked[-1]["type"] == "run.waiting_for_input", asked[-3:]

                # Follow one stream and kill the server at a random point of it.
                kill_at = rng.randint(50, WORDS // 2)
                followed = streaming[0]
                acknowledged = read_stream(client, followed, 0, stop_after=kill_at)
                assert len(acknowledged) == kill_at, "the run ended before the kill point"
                server.kill(signal.SIGKILL)
                others = {run_id: [] for run_id in streaming[1:]}

            server.start()
            with httpx.Client(base_url=server.base, timeout=httpx.Timeout(30.0)) as client:
                after = all_events(client, followed)
                # Every event the subscriber received is there, identical, in place.
                assert after[: len(acknowledged)] == acknowledged
                seqs = [e["seq"] for e in after]
                assert seqs == list(range(1, len(after) + 1))
                # Recovered per policy: the running run failed with worker_lost, after what was committed.
                assert after[-1]["type"] == "run.failed" and after[-1]["data"]["error"]["code"] == "worker_lost", after[-1]
                # A subscriber resuming from its last seq gets exactly the rest.
                rest = read_stream(client, followed, acknowledged[-1]["seq"], stop_after=None)
                assert acknowledged + rest == after

                for run_id in [*others, waiting_id]:
                    state = client.get(f"/runs/{run_id}").json()
                    assert state["status"] == "failed" and state["error"]["code"] == "worker_lost", state
                    log = all_events(client, run_id)
                    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
                    assert log[0]["type"] == "run.created" and log[-1]["type"] == "run.failed"
                    history[run_id] = log
                assert all_events(client, done_id) == done_log
                assert client.get(f"/runs/{done_id}").json()["status"] == "completed"
                history[followed] = after
                history[done_id] = done_log
                print(
                    f"cycle {cycle + 1}: killed after {kill_at} streamed events; {len(after) - 1} committed before the "
                    f"kill, all {len(acknowledged)} acknowledged ones kept; {len(others) + 2} runs recovered as worker_lost"
                )
            server.kill(signal.SIGTERM)
    finally:
        server.kill(signal.SIGKILL)
