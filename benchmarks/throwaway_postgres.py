"""A PostgreSQL 15 server of a benchmark's own: the test suite's throwaway server (tests/pg.py),
with fsync on, so a durable commit costs what it costs in production. Started, yielded, then
stopped and its files removed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pg import PostgresServer  # noqa: E402 - found through the path above


@contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(fsync=True)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
