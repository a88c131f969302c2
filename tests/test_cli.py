"""The `runengine` command as real subprocesses: serve (demo agents on SQLite, or --app), tail
(including a dropped connection it must resume after), runs and show."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from httpkit import TcpProxy
from kit import free_port

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

BIN = Path(sys.executable).parent / "runengine"
COMMAND = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "runengine.adapters.cli"]


ANYIO_BACKENDS = ("asyncio",)  # the proxy uses asyncio streams


def cli(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def wait_ready(url: str, process: subprocess.Popen[str], timeout: float = 30.0) -> None:
    with httpx.Client(base_url=url, timeout=2.0) as client:
        for _ in range(int(timeout / 0.1)):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if client.get("/agents").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            try:
                process.wait(timeout=0.1)  # waits on the process, returns early only if it died
            except subprocess.TimeoutExpired:
                pass
    raise AssertionError("the server did not start")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [*COMMAND, "serve", "--store", f"sqlite:///{tmp_path / 'cli.db'}", "--port", str(port), "--delay", "0.005",
         "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""


def test_serve_runs_show_and_tail(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30.0) as client:
        assert client.get("/").status_code == 200
        echo = client.post("/runs", json={"agent": "echo", "input": "one two three", "session_id": "cli"}).json()
        pizza = client.post("/runs", json={"agent": "pizza", "input": "cheese"}).json()
        log = client.get(f"/runs/{pizza['run_id']}/events", params={"limit": 1000}).json()["events"]

    listed = cli("runs", "--url", server)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(pizza["run_id"]) and lines[1].startswith(echo["run_id"])
    assert "completed" in lines[0] and "pizza" in lines[0]
    only = cli("runs", "--url", server, "--session-id", "cli", "--json")
    assert [r["run_id"] for r in json.loads(only.stdout)["runs"]] == [echo["run_id"]]

    shown = cli("show", pizza["run_id"], "--url", server)
    assert shown.returncode == 0 and json.loads(shown.stdout) == pizza

    tailed = cli("tail", pizza["run_id"], "--url", server, "--json")
    assert tailed.returncode == 0, tailed.stderr
    assert [json.loads(line) for line in tailed.stdout.splitlines()] == log
    partial = cli("tail", pizza["run_id"], "--url", server, "--after-seq", "4")
    assert [int(line.split()[0]) for line in partial.stdout.splitlines()] == [e["seq"] for e in log[4:]]
    assert partial.stdout.splitlines()[-1].split()[1] == "run.completed"


def test_client_commands_report_errors(server: str) -> None:
    missing = cli("show", "no-such-run", "--url", server)
    assert missing.returncode == 1 and "404 not_found" in missing.stderr
    gone = cli("tail", "no-such-run", "--url", server)
    assert gone.returncode == 1 and "404 not_found" in gone.stderr
    bad = cli("runs", "--url", server, "--status", "sleepy")
    assert bad.returncode == 1 and "400 invalid_request" in bad.stderr
    unreachable = cli("runs", "--url", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


@pytest.mark.anyio
async def test_tail_resumes_after_a_dropped_connection(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30.0) as client:
        run = (await client.post("/runs", json={"agent": "approval", "input": "roll out"})).json()
        assert run["status"] == "waiting_for_input"
        port = int(server.rsplit(":", 1)[1])
        async with TcpProxy(port) as proxy:
            process = await anyio.open_process(
                [*COMMAND, "tail", run["run_id"], "--json", "--url", f"http://127.0.0.1:{proxy.port}"]
            )
            async with process:
                stdout = b""
                with anyio.fail_after(60):
                    while b"run.waiting_for_input" not in stdout:
                        stdout += await process.stdout.receive()
                    assert proxy.drop() > 0  # cut the stream while tail follows the run
                    while proxy.connections < 2:  # tail reconnects by itself
                        await anyio.sleep(0.02)
                    given = await client.post(f"/runs/{run['run_id']}/input", json={"content": "yes"})
                    assert given.status_code == 200
                    stdout += b"".join([chunk async for chunk in process.stdout])
                    await process.wait()
                stderr = b"".join([chunk async for chunk in process.stderr]).decode()
            assert process.returncode == 0, stderr
            assert "connection lost" in stderr
        log = (await client.get(f"/runs/{run['run_id']}/events", params={"limit": 1000})).json()["events"]
    assert [json.loads(line) for line in stdout.decode().splitlines()] == log
    assert log[-1]["type"] == "run.completed"


def test_serve_with_an_app_module(tmp_path: Path) -> None:
    (tmp_path / "myagents.py").write_text(
        textwrap.dedent(
            """
            from runengine import RunEngine

            engine = RunEngine("memory://")

            @engine.agent("shout", description="upper-cases its input")
            async def shout(ctx):
                await ctx.say(str(ctx.input).upper())
            """
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [*COMMAND, "serve", "--app", "myagents:engine", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        with httpx.Client(base_url=url, timeout=30.0) as client:
            assert [a["name"] for a in client.get("/agents").json()["agents"]] == ["shout"]
            assert client.post("/runs", json={"agent": "shout", "input": "hey"}).json()["output"] == "HEY"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)


APP_ENGINES = """
from runengine import RunEngine

storeless = RunEngine()  # its store comes from --store
own = RunEngine("memory://")

for engine in (storeless, own):
    @engine.agent("shout", description="upper-cases its input")
    async def shout(ctx):
        await ctx.say(str(ctx.input).upper())
"""


def test_store_is_the_store_of_an_app_engine_built_without_one(tmp_path: Path) -> None:
    """README: `runengine serve --store URL --app module:engine`."""
    (tmp_path / "appengines.py").write_text(APP_ENGINES)
    db = tmp_path / "app.db"
    port = free_port()
    process = subprocess.Popen(
        [*COMMAND, "serve", "--store", f"sqlite:///{db}", "--app", "appengines:storeless", "--port", str(port),
         "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        with httpx.Client(base_url=url, timeout=30.0) as client:
            run = client.post("/runs", json={"agent": "shout", "input": "hey"}).json()
            assert run["output"] == "HEY", run
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    # The run is in the file --store named (read back by the CLI, on the store itself).
    exported = cli("export", run["run_id"], "--store", f"sqlite:///{db}", cwd=tmp_path)
    assert exported.returncode == 0 and '"run.completed"' in exported.stdout, exported.stderr
    # An engine with a store of its own: --store is a usage error, not silently ignored.
    for command in ("serve", "worker"):
        own = cli(command, "--app", "appengines:own", "--store", f"sqlite:///{db}", cwd=tmp_path)
        assert own.returncode == 2 and "built with a store of its own" in own.stderr, (command, own.stderr)


def test_serve_usage_errors(tmp_path: Path) -> None:
    no_module = cli("serve", "--app", "nowhere_to_be_found:engine", cwd=tmp_path)
    assert no_module.returncode == 2 and "cannot load" in no_module.stderr
    not_a_ref = cli("serve", "--app", "justaname", cwd=tmp_path)
    assert not_a_ref.returncode == 2 and "module:attribute" in not_a_ref.stderr
    bad_store = cli("serve", "--store", "nosuch://x", cwd=tmp_path)
    assert bad_store.returncode == 2 and "no store for scheme" in bad_store.stderr
    assert "serve" in cli("--help").stdout
    assert os.path.basename(COMMAND[0]) in ("runengine", os.path.basename(sys.executable))


def test_serve_closes_requests_that_never_finish(tmp_path: Path) -> None:
    """--header-timeout and --body-timeout: half-open requests get a 408 and are closed."""
    import socket

    port = free_port()
    process = subprocess.Popen(
        [*COMMAND, "serve", "--store", "memory://", "--port", str(port), "--log-level", "warning",
         "--header-timeout", "0.5", "--body-timeout", "0.5", "--keep-alive-timeout", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        half_requests = {
            "headers": b"POST /runs HTTP/1.1\r\nhost: x\r\ncontent-le",
            "body": b"POST /runs HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\n\r\n{\"agent\"",
        }
        for part, sent in half_requests.items():
            with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
                sock.sendall(sent)
                received = b""
                while chunk := sock.recv(65536):  # until the server closes (the socket timeout bounds it)
                    received += chunk
            assert received.startswith(b"HTTP/1.1 408 "), received
            body = received.partition(b"\r\n\r\n")[2]  # a JSON error, perhaps in one chunk
            assert b'"code":"request_timeout"' in body and f"request {part} did not arrive".encode() in body
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    help_text = cli("serve", "--help").stdout
    assert "--header-timeout" in help_text and "--body-timeout" in help_text and "--keep-alive-timeout" in help_text


# -- issue 20 papercuts ---------------------------------------------------------------------------


def _cli_without_store_env(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RUNENGINE_STORE"}
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env)


def test_store_commands_never_make_a_store_of_their_own(tmp_path: Path) -> None:
    """export, import and prune need --store (or RUNENGINE_STORE), and export and prune refuse a
    SQLite file that does not exist: none of them leaves a runengine.db where it happened to run."""
    log = tmp_path / "run.jsonl"
    log.write_text("{}\n")
    for args in (["export", "some-run"], ["import", str(log)], ["prune", "--older-than", "30d"]):
        result = _cli_without_store_env(*args, cwd=tmp_path)
        assert result.returncode == 2 and "Missing option '--store'" in result.stderr, (args, result.stderr)
    missing = tmp_path / "typo.db"
    for args in (["export", "some-run"], ["prune", "--older-than", "30d"]):
        result = _cli_without_store_env(*args, "--store", f"sqlite:///{missing}", cwd=tmp_path)
        assert result.returncode == 1 and f"no store at {missing}" in result.stderr, (args, result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.jsonl"]


def test_tail_writes_only_events_on_stdout(tmp_path: Path) -> None:
    """Its retry warnings go to stderr: stdout stays a clean stream of events (--json: one per line)."""
    result = cli("tail", "some-run", "--json", "--retries", "2", "--url", f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert result.returncode == 1 and "connection lost 3 times" in result.stderr
    assert result.stdout == ""
    assert "retry_scheduled" in result.stderr  # the warnings are still there, on stderr


FAILING_APP = """
from runengine import RunEngine

engine = RunEngine("memory://")

@engine.agent("leaky", description="fails, with a secret in its input")
async def leaky(ctx):
    card = ctx.input["card"]
    raise ValueError("the payment provider said no")
"""
SECRET = "sk-live-4242-DO-NOT-LOG"


def _failing_run_log(tmp_path: Path, *options: str, tty: bool) -> str:
    """Serve FAILING_APP, fail one run whose input holds SECRET, stop; what the server logged.
    With `tty`, stderr is a terminal (the console format's framed traceback), read as it comes."""
    import pty
    import threading

    (tmp_path / "failingapp.py").write_text(FAILING_APP)
    port = free_port()
    out = tmp_path / "serve.log"
    captured: list[bytes] = []
    leader = follower = -1
    if tty:
        leader, follower = pty.openpty()

        def drain() -> None:  # a terminal's buffer is small: a server writing to a full one blocks
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed
                    return
                if not chunk:
                    return
                captured.append(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
    with open(out, "wb") as log:
        process = subprocess.Popen(
            [*COMMAND, "serve", "--app", "failingapp:engine", "--port", str(port), "--log-level", "info", *options],
            stdout=log, stderr=follower if tty else log, cwd=tmp_path,
            env={**os.environ, "COLUMNS": "200"},
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", process)  # type: ignore[arg-type]
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
                run = client.post("/runs", json={"agent": "leaky", "input": {"card": SECRET, "amount": 12}}).json()
            assert run["status"] == "failed" and run["error"]["code"] == "agent_error", run
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=20)
            if tty:
                os.close(follower)
                reader.join(timeout=10)
                os.close(leader)
    text = out.read_text(errors="replace") + b"".join(captured).decode(errors="replace")
    assert "agent raised an exception" in text and "ValueError" in text, text[-2000:]
    return text


@pytest.mark.parametrize(
    ("options", "tty"), [(("--log-format", "console"), True), (("--log-format", "json"), False)], ids=["console", "json"]
)
def test_an_agent_s_traceback_logs_no_locals(tmp_path: Path, options: tuple[str, ...], tty: bool) -> None:
    """A failing agent's input holds a secret: the traceback is logged, the secret is not."""
    assert SECRET not in _failing_run_log(tmp_path, *options, tty=tty)
    # --log-locals (local debugging) shows the frames' variables again: the test can see a leak.
    assert SECRET in _failing_run_log(tmp_path, *options, "--log-locals", tty=tty)
