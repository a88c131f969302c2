"""Stopping `runengine serve` with SSE clients connected: no traceback, no cut streams; each
client is told to reconnect (a final comment and `retry:`), and resumes on the next server."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from kit import free_port
from runengine.http.sse import RECONNECT
from test_cli import COMMAND, wait_ready

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes


def start(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, "serve", "--store", f"sqlite:///{tmp_path / 'shutdown.db'}", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_with_open_streams_tells_clients_to_reconnect(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(tmp_path, port)
    try:
        wait_ready(url, process)
        with httpx.Client(base_url=url, timeout=httpx.Timeout(10.0, read=60.0)) as http:
            assert http.get("/metrics").status_code == 200  # on by default with prometheus-client installed
            run = http.post("/runs", json={"agent": "approval", "input": "deploy", "mode": "async"}).json()
            # on_disconnect=cancel: the server's stop is no disconnect of the client's; the run stays.
            events = f"/runs/{run['run_id']}/events?on_disconnect=cancel"
            with http.stream("GET", events, headers={"accept": "text/event-stream"}) as stream:
                received = b""
                chunks = stream.iter_raw()
                while b"run.waiting_for_input" not in received:
                    received += next(chunks)
                process.send_signal(sig)
                for chunk in chunks:  # to the stream's end, which the server must send
                    received += chunk
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert received.endswith(RECONNECT), received[-200:]
    assert "Traceback" not in stderr and "CancelledError" not in stderr, stderr
    assert "graceful shutdown exceeded" not in stderr, stderr
    assert process.returncode == (0 if sig == signal.SIGINT else -signal.SIGTERM), stderr

    # The run was left waiting, and the next server serves it from where the client was.
    process = start(tmp_path, port)
    try:
        wait_ready(url, process)
        with httpx.Client(base_url=url, timeout=30.0) as http:
            assert http.get(f"/runs/{run['run_id']}").json()["status"] == "waiting_for_input"
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
