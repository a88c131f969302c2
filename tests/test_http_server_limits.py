"""The server-wide limits (runengine.http.admission, runengine.adapters.uvicorn_http) over real
HTTP: a request without a key is refused before its body is read, bodies being read and
connections are capped (503 with Retry-After), failed authentications are limited per client
address (429), request heads are capped whatever the write pattern (431), and metrics are never
served to API clients when auth is on."""

from __future__ import annotations

import contextlib
import functools
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from faultkit import rss_bytes, serve_process
from httpkit import assert_error, demo_engine, parse_response, read_until_closed, serve, serve_aiohttp
from kit import free_port, until
from runengine.adapters.aiohttp_app import engine_aiohttp_app
from runengine.adapters.asgi import engine_asgi_app
from runengine.adapters.server import build_app
from runengine.engine import RunEngine
from runengine.adapters.uvicorn_http import limited_protocol
from runengine.errors import InvalidRequest
from runengine.http.admission import AuthFailures, ServerLimits, address_key
from runengine.http.apikeys import api_key_auth
from runengine.http.ratelimit import Rate
from runengine.limits import MAX_BODY_BYTES, MAX_HEADER_BYTES

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

ANYIO_BACKENDS = ("asyncio",)  # uvicorn, aiohttp

KEY = "sk-alice"
AUTH = {"authorization": f"Bearer {KEY}"}
#: What `runengine serve` gives uvicorn (adapters/cli.py), for the in-process servers.
SERVE_OPTIONS: dict[str, Any] = {"access_log": False, "h11_max_incomplete_event_size": MAX_HEADER_BYTES}


@contextlib.asynccontextmanager
async def uvicorn_server(limits: ServerLimits | None = None, engine: RunEngine | None = None, **protocol: Any) -> AsyncIterator[int]:
    app = engine_asgi_app(engine or demo_engine(), auth=api_key_auth({KEY: "alice"}), limits=limits)
    async with serve(app, http=limited_protocol(**protocol), **SERVE_OPTIONS) as url:
        yield int(url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def aiohttp_server(limits: ServerLimits | None = None, engine: RunEngine | None = None) -> AsyncIterator[int]:
    app = engine_aiohttp_app(engine or demo_engine(), auth=api_key_auth({KEY: "alice"}), limits=limits)
    async with serve_aiohttp(app) as url:
        yield int(url.rsplit(":", 1)[1])


SERVERS: dict[str, Callable[..., Any]] = {"uvicorn": uvicorn_server, "aiohttp": aiohttp_server}


def post_head(length: int, extra: str = "") -> bytes:
    return f"POST /runs HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n{extra}\r\n".encode()


async def response_before_body(stream: anyio.abc.SocketStream, wait: float = 5.0) -> bytes:
    """What the server answers to a head alone, before any of the body is sent (until it closes)."""
    with anyio.fail_after(wait):
        return await read_until_closed(stream)


# -- 6. nothing is read for a client without a key; bodies and requests in flight are capped --------


@pytest.mark.anyio
@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_a_body_without_a_key_is_refused_401_before_it_is_sent(server: str) -> None:
    async with SERVERS[server]() as port:
        for extra in ("", "authorization: Bearer sk-wrong\r\n", "expect: 100-continue\r\n"):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(post_head(MAX_BODY_BYTES, extra))  # the head only: no body byte follows
                raw = await response_before_body(stream)
                assert b"100 Continue" not in raw
                assert_error(raw.split(b"HTTP/1.1 100 Continue\r\n\r\n")[-1], 401, "authentication_error")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:  # a valid client still is
            assert (await client.post("/runs", json={"agent": "echo", "input": "hi"}, headers=AUTH)).status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_a_valid_client_that_expects_100_continue_is_invited_and_served(server: str) -> None:
    body = json.dumps({"agent": "echo", "input": "hi"}).encode()
    async with SERVERS[server]() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(post_head(len(body), f"authorization: Bearer {KEY}\r\nexpect: 100-continue\r\nconnection: close\r\n"))
            with anyio.fail_after(10):
                assert (await stream.receive()).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            await stream.send(body)
            raw = await read_until_closed(stream)
        status, _, run = parse_response(raw.split(b"HTTP/1.1 100 Continue\r\n\r\n")[-1])
        assert status == 200 and run["status"] == "completed"


@pytest.mark.anyio
@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_a_refusal_before_the_body_has_the_error_format_of_its_profile(server: str) -> None:
    async with SERVERS[server]() as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            refused = await client.post("/acp/runs", json={"agent_name": "echo", "input": []})
            assert refused.status_code == 401
            assert refused.json()["code"] == "authentication_error" and refused.json()["error"]["code"] == "authentication_error"


@pytest.mark.anyio
async def test_an_auth_hook_that_fails_is_a_500_in_the_error_format() -> None:
    def broken(headers: Any) -> str:
        raise RuntimeError("the user directory is down")

    async with serve(engine_asgi_app(demo_engine(), auth=broken), **SERVE_OPTIONS) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for call in (client.get("/runs"), client.post("/runs", json={"agent": "echo"})):
                response = await call
                assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"


@pytest.mark.anyio
@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_bodies_being_read_at_once_are_capped_with_a_503(server: str) -> None:
    async with SERVERS[server](ServerLimits(body_bytes_in_flight=MAX_BODY_BYTES)) as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as slow:
            await slow.send(post_head(MAX_BODY_BYTES, f"authorization: Bearer {KEY}\r\n") + b'{"agent": "echo", "input": "')
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

                async def refused() -> httpx.Response | None:
                    r = await client.post("/runs", json={"agent": "echo", "input": "hi"}, headers=AUTH)
                    return r if r.status_code == 503 else None

                busy = await until(refused, timeout=10)  # once the slow body holds the budget
                assert busy.json()["error"]["code"] == "server_busy" and busy.headers["retry-after"] == "1"
                assert busy.json()["error"]["details"]["limit"] == MAX_BODY_BYTES
                await slow.aclose()  # its hold is released: the others are read again
                ok = await until(lambda: refused_not(client), timeout=10)
                assert ok.status_code == 200


async def refused_not(client: httpx.AsyncClient) -> httpx.Response | None:
    r = await client.post("/runs", json={"agent": "echo", "input": "hi"}, headers=AUTH)
    return r if r.status_code != 503 else None


@pytest.mark.anyio
@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_requests_in_progress_are_capped_with_a_503(server: str) -> None:
    engine = demo_engine()
    started, release = anyio.Event(), anyio.Event()

    @engine.agent("holder")
    async def holder(ctx: Any) -> None:
        started.set()
        await release.wait()

    async with SERVERS[server](ServerLimits(connections=1), engine=engine) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(client.post, "/runs", json={"agent": "holder"}, headers=AUTH))
                await started.wait()  # the one request in progress
                busy = await client.get("/healthz")
                release.set()
            assert busy.status_code == 503, busy.text
            assert busy.json()["error"]["code"] == "server_busy" and busy.headers["retry-after"] == "1"
            assert (await client.get("/healthz")).status_code == 200  # the holder has ended: a place again


async def busy_answer(client: httpx.AsyncClient) -> httpx.Response | None:
    r = await client.get("/healthz")
    return r if r.status_code == 503 else None


@pytest.mark.anyio
async def test_connections_past_the_cap_get_a_503_at_once() -> None:
    async with uvicorn_server(max_connections=2) as port:
        held = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(2)]
        try:
            async with await anyio.connect_tcp("127.0.0.1", port) as third:
                raw = await response_before_body(third)  # nothing sent: answered and closed at once
                error = assert_error(raw, 503, "server_busy")
                assert error["details"]["limit"] == 2 and parse_response(raw)[1]["retry-after"] == "1"
        finally:
            for stream in held:
                await stream.aclose()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert (await until(lambda: ok_answer(client), timeout=10)).status_code == 200  # places again


async def ok_answer(client: httpx.AsyncClient) -> httpx.Response | None:
    with contextlib.suppress(httpx.TransportError):
        r = await client.get("/healthz")
        return r if r.status_code == 200 else None
    return None


def test_server_limits_are_checked() -> None:
    for bad in ({"connections": 0}, {"body_bytes_in_flight": MAX_BODY_BYTES - 1}, {"auth_failures": Rate(0, 60)}):
        with pytest.raises(InvalidRequest):
            ServerLimits(**bad)


ATTACKERS = 400


async def keyless_attack(port: int, pid: int) -> tuple[list[bytes], int]:
    """ATTACKERS connections without a key each announce a 1 MiB body, then send it slowly; the
    answers each got to its head alone, and the server's peak RSS meanwhile."""
    peak = rss_bytes(pid)
    streams = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(ATTACKERS)]
    answers: list[bytes] = [b""] * ATTACKERS
    chunk = b"x" * 65536
    try:
        for stream in streams:
            await stream.send(post_head(MAX_BODY_BYTES))

        async def answer(i: int) -> None:
            with anyio.move_on_after(10):
                answers[i] = await streams[i].receive()

        async def trickle(stream: anyio.abc.SocketStream) -> None:
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                for _ in range(MAX_BODY_BYTES // len(chunk)):
                    await stream.send(chunk)
                    await anyio.sleep(0.1)

        async with anyio.create_task_group() as tg:
            for i in range(ATTACKERS):
                tg.start_soon(answer, i)
        async with anyio.create_task_group() as tg:
            for stream in streams:
                tg.start_soon(trickle, stream)
            for _ in range(30):
                peak = max(peak, rss_bytes(pid))
                await anyio.sleep(0.1)
    finally:
        for stream in streams:
            await stream.aclose()
    return answers, peak


def test_runengine_serve_keyless_bodies_leave_memory_bounded_and_valid_clients_served(tmp_path: Path) -> None:
    """Issue 20, item 6: 600 keyless connections with 1 MiB bodies took the server from 45 to 689 MB."""
    args = ["--store", "memory://", "--delay", "0", "--api-key", f"alice={KEY}", "--auth-failure-limit", "off"]
    with serve_process(args, tmp_path / "serve.log") as server:
        before = rss_bytes(server.pid)
        answers, peak = anyio.run(keyless_attack, server.port, server.pid)
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 401 ")]
        assert len(refused) == ATTACKERS, [a[:60] for a in answers if not a.startswith(b"HTTP/1.1 401 ")][:3]
        print(f"server RSS {before >> 20} MiB before, {peak >> 20} MiB at the peak")
        # Reading them all would take 400 MiB; refused, each holds at most its lingering read's buffers.
        assert peak - before < 256 * 2**20, (before, peak)
        reply = httpx.post(server.base + "/runs", json={"agent": "echo", "input": "hi"}, headers=AUTH, timeout=30)
        assert reply.status_code == 200 and reply.json()["status"] == "completed"


def test_runengine_serve_caps_connections_as_configured(tmp_path: Path) -> None:
    with serve_process(["--store", "memory://"], tmp_path / "serve.log", env={"RUNENGINE_MAX_CONNECTIONS": "3"}) as server:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as fourth:
                raw = b""
                while chunk := fourth.recv(65536):
                    raw += chunk
            assert_error(raw, 503, "server_busy")
        finally:
            for sock in held:
                sock.close()


# -- 9. failed authentications are limited per client address ----------------------------------------


def client_from(address: str, port: int) -> httpx.AsyncClient:
    """An HTTP client whose connections come from `address` (any of 127.0.0.0/8 reaches loopback)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", transport=transport, timeout=30)


@pytest.mark.anyio
@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_failed_authentications_are_limited_per_client_address(server: str) -> None:
    async with SERVERS[server](ServerLimits(auth_failures=Rate(5, 60.0))) as port:
        async with client_from("127.0.0.1", port) as guesser, client_from("127.0.0.2", port) as other:
            for i in range(5):  # without a body (the app refuses) and with one (refused before it is read)
                wrong = {"authorization": f"Bearer sk-guess-{i}"}
                r = await (guesser.get("/runs", headers=wrong) if i % 2 else guesser.post("/runs", json={}, headers=wrong))
                assert r.status_code == 401, r.text
            for attempt in (
                guesser.get("/runs", headers={"authorization": "Bearer sk-guess-5"}),
                guesser.post("/runs", json={"agent": "echo"}, headers={"authorization": "Bearer sk-guess-6"}),
                guesser.get("/runs", headers=AUTH),  # not even the right key is tried from there now
                guesser.get("/healthz"),  # nor anything else, until the window ends
            ):
                r = await attempt
                assert r.status_code == 429, r.text
                assert r.json()["error"]["code"] == "rate_limited" and 55 <= int(r.headers["retry-after"]) <= 60
                assert r.json()["error"]["details"]["limit"] == 5
            assert (await other.get("/runs", headers=AUTH)).status_code == 200  # another address is not held back
            assert (await other.get("/runs")).status_code == 401


@pytest.mark.anyio
async def test_behind_a_trusted_proxy_the_forwarded_client_address_counts() -> None:
    app = engine_asgi_app(demo_engine(), auth=api_key_auth({KEY: "alice"}), limits=ServerLimits(auth_failures=Rate(2, 60.0)))
    options = {**SERVE_OPTIONS, "proxy_headers": True, "forwarded_allow_ips": "127.0.0.1"}
    async with serve(app, http=limited_protocol(), **options) as url:
        port = int(url.rsplit(":", 1)[1])
        async with client_from("127.0.0.1", port) as proxy, client_from("127.0.0.2", port) as untrusted:
            for _ in range(2):
                assert (await proxy.get("/runs", headers={"x-forwarded-for": "203.0.113.7"})).status_code == 401
            assert (await proxy.get("/runs", headers={"x-forwarded-for": "203.0.113.7"})).status_code == 429
            assert (await proxy.get("/runs", headers={"x-forwarded-for": "203.0.113.8", **AUTH})).status_code == 200
            # A peer that is not a trusted proxy counts as itself, whatever it forwards.
            for name in ("203.0.113.9", "203.0.113.10"):
                assert (await untrusted.get("/runs", headers={"x-forwarded-for": name})).status_code == 401
            assert (await untrusted.get("/runs", headers={"x-forwarded-for": "203.0.113.11"})).status_code == 429


def test_runengine_serve_limits_failed_authentications_by_default(tmp_path: Path) -> None:
    """Issue 20, item 9: 1,000 key guesses in 1.9 s were all tried."""
    with serve_process(["--store", "memory://", "--api-key", f"alice={KEY}"], tmp_path / "serve.log") as server:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            statuses = [client.get("/runs", headers={"x-api-key": f"sk-guess-{i}"}).status_code for i in range(60)]
        assert statuses == [401] * 20 + [429] * 40


def test_failures_are_counted_per_window_and_ipv6_per_64() -> None:
    now = [0.0]
    failures = AuthFailures(2, 60.0, clock=lambda: now[0])
    failures.failed("2001:db8::1")
    failures.failed("2001:db8::ffff:2")  # the same /64
    assert failures.retry_after("2001:db8::3") == 60.0
    assert failures.retry_after("2001:db8:0:1::1") is None  # another /64
    assert failures.retry_after("::ffff:10.0.0.1") is None and address_key("::ffff:10.0.0.1") == "10.0.0.1"
    now[0] = 60.0
    assert failures.retry_after("2001:db8::1") is None  # the window has ended


def test_the_failure_table_stays_bounded() -> None:
    failures = AuthFailures(1, 60.0, clock=lambda: 0.0)
    failures.MAX_ADDRESSES = 100
    for i in range(1000):
        failures.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(failures._windows) == 100 and failures.retry_after("10.0.3.231") is not None


# -- 10. a request's head is capped whatever the write pattern --------------------------------------


def head_of(size: int) -> bytes:
    """A GET whose request line and header fields take exactly `size` bytes (blank line included)."""
    base = b"GET /healthz HTTP/1.1\r\nhost: test\r\nx-pad: \r\n\r\n"
    return base.replace(b"x-pad: ", b"x-pad: " + b"a" * (size - len(base)))


async def send_head(port: int, head: bytes, pieces: int) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        step = -(-len(head) // pieces)
        with contextlib.suppress(OSError, anyio.BrokenResourceError):
            for i in range(0, len(head), step):
                await stream.send(head[i : i + step])
        return await read_until_closed(stream)


@pytest.mark.anyio
async def test_request_heads_over_the_limit_are_refused_however_they_are_written() -> None:
    async with uvicorn_server() as port:
        assert parse_response(await send_head(port, head_of(MAX_HEADER_BYTES) + b"", 1))[0] == 200
        for size in (MAX_HEADER_BYTES + 1, 17 * 1024, 100 * 1024):
            for pieces in (1, 7, size // 1024):  # one write, a few, many small ones
                raw = await send_head(port, head_of(size), pieces)
                status = int(raw.split(b" ", 2)[1])
                assert status in (431, 400), (size, pieces, raw[:200])
                if status == 431:
                    assert assert_error(raw, 431, "header_fields_too_large")["details"]["limit_bytes"] == MAX_HEADER_BYTES


@pytest.mark.anyio
async def test_a_large_head_pipelined_behind_a_small_request_is_refused() -> None:
    async with uvicorn_server() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n" + head_of(100 * 1024))
            raw = await read_until_closed(stream)
        first, _, second = raw.partition(b"HTTP/1.1 431 ")
        assert first.startswith(b"HTTP/1.1 200 ") and second, raw[:400]


def test_runengine_serve_refuses_a_large_head_in_one_write(tmp_path: Path) -> None:
    with serve_process(["--store", "memory://"], tmp_path / "serve.log") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head_of(17 * 1024))
            raw = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(65536):
                    raw += chunk
        assert int(raw.split(b" ", 2)[1]) == 431, raw[:200]


# -- 11. metrics are never served to API clients when auth is on; the OpenAPI documents are public -----


def test_build_app_will_not_serve_metrics_to_api_clients() -> None:
    pytest.importorskip("prometheus_client")
    from runengine.adapters.metrics import PrometheusObserver

    with pytest.raises(InvalidRequest, match="port of their own"):
        build_app(demo_engine(), auth=api_key_auth({KEY: "alice"}), metrics=PrometheusObserver())


def test_runengine_serve_with_keys_serves_metrics_only_on_the_metrics_port(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    metrics_port = free_port()
    args = ["--store", "memory://", "--delay", "0", "--api-key", f"alice={KEY}", "--metrics-port", str(metrics_port)]
    with serve_process(args, tmp_path / "serve.log") as server:
        assert httpx.post(server.base + "/runs", json={"agent": "echo", "input": "x"}, headers=AUTH, timeout=30).status_code == 200
        for headers in ({}, AUTH):  # not to anyone, nor to a principal: every principal's agents are in there
            assert httpx.get(server.base + "/metrics", headers=headers, timeout=30).status_code in (401, 404)
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30)
        assert scraped.status_code == 200 and 'runengine_runs_ended_total{agent="echo"' in scraped.text
        assert f"metrics: http://127.0.0.1:{metrics_port}/metrics" in server.log.read_text()


@pytest.mark.anyio
async def test_both_openapi_documents_are_public_and_name_no_agent_with_auth_on() -> None:
    async with uvicorn_server() as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for path in ("/openapi.json", "/v1/openapi.json"):
                for headers in ({}, AUTH):
                    response = await client.get(path, headers=headers)
                    assert response.status_code == 200, (path, headers, response.text)
                    assert "echo" not in json.dumps(response.json()), path  # the agents are for principals
