"""Requests, responses and the one error format: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import json
import math
from json import JSONDecodeError, JSONDecoder, detect_encoding
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qsl

import attrs

from ..errors import RunEngineError
from ..limits import MAX_BODY_BYTES

#: After a binding refuses a body (413, 408), how much more of it is read and dropped, for how
#: long at most, before the connection is closed: a client that sends its whole body before
#: reading gets the answer rather than a reset (a bounded "lingering close", as nginx does).
#: 16 bodies' worth: Node's fetch sends a 10 MiB body whole (the Durable Streams suite's large
#: append) and reports a reset, not the 413, when the server stops reading before its end.
LINGER_BYTES = 16 * MAX_BODY_BYTES
LINGER_SECONDS = 1.0
from ..wire import dumps


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: refuse them rather than store what cannot be sent back.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON text, but Python reads it as inf, which no JSON encoder can write back.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range (JSON numbers here must be finite doubles)")
    return value


#: The strict decoder, made once (`json.loads` with hooks makes a decoder and its scanner per call).
_STRICT = JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def parse_json(body: bytes | str) -> Any:
    """Strict JSON: NaN, Infinity, -Infinity and numbers out of a double's range raise ValueError.
    Read as `json.loads` reads it (bytes in UTF-8, -16 or -32; a leading BOM refused)."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode(detect_encoding(body), "surrogatepass")
    elif body.startswith("\ufeff"):
        raise JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", body, 0)
    return _STRICT.decode(body)


def _may_hold_surrogate(body: bytes) -> bool:
    """Whether JSON text `body` can decode to a lone surrogate: only through a \\u escape, or
    bytes past ASCII (UTF-8 read with surrogatepass, as json.loads does), or a UTF-16/32 text
    (NUL bytes). A plain ASCII body without one is not encoded again just to find out."""
    if not isinstance(body, bytes):
        return True
    return not body.isascii() or b"\\u" in body or b"\x00" in body


@attrs.frozen(kw_only=True)
class Request:
    method: str
    #: The path relative to where the app is mounted, always starting with "/".
    path: str
    #: The raw query string (without "?").
    query_string: str = ""
    #: Header names in lower case; repeated headers joined with ", ".
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    #: What the auth hook returned for this request (None when auth is off).
    principal: Any = None
    #: Path parameters filled in by the router.
    params: Mapping[str, str] = attrs.field(factory=dict)
    #: The full path as the client sent it (before any mount prefix was stripped).
    root_path: str = ""
    #: The request-rate limit a `RateLimited` wrapper applies to it: (requests, window seconds).
    rate_limit: tuple[int, float] | None = None

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (the last value wins when one is repeated)."""
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        """The body as JSON; a clear 400 when it is not (413 when it is over the size limit)."""
        if len(self.body) > MAX_BODY_BYTES:
            raise payload_too_large()
        if not self.body.strip():
            raise HttpError(400, "invalid_request", "request body must be a JSON object")
        try:
            value = parse_json(self.body)
            # "\ud800" parses, but a lone surrogate cannot be stored or sent as UTF-8: refuse it here.
            if _may_hold_surrogate(self.body):
                json.dumps(value, ensure_ascii=False).encode()
            return value
        except UnicodeEncodeError:
            raise HttpError(400, "invalid_request", "malformed JSON: a string holds a lone surrogate") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, "invalid_request", f"malformed JSON: {exc}") from None
        except RecursionError:
            raise HttpError(400, "invalid_request", "malformed JSON: nested too deeply") from None

    def json_object(self) -> dict[str, Any]:
        value = self.json()
        if not isinstance(value, dict):
            raise HttpError(400, "invalid_request", "request body must be a JSON object")
        return value


@attrs.frozen(kw_only=True)
class Response:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@attrs.frozen(kw_only=True)
class StreamResponse:
    """A response whose body is produced while it is sent (SSE).

    `body` is an async iterator of byte chunks. A binding must close it (aclose)
    when the client disconnects, so nothing is left running for a gone client.
    """

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: AsyncIterator[bytes] = attrs.field()


class App(Protocol):
    async def __call__(self, request: Request) -> Response | StreamResponse: ...


Handler = Callable[[Request], Awaitable[Response | StreamResponse]]


class HttpError(Exception):
    """An error to send in the common format."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = headers

    def response(self) -> Response:
        return error_response(self.status, self.code, self.message, self.details, self.headers)


def payload_too_large() -> HttpError:
    """A body over MAX_BODY_BYTES. Bindings answer it before reading more than the limit."""
    return HttpError(
        413,
        "payload_too_large",
        f"request body is larger than {MAX_BODY_BYTES} bytes",
        {"limit_bytes": MAX_BODY_BYTES},
    )


def request_timeout(seconds: float, part: str = "body") -> HttpError:
    """A request's body (or headers) that did not arrive within a server's timeout for it."""
    return HttpError(
        408,
        "request_timeout",
        f"the request {part} did not arrive within {seconds:g} s",
        {"timeout_seconds": seconds},
    )


def json_response(
    value: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    body = dumps(value).encode()
    return Response(
        status=status,
        headers=(("content-type", "application/json"), *headers),
        body=body,
    )


def error_response(
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    return json_response(
        {"error": {"code": code, "message": message, "details": dict(details or {})}},
        status=status,
        headers=headers,
    )


#: How engine errors map to HTTP statuses (by the error's code).
STATUS_BY_CODE: dict[str, int] = {
    "invalid_request": 400,
    "not_found": 404,
    "agent_not_found": 404,
    "conflict": 409,
    "invalid_transition": 409,
    "idempotency_error": 422,
    "engine_not_started": 503,
}


def engine_error_response(exc: RunEngineError) -> Response:
    status = STATUS_BY_CODE.get(exc.code, 500)
    code = "not_found" if status == 404 else exc.code
    return error_response(status, code, exc.message, _jsonable(exc.details))


def _jsonable(details: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(dumps(dict(details)))
