"""runengine's event store beside a raw sqlite3 reference: append a token stream, read it back.

Runs in the project's environment:
    python store_bench.py STORE_URL_TEMPLATE N PER_APPEND REPEATS
STORE_URL_TEMPLATE names a store with "{dir}" for a fresh temporary folder, e.g.
"sqlite:///{dir}/runs.db"; the word "raw" measures plain sqlite3 instead (WAL,
synchronous=FULL as eventsourcing uses it, executemany per commit: the ceiling).
Prints one JSON object with events/s for append, read (decoded events) and
rebuild (read + fold into a RunState), one figure per repeat.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from datetime import datetime, timezone

from runengine.events import MessageDelta, RunCreated, RunStarted
from runengine.reducer import Fold
from runengine.stores import open_store

RUN = "bench-run"


def _events(n: int) -> list:
    at = datetime.now(timezone.utc)
    head = [RunCreated(run_id=RUN, seq=1, at=at, agent="parts"), RunStarted(run_id=RUN, seq=2, at=at)]
    return head + [MessageDelta(run_id=RUN, seq=3 + i, at=at, message_id="m1", content=f"tok{i} ") for i in range(n)]


async def one_store(template: str, n: int, per_append: int) -> dict[str, float]:
    events = _events(n)
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(template.format(dir=folder))
        await store.open()
        try:
            await store.append(RUN, events[:2], expected_seq=0)
            deltas = events[2:]
            started = time.perf_counter()
            for i in range(0, n, per_append):
                await store.append(RUN, deltas[i : i + per_append], expected_seq=2 + i)
            append_s = time.perf_counter() - started

            started = time.perf_counter()
            read, after = 0, 0
            while page := await store.read(RUN, after_seq=after, limit=500):
                read += len(page)
                after = page[-1].seq
            read_s = time.perf_counter() - started
            assert read == n + 2, read

            started = time.perf_counter()
            fold, after = Fold(), 0
            while page := await store.read(RUN, after_seq=after, limit=500):
                fold.apply_all(page)
                after = page[-1].seq
            rebuild_s = time.perf_counter() - started
            assert fold.state is not None and fold.state.partial is not None
        finally:
            await store.close()
    return {"append_per_s": n / append_s, "read_per_s": read / read_s, "rebuild_per_s": n / rebuild_s}


def one_raw(n: int, per_append: int) -> dict[str, float]:
    """The same rows through plain sqlite3: no validation, no objects, just the database."""
    at = datetime.now(timezone.utc).isoformat()
    rows = [(RUN, 3 + i, "message.delta", at, json.dumps({"message_id": "m1", "content": f"tok{i} "})) for i in range(n)]
    with tempfile.TemporaryDirectory() as folder:
        db = sqlite3.connect(os.path.join(folder, "raw.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE events (run_id TEXT, seq INTEGER, type TEXT, at TEXT, data TEXT, PRIMARY KEY (run_id, seq))")
        started = time.perf_counter()
        for i in range(0, n, per_append):
            db.execute("BEGIN")
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", rows[i : i + per_append])
            db.execute("COMMIT")
        append_s = time.perf_counter() - started
        started = time.perf_counter()
        read, after = 0, 0
        while page := db.execute(
            "SELECT seq, type, at, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT 500", (RUN, after)
        ).fetchall():
            read += sum(1 for row in page if json.loads(row[3]))
            after = page[-1][0]
        read_s = time.perf_counter() - started
        db.close()
    return {"append_per_s": n / append_s, "read_per_s": read / read_s}


def main() -> None:
    template, n, per_append, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if template == "raw":
        runs = [one_raw(n, per_append) for _ in range(repeats)]
    else:
        runs = [asyncio.run(one_store(template, n, per_append)) for _ in range(repeats)]
    print(json.dumps({"n": n, "per_save": per_append, "runs": runs}))


if __name__ == "__main__":
    main()
