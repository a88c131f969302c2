"""The durable chaos suites' client side: HTTP clients that drive runs of the `chaos` agent
(tests/durable_apps.py) through servers that are killed under them, and the checks made on
each run's log afterwards. Shared by the SQLite and the PostgreSQL chaos tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx
from httpx_sse import aconnect_sse

from durable_apps import ANSWER, MESSAGES, TOOLS
from runengine.reducer import fold
from runengine.wire import event_from_dict

TERMINAL = ("run.completed", "run.failed", "run.cancelled")
#: How long a client waits before reconnecting to a server that is not there.
RECONNECT_PAUSE = 0.1


@attrs.define
class DrivenRun:
    """One run as its client saw it."""

    index: int
    #: the chaos agent it runs (durable_apps.MESSAGES says what its messages must be)
    agent: str = "chaos"
    run_id: str = ""
    #: every event received over SSE, by seq (subscribers only ever see committed events)
    seen: dict[int, dict[str, Any]] = attrs.field(factory=dict)
    reconnects: int = 0


@attrs.define
class Progress:
    done: int = 0
    runs: list[DrivenRun] = attrs.field(factory=list)
    #: With a number, only the runs with a lower index may start (the killer lets more in).
    released: int | None = None


async def _create(client: httpx.AsyncClient, run: DrivenRun) -> None:
    """POST the run until it is acknowledged; retries carry the same idempotency key, so a request
    that reached a server killed before it answered does not make a second run."""
    while True:
        try:
            response = await client.post(
                "/runs",
                json={"agent": run.agent, "input": {"i": run.index}, "mode": "async", "idempotency_key": f"chaos-{run.index}"},
            )
        except httpx.TransportError:
            await anyio.sleep(RECONNECT_PAUSE)
            continue
        assert response.status_code == 202, (run.index, response.status_code, response.text)
        run.run_id = response.json()["run_id"]
        return


async def _give_input_if_waiting(client: httpx.AsyncClient, run: DrivenRun) -> None:
    """POST input when the run waits for it; a kill or a lost race here is retried at the next connect."""
    try:
        state = await client.get(f"/runs/{run.run_id}")
        if state.status_code != 200 or state.json()["status"] != "waiting_for_input":
            return
        given = await client.post(f"/runs/{run.run_id}/input", json={"content": "yes"})
    except httpx.TransportError:
        return
    assert given.status_code in (200, 409), given.text  # 409: it stopped waiting meanwhile


async def drive(client: httpx.AsyncClient, run: DrivenRun) -> None:
    """Create the run, follow it over SSE from the last seq seen, reconnecting across kills, and give
    it input whenever it waits, until its terminal event."""
    await _create(client, run)
    cursor = 0
    while True:
        try:
            async with aconnect_sse(
                client, "GET", f"/runs/{run.run_id}/events", params={"after_seq": cursor}
            ) as source:
                if source.response.status_code == 204:  # ended, and everything was seen
                    return
                assert source.response.status_code == 200, source.response.status_code
                await _give_input_if_waiting(client, run)
                async for sse in source.aiter_sse():
                    if not sse.data:
                        continue
                    if sse.event == "stream.error":  # the server's store went away mid-stream
                        break
                    event = json.loads(sse.data)
                    assert event["seq"] == cursor + 1, (run.run_id, cursor, event)  # gapless as received
                    run.seen[event["seq"]] = event
                    cursor = event["seq"]
                    if event["type"] in TERMINAL:
                        return
                    if event["type"] == "run.waiting_for_input":
                        await _give_input_if_waiting(client, run)
        except httpx.TransportError:
            pass
        run.reconnects += 1
        await anyio.sleep(RECONNECT_PAUSE)


async def drive_all(base: str, count: int, concurrency: int, progress: Progress, agent: str = "chaos") -> None:
    limiter = anyio.CapacityLimiter(concurrency)
    timeout = httpx.Timeout(10.0, read=60.0)
    limits = httpx.Limits(max_connections=4 * concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits) as client:

        async def one(index: int) -> None:
            while progress.released is not None and index >= progress.released:
                await anyio.sleep(0.01)
            async with limiter:
                run = DrivenRun(index, agent)
                progress.runs.append(run)
                await drive(client, run)
                progress.done += 1

        async with anyio.create_task_group() as tg:
            for index in range(count):
                tg.start_soon(one, index)


# -- after the storm: reading and checking each run's log ----------------------------------------


def read_log(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
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


def resumptions(log: list[dict[str, Any]]) -> list[int]:
    """The seqs at which an engine took the run up again from its log."""
    return [e["seq"] for e in log if e["type"] == "run.resumed"]


@attrs.define
class Tally:
    runs: int = 0
    resumed_runs: int = 0
    resumptions: int = 0
    most_resumptions: int = 0
    #: tool calls that had no result recorded when their run was resumed (the window was open)
    windows_open: int = 0
    #: tool side effects that happened twice: a call in flight at a kill, executed again
    windows_hit: int = 0
    discarded_messages: int = 0
    reconnects: int = 0

    def line(self) -> str:
        return (
            f"{self.runs} runs, {self.resumed_runs} resumed ({self.resumptions} resumptions, at most"
            f" {self.most_resumptions} in one run); tool calls in flight"
            f" at a resume: {self.windows_open}, of which executed twice: {self.windows_hit};"
            f" partial messages discarded: {self.discarded_messages}; client reconnects: {self.reconnects}"
        )


def check_run(
    run: DrivenRun, log: list[dict[str, Any]], state: dict[str, Any], counts: dict[tuple[str, str], int], tally: Tally
) -> None:
    where = f"run {run.index} ({run.run_id})"
    # Gapless, one creation, one terminal event at the end, and it folds (the log is valid).
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1)), where
    assert log[0]["type"] == "run.created" and [e["type"] for e in log].count("run.created") == 1, where
    assert log[-1]["type"] == "run.completed", (where, log[-1])
    assert sum(e["type"] in TERMINAL for e in log) == 1, where
    folded = fold(event_from_dict(e) for e in log)
    assert folded is not None and folded.status.value == "completed", where
    # Everything a client was sent is in the log, unchanged.
    for seq, event in run.seen.items():
        assert log[seq - 1] == event, (where, seq)
    # Completed, every message there exactly once, the answer last.
    expected = MESSAGES[run.agent]
    assert state["status"] == "completed", (where, state["status"], state["error"])
    assert state["output"] == ANSWER, (where, state["output"])
    assert [m["content"] for m in state["messages"]] == expected, (where, state["messages"])
    assert folded.output == ANSWER and [m.content for m in folded.messages] == expected, where
    # What a client keeps (the deltas of messages not discarded) spells each message once.
    discarded = set(folded.discarded)
    kept: dict[str, str] = {}
    for e in log:
        if e["type"] == "message.delta" and e["data"]["message_id"] not in discarded:
            kept[e["data"]["message_id"]] = kept.get(e["data"]["message_id"], "") + e["data"]["content"]
    assert list(kept.values()) == expected, (where, kept)

    resumed_at = resumptions(log)
    tally.runs += 1
    tally.resumed_runs += bool(resumed_at)
    tally.resumptions += len(resumed_at)
    tally.most_resumptions = max(tally.most_resumptions, len(resumed_at))
    tally.discarded_messages += sum(e["type"] == "message.discarded" for e in log)
    tally.reconnects += run.reconnects
    for tool in TOOLS:
        calls = [e for e in log if e["type"] == "tool.call" and e["data"]["name"] == tool]
        assert len(calls) == 1, (where, tool, calls)
        call_id = calls[0]["data"]["call_id"]
        results = [e for e in log if e["type"] == "tool.result" and e["data"]["call_id"] == call_id]
        assert len(results) == 1 and results[0]["data"]["error"] is None, (where, tool, results)
        # Resumed while this call had no result: each such resume may have run the tool again.
        open_at_resume = sum(calls[0]["seq"] < seq < results[0]["seq"] for seq in resumed_at)
        count = counts.get((run.run_id, tool), 0)
        assert 1 <= count <= 1 + open_at_resume, (
            f"{where}: tool {tool} ran {count} times; resumed {open_at_resume} times while it had no result"
        )
        tally.windows_open += open_at_resume
        tally.windows_hit += count - 1


def check_all(base: str, runs: list[DrivenRun], counters: Path, tally: Tally) -> None:
    from durable_apps import read_counters

    counts = read_counters(counters)
    with httpx.Client(base_url=base, timeout=60) as client:
        for run in sorted(runs, key=lambda r: r.index):
            state = client.get(f"/runs/{run.run_id}").json()
            check_run(run, read_log(client, run.run_id), state, counts, tally)
    # No tool ran for a run the clients do not know of.
    known = {run.run_id for run in runs}
    assert {run_id for run_id, _ in counts} <= known
