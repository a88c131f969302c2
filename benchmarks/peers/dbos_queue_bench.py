"""DBOS Transact queues: the concurrency-limited queue workload of benchmarks/bench_flow.py.

Runs inside the benchmark's own virtualenv (.bench-venvs/dbos):

    python dbos_queue_bench.py DATABASE_URL RUNS LIMIT

A first launch that listens to no queue registers `flow` (global_concurrency=LIMIT, polled
every POLL seconds: runengine's PostgreSQL workers poll every 0.05 s in the benchmark too) and
enqueues RUNS workflows of one trivial step (the backlog, not timed); then a second launch
listens to it, and one JSON line: claims per second, from that launch until every workflow
has ended.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from dbos import DBOS, DBOSConfig

DATABASE_URL, RUNS, LIMIT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

config: DBOSConfig = {"name": "runengine-flow-bench", "system_database_url": DATABASE_URL, "log_level": "WARNING"}
#: The queue's polling interval (seconds).
POLL = 0.05

lock = threading.Lock()
ended = 0
all_ended = threading.Event()


@DBOS.step()
def trivial(i: int) -> int:
    return i


@DBOS.workflow()
def work(i: int) -> int:
    global ended
    out = trivial(i)
    with lock:
        ended += 1
        if ended == RUNS:
            all_ended.set()
    return out


def main() -> None:
    DBOS(config=config)
    DBOS.listen_queues([])  # the backlog waits
    DBOS.launch()
    queue = DBOS.register_queue("flow", global_concurrency=LIMIT, polling_interval_sec=POLL)
    for i in range(RUNS):
        queue.enqueue(work, i)
    DBOS.destroy()
    DBOS(config=config)
    started = time.perf_counter()
    DBOS.launch()
    if not all_ended.wait(900):
        raise SystemExit(f"only {ended} of {RUNS} workflows ended")
    seconds = time.perf_counter() - started
    print(json.dumps({"claims_per_second": RUNS / seconds, "seconds": seconds}), flush=True)
    DBOS.destroy()


if __name__ == "__main__":
    main()
