"""Completion callbacks recorded in the engine's own terms: a delivery is a run of the built-in
`webhook.delivery` agent, each attempt a tool.call/tool.result pair, a final failure `run.failed`
with code `delivery_failed`.

A run's own log is closed by its terminal event, so the delivery cannot be written there; the
delivery run carries the target run id in its metadata (`webhook_for`) and is created with the
idempotency key `<run_id> <url>` (scope `webhook`), so one run is never delivered twice to one URL.
The POSTs themselves are `WebhookSender`'s (runengine.adapters.webhooks).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runengine.adapters.webhook_signing import standard_webhook_headers
from runengine.adapters.webhooks import Attempt, WebhookSender
from runengine.engine import AgentFailed
from runengine.errors import InvalidRequest
from runengine.events import ErrorInfo
from runengine.idempotency import fingerprint
from runengine.state import RunState
from runengine.wire import dumps

if TYPE_CHECKING:
    from runengine.context import RunContext
    from runengine.engine import RunEngine

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


__all__ = ["DELIVERY_AGENT", "PayloadBuilder", "WebhookDeliveries"]
