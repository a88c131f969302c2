"""The conformance suite of the platform profile's WebhookStore port (beside runengine.testing's,
which the core owns and which knows nothing of webhooks): mixed into every store's conformance test."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runengine.adapters.profiles.platform_webhook_store import WebhookRegistration
from runengine.testing.conformance import T0, StoreFactory


class WebhookStoreConformance:
    """Every behaviour of `WebhookStore` (with `store_factory`, as the core's suites)."""

    @pytest.mark.anyio
    async def test_webhook_registrations(self, store_factory: StoreFactory) -> None:
        def registration(webhook_id: str, app_id: str, n: int, owner: str | None = "alice") -> WebhookRegistration:
            return WebhookRegistration(
                webhook_id=webhook_id, app_id=app_id, url=f"https://example.com/hook/{n}?q=é",
                events=("session.started", "conversation.escalated"), secret=f"whsec_ünï {n}",
                created_at=T0 + timedelta(seconds=n, microseconds=n), owner=owner,
            )

        async with store_factory() as store:
            assert await store.list_webhooks("app") == []
            assert await store.delete_webhook("app", "wh_none") is False
            # Inserted out of id order: listed oldest first, per app.
            mine = [registration("wh_3", "app", 1), registration("wh_1", "app", 2, owner=None), registration("wh_2", "app", 3)]
            other = registration("wh_9", "other", 4, owner="bob")
            for webhook in (mine[0], other, *mine[1:]):
                await store.add_webhook(webhook)
            assert await store.list_webhooks("app") == mine
            assert await store.list_webhooks("other") == [other]
            assert await store.get_session("app") is None  # registrations are no sessions
            assert await store.delete_webhook("other", "wh_1") is False  # another app's id: nothing happens
            assert await store.delete_webhook("app", "wh_1") is True
            assert await store.delete_webhook("app", "wh_1") is False
            assert await store.list_webhooks("app") == [mine[0], mine[2]]
            assert await store.list_webhooks("other") == [other]
