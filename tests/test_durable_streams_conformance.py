"""The official Durable Streams server conformance suite, `@durable-streams/server-conformance-tests`
(pinned in tests/js/package-lock.json), against a real `runengine serve` on SQLite, on
PostgreSQL and on the memory store: every test must pass (the project's Node reference server fails 6 of them). The suite
runs in vitest through tests/js/durable_streams.test.mjs; its subscription tests are opt-in
(`subscriptions: true`) and skipped, as for the reference server.

The server runs with `--cors-origin '*'` (the suite sends a CORS preflight) and 2-second
long-polls (the suite waits out several of them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from faultkit import ServeProcess
from jskit import installed, node_and_npm

pytestmark = pytest.mark.server

SUITE = "@durable-streams/server-conformance-tests"
#: The suite's tests in the pinned version, and how many are skipped (the subscription tests).
SUITE_TESTS = 338
SKIPPED = 6


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'streams.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


def test_the_official_suite_passes_every_test(store_url: str, tmp_path: Path) -> None:
    node, npm = node_and_npm("the Durable Streams conformance suite (vitest 4)", major=20)
    js = installed(SUITE, npm)
    server = ServeProcess(
        ["--store", store_url, "--durable-streams-long-poll", "2", "--cors-origin", "*", "--log-level", "warning"],
        tmp_path / "serve.log",
    )
    server.start()
    report = tmp_path / "report.json"
    try:
        done = subprocess.run(
            [node, str(js / "node_modules" / "vitest" / "vitest.mjs"), "run", "durable_streams.test.mjs",
             "--reporter=json", f"--outputFile={report}"],
            cwd=js,
            env={**os.environ, "CONFORMANCE_TEST_URL": server.base + "/ds"},
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        server.kill(signal.SIGTERM)
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(report.read_text())
    failed = [
        f"{test['fullName']}: {' '.join(test.get('failureMessages', []))[:300]}"
        for suite in results["testResults"]
        for test in suite["assertionResults"]
        if test["status"] == "failed"
    ]
    assert failed == [], "\n".join(failed)
    assert results["numTotalTests"] == SUITE_TESTS
    assert results["numPassedTests"] == SUITE_TESTS - SKIPPED, done.stdout[-2000:]
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
