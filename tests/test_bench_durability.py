"""The durability benchmark stays a working command: its quick mode, runengine alone.

It kills a process with runs asleep mid-run and resumes them in a fresh one, so this is
also an end-to-end check of recovery: the harness fails when a run does not come back or
a recorded step runs again.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # about 15-25 s here: it starts and kills five processes
def test_quick_mode_prints_every_table() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_durability.py"), "--quick", "--skip-dbos"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    out = done.stdout
    assert "| steps per run | floor: sqlite3 commit | runengine `ctx.step` |" in out
    assert "| runengine |" in out  # the recovery table
    assert "| events in the run | resume | fold | read |" in out
    assert "did not finish" not in out
