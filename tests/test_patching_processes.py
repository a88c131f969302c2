"""Patching across real processes (issue 26): the divergence `runengine check-replay` finds is the
one a resume after a SIGKILL fails on, and the patched code it passes completes the run.

The old code of `digest` (patching_apps.py) is served, its run killed with SIGKILL inside its
`publish` step. The store is then copied twice: on one copy the changed code (a `rank` step
inserted before summarize) is checked and served, on the other the same change behind
`ctx.patched`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from chaoskit import read_log
from faultkit import ServeProcess
from kit import until_sync

pytestmark = pytest.mark.server  # it starts processes

TESTS = Path(__file__).parent
BIN = Path(sys.executable).parent / "runengine"


def check_replay(app: str, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    url = f"sqlite:///{db}"
    return subprocess.run(
        [str(BIN), "check-replay", "--app", f"patching_apps:{app}", "--store", url, *args],
        capture_output=True, text=True, timeout=120, cwd=TESTS, env={**os.environ, "RUNENGINE_PATCHING_STORE": url},
    )


def serve(app: str, db: Path, log: Path) -> ServeProcess:
    return ServeProcess(
        ["--app", f"patching_apps:{app}", "--log-level", "warning"],
        log,
        env={"RUNENGINE_PATCHING_STORE": f"sqlite:///{db}"},
        cwd=TESTS,
    )


def copy_store(db: Path, to: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):  # a killed writer leaves its last commits in the WAL
        if Path(f"{db}{suffix}").exists():
            shutil.copyfile(f"{db}{suffix}", f"{to}{suffix}")
    return to


def ended(client: httpx.Client, run_id: str) -> dict | None:
    state = client.get(f"/runs/{run_id}").json()
    return state if state["status"] in ("completed", "failed", "cancelled") else None


@pytest.mark.slow
def test_check_replay_finds_the_divergence_a_sigkilled_run_then_fails_on(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    old = serve("old_engine", db, tmp_path / "old.log")
    old.start()
    try:
        with httpx.Client(base_url=old.base, timeout=30) as client:
            run_id = client.post("/runs", json={"agent": "digest", "input": "news", "mode": "async"}).json()["run_id"]
            summarized = lambda: [e for e in read_log(client, run_id) if e["data"].get("name") == "summarize"]  # noqa: E731
            [summary] = until_sync(summarized)
    finally:
        old.kill(signal.SIGKILL)  # inside `publish`: the run is in flight
    changed_db, patched_db = copy_store(db, tmp_path / "changed.db"), copy_store(db, tmp_path / "patched.db")

    # The checker: the changed code diverges at summarize's step.completed; the patched code replays.
    checked = check_replay("changed_engine", changed_db)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert f"{run_id}: diverges at seq {summary['seq']}" in checked.stdout
    assert "new call: step('rank')" in checked.stdout and '"type": "step.completed"' in checked.stdout
    assert "checked 1 run(s) of digest: 1 diverge" in checked.stderr
    passed = check_replay("patched_engine", patched_db)
    assert passed.returncode == 0 and passed.stdout == "", passed.stdout + passed.stderr
    assert check_replay("changed_engine", changed_db, "--in-flight", "--since", "1h").returncode == 1
    assert check_replay("changed_engine", changed_db, "--since", "2999-01-01T00:00:00Z").returncode == 0

    # A resume confirms it: the changed code fails the run there, the patched code completes it.
    changed = serve("changed_engine", changed_db, tmp_path / "changed.log")
    changed.start()
    try:
        with httpx.Client(base_url=changed.base, timeout=30) as client:
            state = until_sync(lambda: ended(client, run_id))
    finally:
        changed.kill(signal.SIGTERM)
    assert state["status"] == "failed" and state["error"]["code"] == "replay_divergence", state
    assert f"replay diverged at seq {summary['seq']}: the agent called step('rank')" in state["error"]["message"]

    patched = serve("patched_engine", patched_db, tmp_path / "patched.log")
    patched.start()
    try:
        with httpx.Client(base_url=patched.base, timeout=30) as client:
            state = until_sync(lambda: ended(client, run_id))
            types = [e["type"] for e in read_log(client, run_id)]
    finally:
        patched.kill(signal.SIGTERM)
    assert state["status"] == "completed" and state["output"] == {"published": "published news-1 + news-2"}, state
    assert "patch.marked" not in types  # the old run replayed the old code


def test_check_replay_usage_errors_are_not_divergences(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    missing_agent = check_replay("patched_engine", db, "--agent", "nope")
    assert missing_agent.returncode == 2 and "has no agent nope" in missing_agent.stderr, missing_agent.stderr
    missing_store = check_replay("patched_engine", db)
    assert missing_store.returncode == 2 and f"no store at {db}" in missing_store.stderr, missing_store.stderr
    bad_since = check_replay("patched_engine", db, "--since", "last tuesday")
    assert bad_since.returncode == 2 and "neither a duration" in bad_since.stderr, bad_since.stderr
    no_app = subprocess.run([str(BIN), "check-replay", "--store", f"sqlite:///{db}"], capture_output=True, text=True, timeout=60)
    assert no_app.returncode == 2 and "Missing option '--app'" in no_app.stderr
    assert not db.exists()
