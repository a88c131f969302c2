"""Many engine processes on one PostgreSQL, on 127.0.0.1: `runengine serve` and `runengine worker`
processes started by the test, killed (SIGKILL), paused (SIGSTOP) and restarted; and the
database itself restarted under load. Every check is on the logs the runs leave behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from httpx_sse import aconnect_sse

from kit import free_port, until
from kit import full_log
from pg import PostgresServer
from pg_agents import make_worker_engine, register
from runengine import RunEngine
from runengine.events import Event
from runengine.status import Status
from runengine.wire import event_to_dict

pytestmark = pytest.mark.postgres

TESTS = Path(__file__).parent
TERMINAL = ("run.completed", "run.failed", "run.cancelled")


ANYIO_BACKENDS = ("asyncio",)


class Proc:
    """An engine process (`python -m runengine.adapters.cli ...`), its output in a file."""

    def __init__(self, name: str, args: list[str], url: str, logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        env = dict(os.environ, RUNENGINE_TEST_STORE=url, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
        env.pop("RUNENGINE_STORE", None)
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "runengine.adapters.cli", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(TESTS),
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(15)
        self._log.close()


class Cluster:
    """Starts engine processes for one store URL and stops them all at the end."""

    def __init__(self, url: str, logs: Path) -> None:
        self.url = url
        self.logs = logs
        self.procs: list[Proc] = []
        self._count = 0

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}{self._count}"

    def serve(self) -> tuple[Proc, str]:
        port = free_port()
        proc = Proc(self._name("serve"), ["serve", "--app", "pg_agents:make_engine", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], self.url, self.logs)
        self.procs.append(proc)
        return proc, f"http://127.0.0.1:{port}"

    def worker(self, *options: str) -> Proc:
        proc = Proc(self._name("worker"), ["worker", "--app", "pg_agents:make_engine", *options], self.url, self.logs)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def cluster(pg_schema_url: str, tmp_path: Path) -> Iterator[Cluster]:
    group = Cluster(pg_schema_url, tmp_path)
    yield group
    group.stop()


async def wait_http(base: str, proc: Proc, timeout: float = 60.0) -> None:
    async with httpx.AsyncClient() as client:
        with anyio.fail_after(timeout):
            while True:
                assert proc.popen.poll() is None, proc.output()
                try:
                    if (await client.get(f"{base}/agents")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.1)


async def worker_id(proc: Proc, timeout: float = 60.0) -> str:
    with anyio.fail_after(timeout):
        while True:
            assert proc.popen.poll() is None, proc.output()
            found = re.search(r"worker (\S+) ready", proc.output())
            if found:
                return found.group(1)
            await anyio.sleep(0.05)


def assert_gapless(log: list[Event]) -> None:
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert [e.type for e in log].count("run.created") == 1
    assert sum(e.terminal for e in log) <= 1 and (not any(e.terminal for e in log) or log[-1].terminal)


@pytest.mark.anyio
async def test_execute_on_a_run_by_worker_b_streamed_from_c(cluster: Cluster) -> None:
    a, a_url = cluster.serve()
    b = cluster.worker("--lease", "5", "--poll", "0.2")
    c, c_url = cluster.serve()
    await wait_http(a_url, a)
    await wait_http(c_url, c)
    b_id = await worker_id(b)
    async with httpx.AsyncClient(timeout=30) as client, register(RunEngine(cluster.url)) as reader:
        created = await client.post(f"{a_url}/runs", json={"agent": "ticker", "input": {"n": 300, "delay": 0.003}, "mode": "async"})
        assert created.status_code == 202, created.text
        run_id = created.json()["run_id"]
        # Stream from C, dropping the connection every 40 events and resuming with Last-Event-ID.
        got: list[dict[str, Any]] = []
        reconnects = 0
        with anyio.fail_after(60):
            while not got or got[-1]["type"] not in TERMINAL:
                headers = {"last-event-id": str(got[-1]["seq"])} if got else {}
                async with aconnect_sse(client, "GET", f"{c_url}/runs/{run_id}/events", headers=headers) as source:
                    if source.response.status_code == 204:
                        break
                    assert source.response.status_code == 200
                    count = 0
                    async for sse in source.aiter_sse():
                        if not sse.data:
                            continue
                        got.append(json.loads(sse.data))
                        count += 1
                        if got[-1]["type"] in TERMINAL or count == 40:
                            break
                reconnects += 1
        log = await full_log(reader, run_id)
        assert got == [json.loads(json.dumps(event_to_dict(e))) for e in log]
        assert reconnects >= 5
        assert_gapless(log)
        assert log[-1].type == "run.completed"
        assert [e for e in log if e.type == "run.started"][0].worker == b_id  # A only queued it

        # Cancel through C reaches the idle agent on B; input through A reaches the asking agent on B.
        idle = (await client.post(f"{a_url}/runs", json={"agent": "idle", "mode": "async"})).json()["run_id"]
        await until(lambda: _status_is(reader, idle, Status.RUNNING))
        cancelled = await client.post(f"{c_url}/runs/{idle}/cancel", json={"reason": "from C"})
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        await until(lambda: _in_output(b, f"run stopped: lease gone.*{idle}"), timeout=10)  # promptly, not at a heartbeat
        assert [e.type for e in await full_log(reader, idle)][-1] == "run.cancelled"

        asking = (await client.post(f"{c_url}/runs", json={"agent": "asker", "mode": "async"})).json()["run_id"]
        await until(lambda: _status_is(reader, asking, Status.WAITING_FOR_INPUT))
        given = await client.post(f"{a_url}/runs/{asking}/input", json={"content": "yes"})
        assert given.status_code == 200, given.text
        done = await reader.wait(asking)
        assert done.status is Status.COMPLETED and done.output == {"answer": "yes"} and done.worker == b_id


async def _status_is(engine: RunEngine, run_id: str, status: Status) -> bool:
    return (await engine.status(run_id)).status is status


async def _in_output(proc: Proc, pattern: str) -> bool:
    return re.search(pattern, proc.output()) is not None


LEASE = 1.0
WORKER_OPTIONS = ("--lease", str(LEASE), "--heartbeat", "0.25", "--poll", "0.1")


@pytest.mark.anyio
async def test_sigkill_the_executing_worker_twenty_times(cluster: Cluster) -> None:
    policies = ["fail", "requeue"]
    workers: dict[str, Proc] = {}

    async def start_worker(policy: str) -> None:
        proc = cluster.worker(*WORKER_OPTIONS, "--on-lost", policy)
        workers[await worker_id(proc)] = proc

    for policy in policies:
        await start_worker(policy)
    recoveries: list[float] = []
    async with register(RunEngine(cluster.url)) as api:
        for round_ in range(20):
            run = await api.execute("ticker", {"n": 80, "delay": 0.01}, mode="async")
            # Mid-run: started, with some committed deltas.
            seen = await until(lambda: _log_with_deltas(api, run.run_id, 5))
            started = [e for e in seen if e.type == "run.started"][-1]
            victim = workers.pop(started.worker)  # type: ignore[arg-type]
            victim.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(start_worker, policies[round_ % 2])  # keep two workers alive
                # Recovered: failed with worker_lost, or requeued for another attempt.
                await until(lambda: _recovered(api, run.run_id, len(seen)), timeout=30)
                recoveries.append(time.monotonic() - killed_at)
            state = await api.wait(run.run_id)
            log = await full_log(api, run.run_id)
            assert_gapless(log)
            assert log[: len(seen)] == seen  # nothing acknowledged was lost
            if state.status is Status.FAILED:
                assert state.error is not None and state.error.code == "worker_lost"
            else:
                assert state.status is Status.COMPLETED and "run.requeued" in [e.type for e in log]
                assert state.output == {"n": 80, "attempt": state.attempt} and state.attempt >= 2
    # Each recovery waited for the lease to run out, and not much longer (30 s is the hard cap above).
    assert min(recoveries) >= LEASE * 0.5, recoveries


async def _log_with_deltas(engine: RunEngine, run_id: str, count: int) -> list[Event] | None:
    log = await full_log(engine, run_id)
    return log if sum(e.type == "message.delta" for e in log) >= count else None


async def _recovered(engine: RunEngine, run_id: str, seen: int) -> bool:
    log = await full_log(engine, run_id)
    return any(e.type in ("run.failed", "run.requeued") for e in log[seen:]) or (
        log[-1].type == "run.completed" and any(e.type == "run.requeued" for e in log)
    )


@pytest.mark.anyio
async def test_a_paused_worker_cannot_append_after_another_took_over(cluster: Cluster) -> None:
    first = cluster.worker(*WORKER_OPTIONS, "--on-lost", "requeue")
    first_id = await worker_id(first)
    async with register(RunEngine(cluster.url)) as api:
        run = await api.execute("ticker", {"n": 300, "delay": 0.01}, mode="async")
        await until(lambda: _log_with_deltas(api, run.run_id, 10))
        first.signal(signal.SIGSTOP)  # paused mid-stream, past its lease soon
        second = cluster.worker(*WORKER_OPTIONS, "--on-lost", "requeue")
        second_id = await worker_id(second)
        await until(lambda: _attempt_started_by(api, run.run_id, second_id), timeout=30)
        first.signal(signal.SIGCONT)  # back while the second attempt still streams
        state = await api.wait(run.run_id)
        await until(lambda: _in_output(first, rf"(lease lost|lease gone).*{run.run_id}"), timeout=20)
        log = await full_log(api, run.run_id)
        assert_gapless(log)
        assert state.status is Status.COMPLETED and state.worker == second_id and state.attempt == 2
        requeued = [e.seq for e in log if e.type == "run.requeued"]
        assert len(requeued) == 1
        after = [e for e in log if e.seq > requeued[0]]
        assert [e for e in after if e.type == "run.started"][0].worker == second_id  # type: ignore[attr-defined]
        deltas_after = [e.content for e in after if e.type == "message.delta"]  # type: ignore[attr-defined]
        assert deltas_after and all(d.startswith("a2:") for d in deltas_after)  # nothing from the paused one
        assert first_id != second_id
        # The paused worker is alive and well: it takes new work.
        second.signal(signal.SIGSTOP)
        again = await api.execute("ticker", {"n": 3}, mode="async")
        assert (await api.wait(again.run_id)).worker == first_id
        second.signal(signal.SIGCONT)


async def _attempt_started_by(engine: RunEngine, run_id: str, worker: str) -> bool:
    return any(e.type == "run.started" and e.worker == worker for e in await full_log(engine, run_id))  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_postgres_restarted_under_load(pg_server: PostgresServer, pg_schema_url: str) -> None:
    url = pg_schema_url
    async with register(RunEngine(url)) as api, make_worker_engine(url, lease=20, poll=0.2) as worker:
        runs = [await api.execute("ticker", {"n": 300, "delay": 0.01}, mode="async") for _ in range(8)]
        tails: dict[str, list[Event]] = {r.run_id: [] for r in runs}
        acknowledged: dict[str, list[Event]] = {}

        async def tail(run_id: str) -> None:
            async for event in api.events(run_id):
                tails[run_id].append(event)

        async with anyio.create_task_group() as tg:
            for run in runs:
                tg.start_soon(tail, run.run_id)
            await until(lambda: _all_streaming(api, [r.run_id for r in runs]), timeout=30)
            for run in runs:
                acknowledged[run.run_id] = await full_log(api, run.run_id)
            await anyio.to_thread.run_sync(pg_server.restart)  # the event loop goes on meanwhile
            with anyio.fail_after(90):
                for run in runs:
                    state = await api.wait(run.run_id)
                    assert state.status is Status.COMPLETED, state
        for run in runs:
            log = await full_log(api, run.run_id)
            assert_gapless(log)
            assert log[: len(acknowledged[run.run_id])] == acknowledged[run.run_id]
            assert tails[run.run_id] == log  # every tail got exactly the log, across the restart
            assert log[-1].type == "run.completed"
        assert worker._worker is not None and worker._worker.in_flight == 0


async def _all_streaming(engine: RunEngine, run_ids: list[str]) -> bool:
    for run_id in run_ids:
        if (await engine.status(run_id)).last_seq < 10:
            return False
    return True


class DemoProc(Proc):
    """`runengine serve|worker --store URL` with the demo agents (no --app)."""

    def __init__(self, name: str, args: list[str], url: str, logs: Path) -> None:
        super().__init__(name, [*args, "--store", url, "--delay", "0"], url, logs)


@pytest.mark.anyio
async def test_serve_and_worker_commands_on_postgres(pg_schema_url: str, tmp_path: Path) -> None:
    url = pg_schema_url
    procs: list[Proc] = []
    try:
        # One process alone: `runengine serve --store postgresql://...` accepts and executes.
        port = free_port()
        single = DemoProc("single", ["serve", "--port", str(port), "--log-level", "warning"], url, tmp_path)
        procs.append(single)
        base = f"http://127.0.0.1:{port}"
        await wait_http(base, single)
        async with httpx.AsyncClient(timeout=30) as client:
            done = await client.post(f"{base}/runs", json={"agent": "echo", "input": "hello there"})
            assert done.status_code == 200 and done.json()["status"] == "completed", done.text
            single.stop()
            # An API-only process and a worker process.
            port = free_port()
            api = DemoProc("api", ["serve", "--port", str(port), "--no-worker", "--log-level", "warning"], url, tmp_path)
            worker = DemoProc("worker", ["worker", "--lease", "5", "--drain-timeout", "0.5"], url, tmp_path)
            procs += [api, worker]
            base = f"http://127.0.0.1:{port}"
            await wait_http(base, api)
            wid = await worker_id(worker)
            done = await client.post(f"{base}/runs", json={"agent": "pizza", "input": "something spicy"})
            assert done.status_code == 200 and done.json()["status"] == "completed", done.text
            waiting = await client.post(f"{base}/runs", json={"agent": "approval", "input": "ship it"})
            assert waiting.json()["status"] == "waiting_for_input", waiting.text
            run_id = waiting.json()["run_id"]
            # SIGTERM: the worker stops claiming, suspends the waiting run, hands it back, exits.
            worker.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(worker.popen.wait, 30) == 0, worker.output()
            state = (await client.get(f"{base}/runs/{run_id}")).json()
            assert state["status"] == "waiting_for_input" and state["suspended"], state
            events = (await client.get(f"{base}/runs/{run_id}/events")).json()["events"]
            assert [e["type"] for e in events][-1] == "run.suspended"
            assert wid in worker.output()
            # The run waits on the queue, claimable by no worker (it holds none) until its input
            # comes; then the next worker takes it up where it waited, and completes it.
            second = DemoProc("worker2", ["worker", "--lease", "5"], url, tmp_path)
            procs.append(second)
            await worker_id(second)
            answered = await client.post(f"{base}/runs/{run_id}/input", json={"content": "yes"})
            assert answered.status_code == 200, answered.text
            with anyio.fail_after(30):
                while (state := (await client.get(f"{base}/runs/{run_id}")).json())["status"] != "completed":
                    await anyio.sleep(0.05)
            events = (await client.get(f"{base}/runs/{run_id}/events")).json()["events"]
            after_stop = [e["type"] for e in events][[e["type"] for e in events].index("run.suspended") + 1 :]
            assert after_stop[:2] == ["run.input", "run.resumed"], after_stop
            # What the first worker streamed before the question is replayed, not said again.
            assert [m["content"] for m in state["messages"]] == ["I am about to ship it.", "Approved: done."]
            assert state["output"] == {"approved": True, "answer": "yes"}
    finally:
        for proc in procs:
            proc.stop()


def test_worker_command_refuses_a_store_without_a_queue(tmp_path: Path) -> None:
    for args in (["worker", "--store", f"sqlite:///{tmp_path / 'x.db'}"], ["worker"], ["worker", "--store", "nope"]):
        result = subprocess.run(
            [sys.executable, "-m", "runengine.adapters.cli", *args], capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if k != "RUNENGINE_STORE"},
        )
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        assert "store" in result.stderr.lower()
