"""The /langgraph profile driven by LangGraph's JavaScript client, `@langchain/langgraph-sdk` (the
client `useStream` and agent-chat-ui stream with), against a real `runengine serve` on SQLite:
tests/js/langgraph.test.mjs streams a run, drops it mid-run and joins with the last event id, and
waits for a run. The client's version is pinned by tests/js/package-lock.json (`npm ci`)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from faultkit import ServeProcess
from jskit import JS, installed, node_and_npm


@pytest.mark.slow
def test_the_javascript_client_streams_joins_and_waits(tmp_path: Path) -> None:
    node, npm = node_and_npm("the @langchain/langgraph-sdk test")
    installed("@langchain/langgraph-sdk", npm)
    server = ServeProcess(
        ["--store", f"sqlite:///{tmp_path / 'runs.db'}", "--delay", "0.02", "--log-level", "warning"], tmp_path / "serve.log"
    )
    server.start()
    try:
        done = subprocess.run(
            [node, "--test", "langgraph.test.mjs"],
            cwd=JS,
            env={**os.environ, "LANGGRAPH_URL": server.base + "/langgraph"},
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        server.kill(signal.SIGKILL)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout and "# pass 3" in done.stdout, done.stdout[-2000:]
