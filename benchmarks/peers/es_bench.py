"""eventsourcing 9.5.6 on its SQLite recorder: append a token stream, then read it back.

Runs inside the benchmark's own virtualenv (.bench-venvs/eventsourcing):
    python es_bench.py N PER_SAVE REPEATS
Prints one JSON object: events/s for append, read (decoded domain events) and
reconstruct (the aggregate folded from its events), one figure per repeat.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class TokenStream(Aggregate):
    """One run's message, as an aggregate: each token is an event."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    @event("Token")
    def token(self, content: str) -> None:
        self.tokens.append(content)


def one(n: int, per_save: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        app = Application(
            env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": os.path.join(folder, "es.db")}
        )
        stream = TokenStream()
        app.save(stream)
        started = time.perf_counter()
        for i in range(n):
            stream.token(f"tok{i} ")
            if (i + 1) % per_save == 0:
                app.save(stream)
        app.save(stream)
        append_s = time.perf_counter() - started

        started = time.perf_counter()
        read = sum(1 for _ in app.events.get(stream.id))
        read_s = time.perf_counter() - started
        assert read == n + 1, read  # the creation event and every token

        started = time.perf_counter()
        rebuilt = app.repository.get(stream.id)
        rebuild_s = time.perf_counter() - started
        assert len(rebuilt.tokens) == n
        app.close()
    return {"append_per_s": n / append_s, "read_per_s": read / read_s, "rebuild_per_s": n / rebuild_s}


def main() -> None:
    n, per_save, repeats = (int(a) for a in sys.argv[1:4])
    runs = [one(n, per_save) for _ in range(repeats)]
    print(json.dumps({"n": n, "per_save": per_save, "runs": runs}))


if __name__ == "__main__":
    main()
