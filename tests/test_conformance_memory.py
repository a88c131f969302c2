"""MemoryStore passes the storage conformance suite (on asyncio and trio)."""

from __future__ import annotations

import pytest

from runengine.testing.conformance import StoreConformance, StoreFactory, memory_store
from durable_stream_store_conformance import DurableStreamStoreConformance
from webhook_store_conformance import WebhookStoreConformance


class TestMemoryStoreConformance(StoreConformance, WebhookStoreConformance, DurableStreamStoreConformance):
    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        return memory_store
