"""Framework-neutral HTTP: a Request goes in, a Response or a StreamResponse comes out.

No web framework is imported here. Bindings (`runengine.adapters.asgi`,
`runengine.adapters.aiohttp_binding`) translate their framework's request into a
`Request`, call an `App`, and write the result back.
"""

from .core import (
    App,
    HttpError,
    Request,
    Response,
    StreamResponse,
    error_response,
    json_response,
)
from .router import Router
from .sse import KEEPALIVE, sse_comment, sse_frame

__all__ = [
    "App",
    "HttpError",
    "KEEPALIVE",
    "Request",
    "Response",
    "Router",
    "StreamResponse",
    "error_response",
    "json_response",
    "sse_comment",
    "sse_frame",
]
