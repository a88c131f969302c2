"""Signed webhooks of the Agent Platform profile (seed 002): registry, signing, delivery.

Registrations are kept in the engine's store (its webhook registrations, a table of
their own in SQLite and PostgreSQL), so they survive restarts and are shared by every
process on the same store.

Deliveries are runs of the built-in agent `platform.webhooks`: emitting an event
starts such a run (durable before the HTTP request that caused it is answered),
the engine executes it in the background, and each delivery attempt's outcome is
recorded in that run as a `tool.call` / `tool.result` pair (a final failure is a
`tool.result` with error code `webhook_failed`). The HTTP work itself (retries with
backoff, no redirects, SSRF guard, allow-list) is the shared `WebhookSender`.

Escalation: an agent calls `await escalate(ctx, reason=..., context=...)`, which
records a `custom` event named `conversation.escalated`; a watcher run follows the
conversation run's events and delivers each such event.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any


from runengine.context import RunContext
from runengine import ownership
from runengine.errors import InvalidRequest
from runengine.adapters.webhooks import Attempt, WebhookSender
from runengine.engine import AgentFailed
from runengine.events import Custom, ErrorInfo
from runengine.limits import MAX_SECRET_LENGTH, MAX_URL_LENGTH, MAX_WEBHOOKS_PER_PRINCIPAL
from runengine.keylock import KeyLocks
from runengine.adapters.profiles.platform_webhook_store import WebhookRegistration, WebhookStore
from runengine.ports import port_of, required

if TYPE_CHECKING:
    from runengine.engine import RunEngine

#: The events a registration may subscribe to (seed 002, "Configure Webhook").
WEBHOOK_EVENTS: tuple[str, ...] = ("session.started", "session.ended", "conversation.escalated")
ESCALATED = "conversation.escalated"
#: The header carrying the signature (seed 002, "Verify Signatures").
SIGNATURE_HEADER = "x-kore-signature"
#: The engine agent that performs deliveries.
DELIVERY_AGENT = "platform.webhooks"


def sign(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body keyed with the secret, as the seed's snippet computes it."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def format_timestamp(value: datetime) -> str:
    """The seed's timestamp shape: RFC 3339, UTC, whole seconds ("2024-01-15T14:30:00Z")."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def escalate(ctx: RunContext, reason: str, context: Any = None) -> None:
    """Hand the conversation to a human: records the event the `conversation.escalated` webhook reports."""
    await ctx.custom(ESCALATED, {"reason": reason, "context": context if context is not None else {}})
    await ctx.flush()


def public(registration: WebhookRegistration) -> dict[str, Any]:
    """What the API shows of a registration: never the secret."""
    return {
        "webhook_id": registration.webhook_id,
        "url": registration.url,
        "events": list(registration.events),
        "created_at": format_timestamp(registration.created_at),
    }


def parse_registration(body: Mapping[str, Any]) -> tuple[str, tuple[str, ...], str]:
    """Validate a registration request `{"url", "events", "secret"}`; a clear InvalidRequest otherwise."""
    url, events, secret = body.get("url"), body.get("events"), body.get("secret")
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"url must be a non-empty string of at most {MAX_URL_LENGTH} characters", field="url")
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise InvalidRequest("events must be a non-empty list of event names", field="events", allowed=list(WEBHOOK_EVENTS))
    unknown = sorted(set(events) - set(WEBHOOK_EVENTS))
    if unknown:
        raise InvalidRequest(f"unknown webhook events: {', '.join(unknown)}", field="events", allowed=list(WEBHOOK_EVENTS))
    if not isinstance(secret, str) or not secret or len(secret) > MAX_SECRET_LENGTH:
        raise InvalidRequest(f"secret must be a non-empty string of at most {MAX_SECRET_LENGTH} characters", field="secret")
    return url, tuple(dict.fromkeys(events)), secret


class WebhookRegistry:
    """Webhook registrations per app, in the engine's store."""

    def __init__(self, engine: RunEngine) -> None:
        self._engine = engine
        self._webhooks: WebhookStore | None = port_of(engine.store, WebhookStore)
        # Serialises this process's read-modify-write of an app's record.
        self._lock = KeyLocks()

    def _store(self) -> WebhookStore:
        return required(self._webhooks, self._engine.store, "webhook registrations")

    async def of_owner(self, app_id: str, owner: str | None) -> list[WebhookRegistration]:
        """The app's registrations made by `owner` (each principal sees and gets only its own)."""
        return [r for r in await self._store().list_webhooks(app_id) if ownership.can_access(r.owner, owner)]

    async def add(self, app_id: str, url: str, events: Sequence[str], secret: str, owner: str | None) -> WebhookRegistration:
        registration = WebhookRegistration(
            webhook_id=f"wh_{uuid.uuid4().hex[:24]}",
            app_id=app_id,
            url=url,
            events=tuple(events),
            secret=secret,
            created_at=self._engine.clock().replace(microsecond=0),  # the API shows whole seconds
            owner=owner,
        )
        async with self._lock(app_id):
            if len(await self.of_owner(app_id, owner)) >= MAX_WEBHOOKS_PER_PRINCIPAL:
                raise InvalidRequest(
                    f"you may register at most {MAX_WEBHOOKS_PER_PRINCIPAL} webhooks for an app", app_id=app_id,
                    limit=MAX_WEBHOOKS_PER_PRINCIPAL,
                )
            await self._store().add_webhook(registration)
        return registration

    async def remove(self, app_id: str, webhook_id: str, owner: str | None) -> bool:
        """Delete `owner`'s registration `webhook_id` (another principal's is not found)."""
        async with self._lock(app_id):
            if not any(r.webhook_id == webhook_id for r in await self.of_owner(app_id, owner)):
                return False
            return await self._store().delete_webhook(app_id, webhook_id)


class WebhookDispatcher:
    """Turns profile events into delivery runs of the `platform.webhooks` agent."""

    def __init__(self, engine: RunEngine, registry: WebhookRegistry, sender: WebhookSender) -> None:
        self._engine = engine
        self.registry = registry
        self.sender = sender
        if DELIVERY_AGENT not in engine.agents:
            engine.agent(
                DELIVERY_AGENT, description="Delivers the Agent Platform profile's signed webhooks", metadata={"internal": True}
            )(self._run)

    async def wants(self, app_id: str, owner: str | None, event: str) -> bool:
        return any(event in r.events for r in await self.registry.of_owner(app_id, owner))

    async def emit(self, app_id: str, owner: str | None, event: str, data: Mapping[str, Any]) -> str | None:
        """Start a delivery run for `event` if a registration of `owner` for the app wants it; its run id."""
        if not await self.wants(app_id, owner, event):
            return None
        job = {
            "kind": "deliver",
            "app_id": app_id,
            "owner": owner,
            "event": event,
            "timestamp": format_timestamp(self._engine.clock()),
            "data": dict(data),
        }
        state = await self._engine.execute(DELIVERY_AGENT, job, mode="async")
        return state.run_id

    async def watch(self, app_id: str, owner: str | None, run_id: str, session_id: str | None) -> str | None:
        """Follow a conversation run and deliver its escalations, if a registration of `owner` wants them."""
        if not await self.wants(app_id, owner, ESCALATED):
            return None
        job = {"kind": "watch", "app_id": app_id, "owner": owner, "run_id": run_id, "session_id": session_id}
        state = await self._engine.execute(DELIVERY_AGENT, job, mode="async")
        return state.run_id

    # -- the delivery agent --------------------------------------------------------

    async def _run(self, ctx: RunContext) -> Any:
        job = ctx.input if isinstance(ctx.input, dict) else {}
        kind = job.get("kind")
        if kind == "deliver":
            outcomes = await self._deliver(ctx, job["app_id"], job["owner"], job["event"], job["timestamp"], job["data"], key="0")
        elif kind == "watch":
            outcomes = []
            async for event in self._engine.events(job["run_id"]):
                if isinstance(event, Custom) and event.name == ESCALATED:
                    extra = event.data if isinstance(event.data, dict) else {"reason": event.data}
                    data = {"session_id": job["session_id"], "trace_id": job["run_id"], **extra}
                    outcomes += await self._deliver(
                        ctx, job["app_id"], job["owner"], ESCALATED, format_timestamp(event.at), data, key=str(event.seq)
                    )
        else:
            raise AgentFailed("invalid_request", "a platform webhook job needs kind deliver or watch")
        failed = [o for o in outcomes if not o["ok"]]
        if failed:
            raise AgentFailed("delivery_failed", f"{len(failed)} of {len(outcomes)} webhook deliveries failed: {failed}")
        return outcomes

    async def _deliver(
        self, ctx: RunContext, app_id: str, owner: str | None, event: str, timestamp: str, data: Any, *, key: str
    ) -> list[dict[str, Any]]:
        """POST one signed event to every registration of the app that wants it; each attempt recorded."""
        body = json.dumps({"event": event, "timestamp": timestamp, "data": data}, separators=(",", ":"), allow_nan=False).encode()
        outcomes = []
        # Registrations are read at delivery time, so secrets never enter a run's log.
        for registration in await self.registry.of_owner(app_id, owner):
            if event not in registration.events:
                continue
            webhook_id = f"{ctx.run_id}.{key}.{registration.webhook_id}"  # stable across retries

            async def record(attempt: Attempt, url: str = registration.url, webhook_id: str = webhook_id) -> None:
                call_id = f"{webhook_id}.{attempt.number}"
                await ctx.tool_call("http.post", {"url": url, "event": event, "attempt": attempt.number, "webhook_id": webhook_id}, call_id=call_id)
                error = ErrorInfo(code="attempt_failed", message=attempt.error) if attempt.error else None
                await ctx.tool_result(call_id, {"status": attempt.status, "retry_in": attempt.retry_in}, error=error)

            result = await self.sender.deliver(
                registration.url,
                body,
                headers={"content-type": "application/json", SIGNATURE_HEADER: sign(registration.secret, body), "x-kore-event": event},
                webhook_id=webhook_id,
                on_attempt=record,
            )
            outcomes.append({"webhook_id": registration.webhook_id, "event": event, "ok": result.ok,
                             "attempts": result.attempts, "status": result.status, "error": result.error})
        return outcomes
