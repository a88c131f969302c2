"""PostgresStore passes the storage conformance suite, against a real PostgreSQL 15 server."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from runengine.adapters.postgres import PostgresStore
from runengine.testing.conformance import StoreConformance, StoreFactory
from durable_stream_store_conformance import DurableStreamStoreConformance
from webhook_store_conformance import WebhookStoreConformance

pytestmark = pytest.mark.postgres


ANYIO_BACKENDS = ("asyncio",)  # asyncpg needs asyncio


class TestPostgresConformance(StoreConformance, WebhookStoreConformance, DurableStreamStoreConformance):
    max_examples = 15

    @pytest.fixture
    def store_factory(self, pg_dsn: str) -> StoreFactory:
        @contextlib.asynccontextmanager
        async def factory() -> AsyncIterator[PostgresStore]:
            # A schema of its own: an empty store, and no cross-talk between stores.
            async with PostgresStore(pg_dsn, schema=f"c_{uuid.uuid4().hex[:12]}", pool_max=4) as store:
                yield store

        return factory
