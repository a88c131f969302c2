"""One crashing agent does not fail the other runs in flight (issue 20, item 2), over real processes.

`crasher`'s step kills its `runengine serve` process (SIGKILL, as a native crash or an OOM kill
would) about a second after each start; a small supervisor loop restarts the server each time.
Ten `innocent` runs of another agent were executing in that process every time. Only the run that
made no progress between its losses counts them: `crasher` fails `worker_lost` after
`max_attempts` (3) executions, and every innocent run completes with its whole answer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from chaoskit import read_log
from durable_apps import INNOCENT_STEPS
from faultkit import ServeProcess

TESTS = Path(__file__).parent
INNOCENT_RUNS = 10
#: More restarts than this is a crash loop the engine did not end.
MAX_RESTARTS = 8


@pytest.mark.slow
def test_a_crash_looping_run_fails_worker_lost_and_the_runs_beside_it_complete(tmp_path: Path) -> None:
    server = ServeProcess(
        ["--app", "durable_apps:crash_loop_engine", "--log-level", "warning"],
        tmp_path / "serve.log",
        env={"RUNENGINE_DURABLE_STORE": f"sqlite:///{tmp_path / 'runs.db'}"},
        cwd=TESTS,
    )
    server.start()
    restarts = 0
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            innocents = [
                client.post("/runs", json={"agent": "innocent", "mode": "async"}).json()["run_id"]
                for _ in range(INNOCENT_RUNS)
            ]
            crashers = [
                client.post("/runs", json={"agent": agent, "mode": "async"}).json()["run_id"]
                for agent in ("crasher", "talking_crasher")
            ]
        runs = [*innocents, *crashers]

        # The supervisor: restart the server whenever it died, until every run has ended.
        deadline = time.monotonic() + 180
        while True:
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            assert server.process is not None
            if server.process.poll() is not None:
                restarts += 1
                assert restarts <= MAX_RESTARTS, "the crash loop never ended"
                server.process = None
                server.start()
                continue
            try:
                with httpx.Client(base_url=server.base, timeout=30) as client:
                    states = {run_id: client.get(f"/runs/{run_id}").json() for run_id in runs}
                    if all(state["status"] in ("completed", "failed", "cancelled") for state in states.values()):
                        logs = {run_id: read_log(client, run_id) for run_id in runs}
                        break
            except httpx.TransportError:  # killed while we asked: the loop restarts it
                pass
            time.sleep(0.2)
    finally:
        server.kill()

    # Three executions of each crasher, each killed: three restarts, and each failed at the third
    # resumption. The one that streamed before its step made no progress either: re-streaming
    # the words a resume discarded is not progress.
    assert restarts == 3
    for crasher in crashers:
        crashed = states[crasher]
        assert crashed["status"] == "failed" and crashed["error"]["code"] == "worker_lost", crashed
        assert [e["type"] for e in logs[crasher]].count("run.resumed") == 2
    for run_id in innocents:
        state: dict[str, Any] = states[run_id]
        assert state["status"] == "completed", (state["status"], state.get("error"))
        assert state["output"] == sum(range(INNOCENT_STEPS))
        types = [e["type"] for e in logs[run_id]]
        assert types.count("step.completed") == INNOCENT_STEPS
        # They were executing at the losses, and each resumed after every one of them.
        assert types.count("run.resumed") >= 2
