"""Chaos on PostgreSQL (issue 12): two `runengine worker` processes execute runs of the `chaos` agent
(tests/durable_apps.py) queued by a `runengine serve --no-worker` API process; the worker executing
a run is SIGKILLed twenty times and replaced, and another worker takes its runs over when their
short lease (2 s) runs out and resumes them from their logs. The clients and the checks are those
of the SQLite chaos test (tests/chaoskit.py): every run completes, gapless, each tool's side
effect once except in the at-least-once window, the answer exactly once."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest

from chaoskit import Progress, Tally, check_all, drive_all
from durable_apps import create_counters
from faultkit import ServeProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TESTS = Path(__file__).parent
RUNS = 60
KILLS = 20
CONCURRENCY = 8
WORKER_OPTIONS = ("--lease", "2", "--heartbeat", "0.5", "--poll", "0.2", "--on-lost", "resume", "--max-attempts", "1000")


class WorkerProcess:
    """`runengine worker --app durable_apps:chaos_engine`, its output in a file."""

    def __init__(self, log: Path, env: dict[str, str]) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                [str(Path(sys.executable).parent / "runengine"), "worker", "--app", "durable_apps:chaos_engine",
                 *WORKER_OPTIONS, "--log-level", "warning"],
                cwd=TESTS,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
            )
        self.worker_id = ""

    def wait_ready(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.popen.poll() is None, self.log.read_text()[-3000:]
            found = re.search(r"worker (\S+) ready", self.log.read_text(errors="replace"))
            if found:
                self.worker_id = found.group(1)
                return self.worker_id
            time.sleep(0.05)
        raise AssertionError(f"worker not ready within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(30)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


async def executing_worker(client: httpx.AsyncClient) -> str | None:
    """The worker id that executes some run now: the last run.started / run.resumed of an active run."""
    running = []
    for status in ("running", "waiting_for_input"):
        running += (await client.get("/runs", params={"status": status, "limit": 50})).json()["runs"]
    random.shuffle(running)
    for summary in running:
        events = (await client.get(f"/runs/{summary['run_id']}/events", params={"limit": 1000})).json()["events"]
        workers = [e["data"].get("worker") for e in events if e["type"] in ("run.started", "run.resumed")]
        if workers and workers[-1] and events[-1]["type"] not in ("run.completed", "run.failed", "run.cancelled"):
            return str(workers[-1])
    return None


def test_sigkill_the_executing_worker_twenty_times_every_run_completes_once(
    pg_schema_url: str, tmp_path: Path
) -> None:
    rng = random.Random(12)
    counters = tmp_path / "effects.db"
    create_counters(counters)
    env = {"RUNENGINE_DURABLE_STORE": pg_schema_url, "RUNENGINE_DURABLE_COUNTERS": str(counters)}
    api = ServeProcess(
        ["--app", "durable_apps:chaos_engine", "--no-worker", "--log-level", "warning"], tmp_path / "serve.log", env=env, cwd=TESTS
    )
    workers: dict[str, WorkerProcess] = {}
    every_worker: list[WorkerProcess] = []

    def start_worker() -> None:
        proc = WorkerProcess(tmp_path / f"worker{len(every_worker) + 1}.log", env)
        every_worker.append(proc)
        workers[proc.wait_ready()] = proc

    progress = Progress()
    kills = 0
    began = time.monotonic()

    async def kill_executing_workers() -> None:
        nonlocal kills
        # Runs are let in a few per kill, so that the workload cannot outrun the kills (a run
        # takes well under a second here, a takeover about the 2 s lease).
        progress.released = 0
        async with httpx.AsyncClient(base_url=api.base, timeout=30) as client:
            for _ in range(KILLS):
                progress.released += RUNS // KILLS
                await anyio.sleep(rng.uniform(0.05, 0.5))  # a random point of the runs let in
                while (victim := await executing_worker(client)) not in workers:
                    if victim is None and progress.done >= progress.released:
                        progress.released += 1  # they all ended already: one more
                    await anyio.sleep(0.02)
                await anyio.to_thread.run_sync(workers.pop(victim).kill)
                kills += 1
                await anyio.to_thread.run_sync(start_worker)  # two workers again
        progress.released = None

    async def storm() -> None:
        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_executing_workers)
                await drive_all(api.base, RUNS, CONCURRENCY, progress)

    api.start()
    try:
        start_worker()
        start_worker()
        anyio.run(storm)
        tally = Tally()
        check_all(api.base, progress.runs, counters, tally)
    finally:
        for proc in every_worker:
            proc.stop()
        api.kill(signal.SIGTERM)
    assert kills == KILLS and tally.runs == RUNS
    assert tally.resumed_runs > 0
    print(f"\nPostgreSQL chaos: {KILLS} executing workers SIGKILLed in {time.monotonic() - began:.1f} s; {tally.line()}")
