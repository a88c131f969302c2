"""Run every benchmark in turn, each printing its own table (`make bench`).

    python benchmarks/run_all.py           # the full runs (about 55 minutes here)
    python benchmarks/run_all.py --quick   # short versions, to check they all work

Each benchmark is also a command of its own; this only saves typing them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: (script, arguments for a full run, arguments for a quick run)
BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    ("bench_fold.py", [], ["--repeat", "1"]),
    ("bench_sqlite.py", [], ["--quick"]),
    ("bench_postgres.py", [], ["--quick"]),
    ("bench_http_sse.py", [], ["--repeat", "1"]),
    ("bench_profiles.py", [], ["--quick"]),
    ("bench_platform_stream.py", [], ["--repeat", "1"]),
    ("bench_durability.py", [], ["--quick"]),
    ("bench_integrations.py", [], ["--runs", "20"]),
    ("peers/run.py", [], ["--quick"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short versions of every benchmark")
    args = parser.parse_args()
    failed = []
    for script, full, quick in BENCHMARKS:
        command = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        print(f"\n=== {script} {' '.join(command[2:])}", flush=True)
        started = time.perf_counter()
        if subprocess.run(command, cwd=HERE.parent).returncode != 0:
            failed.append(script)
        print(f"=== {script}: {time.perf_counter() - started:.0f} s", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
