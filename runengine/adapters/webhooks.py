"""Outgoing webhooks: signed POSTs with retries, behind an SSRF guard.

    sender = WebhookSender()                       # guard on: public addresses only
    headers = standard_webhook_headers(secret, webhook_id, int(time.time()), body)
    result = await sender.deliver(url, body, headers=headers, webhook_id=webhook_id)

The guard resolves the host once, refuses any non-public address (loopback, private,
link-local with the 169.254.169.254 metadata service, CGNAT, multicast, unspecified,
reserved, and IPv4 addresses hidden inside IPv6), then connects to the very address it
checked (the Host header and TLS SNI keep the name), so a second DNS answer cannot
point the request elsewhere. Redirects are never followed.

`WebhookDeliveries` records deliveries in the engine's own terms: a delivery is a run
of the built-in `webhook.delivery` agent, each attempt a tool.call/tool.result pair, a
final failure `run.failed` with code `delivery_failed`. A run's own log is closed by
its terminal event, so the delivery cannot be written there; the delivery run carries
the target run id in its metadata (`webhook_for`) and is created with the idempotency
key `webhook:<run_id>:<url>`, so one run is never delivered twice to one URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import httpx

from runengine import observe
from runengine.engine import AgentFailed
from runengine.errors import InvalidRequest
from runengine.idempotency import fingerprint
from runengine.events import ErrorInfo
from runengine.state import RunState
from runengine.wire import dumps

if TYPE_CHECKING:
    from runengine.context import RunContext
    from runengine.engine import RunEngine

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Statuses below 500 worth another attempt (every 5xx is retried too, but 501).
RETRY_STATUSES = frozenset({408, 425, 429})


def retryable(status: int) -> bool:
    """The receiver is overloaded or briefly broken: try again later."""
    return status in RETRY_STATUSES or (status >= 500 and status != 501)

#: IPv6 prefixes that embed an IPv4 address (NAT64), checked as that IPv4 address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class UnsafeURL(InvalidRequest):
    """A webhook URL that the SSRF guard refuses (scheme, credentials or address)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"refused webhook URL: {reason}", url=url, reason=reason)
        self.reason = reason


@attrs.frozen(kw_only=True)
class ResolvedTarget:
    """A checked URL: where to connect (`address`) and what to call it (`host`)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    #: Path and query, as sent in the request line.
    target: str

    def connect_url(self) -> str:
        """The URL with the host replaced by the checked address."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}{self.target}"

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


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


def _parse_allowed(entries: Collection[str]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.lower().rstrip("."))
    return frozenset(names), tuple(networks)


def forbidden_reason(address: IPAddress) -> str | None:
    """Why `address` is not a public unicast address, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            return f"IPv4 address inside IPv6 is {inner}" if inner else None
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("carrier-grade NAT", isinstance(address, ipaddress.IPv4Address) and address in _CGNAT),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    )
    for reason, hit in checks:
        if hit:
            return reason
    return None


def check_url(
    url: str, *, allow_hosts: Collection[str] = (), allow_private: bool = False
) -> ResolvedTarget:
    """Parse and resolve `url`; raise UnsafeURL unless every address it resolves to is allowed.

    `allow_hosts` holds host names, IP addresses or networks (CIDR) that are allowed
    whatever their address (tests, private deployments); `allow_private` allows every
    loopback / private / link-local / CGNAT address but never an unspecified or
    multicast one. Resolution blocks: call it from a worker thread in async code.
    """
    if not isinstance(url, str) or not url:
        raise UnsafeURL(str(url), "the URL must be a non-empty string")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UnsafeURL(url, f"malformed URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeURL(url, "only http and https URLs are allowed")
    if parsed.userinfo:
        raise UnsafeURL(url, "credentials in the URL are not allowed")
    host = parsed.host.lower().rstrip(".")
    if not host:
        raise UnsafeURL(url, "the URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    names, networks = _parse_allowed(allow_hosts)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise UnsafeURL(url, f"cannot resolve host {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        address = ipaddress.ip_address(raw)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeURL(url, f"host {host!r} has no address")
    for address in addresses:
        if host in names or any(address in net for net in networks):
            continue
        reason = forbidden_reason(address)
        if reason is None:
            continue
        if allow_private and not (address.is_unspecified or address.is_multicast):
            continue
        raise UnsafeURL(url, f"{host} resolves to {address}, which is {reason}")
    target = parsed.raw_path.decode("ascii")
    return ResolvedTarget(
        url=url, scheme=parsed.scheme, host=host, port=port, address=str(addresses[0]), target=target or "/"
    )


def standard_webhook_headers(secret: str | bytes, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers: the signature is base64(HMAC-SHA256(secret, id.timestamp.body)).

    A `whsec_`-prefixed secret is base64 after the prefix (the spec's form); any other
    string is used as its UTF-8 bytes.
    """
    if isinstance(secret, str):
        key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    else:
        key = secret
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{signature}"}


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
                    return _reported(DeliveryResult(ok=False, attempts=attempt, status=None, error=error, webhook_id=hook_id))
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
                        return _reported(DeliveryResult(ok=True, attempts=attempt, status=status, error=None, webhook_id=hook_id))
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
        return _reported(DeliveryResult(ok=False, attempts=attempt, status=status, error=error, webhook_id=hook_id))


def _reported(result: DeliveryResult) -> DeliveryResult:
    observe.current.webhook_delivered(ok=result.ok, attempts=result.attempts)
    return result


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
    "ResolvedTarget",
    "UnsafeURL",
    "WebhookDeliveries",
    "WebhookSender",
    "check_url",
    "forbidden_reason",
    "retry_after_seconds",
    "standard_webhook_headers",
]
