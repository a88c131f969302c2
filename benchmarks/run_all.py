"""Run every benchmark in turn, each printing its own tables, and write those tables into
docs/benchmarks.md (`make bench`).

    python benchmarks/run_all.py           # the full runs, the documented sizes (2-3 hours here)
    python benchmarks/run_all.py --quick   # short versions, to check they all work (CI-like use)
    python benchmarks/run_all.py --no-write   # print only, leave docs/benchmarks.md alone

Each benchmark is also a command of its own (`python benchmarks/bench_x.py` prints its tables);
this runs them one after the other, so no two compete for the machine, and copies every table
each printed, with the line that introduces it (this run's floor and peers are in the tables
themselves), into the section of docs/benchmarks.md between the two `make bench` markers.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"
BEGIN = "<!-- make bench: begin (written by benchmarks/run_all.py; edits here are replaced) -->"
END = "<!-- make bench: end -->"

#: (script, arguments for a full run, arguments for a quick run)
BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    ("bench_fold.py", [], ["--repeat", "1"]),
    ("bench_sqlite.py", [], ["--quick"]),
    ("bench_postgres.py", [], ["--quick"]),
    ("bench_http_sse.py", [], ["--repeat", "1"]),
    ("bench_profiles.py", [], ["--quick"]),
    ("bench_platform_stream.py", [], ["--repeat", "1"]),
    ("bench_durability.py", [], ["--quick"]),
    ("bench_idle.py", [], ["--quick"]),
    ("bench_workers.py", [], ["--quick"]),
    ("bench_http_sync.py", [], ["--quick"]),
    ("bench_flow.py", [], ["--quick"]),
    ("bench_durable_streams.py", [], ["--items", "1000", "--repeat", "1"]),
    ("bench_retention.py", [], ["--quick"]),
    ("bench_ratelimit.py", [], []),
    ("bench_integrations.py", [], ["--runs", "20"]),
    ("peers/run.py", [], ["--quick"]),
]


def run(command: list[str]) -> tuple[int, str]:
    """Run `command`, echoing its output as it comes; its exit code and its stdout."""
    lines = []
    with subprocess.Popen(command, cwd=HERE.parent, stdout=subprocess.PIPE, text=True, bufsize=1) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    return process.returncode, "".join(lines)


def tables(output: str) -> list[str]:
    """Every markdown table in `output`, each with the line that introduces it, if any."""
    found: list[str] = []
    lines = output.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("|"):
            i += 1
            continue
        start = i
        while i < len(lines) and lines[i].startswith("|"):
            i += 1
        caption = next((line for line in reversed(lines[max(0, start - 3) : start]) if line.strip()), "")
        caption = caption.strip().lstrip("#").strip()  # a line of text here, never a heading of the page
        block = ([caption, ""] if caption and not caption.startswith("|") else []) + lines[start:i]
        found.append("\n".join(block))
    return found


def section(results: list[tuple[str, list[str], int, float, str]], quick: bool) -> str:
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        BEGIN,
        "",
        f"## The latest `make bench` run ({'quick sizes' if quick else 'full sizes'}, {started})",
        "",
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end (the machine may be shared: read the ratios within a table, measured in "
        "the same run, not absolute figures). Each benchmark's own command and its tables:",
    ]
    for script, args, code, seconds, output in results:
        command = " ".join(["python", f"benchmarks/{script}", *args])
        parts += ["", f"### `{command}`", "", f"{seconds:.0f} s{'' if code == 0 else f', FAILED (exit {code})'}."]
        for table in tables(output):
            parts += ["", table]
    return "\n".join(parts + ["", END])


def write(doc: Path, text: str) -> None:
    """Replace the section between the markers (or add it at the end)."""
    current = doc.read_text() if doc.exists() else ""
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        doc.write_text(head + text + tail)
    else:
        doc.write_text(current.rstrip("\n") + "\n\n" + text + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short versions of every benchmark")
    parser.add_argument("--no-write", action="store_true", help="leave docs/benchmarks.md as it is")
    parser.add_argument("--only", nargs="+", help="these scripts only (e.g. bench_durability.py)")
    parser.add_argument("--doc", type=Path, default=DOC, help="the page to write (default: docs/benchmarks.md)")
    args = parser.parse_args()
    failed = []
    results = []
    for script, full, quick in BENCHMARKS:
        if args.only and script not in args.only:
            continue
        arguments = quick if args.quick else full
        command = [sys.executable, str(HERE / script), *arguments]
        print(f"\n=== {script} {' '.join(arguments)}", flush=True)
        started = time.perf_counter()
        code, output = run(command)
        seconds = time.perf_counter() - started
        if code != 0:
            failed.append(script)
        results.append((script, arguments, code, seconds, output))
        print(f"=== {script}: {seconds:.0f} s", flush=True)
    if not args.no_write:
        write(args.doc, section(results, args.quick))
        print(f"\nwrote the tables into {args.doc}", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
