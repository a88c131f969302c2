"""A webhook registration as a row of an SQL store's webhooks table, for every SQL store.

The stores differ only in their table, their placeholders and how they keep a time (SQLite
as RFC 3339 text, PostgreSQL as timestamptz), so the time is the caller's to encode and decode.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from runengine.adapters.profiles.platform_webhook_store import WebhookRegistration

#: The columns, in the order `webhook_row` gives and `webhook_from_row` reads them.
COLUMNS = "webhook_id, app_id, url, events, secret, created_at, owner"


def webhook_row(webhook: WebhookRegistration, created_at: Any) -> tuple[Any, ...]:
    """The row's values in COLUMNS order; `created_at` as the store keeps times."""
    return (
        webhook.webhook_id,
        webhook.app_id,
        webhook.url,
        json.dumps(list(webhook.events)),
        webhook.secret,
        created_at,
        webhook.owner,
    )


def webhook_from_row(row: Sequence[Any], created_at: datetime) -> WebhookRegistration:
    """The registration of a row selected as COLUMNS; `created_at` decoded by the store."""
    return WebhookRegistration(
        webhook_id=row[0],
        app_id=row[1],
        url=row[2],
        events=tuple(json.loads(row[3])),
        secret=row[4],
        created_at=created_at,
        owner=row[6],
    )
