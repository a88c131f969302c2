"""DBOS Transact on its SQLite system database: the durable-step and recovery workloads.

Runs inside the benchmark's own virtualenv (.bench-venvs/dbos), one phase per process:

    python dbos_bench.py steps DB N REPEATS   # one JSON line: seconds per step, one figure per repeat
    python dbos_bench.py concurrent DB RUNS N REPEATS
                                              # one JSON line: seconds for RUNS workflows of N steps
                                              # started at once, until every one has ended, per repeat
    python dbos_bench.py prepare DB RUNS      # RUNS workflows past their first step, in DBOS.sleep;
                                              # prints "ready" once every sleep is recorded, then waits
                                              # to be SIGKILLed
    python dbos_bench.py recover DB RUNS      # one JSON line: seconds from DBOS.launch() until every
                                              # workflow is executing again past its recorded step

DB is a SQLite file, or a postgresql:// URL (its system database on that server).
The workflows are the same in every phase (DBOS recovers only workflows of the same
application version, which it computes from the registered code).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time

from dbos import DBOS, DBOSConfig

PHASE, DB = sys.argv[1], sys.argv[2]
SLEEP_SECONDS = 3600.0

config: DBOSConfig = {
    "name": "runengine-bench",
    "system_database_url": DB if DB.startswith("postgresql://") else f"sqlite:///{DB}",
    "log_level": "WARNING",
}
DBOS(config=config)

#: Counts re-entries past the first step and calls of the step's function, in this process.
lock = threading.Lock()
past_first_step = 0
first_step_calls = 0
all_resumed = threading.Event()
expected = 0


@DBOS.step()
def trivial(i: int) -> int:
    return i


@DBOS.workflow()
def steps_workflow(n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        trivial(i)
    return (time.perf_counter() - started) / n


@DBOS.step()
def first_step() -> str:
    global first_step_calls
    with lock:
        first_step_calls += 1
    return "done"


@DBOS.workflow()
def sleeper() -> None:
    global past_first_step
    first_step()
    with lock:
        past_first_step += 1
        if past_first_step == expected:
            all_resumed.set()
    DBOS.sleep(SLEEP_SECONDS)


def recorded_sleeps() -> int:
    with sqlite3.connect(DB) as conn:
        return int(conn.execute("SELECT count(*) FROM operation_outputs WHERE function_name = 'DBOS.sleep'").fetchone()[0])


def main() -> None:
    global expected
    if PHASE == "steps":
        n, repeats = int(sys.argv[3]), int(sys.argv[4])
        DBOS.launch()
        steps_workflow(10)  # warm up
        per_step = [steps_workflow(n) for _ in range(repeats)]
        print(json.dumps({"per_step_s": per_step}), flush=True)
        os._exit(0)
    if PHASE == "concurrent":
        runs, n, repeats = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        DBOS.launch()
        steps_workflow(10)  # warm up
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            handles = [DBOS.start_workflow(steps_workflow, n) for _ in range(runs)]
            for handle in handles:
                handle.get_result()
            seconds.append(time.perf_counter() - started)
        print(json.dumps({"seconds": seconds}), flush=True)
        os._exit(0)
    if PHASE == "prepare":
        expected = int(sys.argv[3])
        DBOS.launch()
        for _ in range(expected):
            DBOS.start_workflow(sleeper)
        while not (all_resumed.is_set() and recorded_sleeps() == expected):
            time.sleep(0.05)
        print("ready", flush=True)
        while True:  # until SIGKILL
            time.sleep(60)
    if PHASE == "recover":
        expected = int(sys.argv[3])
        started = time.perf_counter()
        DBOS.launch()
        all_resumed.wait(timeout=600)
        seconds = time.perf_counter() - started
        print(json.dumps({"seconds": seconds if all_resumed.is_set() else None, "resumed": past_first_step,
                          "first_step_calls": first_step_calls}), flush=True)
        os._exit(0)  # a thousand sleeping workflow threads: do not wait for them
    raise SystemExit(f"unknown phase {PHASE!r}")


if __name__ == "__main__":
    main()
