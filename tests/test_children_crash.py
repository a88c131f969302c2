"""Child runs and signals across SIGKILL (issue 25's proof).

SQLite: an engine process runs a parent that fans out to 10 children and is killed with SIGKILL
mid-way (some children done, others running or not started). While no process runs, a signal is
sent to the parent. A new process recovers the store: every child is created and started once
(a resumed child replays, it does not start again), each ends once, the parent records each
child's output once (`child.ended`), gets them all in order, and receives the signal sent while
the process was down.

PostgreSQL: the same with `runengine worker` processes; the worker executing the parent is killed
with SIGKILL, the signal is sent while its lease is still held, and another worker takes over.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from kit import full_log, until
from runengine import RunEngine
from runengine.adapters.sqlite import SQLiteStore
from runengine.events import ChildEnded, ChildSpawned, Event
from runengine.options import Durability
from runengine.status import Status

TESTS = Path(__file__).parent
ANYIO_BACKENDS = ("asyncio",)
CHILDREN = 10

SCRIPT = r"""
import json, sys
import anyio
from children_agents import register
from runengine import RunEngine
from runengine.adapters.sqlite import SQLiteStore

async def main():
    engine = register(RunEngine(SQLiteStore(sys.argv[1])))
    async with engine:
        if sys.argv[2] == "start":
            await engine.execute("fan_parent", {"n": %d, "delay": 0.15}, mode="async", run_id="parent")
            print("started", flush=True)
            await anyio.sleep_forever()
        state = await engine.wait("parent")
        print("result " + json.dumps({"status": state.status.value, "output": state.output}), flush=True)

anyio.run(main)
""" % CHILDREN


def _env(starts: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, RUNENGINE_TEST_STARTS=str(starts), PYTHONPATH=path, **extra)


async def check_family(engine: RunEngine, parent_id: str, starts: Path) -> None:
    """Every child created, started, ended and joined once; the parent has every output once."""
    parent = await engine.status(parent_id)
    assert parent.status is Status.COMPLETED, parent.error
    assert parent.output == {"outputs": [2 * i for i in range(CHILDREN)], "finish": {"go": True}}
    log = await full_log(engine, parent_id)
    spawned = [e.child_run_id for e in log if isinstance(e, ChildSpawned)]
    ended = [e.child_run_id for e in log if isinstance(e, ChildEnded)]
    assert len(spawned) == CHILDREN and sorted(ended) == sorted(spawned) and len(set(ended)) == CHILDREN
    assert [c.run_id for c in parent.children] == spawned
    live_starts = Counter(line.split()[1] for line in starts.read_text().splitlines())
    assert live_starts == Counter(spawned), live_starts  # each child started once, no stranger
    for child_id in spawned:
        child_log = await full_log(engine, child_id)
        types = [e.type for e in child_log]
        assert types.count("run.created") == 1 and types.count("run.completed") == 1, types
        assert types.count("step.completed") == 1, types
        assert child_log[0].parent_run_id == parent_id  # type: ignore[attr-defined]


def _ended_children(log: list[Event]) -> int:
    return sum(isinstance(e, ChildEnded) for e in log)


@pytest.mark.server
@pytest.mark.anyio
async def test_a_parent_with_ten_children_killed_mid_way_on_sqlite(tmp_path: Path) -> None:
    db, starts = tmp_path / "runs.db", tmp_path / "starts.txt"
    starts.touch()
    first = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(db), "start"], cwd=TESTS, env=_env(starts),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    assert first.stdout is not None
    done = 0
    output: list[str] = []
    with anyio.fail_after(60):
        while done < 4:  # mid-way: four children done, six still to do
            line = (await anyio.to_thread.run_sync(first.stdout.readline)).decode()
            assert line, "".join(output)
            output.append(line)
            done += line.startswith("child done")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    first.stdout.close()

    # Down: nothing executes the parent; a signal is recorded in its log all the same.
    async with RunEngine(SQLiteStore(str(db)), durability=Durability(recover_on_start=False)) as offline:
        at_kill = await full_log(offline, "parent")
        assert (await offline.status("parent")).status is Status.RUNNING
        assert _ended_children(at_kill) < CHILDREN
        assert len(starts.read_text().splitlines()) < 2 * CHILDREN
        await offline.signal("parent", "finish", {"go": True})

    second = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(db), "resume"], cwd=TESTS, env=_env(starts),
        capture_output=True, text=True, timeout=120,
    )
    result = [line for line in second.stdout.splitlines() if line.startswith("result ")]
    assert result, second.stdout[-3000:] + second.stderr[-3000:]
    assert json.loads(result[0].removeprefix("result "))["status"] == "completed"
    async with RunEngine(SQLiteStore(str(db)), durability=Durability(recover_on_start=False)) as after:
        await check_family(after, "parent", starts)
        log = await full_log(after, "parent")
        assert log[: len(at_kill)] == at_kill  # nothing acknowledged was lost


WORKER = ("--lease", "1", "--heartbeat", "0.25", "--poll", "0.1")


class Workers:
    """`runengine worker --app children_agents:make_engine` processes on one PostgreSQL store."""

    def __init__(self, url: str, starts: Path, logs: Path) -> None:
        self.env = _env(starts, RUNENGINE_TEST_STORE=url)
        self.env.pop("RUNENGINE_STORE", None)
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._count = 0

    async def start(self) -> str:
        self._count += 1
        log_path = self.logs / f"worker{self._count}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "runengine.adapters.cli", "worker", "--app", "children_agents:make_engine", *WORKER],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, cwd=TESTS,
            )
        with anyio.fail_after(60):
            while "ready" not in (text := log_path.read_text(errors="replace")):
                assert proc.poll() is None, text
                await anyio.sleep(0.05)
        worker_id = text.split(": worker ", 1)[1].split()[0]
        self.procs[worker_id] = proc
        return worker_id

    def kill(self, worker_id: str) -> None:
        proc = self.procs.pop(worker_id)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _children_done(engine: RunEngine, parent_id: str, count: int) -> bool:
    state = await engine.status(parent_id)
    done = 0
    for child in state.children:
        summary = await engine.store.get_run(child.run_id)
        done += summary is not None and summary.status is Status.COMPLETED
    return done >= count


@pytest.mark.postgres
@pytest.mark.anyio
async def test_a_worker_killed_under_a_parent_and_its_children_on_postgres(pg_schema_url: str, tmp_path: Path) -> None:
    from children_agents import register

    starts = tmp_path / "starts.txt"
    starts.touch()
    workers = Workers(pg_schema_url, starts, tmp_path)
    try:
        for _ in range(2):
            await workers.start()
        async with register(RunEngine(pg_schema_url)) as api:
            await api.execute("fan_parent", {"n": CHILDREN, "delay": 0.2}, mode="async", run_id="parent")
            await until(lambda: _children_done(api, "parent", 4), timeout=60)
            at_kill = await full_log(api, "parent")
            executing = [e for e in at_kill if e.type in ("run.started", "run.resumed")][-1].worker  # type: ignore[attr-defined]
            workers.kill(executing)
            # Its lease still holds for a moment: nobody executes the parent, and the signal is recorded.
            await api.signal("parent", "finish", {"go": True})
            assert _ended_children(at_kill) < CHILDREN
            await workers.start()  # two workers again; one of them takes the parent over
            with anyio.fail_after(90):
                state = await api.wait("parent")
            assert state.status is Status.COMPLETED, state.error
            await check_family(api, "parent", starts)
            log = await full_log(api, "parent")
            assert log[: len(at_kill)] == at_kill
            assert "run.resumed" in [e.type for e in log[len(at_kill):]]
    finally:
        workers.stop()


@pytest.mark.postgres
@pytest.mark.anyio
async def test_a_worker_run_waiting_in_its_task_gets_a_signal_and_a_childs_end_from_another_process(
    pg_schema_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a store with a work queue a waiting run keeps its task (a parked run would go straight
    back to the queue): a signal appended by another engine, and a child's end, wake it there."""
    from children_agents import register
    from runengine.worker import WorkerOptions

    monkeypatch.setenv("RUNENGINE_TEST_STARTS", str(tmp_path / "starts.txt"))
    worker = register(RunEngine(pg_schema_url, worker=WorkerOptions(lease=2.0, poll=0.1)))
    api = register(RunEngine(pg_schema_url))
    for engine in (worker, api):

        @engine.agent("courier")
        async def courier(ctx):
            child = await ctx.spawn("fan_child", {"i": 21, "delay": 0.1})
            note = await ctx.receive("note")
            return {"child": await child, "note": note, "late": await ctx.poll("note", default="none")}

    async with worker, api:
        run_id = (await api.execute("courier", mode="async")).run_id
        await until(lambda: _has(api, run_id, "signal.waiting"))
        assert not worker.driver.parking and run_id in worker.driver.active
        await api.signal(run_id, "note", [1, 2])
        state = await api.wait(run_id)
        assert state.output == {"child": 42, "note": [1, 2], "late": "none"}, state.error
        assert "run.suspended" not in [e.type for e in await full_log(api, run_id)]


async def _has(engine: RunEngine, run_id: str, event_type: str) -> bool:
    return event_type in [e.type for e in await full_log(engine, run_id)]
