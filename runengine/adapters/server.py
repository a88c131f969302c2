"""The composed HTTP app: the native API and the live page at `/`, other API profiles mounted beside.

    app = build_app(engine, auth=my_hook)       # a framework-neutral App (a Router)
    asgi = ASGIApp(app)                         # or: runengine.adapters.asgi.engine_asgi_app(engine)
"""

from __future__ import annotations

from runengine.adapters.profiles.acp import AcpProfile
from runengine.adapters.profiles.kore import KoreProfile
from runengine.adapters.profiles.platform import build_platform_app
from runengine.adapters.webhook_deliveries import WebhookDeliveries
from runengine.engine import RunEngine
from runengine.http.auth import AuthHook
from runengine.adapters.profiles.native import NativeAPI
from runengine.http.openstreams import OpenStreams
from runengine.adapters.console import add_page
from runengine.http.router import Router


def build_app(engine: RunEngine, *, auth: AuthHook | None = None, streams: OpenStreams | None = None) -> Router:
    """Every HTTP surface of `engine` in one Router (mounts are matched before the root routes).

    `streams`: the open SSE streams per principal, one count over every surface
    (`OpenStreams(limit=N)` to change the limit)."""
    streams = streams if streams is not None else OpenStreams()
    router = Router()
    NativeAPI(engine, auth=auth, router=router, streams=streams)  # registers its routes on `router`
    add_page(router)
    # Other API profiles: one mount line each, e.g.
    #   router.mount("/acp", AcpAPI(engine, auth=auth))
    router.mount("/platform", build_platform_app(engine, auth=auth, streams=streams))  # seed 002; app ids name agents
    router.mount("/acp", AcpProfile(engine, auth=auth, streams=streams))  # seed 003
    router.mount(  # seeds 000/001
        "/kore", KoreProfile(engine, auth=auth, deliveries=WebhookDeliveries(engine), streams=streams)
    )
    return router
