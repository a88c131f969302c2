"""Crash: SIGKILL `runengine serve` (SQLite) in the middle of streams, restart it, check the log.

Each cycle starts runs of the demo `echo` agent (a long input, streamed token by token),
one `approval` run left waiting for input and one short run that completes, follows
one stream over SSE, and kills the server's process with SIGKILL at a random point
of that stream. Then it starts the server again on the same file and checks:

- every acknowledged event is there, unchanged: each event a subscriber received
  (subscribers only ever see committed events) and every run whose creation was
  answered with 202;
- the runs that were running or waiting when the process died resume from their logs
  (`run.resumed`, reason `worker_lost`, after what was committed; a half-streamed message
  is discarded and streamed afresh) and complete, each with its whole text exactly once
  in what a client keeps; the waiting run keeps waiting and completes on its input; a
  subscriber resuming from its last seq gets exactly the rest;
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


def wait_for_end(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    """The run's whole log once it has ended (read to its terminal event over SSE)."""
    read_stream(client, run_id, 0, stop_after=None)
    return all_events(client, run_id)


def kept_text(log: list[dict[str, Any]]) -> str:
    """The text a client keeps: every delta except those of messages a resume discarded."""
    discarded = {e["data"]["message_id"] for e in log if e["type"] == "message.discarded"}
    return "".join(
        e["data"]["content"] for e in log if e["type"] == "message.delta" and e["data"]["message_id"] not in discarded
    )


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
                # A subscriber resuming from its last seq follows the resumed run to its end.
                rest = read_stream(client, followed, acknowledged[-1]["seq"], stop_after=None)
                after = all_events(client, followed)
                # Every event the subscriber received is there, identical, in place; then exactly the rest.
                assert after[: len(acknowledged)] == acknowledged
                assert acknowledged + rest == after
                assert [e["seq"] for e in after] == list(range(1, len(after) + 1))
                resumed = [e for e in rest if e["type"] == "run.resumed"]
                assert resumed and resumed[0]["data"]["reason"] == "worker_lost", rest[:3]
                for run_id in [followed, *others]:
                    log = wait_for_end(client, run_id)
                    assert log[-1]["type"] == "run.completed", log[-1]
                    assert kept_text(log) == text  # what the process streamed before it died is not said twice
                    history[run_id] = log
                state = client.get(f"/runs/{waiting_id}").json()
                assert state["status"] == "waiting_for_input", state  # still waiting for its person
                answered = client.post(f"/runs/{waiting_id}/input", json={"content": "yes"})
                assert answered.status_code == 200, answered.text
                history[waiting_id] = wait_for_end(client, waiting_id)
                assert history[waiting_id][-1]["type"] == "run.completed"
                assert all_events(client, done_id) == done_log
                assert client.get(f"/runs/{done_id}").json()["status"] == "completed"
                history[done_id] = done_log
                print(
                    f"cycle {cycle + 1}: killed after {kill_at} streamed events; {len(acknowledged)} acknowledged "
                    f"ones kept; {len(others) + 2} runs resumed and completed"
                )
            server.kill(signal.SIGTERM)
    finally:
        server.kill(signal.SIGKILL)
