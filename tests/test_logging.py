"""Logs of `runengine serve`: an agent's exception with its traceback and run id, every line of a
run carrying the run id (runengine's, the agent's ctx.log, a library's stdlib logger), JSON or console."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from kit import free_port
from test_cli import COMMAND, wait_ready

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

AGENTS = textwrap.dedent(
    """
    import logging

    from runengine import RunEngine

    engine = RunEngine("memory://")

    @engine.agent("splitter")
    async def splitter(ctx):
        ctx.log.info("splitting", size=len(ctx.input))
        logging.getLogger("somelibrary").warning("a library speaks")
        return ctx.input.split()  # a dict has no split: AttributeError
    """
)


def serve_and_fail_a_run(tmp_path: Path, log_format: str) -> tuple[str, str]:
    """Run the failing agent once on a real server; its run id and the server's stderr."""
    (tmp_path / "failing_agents.py").write_text(AGENTS)
    port = free_port()
    process = subprocess.Popen(
        [*COMMAND, "serve", "--app", "failing_agents:engine", "--port", str(port), "--log-format", log_format],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        with httpx.Client(base_url=url, timeout=30.0) as client:
            run = client.post("/runs", json={"agent": "splitter", "input": {"text": "a b"}}).json()
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert run["status"] == "failed" and run["error"]["code"] == "agent_error", run
    assert process.returncode == 0, stderr
    return run["run_id"], stderr


def test_json_lines_carry_the_run_id_and_the_agents_traceback(tmp_path: Path) -> None:
    run_id, stderr = serve_and_fail_a_run(tmp_path, "json")
    lines: list[dict[str, Any]] = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len(stderr.splitlines()), stderr  # every line is JSON
    of_run = [line for line in lines if line.get("run_id") == run_id]
    events = {line["event"]: line for line in of_run}
    assert events["splitting"]["size"] == 1 and events["splitting"]["agent"] == "splitter"
    assert events["a library speaks"]["logger"] == "somelibrary"  # a stdlib logger's line, inside the run
    failure = next(line for line in of_run if line["level"] == "error")
    (exception,) = failure["exception"]
    assert exception["exc_type"] == "AttributeError"
    assert any(frame["name"] == "splitter" and frame["filename"].endswith("failing_agents.py") for frame in exception["frames"])
    assert any(line.get("logger") == "uvicorn.access" for line in lines)  # the server's own lines too


def test_console_lines_show_the_traceback(tmp_path: Path) -> None:
    run_id, stderr = serve_and_fail_a_run(tmp_path, "console")
    assert "Traceback" in stderr and "AttributeError" in stderr and "failing_agents.py" in stderr, stderr
    error_line = next(line for line in stderr.splitlines() if "agent raised an exception" in line)
    assert run_id in error_line


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_an_unknown_log_format_is_refused(command: str) -> None:
    result = subprocess.run([*COMMAND, command, "--log-format", "xml"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "xml" in result.stderr
