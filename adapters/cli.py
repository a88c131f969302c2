"""The `runengine` command: serve the engine over HTTP, and follow / list / show runs.

    runengine serve [--store sqlite:///runengine.db] [--host 127.0.0.1] [--port 8000] [--app module:engine]
                    [--header-timeout 10] [--body-timeout 30] [--keep-alive-timeout 5]
                    [--api-key NAME=KEY ...] [--rate-limit 600/minute] [--webhook-allow-host HOST ...]
                    [--config runengine.toml]        (every option also RUNENGINE_<NAME>: docs/configuration.md)
                    [--log-format console|json] [--metrics/--no-metrics] [--cors-origin ORIGIN ...]
    runengine tail RUN_ID [--after-seq N] [--url http://127.0.0.1:8000]
    runengine runs [--session-id S] [--status S] [--limit N]
    runengine show RUN_ID
    runengine prune --older-than 30d [--store URL] [--dry-run]
    runengine export RUN_ID [--store URL] [-o FILE]
    runengine import FILE [--store URL]

`main` is a click group: a new command is one more `@main.command()` function.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
import stamina
from httpx_sse import connect_sse

from runengine import __version__
from runengine.adapters.logs import LOG_FORMATS, LogFormat, configure_logging
from runengine.engine import RunEngine
from runengine.errors import InvalidRequest, RunEngineError
from runengine.events import TERMINAL_TYPES
from runengine.ports import EventStore
from runengine.adapters.server import PLATFORM_RATE
from runengine.http.ratelimit import Rate
from runengine.worker import LOST_POLICIES

from .configfile import ENV_PREFIX, config_option

DEFAULT_URL = "http://127.0.0.1:8000"

url_option = click.option(
    "--url", default=DEFAULT_URL, show_default=True, envvar="RUNENGINE_URL", help="The server's base URL."
)
token_option = click.option(
    "--token", default=None, envvar="RUNENGINE_TOKEN", help="Sent as `Authorization: Bearer <token>`."
)
log_format_option = click.option(
    "--log-format",
    default="console",
    show_default=True,
    envvar="RUNENGINE_LOG_FORMAT",
    type=click.Choice(list(LOG_FORMATS)),
    help="console: readable lines; json: one JSON object per line (run_id on every line of a run).",
)


@click.group()
@click.version_option(__version__, prog_name="runengine")
def main() -> None:
    """runengine: an event-sourced run engine for agent runs."""


# -- serve ------------------------------------------------------------------------


def load_object(ref: str, what: str) -> Any:
    """`module:attribute` -> the object, as uvicorn loads its app (the current directory is importable)."""
    from uvicorn.importer import ImportFromStringError, import_from_string

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return import_from_string(ref)
    except (ImportFromStringError, ImportError) as exc:
        raise click.BadParameter(f"cannot load {ref!r} (module:attribute): {exc}", param_hint=what) from None


def load_engine(ref: str) -> RunEngine:
    """`--app module:engine`: a RunEngine, or a callable returning one."""
    engine = load_object(ref, "--app")
    if callable(engine) and not isinstance(engine, RunEngine):
        engine = engine()
    if not isinstance(engine, RunEngine):
        raise click.BadParameter(f"{ref!r} is not a RunEngine", param_hint="--app")
    return engine


# -- serve: access options (API keys, rate limits, webhook hosts) ---------------------------


class ApiKeyType(click.ParamType):
    """`NAME=KEY` -> (NAME, KEY); the environment variable holds several, comma-separated."""

    name = "NAME=KEY"
    envvar_list_splitter = ","

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        from runengine.http.apikeys import parse_api_key

        try:
            return parse_api_key(str(value))
        except InvalidRequest as exc:
            self.fail(exc.message, param, ctx)


#: `--rate-limit off`: no limit on any surface, /platform's default included.
RATE_OFF = "off"


class RateType(click.ParamType):
    """`600/minute` -> Rate(600, 60.0); `off` -> RATE_OFF."""

    name = "N/PERIOD|off"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Rate | str:
        if isinstance(value, Rate) or value == RATE_OFF:
            return value
        try:
            return Rate.parse(str(value))
        except InvalidRequest as exc:
            self.fail(exc.message, param, ctx)


_HOST_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?", re.IGNORECASE)


class HostType(click.ParamType):
    """A host name, an IP address or a network (CIDR); several comma-separated in the environment."""

    name = "HOST"
    envvar_list_splitter = ","

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        try:
            ipaddress.ip_network(text, strict=False)
            return text
        except ValueError:
            pass
        if not _HOST_NAME.fullmatch(text):
            self.fail(f"{text!r} is not a host name, an IP address or a network like 10.0.0.0/8", param, ctx)
        return text


def access_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The serve options that decide who may call, how often, and where callbacks may go."""
    options = [
        click.option(
            "--api-key",
            "api_keys",
            multiple=True,
            type=ApiKeyType(),
            envvar=f"{ENV_PREFIX}_API_KEYS",
            help="An API key (repeatable; env: comma-separated): requests must send"
            " `Authorization: Bearer KEY` or `x-api-key: KEY`, and act as NAME. None: the server is open.",
        ),
        click.option(
            "--rate-limit",
            type=RateType(),
            default=None,
            help="Requests per principal on every surface (600/minute; per second, minute, hour or day), with"
            " X-RateLimit-* headers and 429 beyond; shared by every process on a PostgreSQL store."
            f" Without it only /platform is limited, at its seed's {PLATFORM_RATE}; `off`: nothing is.",
        ),
        click.option(
            "--webhook-allow-host",
            "webhook_allow_hosts",
            multiple=True,
            type=HostType(),
            envvar=f"{ENV_PREFIX}_WEBHOOK_ALLOW_HOSTS",
            help="A host name, IP address or network (CIDR) callbacks and webhooks may reach although it is"
            " private (repeatable; env: comma-separated). Other private addresses stay refused.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _access_summary(api_keys: tuple[tuple[str, str], ...], auth_ref: str | None, rate_limit: Rate | str | None) -> str:
    """The start-up line's account of who may call and how often."""
    if api_keys:
        auth = f"{len(api_keys)} API key{'s' if len(api_keys) != 1 else ''}"
    elif auth_ref:
        auth = f"auth hook {auth_ref}"
    else:
        auth = "open: no API keys, every request is served"
    if rate_limit == RATE_OFF:
        limit = "off"
    else:
        limit = f"{rate_limit} per principal" if rate_limit else f"/platform {PLATFORM_RATE} per principal"
    return f"auth: {auth}; rate limit: {limit}"


@main.command(context_settings={"auto_envvar_prefix": ENV_PREFIX})
@click.option(
    "--store",
    default="sqlite:///runengine.db",
    show_default=True,
    envvar="RUNENGINE_STORE",
    help="Store URL for the demo engine (sqlite:///file.db, memory://, postgresql://...).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--app", "app_ref", default=None, envvar=f"{ENV_PREFIX}_APP", help="module:engine, your RunEngine (default: the demo agents)."
)
@click.option(
    "--auth",
    "auth_ref",
    default=None,
    envvar=f"{ENV_PREFIX}_AUTH",
    help="module:function, an auth hook given the request headers (instead of --api-key).",
)
@click.option("--delay", default=0.05, show_default=True, type=float, help="Seconds between demo tokens.")
@click.option(
    "--default-agent",
    default="echo",
    show_default=True,
    help="The agent a /v1 (seed 004) run without persona_id, or an /ai chat without agent, runs;"
    " '' makes them name one.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="The server's and the engine's log level.",
)
@log_format_option
@click.option(
    "--metrics/--no-metrics",
    default=None,
    help="Serve Prometheus metrics at GET /metrics (default: yes when prometheus-client is installed).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="A browser origin (https://app.example.com, or *) allowed to call the API; repeatable.",
)
@click.option(
    "--worker/--no-worker",
    "run_worker",
    default=None,
    envvar=f"{ENV_PREFIX}_WORKER",
    help="With a store that has a work queue (postgresql://): also execute queued runs in this process"
    " (default: yes for the demo engine; as configured for --app).",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds for a request's headers to arrive (from the connection or the previous response);"
    " then the connection is closed, after a 408 if part of a request came.",
)
@click.option(
    "--body-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds for a request's whole body to arrive; then a 408 and the connection is closed.",
)
@click.option(
    "--keep-alive-timeout",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds an idle connection is kept open after a response.",
)
@access_options
@config_option("serve")
@click.pass_context
def serve(
    ctx: click.Context,
    store: str,
    host: str,
    port: int,
    app_ref: str | None,
    auth_ref: str | None,
    delay: float,
    default_agent: str,
    log_level: str,
    log_format: LogFormat,
    metrics: bool | None,
    cors_origins: tuple[str, ...],
    run_worker: bool | None,
    header_timeout: float,
    body_timeout: float,
    keep_alive_timeout: float,
    api_keys: tuple[tuple[str, str], ...],
    rate_limit: Rate | str | None,
    webhook_allow_hosts: tuple[str, ...],
) -> None:
    """Serve the native API and the live page (uvicorn).

    Every option is also an environment variable (RUNENGINE_<NAME>) and a key of the --config file:
    docs/configuration.md."""
    import uvicorn

    from runengine.adapters.asgi import engine_asgi_app
    from runengine.adapters.uvicorn_http import header_timeout_protocol
    from runengine.adapters.webhooks import WebhookSender
    from runengine.http.apikeys import api_key_auth, keys_by_secret

    from runengine.demo import register_demo_agents

    if app_ref is not None:
        if ctx.get_parameter_source("store") is click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError("--store applies to the demo engine; with --app your engine has its own store")
        engine = load_engine(app_ref)
    else:
        try:
            engine = register_demo_agents(RunEngine(store), delay=delay)
        except RunEngineError as exc:
            raise click.BadParameter(exc.message, param_hint="--store") from None
    if engine.queue is not None:  # a shared store: runs go through its work queue
        from runengine.worker import WorkerOptions

        if run_worker or (run_worker is None and app_ref is None):
            engine.worker_options = engine.worker_options or WorkerOptions()
        elif run_worker is False:
            engine.worker_options = None
    elif run_worker:
        raise click.UsageError("--worker needs a store with a work queue (postgresql://)")
    if api_keys and auth_ref:
        raise click.UsageError("give --api-key or --auth, not both")
    try:
        auth = api_key_auth(keys_by_secret(api_keys)) if api_keys else None
    except InvalidRequest as exc:
        raise click.BadParameter(exc.message, param_hint="--api-key") from None
    if auth_ref:
        auth = load_object(auth_ref, "--auth")
    configure_logging(log_level, log_format)
    observer = _instrument(metrics)
    click.echo(
        f"runengine {__version__}: http://{host}:{port}/ (agents: {', '.join(a.name for a in engine.agents)});"
        f" {_access_summary(api_keys, auth_ref, rate_limit)}"
    )
    asgi = engine_asgi_app(
        engine,
        auth=auth,
        body_timeout=body_timeout,
        cors_origins=cors_origins,
        metrics=observer,
        rate_limit=rate_limit if isinstance(rate_limit, Rate) else None,
        platform_rate=None if rate_limit == RATE_OFF else PLATFORM_RATE,
        webhook_sender=WebhookSender(allow_hosts=webhook_allow_hosts),
        default_agent=default_agent or None,
    )
    config = uvicorn.Config(
        asgi,
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,  # configure_logging formats uvicorn's lines too
        lifespan="on",
        timeout_graceful_shutdown=3,
        http=header_timeout_protocol(header_timeout),
        timeout_keep_alive=keep_alive_timeout,  # type: ignore[arg-type]  # uvicorn types it int; any number works
    )
    try:
        _draining_server(config, asgi).run()
    except KeyboardInterrupt:  # uvicorn raises the Ctrl+C again once it has stopped cleanly
        pass


def _draining_server(config: Any, asgi: Any) -> Any:
    """uvicorn's Server whose first SIGINT / SIGTERM also ends the open streams with a reconnect
    hint (ASGIApp.drain), so the graceful shutdown does not wait out, then cut, them."""
    import asyncio

    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            try:
                asyncio.get_running_loop().call_soon_threadsafe(asgi.drain)
            except RuntimeError:  # no loop yet (or any more): nothing is streaming
                pass

    return Server(config)


def _instrument(metrics: bool | None) -> Any:
    """Install the tracing observer (if OpenTelemetry is there) and, as asked, the metrics one."""
    try:
        from runengine.adapters.tracing import install_tracing
    except ImportError:
        pass
    else:
        install_tracing()
    if metrics is False:
        return None
    try:
        from runengine.adapters.metrics import install_metrics
    except ImportError:
        if metrics:
            raise click.UsageError("--metrics needs prometheus-client: pip install 'runengine[metrics]'") from None
        return None
    return install_metrics()


# -- client commands ----------------------------------------------------------------


def _client(url: str, token: str | None, timeout: httpx.Timeout | float = 30.0) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)


def _get_json(client: httpx.Client, path: str, **query: Any) -> Any:
    try:
        response = client.get(path, params={k: v for k, v in query.items() if v is not None})
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {client.base_url}: {exc}") from None
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
    if response.status_code >= 400:
        error = (body or {}).get("error", {})
        raise click.ClickException(f"{response.status_code} {error.get('code', '')}: {error.get('message', response.text)}")
    return body


def _line(event: dict[str, Any]) -> str:
    return f"{event['seq']:>6}  {event['type']:<22} {json.dumps(event['data'], ensure_ascii=False)}"


@main.command()
@click.argument("run_id")
@click.option("--after-seq", default=0, show_default=True, type=click.IntRange(min=0), help="Start after this seq.")
@click.option("--json", "as_json", is_flag=True, help="Print each event's wire JSON, one per line.")
@click.option("--retries", default=20, show_default=True, type=click.IntRange(min=0), help="Reconnections allowed in a row without progress.")
@url_option
@token_option
def tail(run_id: str, after_seq: int, as_json: bool, retries: int, url: str, token: str | None) -> None:
    """Follow a run's events over SSE until it ends, reconnecting from the last seq after a drop."""
    cursor = after_seq
    timeout = httpx.Timeout(10.0, read=60.0)  # the server sends a keep-alive every 15 s

    def lost(exc: Exception) -> bool:
        """stamina's `on`: reconnect after a transport error (saying so)."""
        if not isinstance(exc, httpx.TransportError):
            return False
        click.echo(f"-- connection lost ({type(exc).__name__}); resuming after seq {cursor}", err=True)
        return True

    def follow(client: httpx.Client) -> bool:
        """One connection: print the events after `cursor`; whether the run has ended."""
        nonlocal cursor
        start = cursor
        try:
            with connect_sse(client, "GET", f"/runs/{run_id}/events", headers={"last-event-id": str(cursor)}) as source:
                if source.response.status_code == 204:
                    return True  # the run has ended and we have seen everything
                if source.response.status_code >= 400:
                    source.response.read()
                    error = source.response.json().get("error", {})
                    raise click.ClickException(f"{source.response.status_code} {error.get('code')}: {error.get('message')}")
                for sse in source.iter_sse():
                    if not sse.data:  # the retry hint and keep-alive comments carry no event
                        continue
                    if sse.event == "stream.error":
                        raise httpx.RemoteProtocolError(f"the server's stream failed: {sse.data}")
                    event = json.loads(sse.data)
                    click.echo(sse.data if as_json else _line(event))
                    cursor = event["seq"]
                    if event["type"] in TERMINAL_TYPES:
                        return True
        except httpx.TransportError as exc:
            if cursor > start:
                lost(exc)
                raise _Progressed from exc
            raise
        return False

    with _client(url, token, timeout) as client:
        while True:  # each pass: a fresh budget of `retries` reconnections in a row without progress
            try:
                for attempt in stamina.retry_context(
                    on=lost, attempts=retries + 1, timeout=None, wait_initial=0.2, wait_max=2.0, wait_jitter=0.2
                ):
                    with attempt:
                        ended = follow(client)
            except _Progressed:
                continue
            except httpx.TransportError as exc:
                raise click.ClickException(f"connection lost {retries + 1} times in a row: {exc}") from None
            if ended:
                return


class _Progressed(Exception):
    """The connection dropped after bringing events: reconnect at once, with a fresh retry budget."""


@main.command()
@click.option("--session-id", default=None)
@click.option("--status", default=None, help="pending, running, waiting_for_input, completed, failed, cancelled")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 200))
@click.option("--before", default=None, help="Cursor from a previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print the response JSON.")
@url_option
@token_option
def runs(
    session_id: str | None, status: str | None, limit: int, before: str | None, as_json: bool, url: str, token: str | None
) -> None:
    """List runs, newest first."""
    with _client(url, token) as client:
        page = _get_json(client, "/runs", session_id=session_id, status=status, limit=limit, before=before)
    if as_json:
        click.echo(json.dumps(page, indent=2, ensure_ascii=False))
        return
    for run in page["runs"]:
        click.echo(
            f"{run['run_id']}  {run['status']:<18} {run['agent']:<12} seq {run['last_seq']:<6} "
            f"{run['created_at'] or ''}  {run['session_id'] or ''}".rstrip()
        )
    if page["next_before"]:
        click.echo(f"-- more: --before {page['next_before']}", err=True)


@main.command()
@click.argument("run_id")
@url_option
@token_option
def show(run_id: str, url: str, token: str | None) -> None:
    """Print a run's folded state (the run object) as JSON."""
    with _client(url, token) as client:
        click.echo(json.dumps(_get_json(client, f"/runs/{run_id}"), indent=2, ensure_ascii=False))


# -- worker ---------------------------------------------------------------------------


@main.command()
@click.option(
    "--store",
    default=None,
    envvar="RUNENGINE_STORE",
    help="Store URL with a work queue (postgresql://...) for the demo engine.",
)
@click.option("--app", "app_ref", default=None, help="module:engine, your RunEngine (default: the demo agents).")
@click.option("--lease", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Lease seconds.")
@click.option("--heartbeat", default=None, type=click.FloatRange(min=0, min_open=True), help="Renew leases this often (default lease/3).")
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(min=1), help="Runs executed at once.")
@click.option("--poll", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Queue re-check seconds.")
@click.option("--on-lost", default="resume", show_default=True, type=click.Choice(list(LOST_POLICIES)), help="A lost worker's runs: resume from their logs, fail (worker_lost), or requeue (run again from the start).")
@click.option("--max-attempts", default=3, show_default=True, type=click.IntRange(min=1), help="Executions in all of a run whose worker keeps getting lost, then it fails worker_lost.")
@click.option("--drain-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="On SIGTERM: seconds to finish in-flight runs before handing them back.")
@click.option("--delay", default=0.05, show_default=True, type=float, help="Seconds between demo tokens.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@log_format_option
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port (GET /metrics; needs runengine[metrics]).",
)
def worker(
    store: str | None,
    app_ref: str | None,
    lease: float,
    heartbeat: float | None,
    concurrency: int,
    poll: float,
    on_lost: str,
    max_attempts: int,
    drain_timeout: float,
    delay: float,
    log_level: str,
    log_format: LogFormat,
    metrics_port: int | None,
) -> None:
    """Execute queued runs (no HTTP) until SIGINT / SIGTERM, then stop gracefully."""
    import signal

    import anyio

    configure_logging(log_level, log_format)
    observer = _instrument(metrics_port is not None)
    if observer is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, registry=observer.registry)  # a thread of its own

    from runengine.demo import register_demo_agents
    from runengine.worker import WorkerOptions

    options = WorkerOptions(
        lease=lease,
        heartbeat=heartbeat,
        concurrency=concurrency,
        poll=poll,
        on_lost=on_lost,  # type: ignore[arg-type]
        max_attempts=max_attempts,
        drain_timeout=drain_timeout,
    )
    if app_ref is not None:
        if store is not None:
            raise click.UsageError("--store applies to the demo engine; with --app your engine has its own store")
        engine = load_engine(app_ref)
        engine.worker_options = options
    else:
        if store is None:
            raise click.UsageError("give --store postgresql://... (or --app module:engine)")
        try:
            engine = register_demo_agents(RunEngine(store, worker=options), delay=delay)
        except RunEngineError as exc:
            raise click.BadParameter(exc.message, param_hint="--store") from None
    if engine.queue is None:
        raise click.UsageError("this engine's store has no work queue: a worker needs postgresql://")

    async def work() -> None:
        async with engine:
            click.echo(
                f"runengine {__version__}: worker {engine.worker_id} ready (agents: {', '.join(a.name for a in engine.agents)})",
                err=True,
            )
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    click.echo(f"worker {engine.worker_id}: stopping", err=True)
                    break

    try:
        anyio.run(work)
    except RunEngineError as exc:
        raise click.ClickException(exc.message) from None


# -- data lifecycle: prune, export, import (on the store itself, no server) ----------------

store_url_option = click.option(
    "--store",
    default="sqlite:///runengine.db",
    show_default=True,
    envvar="RUNENGINE_STORE",
    help="Store URL (sqlite:///file.db, postgresql://...).",
)

_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

T = TypeVar("T")


class Duration(click.ParamType):
    """`30d`, `12h`, `90m`, `45s`, `2w` -> a timedelta."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = _DURATION.fullmatch(str(value).strip())
        if match is None:
            self.fail(f"{value!r} is not a duration like 30d, 12h, 90m or 45s", param, ctx)
        amount = timedelta(**{_UNITS[match[2]]: int(match[1])})
        if amount <= timedelta(0):
            self.fail("the duration must be positive", param, ctx)
        return amount


def _on_store(url: str, action: Callable[[EventStore], Awaitable[T]]) -> T:
    """Open the store `url` names, run `action` on it, close it; engine errors become CLI errors."""
    import anyio

    from runengine.stores import open_store

    async def run() -> T:
        store = open_store(url)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return anyio.run(run)
    except RunEngineError as exc:
        raise click.ClickException(exc.message) from None


@main.command()
@click.option("--older-than", required=True, type=Duration(), help="Delete runs that ended longer ago than this (30d, 12h, 90m).")
@click.option("--dry-run", is_flag=True, help="Only list the runs that would be deleted.")
@store_url_option
def prune(older_than: timedelta, dry_run: bool, store: str) -> None:
    """Delete ended runs (events, snapshot, idempotency records) older than a duration. Active runs stay."""
    from runengine.retention import sweep

    cutoff = datetime.now(timezone.utc) - older_than

    async def expired(target: EventStore) -> list[str]:
        found: list[str] = []
        after: str | None = None
        while True:
            page = await target.list_ended_runs(ended_before=cutoff, limit=500, after=after)
            found.extend(run.run_id for run in page.runs)
            after = page.next_after
            if after is None:
                return found

    if dry_run:
        for run_id in _on_store(store, expired):
            click.echo(run_id)
        return
    deleted = _on_store(store, lambda target: sweep(target, ended_before=cutoff))
    click.echo(f"deleted {len(deleted)} run(s) that ended before {cutoff.isoformat(timespec='seconds')}")


@main.command()
@click.argument("run_id")
@click.option(
    "-o", "--output", default="-", type=click.Path(dir_okay=False, allow_dash=True), help="File to write (default: stdout)."
)
@store_url_option
def export(run_id: str, output: str, store: str) -> None:
    """Write a run's log as JSON lines: one event per line, in the wire format."""
    from runengine.logfile import export_run

    if output == "-":
        _on_store(store, lambda target: export_run(target, run_id, click.get_text_stream("stdout").write))
        return
    # Written beside the target, then renamed: the file appears, complete, only if the export succeeds.
    target_path = Path(output).resolve()
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=target_path.parent, delete=False) as out:
        temporary = Path(out.name)
        try:
            count = _on_store(store, lambda target: export_run(target, run_id, out.write))
        except BaseException:
            out.close()
            temporary.unlink()
            raise
    temporary.replace(target_path)
    click.echo(f"exported run {run_id}: {count} events to {output}", err=True)


@main.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@store_url_option
def import_log(file: Any, store: str) -> None:
    """Load a run's log written by `export` (an ended run, whose id the store does not have)."""
    from runengine.logfile import import_run, parse_log

    try:
        events = parse_log(file)
    except RunEngineError as exc:
        raise click.ClickException(exc.message) from None
    state = _on_store(store, lambda target: import_run(target, events))
    click.echo(f"imported run {state.run_id}: {len(events)} events, {state.status.value}")


if __name__ == "__main__":  # pragma: no cover
    main()
