"""SQLiteStore passes the storage conformance suite: on a file, and in memory."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runengine.adapters.sqlite import SQLiteStore
from runengine.testing.conformance import StoreConformance, StoreFactory
from durable_stream_store_conformance import DurableStreamStoreConformance
from webhook_store_conformance import WebhookStoreConformance


ANYIO_BACKENDS = ("asyncio",)  # the SQLite store needs asyncio


class TestSQLiteFileConformance(StoreConformance, WebhookStoreConformance, DurableStreamStoreConformance):
    max_examples = 25

    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        numbers = itertools.count()

        @contextlib.asynccontextmanager
        async def factory() -> AsyncIterator[SQLiteStore]:
            # NORMAL keeps the suite quick (FULL is exercised in test_sqlite_store.py); a tiny
            # in-memory tail makes reads go to the database as well as to the tail.
            path = tmp_path / f"store{next(numbers)}.db"
            async with SQLiteStore(path, synchronous="NORMAL", tail_events=16, tail_runs=3) as store:
                yield store

        return factory


class TestSQLiteMemoryConformance(StoreConformance, WebhookStoreConformance, DurableStreamStoreConformance):
    max_examples = 15

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        @contextlib.asynccontextmanager
        async def factory() -> AsyncIterator[SQLiteStore]:
            async with SQLiteStore(":memory:") as store:
                yield store

        return factory
