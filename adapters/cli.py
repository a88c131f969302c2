"""The `runengine` command: serve the engine over HTTP, and follow / list / show runs.

    runengine serve [--store sqlite:///runengine.db] [--host 127.0.0.1] [--port 8000] [--app module:engine]
                    [--header-timeout 10] [--body-timeout 30] [--keep-alive-timeout 5]
                    [--api-key NAME=KEY ...] [--rate-limit 600/minute] [--webhook-allow-host HOST ...]
                    [--config runengine.toml]        (every option also RUNENGINE_<NAME>: docs/configuration.md)
                    [--log-format console|json] [--log-locals] [--metrics/--no-metrics] [--metrics-port PORT] [--cors-origin ORIGIN ...]
                    [--max-connections 1000] [--max-body-bytes-in-flight 67108864] [--auth-failure-limit 20/minute]
                    [--forwarded-allow-ips 127.0.0.1]
    runengine tail RUN_ID [--after-seq N] [--url http://127.0.0.1:8000]
    runengine runs [--session-id S] [--status S] [--limit N]
    runengine show RUN_ID
    runengine prune --older-than 30d --store URL [--dry-run]
    runengine export RUN_ID --store URL [-o FILE]
    runengine import FILE --store URL
    runengine check-replay --app module:engine --store URL [--agent NAME ...] [--since 7d] [--in-flight]

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
from runengine.adapters.profiles.durable_streams import DEFAULT_PREFIX as DURABLE_STREAMS_PREFIX
from runengine.adapters.profiles.durable_streams import LONG_POLL_SECONDS as DURABLE_STREAMS_LONG_POLL
from runengine.adapters.server import PLATFORM_RATE
from runengine.http.ratelimit import Rate
from runengine.http.streaming import RUN_DELETED_EVENT
from runengine.limits import AUTH_FAILURE_WINDOW, MAX_AUTH_FAILURES, MAX_BODY_BYTES, MAX_BODY_BYTES_IN_FLIGHT, MAX_CONNECTIONS
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
log_locals_option = click.option(
    "--log-locals/--no-log-locals",
    default=False,
    envvar="RUNENGINE_LOG_LOCALS",
    help="Tracebacks show every frame's local variables: a run's state, input and metadata (secrets, "
    "personal data). For debugging on your own machine only; off by default.",
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


def load_engine(ref: str, store: str | None = None, *, on_command_line: bool = False) -> RunEngine:
    """`--app module:engine`: a RunEngine, or a callable returning one. `store` (a --store given
    on the command line, in the environment or the config file) becomes its store if it was
    built without one (`RunEngine()`). An engine with a store of its own keeps it: a --store on
    the command line is then a usage error; RUNENGINE_STORE or the config file's (which apps
    often read themselves to build their engine) are left to it."""
    engine = load_object(ref, "--app")
    if callable(engine) and not isinstance(engine, RunEngine):
        engine = engine()
    if not isinstance(engine, RunEngine):
        raise click.BadParameter(f"{ref!r} is not a RunEngine", param_hint="--app")
    if store is not None:
        if engine.store_chosen and not on_command_line:
            return engine
        if engine.store_chosen:
            raise click.UsageError(
                f"--store: the engine {ref} was built with a store of its own; leave out --store, "
                "or build it without one (RunEngine()) to choose its store with --store"
            )
        try:
            engine.use_store(store)
        except RunEngineError as exc:
            raise click.BadParameter(exc.message, param_hint="--store") from None
    return engine


def load_app_engine(ctx: click.Context, ref: str, store: str | None) -> RunEngine:
    """`load_engine` with the --store option of the command `ctx` runs, unless that is its default."""
    source = ctx.get_parameter_source("store")
    if source in (None, click.core.ParameterSource.DEFAULT):
        return load_engine(ref)
    return load_engine(ref, store, on_command_line=source is click.core.ParameterSource.COMMANDLINE)


# -- serve: schedules (runengine.schedules) -------------------------------------------------


class ScheduleEntryType(click.ParamType):
    """A schedule as a JSON object (schedule_id, cron, agent, input, timezone, ...), or a table of the
    config file; the environment variable holds a JSON array of them."""

    name = "JSON"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        try:
            entry = json.loads(str(value))
        except ValueError:
            self.fail(f"not JSON: {value!r}", param, ctx)
        if not isinstance(entry, dict):
            self.fail("a schedule is a JSON object (schedule_id, cron, agent, ...)", param, ctx)
        return entry

    def split_envvar_value(self, rv: str) -> list[Any]:
        try:
            entries = json.loads(rv)
        except ValueError:
            self.fail(f"RUNENGINE_SCHEDULE holds a JSON array of schedules, not {rv[:80]!r}")
        return entries if isinstance(entries, list) else [entries]


def declare_schedules(engine: RunEngine, entries: tuple[dict[str, Any], ...]) -> None:
    """The --schedule entries, checked now, declared by the engine when it starts (Schedules.declare)."""
    from runengine.schedules import schedule_from_entry

    for entry in entries:
        try:
            schedule = schedule_from_entry(entry, engine.clock())
            engine.agents.get(schedule.agent)
            engine.schedules.declared.append(schedule)
        except RunEngineError as exc:
            raise click.BadParameter(exc.message, param_hint="--schedule") from None


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


def limit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The serve options that bound what all clients together make the server hold
    (docs/security.md#server-wide-limits)."""
    options = [
        click.option(
            "--max-connections",
            default=MAX_CONNECTIONS,
            show_default=True,
            type=click.IntRange(min=1),
            help="Connections open at once (each open SSE stream holds one); past it a new connection gets"
            " 503 with Retry-After at once. Keep it under the process's file limit (ulimit -n).",
        ),
        click.option(
            "--max-body-bytes-in-flight",
            default=MAX_BODY_BYTES_IN_FLIGHT,
            show_default=True,
            type=click.IntRange(min=MAX_BODY_BYTES),
            help="Bytes of request bodies being read at once, over every connection (a body holds its"
            " Content-Length from its headers until it is read); past it 503 with Retry-After at once.",
        ),
        click.option(
            "--auth-failure-limit",
            type=RateType(),
            default=str(Rate(MAX_AUTH_FAILURES, AUTH_FAILURE_WINDOW)),
            show_default=True,
            help="Requests answered 401 per client address (IPv6: per /64); past it the address gets 429 with"
            " Retry-After for the rest of the period. `off`: not limited. Behind a proxy, see --forwarded-allow-ips.",
        ),
        click.option(
            "--forwarded-allow-ips",
            default="127.0.0.1",
            show_default=True,
            help="Proxies (comma-separated addresses or networks, or *) whose X-Forwarded-For is trusted: a request"
            " through one counts as from the client it names (uvicorn's forwarded_allow_ips); others as from the peer.",
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
    help="Store URL (sqlite:///file.db, memory://, postgresql://...): the demo engine's, or that of an --app engine built without one.",
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
    "--durable-streams-prefix",
    default=DURABLE_STREAMS_PREFIX,
    show_default=True,
    help="Where the Durable Streams profile is served (streams at PREFIX/v1/stream/NAME, runs at"
    " PREFIX/v1/stream/runs/RUN_ID); '' serves it nowhere.",
)
@click.option(
    "--durable-streams-long-poll",
    default=DURABLE_STREAMS_LONG_POLL,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a Durable Streams long-poll waits for data before its 204.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="The server's and the engine's log level.",
)
@log_format_option
@log_locals_option
@click.option(
    "--metrics/--no-metrics",
    default=None,
    help="Serve Prometheus metrics (default: yes when prometheus-client is installed): on --metrics-port, or"
    " at GET /metrics of the API when the server is open (no --api-key / --auth: never to API clients).",
)
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Serve GET /metrics on this port of --host, without a key (firewall it), and not on the API's port.",
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
@click.option(
    "--schedule",
    "schedules",
    envvar=f"{ENV_PREFIX}_SCHEDULE",
    multiple=True,
    type=ScheduleEntryType(),
    help="Start runs on a schedule: a JSON object {schedule_id, cron, agent, input, timezone, metadata, session_id,"
    " session_policy, missed}; repeatable (the config file: an array of tables). Kept in the store, updated at each start.",
)
@access_options
@limit_options
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
    durable_streams_prefix: str,
    durable_streams_long_poll: float,
    log_level: str,
    log_format: LogFormat,
    log_locals: bool,
    metrics: bool | None,
    metrics_port: int | None,
    cors_origins: tuple[str, ...],
    run_worker: bool | None,
    header_timeout: float,
    body_timeout: float,
    keep_alive_timeout: float,
    api_keys: tuple[tuple[str, str], ...],
    rate_limit: Rate | str | None,
    webhook_allow_hosts: tuple[str, ...],
    max_connections: int,
    max_body_bytes_in_flight: int,
    auth_failure_limit: Rate | str,
    forwarded_allow_ips: str,
    schedules: tuple[dict[str, Any], ...],
) -> None:
    """Serve the native API and the live page (uvicorn).

    Every option is also an environment variable (RUNENGINE_<NAME>) and a key of the --config file:
    docs/configuration.md."""
    import uvicorn

    from runengine.adapters.asgi import engine_asgi_app
    from runengine.adapters.uvicorn_http import limited_protocol
    from runengine.adapters.webhooks import WebhookSender
    from runengine.http.admission import ServerLimits
    from runengine.http.apikeys import api_key_auth, keys_by_secret
    from runengine.limits import MAX_HEADER_BYTES

    from runengine.demo import register_demo_agents

    if app_ref is not None:
        engine = load_app_engine(ctx, app_ref, store)
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
    declare_schedules(engine, schedules)
    if api_keys and auth_ref:
        raise click.UsageError("give --api-key or --auth, not both")
    try:
        auth = api_key_auth(keys_by_secret(api_keys)) if api_keys else None
    except InvalidRequest as exc:
        raise click.BadParameter(exc.message, param_hint="--api-key") from None
    if auth_ref:
        auth = load_object(auth_ref, "--auth")
    configure_logging(log_level, log_format, log_locals=log_locals)
    observer = _instrument(True if metrics is None and metrics_port is not None else metrics)
    click.echo(
        f"runengine {__version__}: http://{host}:{port}/ (agents: {', '.join(a.name for a in engine.agents)});"
        f" {_access_summary(api_keys, auth_ref, rate_limit)}; {_serve_metrics(observer, host, metrics_port, auth)}"
    )
    asgi = engine_asgi_app(
        engine,
        auth=auth,
        body_timeout=body_timeout,
        limits=ServerLimits(
            connections=max_connections,
            body_bytes_in_flight=max_body_bytes_in_flight,
            auth_failures=auth_failure_limit if isinstance(auth_failure_limit, Rate) else None,
        ),
        cors_origins=cors_origins,
        metrics=observer if metrics_port is None and auth is None else None,
        rate_limit=rate_limit if isinstance(rate_limit, Rate) else None,
        platform_rate=None if rate_limit == RATE_OFF else PLATFORM_RATE,
        webhook_sender=WebhookSender(allow_hosts=webhook_allow_hosts),
        default_agent=default_agent or None,
        durable_streams_prefix=_mount_prefix(durable_streams_prefix),
        durable_streams_long_poll=durable_streams_long_poll,
    )
    config = uvicorn.Config(
        asgi,
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,  # configure_logging formats uvicorn's lines too
        lifespan="on",
        timeout_graceful_shutdown=3,
        http=limited_protocol(header_timeout, max_connections=max_connections, max_header_bytes=MAX_HEADER_BYTES),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=keep_alive_timeout,  # type: ignore[arg-type]  # uvicorn types it int; any number works
        forwarded_allow_ips=forwarded_allow_ips,
    )
    try:
        _draining_server(config, asgi).run()
    except KeyboardInterrupt:  # uvicorn raises the Ctrl+C again once it has stopped cleanly
        pass


def _mount_prefix(prefix: str) -> str | None:
    """A profile's mount prefix as given ('' or '/': not mounted), with one leading slash."""
    prefix = prefix.strip().strip("/")
    if not prefix:
        return None
    if any(c in prefix for c in " ?#"):
        raise click.BadParameter(f"{prefix!r} is not a path prefix", param_hint="--durable-streams-prefix")
    return "/" + prefix


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


def _serve_metrics(observer: Any, host: str, metrics_port: int | None, auth: Any) -> str:
    """Start the metrics port if one is asked for; the start-up line's account of where metrics are."""
    if observer is None:
        return "metrics: off"
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=host, registry=observer.registry)  # a thread of its own
        return f"metrics: http://{host}:{metrics_port}/metrics"
    if auth is not None:  # every principal's agents and counts: never to API clients
        return "metrics: off on the API port with auth on (give --metrics-port)"
    return "metrics: GET /metrics"


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
            raise click.UsageError("--metrics needs prometheus-client: pip install '.[metrics]' from runengine's clone") from None
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
    configure_logging("warning")  # the retry warnings (stamina's) go to stderr, not between the events
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
                    if sse.event == RUN_DELETED_EVENT:  # nothing more will come: not a reason to reconnect
                        raise click.ClickException(json.loads(sse.data)["error"]["message"])
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
    help="Store URL with a work queue (postgresql://...): the demo engine's, or that of an --app engine built without one.",
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
@log_locals_option
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
    log_locals: bool,
    metrics_port: int | None,
) -> None:
    """Execute queued runs (no HTTP) until SIGINT / SIGTERM, then stop gracefully."""
    import signal

    import anyio

    configure_logging(log_level, log_format, log_locals=log_locals)
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
        engine = load_app_engine(click.get_current_context(), app_ref, store)
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

# No default: these commands work on a store that exists, and never make a new `runengine.db`
# in whatever folder they happen to run in.
store_url_option = click.option(
    "--store",
    required=True,
    envvar="RUNENGINE_STORE",
    help="Store URL (sqlite:///file.db, postgresql://...); required (or RUNENGINE_STORE).",
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


def _on_store(url: str, action: Callable[[EventStore], Awaitable[T]], *, create: bool = False) -> T:
    """Open the store `url` names, run `action` on it, close it; engine errors become CLI errors.
    A SQLite file that does not exist is refused, unless `create` (an import may start a new file)."""
    import anyio

    from runengine.adapters.sqlite import SQLiteStore
    from runengine.stores import open_store

    try:
        store = open_store(url)
    except RunEngineError as exc:
        raise click.BadParameter(exc.message, param_hint="--store") from None
    if isinstance(store, SQLiteStore) and not store.memory and not create and not Path(store.path).exists():
        raise click.ClickException(f"no store at {store.path}: --store names no SQLite file that exists")

    async def run() -> T:
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
    from runengine.retention import ended_runs, sweep

    cutoff = datetime.now(timezone.utc) - older_than

    async def expired(target: EventStore) -> list[str]:
        found: list[str] = []
        after: str | None = None
        while True:
            page = await ended_runs(target).list_ended_runs(ended_before=cutoff, limit=500, after=after)
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
    from runengine.adapters.profiles.native import check_created
    from runengine.events import RunCreated
    from runengine.http.core import HttpError
    from runengine.logfile import import_run, parse_log

    # The same checks and limits as the API: a log the API could not have recorded is refused.
    try:
        events = parse_log(file)
        first = events[0]
        assert isinstance(first, RunCreated)  # the reducer starts every log with it
        check_created(first)
    except (RunEngineError, HttpError) as exc:
        message = exc.message if isinstance(exc, RunEngineError) else str(exc)
        raise click.ClickException(f"{file.name}: {message}") from None
    now = datetime.now(timezone.utc)
    state = _on_store(store, lambda target: import_run(target, events, now=now), create=True)
    click.echo(f"imported run {state.run_id}: {len(events)} events, {state.status.value}")


# -- check-replay: would new agent code replay the runs in a store? ---------------------------


class Since(click.ParamType):
    """`7d` (that long ago, as `Duration`) or an ISO 8601 time -> an aware datetime."""

    name = "since"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        if _DURATION.fullmatch(str(value).strip()):
            return datetime.now(timezone.utc) - Duration().convert(value, param, ctx)
        try:
            when = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is neither a duration like 7d or 12h nor an ISO 8601 time", param, ctx)
        return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


#: check-replay's exit statuses: every run replays / some diverge; 2 (click's usage errors): not checked.
REPLAYS, DIVERGES, NOT_CHECKED = 0, 1, 2


@main.command("check-replay")
@click.option("--app", "app_ref", required=True, help="module:engine, the RunEngine with the agents' new code.")
@store_url_option
@click.option("--agent", "agent_names", multiple=True, help="Check this agent's runs only (repeatable; default: every agent of --app).")
@click.option("--since", type=Since(), default=None, help="Only runs created since then: 7d, 12h, or an ISO 8601 time.")
@click.option("--in-flight", is_flag=True, help="Only unfinished runs (those a deploy would resume).")
def check_replay(app_ref: str, store: str, agent_names: tuple[str, ...], since: datetime | None, in_flight: bool) -> None:
    """Replay the runs in --store with the agents' code of --app, without side effects, and report
    each divergence (seq, recorded event, new call). Exit 0: all replay; 1: some diverge; 2: not checked."""
    from runengine.testing.replay_check import check_store

    engine = load_engine(app_ref)
    unknown = [name for name in agent_names if name not in engine.agents]
    if unknown:
        raise click.BadParameter(f"{app_ref} has no agent {', '.join(unknown)}", param_hint="--agent")
    specs = [spec for spec in engine.agents if not agent_names or spec.name in agent_names]
    try:
        found = _on_store(store, lambda target: check_store(target, specs, since=since, in_flight=in_flight))
    except click.ClickException as exc:
        exc.exit_code = NOT_CHECKED  # a store that cannot be read is no verdict on the code
        raise
    for divergence in found.divergences:
        click.echo(f"{divergence.run_id}: diverges at seq {divergence.seq}")
        click.echo(f"  recorded: {json.dumps(divergence.recorded, sort_keys=True, default=str)}")
        click.echo(f"  new call: {divergence.call}")
        click.echo(f"  {divergence.message}")
    names = ", ".join(spec.name for spec in specs)
    click.echo(f"checked {len(found.checked)} run(s) of {names}: {len(found.divergences)} diverge", err=True)
    click.get_current_context().exit(DIVERGES if found.divergences else REPLAYS)


if __name__ == "__main__":  # pragma: no cover
    main()
