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
        [sys.executable, str(ROOT / "benchmarks" / "bench_durability.py"), "--quick", "--skip-dbos", "--skip-postgres"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    out = done.stdout
    assert "| steps per run | floor: sqlite3 commit | floor p50 / p99 | runengine `ctx.step` | runengine p50 / p99 |" in out
    assert "| floor 2: commit on a thread, awaited | floor 2 p50 / p99 | runengine / floor 2 (mean) |" in out
    assert "| runengine |" in out  # the recovery table
    assert "| events in the run | resume | fold | read | floor: sqlite3 fetch, not decoded | resume / floor |" in out
    assert "| SQLite FULL | 10 x 20 |" in out  # group commit across runs
    assert "did not finish" not in out


@pytest.mark.slow  # a few seconds: the fold benchmark at its quick size
def test_make_bench_writes_each_benchmarks_tables_into_the_page(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nhand-written text\n")
    command = [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--only", "bench_fold.py", "--doc", str(page)]
    for _ in range(2):  # the second run replaces the section the first one wrote
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written text\n")
    assert text.count("<!-- make bench: begin") == 1 and text.count("<!-- make bench: end -->") == 1
    assert "### `python benchmarks/bench_fold.py --repeat 1`" in text
    section = text.split("<!-- make bench: begin", 1)[1]
    assert "\n|" in section and "|---" in section  # its table, copied
