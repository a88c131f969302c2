"""The console page (adapters/static/index.html), served at `/` of the composed app."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from runengine.http.core import Request, Response
from runengine.http.router import Router


@cache
def _index() -> bytes:
    return files("runengine.adapters").joinpath("static/index.html").read_bytes()


async def index(request: Request) -> Response:
    return Response(
        status=200,
        headers=(("content-type", "text/html; charset=utf-8"), ("cache-control", "no-cache")),
        body=_index(),
    )


def add_page(router: Router) -> None:
    router.route("GET", "/", index)
