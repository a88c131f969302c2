"""Outgoing webhooks: signed POSTs with retries, behind the SSRF guard (runengine.adapters.ssrf).

    sender = WebhookSender()                       # guard on: public addresses only
    headers = standard_webhook_headers(secret, webhook_id, int(time.time()), body)
    result = await sender.deliver(url, body, headers=headers, webhook_id=webhook_id)

Each attempt connects to the address the guard checked; redirects are never followed.

`WebhookDeliveries` records deliveries in the engine's own terms: a delivery is a run
of the built-in `webhook.delivery` agent, each attempt a tool.call/tool.result pair, a
final failure `run.failed` with code `delivery_failed`. A run's own log is closed by
its terminal event, so the delivery cannot be written there; the delivery run carries
the target run id in its metadata (`webhook_for`) and is created with the idempotency
key `webhook:<run_id>:<url>`, so one run is never delivered twice to one URL.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import httpx

from runengine.adapters.ssrf import ResolvedTarget, UnsafeURL, check_url
from runengine.adapters.webhook_signing import standard_webhook_headers
from runengine.engine import AgentFailed
from runengine.errors import InvalidRequest
from runengine.idempotency import fingerprint
from runengine.events import ErrorInfo
from runengine.state import RunState
from runengine.wire import dumps

if TYPE_CHECKING:
    from runengine.context import RunContext
    from runengine.engine import RunEngine

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
    #: Seconds until the next attempt; None when this was the last one.
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

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter before attempt `attempt + 1`."""
        delay = min(self.backoff_max, self.backoff_base * math.pow(2, attempt - 1))
        return delay * (0.5 + random.random() / 2)

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
        """
        hook_id = webhook_id or (headers or {}).get("webhook-id") or f"msg_{uuid.uuid4().hex}"
        sent = {k.lower(): v for k, v in (headers or {}).items()}
        sent.setdefault("content-type", "application/json")
        sent.setdefault("user-agent", "runengine-webhooks")
        sent["webhook-id"] = hook_id
        status: int | None = None
        error: str | None = None
        attempt = 0
        async with httpx.AsyncClient(follow_redirects=False, timeout=self.timeout, trust_env=False) as client:
            while attempt < self.max_attempts:
                attempt += 1
                retry_in: float | None = None
                try:
                    target = await self.check_async(url)
                except UnsafeURL as exc:
                    error = f"unsafe_url: {exc.reason}"
                    if on_attempt is not None:
                        await on_attempt(Attempt(number=attempt, status=None, error=error, retry_in=None))
                    return DeliveryResult(ok=False, attempts=attempt, status=None, error=error, webhook_id=hook_id)
                try:
                    # Streamed and never read: a receiver cannot make us buffer a huge answer.
                    async with client.stream(
                        "POST",
                        target.connect_url(),
                        content=body,
                        headers={**sent, "host": target.host_header()},
                        extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
                    ) as response:
                        pass
                except httpx.TimeoutException as exc:
                    status, error = None, f"timeout: {type(exc).__name__}"
                    retry_in = self.backoff(attempt)
                except httpx.TransportError as exc:
                    status, error = None, f"connection failed: {type(exc).__name__}: {exc}"
                    retry_in = self.backoff(attempt)
                else:
                    status = response.status_code
                    if 200 <= status < 300:
                        if on_attempt is not None:
                            await on_attempt(Attempt(number=attempt, status=status, error=None, retry_in=None))
                        return DeliveryResult(ok=True, attempts=attempt, status=status, error=None, webhook_id=hook_id)
                    error = f"HTTP {status}"
                    if 300 <= status < 400:
                        error = f"HTTP {status}: redirects are not followed"
                    if retryable(status):
                        retry_in = self.backoff(attempt)
                        asked = retry_after_seconds(response.headers.get("retry-after"))
                        if asked is not None:
                            retry_in = min(self.backoff_max, asked)
                if attempt >= self.max_attempts:
                    retry_in = None
                if on_attempt is not None:
                    await on_attempt(Attempt(number=attempt, status=status, error=error, retry_in=retry_in))
                if retry_in is None:
                    break
                await anyio.sleep(retry_in)
        return DeliveryResult(ok=False, attempts=attempt, status=status, error=error, webhook_id=hook_id)


#: Builds a delivery's JSON payload from the target run's final state.
PayloadBuilder = Callable[[RunState], Any]

DELIVERY_AGENT = "webhook.delivery"


class WebhookDeliveries:
    """Completion callbacks as runs of the `webhook.delivery` agent in `engine`.

    Register payload formats by name (`formats`), then `schedule(run_id, url, ...)`:
    the delivery run waits for the target run to end, builds the payload with the
    named format, signs it and POSTs it through `sender`, recording every attempt.
    """

    def __init__(
        self,
        engine: RunEngine,
        sender: WebhookSender | None = None,
        *,
        signing_secret: str | bytes | None = None,
        agent_name: str = DELIVERY_AGENT,
    ) -> None:
        self.engine = engine
        self.sender = sender or WebhookSender()
        self.signing_secret = signing_secret
        self.agent_name = agent_name
        self.formats: dict[str, PayloadBuilder] = {}
        if agent_name not in engine.agents:
            engine.agent(
                agent_name, description="Delivers a run's result to a webhook URL", metadata={"internal": True}
            )(self._deliver_agent)

    def add_format(self, name: str, build: PayloadBuilder) -> None:
        self.formats[name] = build

    async def schedule(
        self,
        run_id: str,
        url: str,
        *,
        format: str,
        token: str | None = None,
        owner: str | None = None,
        delivery_id: str | None = None,
    ) -> str:
        """Start the delivery run for `run_id`'s result; returns the delivery run id.

        `delivery_id` chooses the delivery run's id (so the caller can record it before).

        The URL is checked now (UnsafeURL, a 400, before anything is recorded) and again
        before every attempt. The bearer token, when given, is kept in the delivery run's
        input (the log is server-side storage) and never shown by the profiles.
        """
        if format not in self.formats:
            raise InvalidRequest(f"unknown webhook format {format!r}")
        await self.sender.check_async(url)
        delivery = await self.engine.execute(
            self.agent_name,
            {"url": url, "run_id": run_id, "format": format, "token": token, "webhook_id": f"msg_{uuid.uuid4().hex}"},
            mode="async",
            metadata={"webhook_for": run_id},
            owner=owner,
            # One delivery per (run, URL): scheduling it again finds the first one.
            idempotency_key=f"{run_id} {url}",
            idempotency_scope="webhook",
            request_fingerprint=fingerprint([run_id, url]),
            run_id=delivery_id,
        )
        return delivery.run_id

    async def _deliver_agent(self, ctx: RunContext) -> Any:
        spec = ctx.input if isinstance(ctx.input, dict) else {}
        url, target, fmt = spec.get("url"), spec.get("run_id"), spec.get("format")
        if not isinstance(url, str) or not isinstance(target, str) or fmt not in self.formats:
            raise AgentFailed("invalid_request", "a delivery needs url, run_id and a known format")
        state = await self.engine.status(target)
        while not state.terminal:
            state = await self.engine.wait(target, after_seq=state.last_seq)
        body = dumps(self.formats[fmt](state)).encode()
        webhook_id = str(spec.get("webhook_id") or f"msg_{uuid.uuid4().hex}")
        token = spec.get("token")
        secret = self.signing_secret if self.signing_secret is not None else token
        headers = (
            standard_webhook_headers(secret, webhook_id, int(time.time()), body)
            if secret
            else {"webhook-id": webhook_id, "webhook-timestamp": str(int(time.time()))}
        )
        if token:
            headers["authorization"] = f"Bearer {token}"

        async def record(attempt: Attempt) -> None:
            call_id = f"{webhook_id}_{attempt.number}"
            await ctx.tool_call("http.post", {"url": url, "attempt": attempt.number, "webhook_id": webhook_id}, call_id=call_id)
            error = ErrorInfo(code="attempt_failed", message=attempt.error) if attempt.error else None
            await ctx.tool_result(call_id, {"status": attempt.status, "retry_in": attempt.retry_in}, error=error)

        result = await self.sender.deliver(url, body, headers=headers, webhook_id=webhook_id, on_attempt=record)
        if not result.ok:
            raise AgentFailed(
                "delivery_failed", f"webhook to {url} failed after {result.attempts} attempt(s): {result.error}"
            )
        return {"delivered": True, "status": result.status, "attempts": result.attempts, "webhook_id": webhook_id}


__all__ = [
    "Attempt",
    "DeliveryResult",
    "WebhookDeliveries",
    "WebhookSender",
    "retry_after_seconds",
]
