"""Outgoing webhooks: POSTs with retries, behind the SSRF guard (runengine.adapters.ssrf).

    sender = WebhookSender()                       # guard on: public addresses only
    headers = standard_webhook_headers(secret, webhook_id, int(time.time()), body)  # adapters.webhook_signing
    result = await sender.deliver(url, body, headers=headers, webhook_id=webhook_id)

Each attempt connects to the address the guard checked; redirects are never followed.

Deliveries recorded as runs: runengine.adapters.webhook_deliveries.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from email.utils import parsedate_to_datetime

import anyio
import attrs
import httpx
import stamina

from runengine import observe
from runengine.adapters.ssrf import ResolvedTarget, UnsafeURL, check_url
from runengine.errors import InvalidRequest

#: Statuses below 500 worth another attempt (every 5xx is retried too, but 501).
RETRY_STATUSES = frozenset({408, 425, 429})


def retryable(status: int) -> bool:
    """The receiver is overloaded or briefly broken: try again later."""
    return status in RETRY_STATUSES or (status >= 500 and status != 501)


@attrs.frozen(kw_only=True)
class DeliveryResult:
    ok: bool
    attempts: int
    #: The last HTTP status received, None when no response came back.
    status: int | None
    #: Why the delivery failed (None when ok).
    error: str | None
    webhook_id: str


@attrs.frozen(kw_only=True)
class Attempt:
    """One POST of a delivery, as reported to `deliver(on_attempt=...)`."""

    number: int
    status: int | None
    error: str | None
    #: Seconds until the next attempt (at least: the backoff's jitter, up to `backoff_base`, comes on
    #: top); None when this was the last one.
    retry_in: float | None


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """A Retry-After header (delta seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class WebhookSender:
    """POSTs webhook bodies with retries and backoff, after checking each URL."""

    def __init__(
        self,
        *,
        allow_hosts: Collection[str] = (),
        allow_private: bool = False,
        max_attempts: int = 5,
        timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        if max_attempts < 1:
            raise InvalidRequest("max_attempts must be at least 1")
        if not (timeout > 0 and backoff_base >= 0 and backoff_max >= 0):
            raise InvalidRequest("timeout must be positive and the backoff settings non-negative")
        self.allow_hosts = tuple(allow_hosts)
        self.allow_private = allow_private
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max

    def check(self, url: str) -> ResolvedTarget:
        return check_url(url, allow_hosts=self.allow_hosts, allow_private=self.allow_private)

    async def check_async(self, url: str) -> ResolvedTarget:
        """`check` with the DNS lookup in a worker thread."""
        return await anyio.to_thread.run_sync(self.check, url)

    async def deliver(
        self,
        url: str,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        webhook_id: str | None = None,
        on_attempt: Callable[[Attempt], Awaitable[None]] | None = None,
    ) -> DeliveryResult:
        """POST `body` to `url` until a 2xx, a non-retryable answer or `max_attempts`.

        Never raises for a delivery problem: an unsafe URL, a refused connection or a
        final 5xx all come back as a failed DeliveryResult. `webhook_id` (generated when
        omitted) is sent as `webhook-id` on every attempt, so receivers can deduplicate.
        The waits between attempts are stamina's exponential backoff with jitter, or the
        receiver's `Retry-After` (capped at `backoff_max`).
        """
        hook_id = webhook_id or (headers or {}).get("webhook-id") or f"msg_{uuid.uuid4().hex}"
        sent = {k.lower(): v for k, v in (headers or {}).items()}
        sent.setdefault("content-type", "application/json")
        sent.setdefault("user-agent", "runengine-webhooks")
        sent["webhook-id"] = hook_id
        async with httpx.AsyncClient(follow_redirects=False, timeout=self.timeout, trust_env=False) as client:
            try:
                async for attempt in stamina.retry_context(
                    on=_backoff,
                    attempts=self.max_attempts,
                    timeout=None,
                    wait_initial=self.backoff_base,
                    wait_max=self.backoff_max,
                    wait_jitter=self.backoff_base,
                ):
                    with attempt:
                        status, error, again = await self._post(client, url, body, sent)
                        if error is None:
                            if on_attempt is not None:
                                await on_attempt(Attempt(number=attempt.num, status=status, error=None, retry_in=None))
                            return _reported(
                                DeliveryResult(ok=True, attempts=attempt.num, status=status, error=None, webhook_id=hook_id)
                            )
                        backoff: float | bool = False  # no further attempt
                        if again is not False and attempt.num < self.max_attempts:
                            backoff = True if again is True else min(self.backoff_max, again)
                        retry_in = None if backoff is False else attempt.next_wait if backoff is True else backoff
                        if on_attempt is not None:
                            await on_attempt(Attempt(number=attempt.num, status=status, error=error, retry_in=retry_in))
                        raise _Failed(attempt.num, status, error, backoff)
            except _Failed as last:
                return _reported(
                    DeliveryResult(ok=False, attempts=last.number, status=last.status, error=last.error, webhook_id=hook_id)
                )
        raise AssertionError("unreachable: stamina returns or raises")  # pragma: no cover

    async def _post(
        self, client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int | None, str | None, float | bool]:
        """One attempt: (status, error or None, and whether to retry: False, True, or the seconds a
        `Retry-After` asked for)."""
        try:
            target = await self.check_async(url)
        except UnsafeURL as exc:
            return None, f"unsafe_url: {exc.reason}", False
        try:
            # Streamed and never read: a receiver cannot make us buffer a huge answer.
            async with client.stream(
                "POST",
                target.connect_url(),
                content=body,
                headers={**headers, "host": target.host_header()},
                extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
            ) as response:
                pass
        except httpx.TimeoutException as exc:
            return None, f"timeout: {type(exc).__name__}", True
        except httpx.TransportError as exc:
            return None, f"connection failed: {type(exc).__name__}: {exc}", True
        status = response.status_code
        if 200 <= status < 300:
            return status, None, False
        if 300 <= status < 400:
            return status, f"HTTP {status}: redirects are not followed", False
        if not retryable(status):
            return status, f"HTTP {status}", False
        asked = retry_after_seconds(response.headers.get("retry-after"))
        return status, f"HTTP {status}", True if asked is None else asked


class _Failed(Exception):
    """A failed attempt, raised inside stamina's retry loop. `backoff`: False, no further attempt;
    True, stamina's backoff; a number, that many seconds (a `Retry-After`)."""

    def __init__(self, number: int, status: int | None, error: str, backoff: float | bool) -> None:
        super().__init__(error)
        self.number, self.status, self.error, self.backoff = number, status, error, backoff


def _backoff(exc: Exception) -> bool | float:
    """stamina's `on`: whether (and after how long) to try again after `exc`."""
    return exc.backoff if isinstance(exc, _Failed) else False


__all__ = [
    "Attempt",
    "DeliveryResult",
    "WebhookSender",
    "retry_after_seconds",
]


def _reported(result: DeliveryResult) -> DeliveryResult:
    observe.current.webhook_delivered(ok=result.ok, attempts=result.attempts)
    return result
