"""Standard Webhooks signatures (https://www.standardwebhooks.com), made by the `standardwebhooks`
package so that its `Webhook(...).verify` accepts what we send.

The key a secret stands for:
- `whsec_<base64>` (the spec's form, padded or not): the decoded bytes; a receiver verifies with
  `Webhook(secret)`;
- bytes: those bytes;
- any other string (a Kore callback token, say): its UTF-8 bytes; a receiver verifies with
  `Webhook(secret.encode())`. (The package would read such a string as base64, dropping the
  characters that are not, so "my-token" and "mytoken" would be one key and "tok_a-1" none.)
"""

from __future__ import annotations

from datetime import datetime, timezone

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"


def signer(secret: str | bytes) -> Webhook:
    """The `standardwebhooks.Webhook` holding the key `secret` stands for (see the module doc)."""
    if isinstance(secret, str) and not secret.startswith(SECRET_PREFIX):
        return Webhook(secret.encode())
    return Webhook(secret)


def standard_webhook_headers(secret: str | bytes, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of a signed delivery of `body` (UTF-8 text, as the spec signs it): `webhook-id`,
    `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`."""
    signature = signer(secret).sign(webhook_id, datetime.fromtimestamp(timestamp, tz=timezone.utc), body.decode())
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
