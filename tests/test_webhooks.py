"""Webhook delivery: the SSRF guard's table of addresses, signing, retries against a real receiver,
and deliveries recorded as runs of the `webhook.delivery` agent."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator

import pytest
import stamina
import standardwebhooks

from runengine.adapters.ssrf import UnsafeURL, check_url
from runengine.adapters.webhook_signing import standard_webhook_headers
from runengine.adapters.webhook_deliveries import WebhookDeliveries
from runengine.adapters.webhooks import WebhookSender, retry_after_seconds
from runengine.engine import RunEngine
from runengine.errors import InvalidRequest
from runengine.status import Status

from profile_http import Reply, receiver


ANYIO_BACKENDS = ("asyncio",)


@pytest.fixture(autouse=True)
def no_backoff_waits() -> Iterator[None]:
    """Attempts follow each other at once (the waits chosen are still reported)."""
    with stamina.set_testing(True, attempts=1_000, cap=True):
        yield


# -- the SSRF guard: a deliberate table ---------------------------------------------------------

REFUSED = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://127.1.2.3:8080/", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://2130706433/", "loopback"),  # 127.0.0.1 as one decimal number
    ("http://0x7f000001/", "loopback"),  # ... and in hex
    ("http://10.0.0.5/", "private"),
    ("http://172.16.3.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),  # cloud metadata service
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://100.127.255.254/", "carrier-grade NAT"),
    ("http://224.0.0.1/", "multicast"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped IPv6
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[::ffff:10.1.2.3]/", "private"),
    ("http://[64:ff9b::7f00:1]/", "loopback"),  # NAT64 of 127.0.0.1
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
    ("http://192.0.2.1/", "private"),  # documentation range: not routable
    ("http://240.0.0.1/", "reserved"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_guard_refuses_non_public_addresses(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURL) as info:
        check_url(url)
    assert reason in info.value.reason
    assert info.value.code == "invalid_request"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.215.14/x",
        "file:///etc/passwd",
        "gopher://93.184.215.14/",
        "http://user:pass@93.184.215.14/",
        "not a url",
        "",
        "http:///path-only",
    ],
)
def test_guard_refuses_bad_urls(url: str) -> None:
    with pytest.raises(UnsafeURL):
        check_url(url)


@pytest.mark.parametrize("url", ["http://93.184.215.14/hook", "https://8.8.8.8:8443/a?b=c", "http://[2606:4700::1111]/"])
def test_guard_allows_public_addresses_and_keeps_the_checked_one(url: str) -> None:
    target = check_url(url)
    assert target.address in url
    assert target.connect_url().startswith(("http://", "https://"))


def test_allow_list_and_allow_private() -> None:
    assert check_url("http://127.0.0.1:9/x", allow_hosts=["127.0.0.1"]).address == "127.0.0.1"
    assert check_url("http://localhost:9/x", allow_hosts=["localhost"]).host == "localhost"
    assert check_url("http://10.9.8.7/", allow_hosts=["10.0.0.0/8"]).address == "10.9.8.7"
    with pytest.raises(UnsafeURL):
        check_url("http://10.9.8.7/", allow_hosts=["127.0.0.1"])
    assert check_url("http://192.168.0.9/", allow_private=True).address == "192.168.0.9"
    assert check_url("http://169.254.169.254/", allow_private=True).address == "169.254.169.254"
    for never in ("http://0.0.0.0/", "http://224.0.0.1/"):
        with pytest.raises(UnsafeURL):
            check_url(never, allow_private=True)


def test_sender_settings_are_checked() -> None:
    with pytest.raises(InvalidRequest):
        WebhookSender(max_attempts=0)
    with pytest.raises(InvalidRequest):
        WebhookSender(timeout=0)


# -- signing ---------------------------------------------------------------------------------------


def test_standard_webhook_signature() -> None:
    body = b'{"a":1}'
    headers = standard_webhook_headers("my-token", "msg_1", 1700000000, body)
    expected = base64.b64encode(hmac.new(b"my-token", b"msg_1.1700000000." + body, hashlib.sha256).digest()).decode()
    assert headers == {"webhook-id": "msg_1", "webhook-timestamp": "1700000000", "webhook-signature": f"v1,{expected}"}
    raw = b"0123456789abcdef"
    whsec = standard_webhook_headers("whsec_" + base64.b64encode(raw).decode(), "msg_1", 1, body)
    assert whsec == standard_webhook_headers(raw, "msg_1", 1, body)


@pytest.mark.parametrize(
    ("secret", "verifier_secret"),
    [
        ("whsec_" + base64.b64encode(b"0123456789abcdef0123").decode(), None),  # padded base64
        ("whsec_" + base64.b64encode(b"0123456789abcdef0123").decode().rstrip("="), None),  # unpadded
        ("whsec_" + base64.b64encode(b"0123456789abcdef0").decode().rstrip("="), None),  # two = dropped
        ("my-token", b"my-token"),  # a plain string: its UTF-8 bytes are the key
        ("tok_a-1 ünïcode", "tok_a-1 ünïcode".encode()),
        (b"\x00raw key bytes", None),
    ],
)
def test_standardwebhooks_verifies_what_we_sign(secret: str | bytes, verifier_secret: bytes | None) -> None:
    body = '{"run_id":"r1","output":"é"}'.encode()
    headers = standard_webhook_headers(secret, "msg_1", int(time.time()), body)
    receiver_side = standardwebhooks.Webhook(secret if verifier_secret is None else verifier_secret)
    assert receiver_side.verify(body, headers) == {"run_id": "r1", "output": "é"}
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        receiver_side.verify(body + b" ", headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(b"another key").verify(body, headers)


def test_retry_after_forms() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412475.0) == pytest.approx(5.0)
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


# -- delivery against a real receiver -----------------------------------------------------------


@pytest.mark.server
@pytest.mark.anyio
async def test_retries_5xx_and_429_with_a_stable_webhook_id() -> None:
    with receiver() as hook:
        hook.script("/hook", Reply(503), Reply(429, {"retry-after": "1"}), Reply(200))
        sender = WebhookSender(allow_hosts=["127.0.0.1"], backoff_base=0.01, backoff_max=5)
        attempts = []

        async def seen(attempt) -> None:  # type: ignore[no-untyped-def]
            attempts.append(attempt)

        headers = standard_webhook_headers("s3cret", "msg_fixed", int(time.time()), b"{}")
        result = await sender.deliver(hook.url(), b"{}", headers=headers, webhook_id="msg_fixed", on_attempt=seen)
        assert result.ok and result.attempts == 3 and result.status == 200 and result.webhook_id == "msg_fixed"
        got = hook.for_path("/hook")
        assert [r.headers["webhook-id"] for r in got] == ["msg_fixed"] * 3
        assert all(r.headers["webhook-signature"] == headers["webhook-signature"] for r in got)
        assert [a.status for a in attempts] == [503, 429, 200]
        assert attempts[0].retry_in is not None and attempts[0].retry_in < 1.0  # the backoff: 10 ms, jitter aside
        assert attempts[1].retry_in == 1.0 and attempts[2].retry_in is None  # Retry-After: 1 is what is waited


@pytest.mark.server
@pytest.mark.anyio
async def test_client_errors_are_not_retried_and_redirects_not_followed() -> None:
    with receiver() as hook:
        hook.script("/bad", Reply(400))
        hook.script("/nope", Reply(501))
        hook.script("/moved", Reply(302, {"location": hook.url("/elsewhere")}))
        sender = WebhookSender(allow_hosts=["127.0.0.1"], backoff_base=0.01)
        bad = await sender.deliver(hook.url("/bad"), b"{}")
        assert not bad.ok and bad.attempts == 1 and bad.status == 400
        unimplemented = await sender.deliver(hook.url("/nope"), b"{}")
        assert not unimplemented.ok and unimplemented.attempts == 1 and unimplemented.status == 501
        moved = await sender.deliver(hook.url("/moved"), b"{}")
        assert not moved.ok and moved.attempts == 1 and moved.status == 302 and "redirect" in (moved.error or "")
        assert hook.for_path("/elsewhere") == []


@pytest.mark.server
@pytest.mark.anyio
async def test_timeouts_are_retried_then_fail() -> None:
    with receiver() as hook:
        hook.script("/slow", Reply(200, delay=1.5), Reply(200, delay=1.5))
        sender = WebhookSender(allow_hosts=["127.0.0.1"], timeout=0.3, max_attempts=2, backoff_base=0.01)
        result = await sender.deliver(hook.url("/slow"), b"{}")
        assert not result.ok and result.attempts == 2 and result.status is None
        assert "timeout" in (result.error or "")


@pytest.mark.server
@pytest.mark.anyio
async def test_guard_is_on_by_default_and_connects_to_the_checked_address() -> None:
    with receiver() as hook:
        refused = await WebhookSender().deliver(hook.url(), b"{}")
        assert not refused.ok and refused.attempts == 1 and "unsafe_url" in (refused.error or "")
        assert hook.received == []
        # By name: the request goes to the address checked, the Host header keeps the name.
        sender = WebhookSender(allow_hosts=["localhost"])
        result = await sender.deliver(f"http://localhost:{hook.port}/named", b"{}")
        assert result.ok
        assert hook.for_path("/named")[0].headers["host"] == f"localhost:{hook.port}"


# -- deliveries recorded as runs ----------------------------------------------------------------


@pytest.mark.server
@pytest.mark.anyio
async def test_delivery_runs_record_attempts_and_final_failure() -> None:
    engine = RunEngine("memory://")

    @engine.agent("answer")
    async def answer(ctx) -> str:  # type: ignore[no-untyped-def]
        return "forty-two"

    with receiver() as hook:
        hook.script("/down", Reply(500), Reply(500))
        sender = WebhookSender(allow_hosts=["127.0.0.1"], max_attempts=2, backoff_base=0.01)
        deliveries = WebhookDeliveries(engine, sender, signing_secret="whsec_" + base64.b64encode(b"k" * 24).decode())
        deliveries.add_format("plain", lambda state: {"run_id": state.run_id, "output": state.output})
        async with engine:
            ok_run = await engine.execute("answer", None, mode="async")
            ok_delivery = await deliveries.schedule(ok_run.run_id, hook.url("/up"), format="plain", token="tok")
            again = await deliveries.schedule(ok_run.run_id, hook.url("/up"), format="plain", token="tok")
            assert again == ok_delivery  # one run, one URL: one delivery
            done = await engine.wait(ok_delivery)
            assert done.status is Status.COMPLETED and done.metadata == {"webhook_for": ok_run.run_id}
            [got] = hook.for_path("/up")
            assert got.json() == {"run_id": ok_run.run_id, "output": "forty-two"}
            assert got.headers["authorization"] == "Bearer tok"
            signed = f"{got.headers['webhook-id']}.{got.headers['webhook-timestamp']}.".encode() + got.body
            mac = base64.b64encode(hmac.new(b"k" * 24, signed, hashlib.sha256).digest()).decode()
            assert got.headers["webhook-signature"] == f"v1,{mac}"

            bad_run = await engine.execute("answer", None, mode="async")
            bad_delivery = await deliveries.schedule(bad_run.run_id, hook.url("/down"), format="plain")
            failed = await engine.wait(bad_delivery)
            assert failed.status is Status.FAILED and failed.error is not None
            assert failed.error.code == "delivery_failed"
            assert [c.name for c in failed.tool_calls] == ["http.post", "http.post"]
            assert all(c.done and c.error is not None for c in failed.tool_calls)
            ids = {r.headers["webhook-id"] for r in hook.for_path("/down")}
            assert len(ids) == 1

            with pytest.raises(UnsafeURL):
                await deliveries.schedule(ok_run.run_id, "http://169.254.169.254/", format="plain")
            with pytest.raises(InvalidRequest):
                await deliveries.schedule(ok_run.run_id, hook.url(), format="nope")
