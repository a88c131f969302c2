"""DBOS Transact on PostgreSQL: the worker-processes workload of benchmarks/bench_workers.py.

Runs inside the benchmark's own virtualenv (.bench-venvs/dbos):

    python dbos_workers.py worker URL            # a worker process: executes the queue; prints "ready"
    python dbos_workers.py burst URL RUNS PACED  # enqueues (a DBOSClient, executing nothing), waits for
                                                 # every workflow; one JSON line of figures

The workflow is ten `@DBOS.step` calls of a trivial function (each step's output committed
before the workflow goes on), on a queue with `worker_concurrency=16` per process, polled every
0.1 s (DBOS's default is 1 s; a shorter poll only helps its pick-up latency).
"""

from __future__ import annotations

import json
import sys
import time

from dbos import DBOS, DBOSClient, DBOSConfig

STEPS = 10
QUEUE = "bench"
WORKFLOW = "steps10"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def worker(url: str) -> None:
    config: DBOSConfig = {"name": "runengine-bench-workers", "system_database_url": url, "log_level": "WARNING",
                          "application_version": "bench"}
    DBOS(config=config)

    @DBOS.step()
    def add(i: int) -> int:
        return i

    @DBOS.workflow(name=WORKFLOW)
    def steps10() -> int:
        return sum(add(i) for i in range(STEPS))

    DBOS.launch()
    DBOS.register_queue(QUEUE, worker_concurrency=16, polling_interval_sec=0.1)  # (needs the database)
    print("ready", flush=True)
    while True:
        time.sleep(60)


def pickup(client: DBOSClient, ids: list[str]) -> list[float]:
    """created_at to started_at (when a worker dequeued it), per workflow, in seconds."""
    statuses = client.list_workflows(workflow_ids=ids)
    return [(s.dequeued_at if getattr(s, "dequeued_at", None) else s.updated_at) / 1000 - s.created_at / 1000
            for s in statuses]


def burst(url: str, runs: int, paced: int) -> None:
    client = DBOSClient(system_database_url=url)
    options = {"queue_name": QUEUE, "workflow_name": WORKFLOW, "app_version": "bench"}
    result: dict[str, float] = {}
    handles = []
    for _ in range(paced):  # one at a time: each on workers with nothing else to do
        handles.append(client.enqueue(options))  # type: ignore[arg-type]
        assert handles[-1].get_result() == sum(range(STEPS))
    delays = pickup(client, [h.get_workflow_id() for h in handles])
    result["pickup_p50"], result["pickup_p99"] = percentile(delays, 0.5), percentile(delays, 0.99)
    started = time.perf_counter()
    handles = [client.enqueue(options) for _ in range(runs)]  # type: ignore[arg-type]
    for handle in handles:
        assert handle.get_result() == sum(range(STEPS))
    wall = time.perf_counter() - started
    delays = pickup(client, [h.get_workflow_id() for h in handles])
    result.update(runs_s=runs / wall, steps_s=runs * STEPS / wall, wall=wall,
                  burst_p50=percentile(delays, 0.5), burst_p99=percentile(delays, 0.99))
    client.destroy()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(sys.argv[2])
    elif sys.argv[1] == "burst":
        burst(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown phase {sys.argv[1]!r}")
