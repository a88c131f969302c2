"""The composed HTTP app: the native API and the live page at `/`, other API profiles mounted beside.

    app = build_app(engine, auth=my_hook)       # a framework-neutral App (a Router)
    asgi = ASGIApp(app)                         # or: runengine.adapters.asgi.engine_asgi_app(engine)
    app = build_app(engine, auth=api_key_auth(keys), rate_limit=Rate(600, 60),
                    webhook_sender=WebhookSender(allow_hosts=["hooks.internal"]))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from runengine.adapters.profiles.acp import AcpProfile, acp_error
from runengine.adapters.profiles.aisdk import AiSdkProfile
from runengine.adapters.profiles.durable_streams import DEFAULT_PREFIX, LONG_POLL_SECONDS, DurableStreamsProfile
from runengine.adapters.profiles.kore import KoreProfile
from runengine.adapters.profiles.langgraph import LangGraphProfile
from runengine.adapters.profiles.platform import build_platform_app
from runengine.adapters.profiles.threads import DEFAULT_AGENT, ThreadsProfile
from runengine.adapters.webhook_deliveries import WebhookDeliveries
from runengine.adapters.webhooks import WebhookSender
from runengine.engine import RunEngine
from runengine.errors import InvalidRequest
from runengine.http.auth import AuthHook
from runengine.adapters.profiles.native import NativeAPI
from runengine.http.core import App, Request, Response
from runengine.http.cors import CORS
from runengine.http.openstreams import OpenStreams
from runengine.http.ratelimit import Rate, RateLimited, SharedRateWindows, WindowCounter
from runengine.adapters.console import add_page
from runengine.adapters.health import add_health
from runengine.http.router import Router
from runengine.ports import port_of

#: /platform's limit under `runengine serve` when no --rate-limit is given: the seed's Pro plan,
#: whose X-RateLimit-* headers the seed shows on its responses.
PLATFORM_RATE = Rate(600, 60.0)

if TYPE_CHECKING:
    from runengine.adapters.metrics import PrometheusObserver


def build_app(
    engine: RunEngine,
    *,
    auth: AuthHook | None = None,
    streams: OpenStreams | None = None,
    rate_limit: Rate | None = None,
    platform_rate: Rate | None = None,
    webhook_sender: WebhookSender | None = None,
    metrics: PrometheusObserver | None = None,
    default_agent: str | None = DEFAULT_AGENT,
    durable_streams_prefix: str | None = DEFAULT_PREFIX,
    durable_streams_long_poll: float = LONG_POLL_SECONDS,
) -> Router | RateLimited:
    """Every HTTP surface of `engine` in one App (mounts are matched before the root routes).

    `streams`: the open SSE streams per principal, one count over every surface
    (`OpenStreams(limit=N)` to change the limit). `rate_limit`: requests per principal over
    every surface at once, with the X-RateLimit-* headers; without it only /platform is
    limited, at `platform_rate` (None: not at all; `runengine serve` gives PLATFORM_RATE). The
    counts are shared by every process when the store offers it (PostgreSQL). `webhook_sender`:
    how callbacks and webhooks are sent (its `allow_hosts` lets them reach internal hosts).
    `metrics`: serve its metrics at GET /metrics (runengine.adapters.metrics.install_metrics()), only
    with auth off: they count every principal's runs by agent, so with `auth` serve them on a port of
    their own (`prometheus_client.start_http_server(port, registry=metrics.registry)`, as
    `runengine serve --metrics-port` does).
    GET /healthz and /readyz are always there. `default_agent`: the agent a /v1 run without
    `persona_id`, or an /ai chat without `agent`, runs (None: they must name one).
    `durable_streams_prefix`: where the Durable Streams profile is mounted (None: not at all);
    `durable_streams_long_poll`: how long its long-polls wait for data (seconds)."""
    streams = streams if streams is not None else OpenStreams()
    sender = webhook_sender or WebhookSender()
    windows = rate_windows(engine)
    router = Router()
    NativeAPI(engine, auth=auth, router=router, streams=streams)  # registers its routes on `router`
    add_page(router)
    add_health(router, engine)
    if metrics is not None and auth is not None:
        raise InvalidRequest(
            "metrics would show every principal's agents and counts to any client: with auth, serve them on"
            " a port of their own (prometheus_client.start_http_server(port, registry=metrics.registry))"
        )
    if metrics is not None:
        from runengine.adapters.metrics import add_metrics_route  # prometheus-client: an extra

        add_metrics_route(router, engine, metrics)
    # Other API profiles: one mount line each, e.g.
    #   router.mount("/acp", AcpAPI(engine, auth=auth))
    platform: App = build_platform_app(engine, auth=auth, streams=streams, webhook_sender=sender)
    if rate_limit is None and platform_rate is not None:
        platform = RateLimited(platform, limit=platform_rate.limit, window=platform_rate.window, auth=auth, windows=windows)
    router.mount("/platform", platform)  # seed 002; app ids name agents
    router.mount("/acp", AcpProfile(engine, auth=auth, streams=streams))  # seed 003
    router.mount(  # seeds 000/001
        "/kore", KoreProfile(engine, auth=auth, deliveries=WebhookDeliveries(engine, sender=sender), streams=streams)
    )
    router.mount("/v1", ThreadsProfile(engine, auth=auth, default_agent=default_agent, streams=streams))  # seed 004
    router.mount("/ai", AiSdkProfile(engine, auth=auth, default_agent=default_agent, streams=streams))  # AI SDK useChat
    router.mount("/langgraph", LangGraphProfile(engine, auth=auth, streams=streams))  # LangGraph's clients (issue 23)
    if durable_streams_prefix:  # the Durable Streams protocol (issue 24)
        profile = DurableStreamsProfile(engine, auth=auth, streams=streams, long_poll=durable_streams_long_poll)
        router.mount(durable_streams_prefix, profile)
    if rate_limit is None:
        return router
    return RateLimited(
        router, limit=rate_limit.limit, window=rate_limit.window, auth=auth, windows=windows, refusal=profile_error
    )


def standalone_app(engine: RunEngine, *, auth: AuthHook | None = None, cors_origins: Iterable[str] = (), **options: Any) -> App:
    """What a binding serves on its own (`engine_asgi_app`, `engine_aiohttp_app`): `build_app` given
    `auth` and `options` (`rate_limit`, `metrics`, ...), behind CORS for `cors_origins` (browser
    origins allowed to call the API, runengine.http.cors) when there are any."""
    app: App = build_app(engine, auth=auth, **options)
    origins = tuple(cors_origins)
    return CORS(app, origins=origins) if origins else app


def rate_windows(engine: RunEngine) -> WindowCounter | None:
    """The store's request counts shared by every process, if it keeps any (else None: this process's)."""
    shared = port_of(engine.store, SharedRateWindows)
    return shared.rate_windows if shared is not None else None


#: Mounts whose errors have a shape of their own (seed 003), beside the common error object.
_ERROR_FORMATS = {"/acp": acp_error}


def profile_error(request: Request, response: Response) -> Response:
    """`response` (an error made outside the profiles) in the error format of the profile `request` is for."""
    for prefix, shape in _ERROR_FORMATS.items():
        if request.path == prefix or request.path.startswith(prefix + "/"):
            return shape(response)
    return response
