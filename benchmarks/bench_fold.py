"""Fold benchmark: how fast the reducer folds a token stream, beside a plain dict loop.

    python benchmarks/bench_fold.py [--repeat 5]

For 100k and 1M `message.delta` events (built once, outside the timing), it times
`runengine.fold` and, as the reference measured in the same run, a plain loop that
keeps the same facts in a mutable dict (status, last seq, chunks) with no
validation. Medians of --repeat runs. Targets: >= 1M events/s, and 10x the
events in <= 11x the time (the fold is linear).
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time

from runengine import fold
from runengine.events import MessageDelta, RunCompleted, RunCreated, RunStarted


def token_stream(n: int) -> list:
    events = [RunCreated(run_id="r", seq=1, agent="bench"), RunStarted(run_id="r", seq=2)]
    events += [MessageDelta(run_id="r", seq=i + 3, message_id="m", content="tok ") for i in range(n)]
    events.append(RunCompleted(run_id="r", seq=n + 3, output=None))
    return events


def dict_loop(events: list) -> dict:
    """The reference: the same bookkeeping in a mutable dict, without any checks."""
    state: dict = {"status": None, "last_seq": 0, "chunks": []}
    chunks = state["chunks"]
    for event in events:
        kind = event.type
        if kind == "message.delta":
            chunks.append(event.content)
        elif kind == "run.created":
            state["status"] = "pending"
        elif kind == "run.started":
            state["status"] = "running"
        elif kind == "run.completed":
            state["status"] = "completed"
        state["last_seq"] = event.seq
    state["text"] = "".join(chunks)
    return state


def timed(fn, events, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn(events)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"# fold benchmark · Python {platform.python_version()} · {platform.machine()} · medians of {args.repeat}")
    rows = []
    seconds: dict[int, float] = {}
    for n in (100_000, 1_000_000):
        events = token_stream(n)
        state = fold(events)
        assert state is not None and state.partial.content == "tok " * n, "fold result is wrong"
        assert dict_loop(events)["text"] == state.partial.content
        t_fold = timed(fold, events, args.repeat)
        t_ref = timed(dict_loop, events, args.repeat)
        seconds[n] = t_fold
        rows.append((n, len(events) / t_fold, len(events) / t_ref, t_fold / t_ref))
        del events
    print()
    print("| events | runengine.fold (events/s) | dict loop reference (events/s) | fold / reference time |")
    print("|---:|---:|---:|---:|")
    for n, fold_rate, ref_rate, ratio in rows:
        print(f"| {n:,} | {fold_rate:,.0f} | {ref_rate:,.0f} | {ratio:.2f}x |")
    scale = seconds[1_000_000] / seconds[100_000]
    print()
    print(f"10x the events took {scale:.2f}x the time (target <= 11x); "
          f"1M fold rate {rows[1][1]:,.0f} events/s (target >= 1,000,000)")


if __name__ == "__main__":
    main()
