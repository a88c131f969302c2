"""Peer benchmarks: runengine beside the ACP reference server, a plain FastAPI floor and eventsourcing.

    .venv/bin/python benchmarks/peers/run.py            # the full run (about 15-25 minutes here)
    .venv/bin/python benchmarks/peers/run.py --quick    # a smaller run to check the harness

Every side runs in the same invocation, interleaved (repeat 1 of every side, then
repeat 2 ...), so a change in the machine's load lands on all of them alike. The peers
run in virtualenvs this script creates under .bench-venvs/ with the versions they
install with today, so their pins never touch the project's environment.

Prints machine information and tables of medians; writes the raw figures as JSON and a
plot as PNG under benchmarks/results/ (gitignored). The plot needs the `bench` extra
(`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENVS = ROOT / ".bench-venvs"
RESULTS = ROOT / "benchmarks" / "results"
PYTHON = sys.executable

#: The peers' own environments: the versions they install with today.
PEER_VENVS: dict[str, list[str]] = {
    "acp": [
        "acp-sdk==1.0.3",
        "fastapi==0.115.12",
        "starlette==0.46.2",
        "uvicorn==0.34.3",
        "pydantic==2.11.7",
        "cachetools==6.1.0",
        "httpx-sse==0.4.0",
    ],
    "eventsourcing": ["eventsourcing==9.5.6"],
    "dbos": ["dbos==3.4.0"],  # benchmarks/bench_durability.py
}
TERMINAL = {"run.completed", "run.failed", "run.cancelled"}


# -- environments and processes ------------------------------------------------------------


def peer_python(name: str) -> str:
    """The python of the peer's virtualenv, created (or re-created when its pins changed)."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".pins"
    pins = "\n".join(PEER_VENVS[name])
    if not (python.exists() and stamp.exists() and stamp.read_text() == pins):
        print(f"creating {venv} with {', '.join(PEER_VENVS[name])} ...", flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        base = getattr(sys, "_base_executable", None) or shutil.which("python3") or PYTHON
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_VENVS[name]], check=True)
        stamp.write_text(pins)
    return str(python)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server process on a loopback port, started and stopped by the benchmark."""

    label: str
    command: Callable[[int], list[str]]
    ready_path: str
    cwd: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    log: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.log = RESULTS / f"server-{self.label.replace(' ', '_').replace('/', '')}.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command(self.port),
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited at start; see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + self.ready_path, timeout=2).status_code < 500:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.label} did not answer on {self.ready_path} within 60 s; see {self.log}")

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[None]:
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in servers:
            server.stop()


# -- the sides of the HTTP workloads -------------------------------------------------------


@dataclass
class Side:
    """One HTTP implementation of the two workloads."""

    name: str
    server: Server
    #: path, JSON body for a streamed run of n parts.
    stream_request: Callable[[int], tuple[str, dict[str, Any]]]
    #: how many events a complete stream of n parts has.
    expected_events: Callable[[int], int]
    #: path, JSON body for one sync run of the trivial agent.
    sync_request: Callable[[int], tuple[str, dict[str, Any]]]
    #: is this sync response a completed run?
    sync_ok: Callable[[dict[str, Any]], bool]
    #: the event type of a decoded SSE data payload.
    event_type: Callable[[str | None, Any], str] = lambda name, data: data.get("type", name or "")
    #: restart the server after a stream that did not finish (its work goes on without a client).
    restart_after_dnf: bool = False
    #: run the long sync soak on this side.
    soak: bool = False


def acp_message(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "parts": [{"content": text, "content_type": "text/plain"}]}]


def acp_side(
    name: str, server: Server, prefix: str = "", restart: bool = False, agents: tuple[str, str] = ("parts", "echo")
) -> Side:
    parts, echo = agents
    return Side(
        name=name,
        server=server,
        stream_request=lambda n: (f"{prefix}/runs", {"agent_name": parts, "input": acp_message(str(n)), "mode": "stream"}),
        expected_events=lambda n: n + 5,  # created, in-progress, message.created, n parts, message.completed, completed
        sync_request=lambda i: (f"{prefix}/runs", {"agent_name": echo, "input": acp_message(f"hello {i}"), "mode": "sync"}),
        sync_ok=lambda body: body.get("status") == "completed",
        restart_after_dnf=restart,
    )


def floor_side(server: Server) -> Side:
    return Side(
        name="floor: plain FastAPI SSE",
        server=server,
        stream_request=lambda n: ("/stream", {"n": n}),
        expected_events=lambda n: n + 4,
        sync_request=lambda i: ("/sync", {"input": f"hello {i}"}),
        sync_ok=lambda body: body.get("status") == "completed",
    )


def runengine_native_side(server: Server, name: str, soak: bool) -> Side:
    return Side(
        name=name,
        server=server,
        stream_request=lambda n: ("/runs", {"agent": "bench_parts", "input": str(n), "mode": "stream"}),
        expected_events=lambda n: n + 4,  # created, started, n deltas, message.completed, completed
        sync_request=lambda i: ("/runs", {"agent": "bench_echo", "input": f"hello {i}", "mode": "sync"}),
        sync_ok=lambda body: body.get("status") == "completed",
        soak=soak,
    )


# -- the workloads --------------------------------------------------------------------------


async def one_stream(client: httpx.AsyncClient, side: Side, n: int, cap: float) -> dict[str, Any]:
    """One streamed run of n parts: seconds from the request to the terminal event."""
    path, body = side.stream_request(n)
    received = 0
    last_type = ""
    started = time.perf_counter()
    finished = False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(cap):
            async with aconnect_sse(client, "POST", side.server.base + path, json=body) as source:
                source.response.raise_for_status()
                async for sse in source.aiter_sse():
                    if not sse.data:
                        continue
                    received += 1
                    last_type = side.event_type(sse.event, json.loads(sse.data))
                    if last_type in TERMINAL:
                        finished = True
                        break
    seconds = time.perf_counter() - started
    expected = side.expected_events(n)
    if finished and (received != expected or last_type != "run.completed"):
        raise RuntimeError(f"{side.name}: {received} events ending {last_type!r}, expected {expected} ending run.completed")
    return {"side": side.name, "n": n, "finished": finished, "seconds": seconds, "events": received, "cap": cap,
            "load": os.getloadavg()[0]}


async def sync_batch(client: httpx.AsyncClient, side: Side, runs: int, offset: int) -> float:
    """`runs` sequential sync runs of the trivial agent; returns runs per second."""
    started = time.perf_counter()
    for i in range(runs):
        path, body = side.sync_request(offset + i)
        response = await client.post(side.server.base + path, json=body)
        response.raise_for_status()
        if not side.sync_ok(response.json()):
            raise RuntimeError(f"{side.name}: sync run did not complete: {response.text[:300]}")
    return runs / (time.perf_counter() - started)


async def concurrent_sync(side: Side, runs: int, clients: int, cap: float, offset: int) -> dict[str, Any]:
    """`runs` sync runs from `clients` concurrent clients (each its own connection): runs/s."""
    done = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(client: httpx.AsyncClient, start: int) -> None:
        nonlocal done
        for i in range(start, runs, clients):
            path, body = side.sync_request(offset + i)
            response = await client.post(side.server.base + path, json=body)
            response.raise_for_status()
            if not side.sync_ok(response.json()):
                raise RuntimeError(f"{side.name}: sync run did not complete: {response.text[:300]}")
            done += 1

    started = time.perf_counter()
    finished = False
    async with httpx.AsyncClient(timeout=httpx.Timeout(cap + 30, connect=30), limits=limits) as client:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(cap):
                async with asyncio.TaskGroup() as tg:
                    for c in range(clients):
                        tg.create_task(client_loop(client, c))
                finished = True
    seconds = time.perf_counter() - started
    return {"side": side.name, "runs": done, "clients": clients, "seconds": seconds, "finished": finished,
            "runs_per_s": done / seconds, "cap": cap, "load": os.getloadavg()[0]}


async def http_workloads(sides: list[Side], args: argparse.Namespace, results: dict[str, Any]) -> None:
    timeout = httpx.Timeout(args.cap + 30, connect=30)
    async with httpx.AsyncClient(timeout=timeout) as client:
        # warm-up: one small stream and a few sync runs on each side (imports, JIT-free caches, pools)
        for side in sides:
            await one_stream(client, side, 10, args.cap)
            await sync_batch(client, side, 10, 0)

        gave_up: set[tuple[str, int]] = set()
        for rep in range(args.repeats):
            for n in args.parts:
                for side in sides:
                    if (side.name, n) in gave_up:
                        continue
                    row = await one_stream(client, side, n, args.cap)
                    row["rep"] = rep
                    results["stream"].append(row)
                    shown = f"{row['seconds']:.3f} s" if row["finished"] else f"did not finish in {args.cap:.0f} s ({row['events']} events)"
                    print(f"  stream n={n:>6} rep {rep + 1}  {side.name:<28} {shown}", flush=True)
                    if not row["finished"]:
                        gave_up.add((side.name, n))  # one honest try is enough
                        if side.restart_after_dnf:
                            side.server.restart()

        for batch in range(args.sync_batches):
            for side in sides:
                rate = await sync_batch(client, side, args.sync_runs, batch * args.sync_runs)
                results["sync"].append({"side": side.name, "batch": batch, "runs": args.sync_runs, "runs_per_s": rate,
                                        "total_runs": (batch + 1) * args.sync_runs, "load": os.getloadavg()[0]})
            print(f"  sync batch {batch + 1}/{args.sync_batches}: " + ", ".join(
                f"{r['side']} {r['runs_per_s']:.0f}/s" for r in results["sync"] if r["batch"] == batch), flush=True)

        if args.concurrency > 1:
            for rep in range(args.repeats):
                for side in sides:
                    row = await concurrent_sync(side, args.concurrent_runs, args.concurrency, args.cap, 20_000_000 + rep * args.concurrent_runs)
                    row["rep"] = rep
                    results["concurrent"].append(row)
                    shown = f"{row['runs_per_s']:.0f} runs/s" if row["finished"] else f"did not finish in {args.cap:.0f} s ({row['runs']} runs)"
                    print(f"  {args.concurrency} concurrent sync clients, rep {rep + 1}  {side.name:<28} {shown}", flush=True)
                    if not row["finished"] and side.restart_after_dnf:
                        side.server.restart()

        for side in [s for s in sides if s.soak and args.soak]:
            done = 0
            started = time.perf_counter()
            while done < args.soak:
                rate = await sync_batch(client, side, args.sync_runs, 10_000_000 + done)
                done += args.sync_runs
                results["soak"].append({"side": side.name, "total_runs": done, "runs_per_s": rate, "load": os.getloadavg()[0]})
                if done % (args.sync_runs * 50) == 0:
                    print(f"  soak {side.name}: {done} runs, last batch {rate:.0f}/s", flush=True)
            results["soak_seconds"][side.name] = time.perf_counter() - started


# -- the store workloads ---------------------------------------------------------------------


def store_workloads(args: argparse.Namespace, results: dict[str, Any], sqlite_url: str | None) -> None:
    es_python = peer_python("eventsourcing")
    sides: list[tuple[str, list[str]]] = [
        ("eventsourcing 9.5.6 (SQLite)", [es_python, str(HERE / "es_bench.py")]),
        ("raw sqlite3 (reference)", [PYTHON, str(HERE / "store_bench.py"), "raw"]),
    ]
    if sqlite_url:
        sides.insert(0, ("runengine SQLite store", [PYTHON, str(HERE / "store_bench.py"), sqlite_url]))
    for per_save in (1, 100):
        for name, command in sides:
            output = subprocess.run(
                [*command, str(args.tokens), str(per_save), str(args.store_repeats)],
                check=True, capture_output=True, text=True, cwd=ROOT,
            ).stdout
            row = json.loads(output.strip().splitlines()[-1])
            row["side"] = name
            results["store"].append(row)
            medians = {k: statistics.median(r[k] for r in row["runs"]) for k in row["runs"][0]}
            print(f"  store {per_save:>3}/save {name:<30} " + "  ".join(f"{k} {v:,.0f}" for k, v in medians.items()), flush=True)


# -- reporting -------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "load_at_start": os.getloadavg(),
    }


def versions(python: str, names: list[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    run = subprocess.run([python, "-c", code, *names], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def print_tables(results: dict[str, Any], sides: list[str]) -> str:
    lines: list[str] = []
    w = max(30, *(len(s) for s in sides), *(len(r["side"]) for r in results["store"]))
    stream = results["stream"]
    if stream:
        lines.append("One streamed run of N parts over loopback, seconds to the last event (median):")
        width = max(28, *(len(s) for s in sides))
        header = f"| {'N':>6} | " + " | ".join(f"{s:>{width}}" for s in sides) + " |"
        lines += [header, "|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|"]
        floor = sides[0] if sides and sides[0].startswith("floor") else None
        for n in sorted({r["n"] for r in stream}):
            cells = []
            floor_s = median([r["seconds"] for r in stream if r["side"] == floor and r["n"] == n and r["finished"]])
            for s in sides:
                rows = [r for r in stream if r["side"] == s and r["n"] == n]
                done = [r["seconds"] for r in rows if r["finished"]]
                if not rows:
                    cell = "-"
                elif len(done) < len(rows):
                    dnf = next(r for r in rows if not r["finished"])
                    cell = f"did not finish in {dnf['cap']:.0f} s"
                else:
                    cell = f"{median(done):.3f} s"
                    if floor_s and s != floor:
                        cell += f" ({median(done) / floor_s:.2f}x)"
                cells.append(f"{cell:>{width}}")
            lines.append(f"| {n:>6} | " + " | ".join(cells) + " |")
        lines.append("")
    sync = results["sync"]
    if sync:
        loads = [r["load"] for r in sync]
        lines.append(f"Sequential sync runs of a trivial agent, runs/s per batch of {sync[0]['runs']} "
                     f"(batches interleaved across sides; 1-minute load average {min(loads):.1f} to {max(loads):.1f} meanwhile):")
        lines.append(f"| {'side':<{w}} | {'first':>7} | {'median':>7} | {'last':>7} | last/first |")
        lines.append(f"|{'-' * (w + 2)}|{'-' * 9}|{'-' * 9}|{'-' * 9}|------------|")
        for s in sides:
            rates = [r["runs_per_s"] for r in sorted((r for r in sync if r["side"] == s), key=lambda r: r["batch"])]
            if rates:
                lines.append(f"| {s:<{w}} | {rates[0]:>7.0f} | {median(rates):>7.0f} | {rates[-1]:>7.0f} | {rates[-1] / rates[0]:>10.2f} |")
        lines.append("")
    concurrent = results.get("concurrent", [])
    if concurrent:
        clients = concurrent[0]["clients"]
        lines.append(f"Sync runs from {clients} concurrent clients, runs/s (median of repeats):")
        lines.append(f"| {'side':<{w}} | {'runs/s':>9} |")
        lines.append(f"|{'-' * (w + 2)}|{'-' * 11}|")
        for s in sides:
            rows = [r for r in concurrent if r["side"] == s]
            if not rows:
                continue
            if all(r["finished"] for r in rows):
                cell = f"{median([r['runs_per_s'] for r in rows]):>9.0f}"
            else:
                cell = f"did not finish in {rows[0]['cap']:.0f} s"
            lines.append(f"| {s:<{w}} | {cell} |")
        lines.append("")
    for name, seconds in results["soak_seconds"].items():
        rates = [r["runs_per_s"] for r in results["soak"] if r["side"] == name]
        tenth = max(1, len(rates) // 10)
        lines.append(
            f"Soak, {name}: {results['soak'][-1]['total_runs'] if rates else 0:,} sync runs in {seconds:.0f} s; runs/s "
            f"first 10% {median(rates[:tenth]):.0f}, last 10% {median(rates[-tenth:]):.0f}, "
            f"min batch {min(rates):.0f}, max batch {max(rates):.0f}"
        )
        lines.append("")
    store = results["store"]
    if store:
        lines.append(f"Event store: {store[0]['n']:,} tokens appended, then read back; events/s (median):")
        lines.append(f"| {'store':<{w}} | per save | {'append':>9} | {'read':>9} | {'rebuild':>9} |")
        lines.append(f"|{'-' * (w + 2)}|----------|{'-' * 11}|{'-' * 11}|{'-' * 11}|")
        for row in store:
            med = {k: median([r[k] for r in row["runs"]]) for k in row["runs"][0]}
            rebuild = f"{med['rebuild_per_s']:>9,.0f}" if "rebuild_per_s" in med else f"{'-':>9}"
            lines.append(f"| {row['side']:<{w}} | {row['per_save']:>8} | {med['append_per_s']:>9,.0f} | {med['read_per_s']:>9,.0f} | {rebuild} |")
    text = "\n".join(lines)
    print(text)
    return text


# -- main ------------------------------------------------------------------------------------


def require_runengine() -> None:
    if shutil.which("runengine", path=str(Path(PYTHON).parent)) is None:
        raise SystemExit(f"no `runengine` command beside {PYTHON}: install the project first (make install)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each streamed run (median)")
    parser.add_argument("--cap", type=float, default=120.0, help="seconds a streamed run may take before it counts as not finished")
    parser.add_argument("--sync-runs", type=int, default=200, help="sync runs per batch")
    parser.add_argument("--sync-batches", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8, help="clients in the concurrent sync workload (1: skip it)")
    parser.add_argument("--concurrent-runs", type=int, default=800, help="sync runs in each concurrent repeat")
    parser.add_argument("--soak", type=int, default=20_000, help="sync runs against runengine to show throughput holds (0: skip)")
    parser.add_argument("--tokens", type=int, default=10_000, help="tokens in the event-store workload")
    parser.add_argument("--store-repeats", type=int, default=3)
    parser.add_argument("--runengine-stores", nargs="+", default=["sqlite", "sqlite-normal", "memory"],
                        choices=["sqlite", "sqlite-normal", "memory"],
                        help="the stores behind `runengine serve`: SQLite as shipped (synchronous=FULL: survives power "
                             "loss), SQLite with synchronous=NORMAL (survives a process crash), memory (like acp-sdk's)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["acp", "floor", "runengine", "store", "http"])
    parser.add_argument("--quick", action="store_true", help="small sizes to check the harness")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write (default: benchmarks/results/peers-<time>.json)")
    args = parser.parse_args()
    if args.quick:
        args.parts, args.repeats, args.cap = [100, 1_000], 1, 60.0
        args.sync_batches, args.soak, args.store_repeats, args.concurrent_runs = 2, 1_000, 1, 200

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"peers-{stamp}.json"
    results: dict[str, Any] = {
        "started_at": datetime.now(timezone.utc).isoformat(),
        "machine": machine_info(),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "versions": {},
        "stream": [], "sync": [], "concurrent": [], "soak": [], "soak_seconds": {}, "store": [],
    }
    print("machine:", json.dumps(results["machine"]), flush=True)

    sides: list[Side] = []
    servers: list[Server] = []
    tmp = Path(tempfile.mkdtemp(prefix="runengine-bench-"))
    if "http" not in args.skip:
        if "floor" not in args.skip:
            server = Server("floor", lambda port: [PYTHON, str(HERE / "floor_server.py"), str(port)], "/openapi.json")
            sides.append(floor_side(server))
            servers.append(server)
        if "runengine" not in args.skip:
            require_runengine()
            for store in args.runengine_stores:
                url = {
                    "sqlite": f"sqlite:///{tmp}/bench.db",
                    "sqlite-normal": f"sqlite:///{tmp}/bench-normal.db?synchronous=NORMAL",
                    "memory": "memory://",
                }[store]
                server = Server(
                    f"runengine-{store}",
                    lambda port: [str(Path(PYTHON).parent / "runengine"), "serve", "--app", "benchmarks.peers.bench_app:engine",
                                  "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                    "/openapi.json",
                    env={"RUNENGINE_BENCH_STORE": url},
                )
                label = {"sqlite": "SQLite", "sqlite-normal": "SQLite NORMAL", "memory": "memory"}[store]
                sides.append(runengine_native_side(server, f"runengine native ({label})", soak=store == "sqlite"))
                if store == "sqlite" and _serves_acp(server):
                    sides.append(acp_side(f"runengine /acp ({label})", server, prefix="/acp", agents=("bench_parts", "bench_echo")))
                servers.append(server)
        if "acp" not in args.skip:
            acp_python = peer_python("acp")
            results["versions"]["acp venv"] = versions(acp_python, ["acp-sdk", *(p.split("==")[0] for p in PEER_VENVS["acp"][1:])])
            server = Server("acp-sdk", lambda port: [acp_python, str(HERE / "acp_server.py"), str(port)], "/ping")
            sides.append(acp_side("acp-sdk 1.0.3 (reference)", server, restart=True))
            servers.append(server)
    results["versions"]["project venv"] = versions(PYTHON, ["runengine", "fastapi", "starlette", "uvicorn", "httpx", "httpx-sse", "aiosqlite"])

    try:
        if sides:
            print(f"HTTP workloads: {', '.join(s.name for s in sides)}", flush=True)
            with running(servers):
                asyncio.run(http_workloads(sides, args, results))
        if "store" not in args.skip:
            print("event-store workloads", flush=True)
            sqlite_url = "sqlite:///{dir}/runs.db" if _has_scheme("sqlite") else None
            if sqlite_url is None:
                print("the SQLite store is not there yet: runengine's store side is left out of this run", flush=True)
            results["versions"]["eventsourcing venv"] = versions(peer_python("eventsourcing"), ["eventsourcing"])
            store_workloads(args, results, sqlite_url)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        results["finished_at"] = datetime.now(timezone.utc).isoformat()
        results["machine"]["load_at_end"] = os.getloadavg()
        out.write_text(json.dumps(results, indent=1))

    print()
    print(f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, Python {results['machine']['python']}, "
          f"SQLite {results['machine']['sqlite']}; load average {results['machine']['load_at_start'][0]:.1f} at start, "
          f"{results['machine']['load_at_end'][0]:.1f} at end")
    results["table"] = print_tables(results, [s.name for s in sides])
    out.write_text(json.dumps(results, indent=1))
    print(f"\nraw results: {out}")
    try:
        from plot import plot  # the `bench` extra (matplotlib)
    except ImportError as exc:
        print(f"no plot ({exc}); install the bench extra: pip install -e '.[bench]'")
        return
    png = out.with_suffix(".png")
    plot(results, png)
    print(f"plot: {png}")


def _serves_acp(server: Server) -> bool:
    """Does this runengine build mount the ACP profile at /acp? (asked of the running server)"""
    server.start()
    try:
        return httpx.get(server.base + "/acp/ping", timeout=10).status_code == 200
    finally:
        server.stop()


def _has_scheme(scheme: str) -> bool:
    from runengine.stores import store_schemes

    return scheme in store_schemes()


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
