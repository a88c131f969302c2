"""Where the Agent Platform profile keeps its webhook registrations: the record and the small
port a store implements to keep them (the SQLite and PostgreSQL stores: a table of their own).

The core knows nothing of them: the profile reaches the engine's store through `WebhookStore`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs


@attrs.frozen(kw_only=True)
class WebhookRegistration:
    """A webhook an app registered: which events to POST to `url`, signed with `secret`. Kept by
    the store, never in a run's log."""

    webhook_id: str
    app_id: str
    url: str
    events: tuple[str, ...]
    secret: str
    created_at: datetime
    owner: str | None = None


@runtime_checkable
class WebhookStore(Protocol):
    """A store that keeps webhook registrations."""

    async def add_webhook(self, webhook: WebhookRegistration) -> None:
        """Store a new registration (its `webhook_id` is new)."""

    async def list_webhooks(self, app_id: str) -> list[WebhookRegistration]:
        """The app's registrations, oldest first."""

    async def delete_webhook(self, app_id: str, webhook_id: str) -> bool:
        """Delete the app's registration `webhook_id`; whether there was one."""


__all__ = ["WebhookRegistration", "WebhookStore"]
