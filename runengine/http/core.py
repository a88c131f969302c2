"""Requests, responses and the one error format: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qsl

import attrs

from ..errors import RunEngineError
from ..limits import MAX_BODY_BYTES
from ..wire import dumps


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: refuse them rather than store what cannot be sent back.
    raise ValueError(f"{name} is not valid JSON")


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

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (the last value wins when one is repeated)."""
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        """The body as JSON; a clear 400 when it is not."""
        if len(self.body) > MAX_BODY_BYTES:
            raise HttpError(
                400,
                "invalid_request",
                f"request body is larger than {MAX_BODY_BYTES} bytes",
                {"limit_bytes": MAX_BODY_BYTES},
            )
        if not self.body.strip():
            raise HttpError(400, "invalid_request", "request body must be a JSON object")
        try:
            value = json.loads(self.body, parse_constant=_reject_constant)
            # "\ud800" parses, but a lone surrogate cannot be stored or sent as UTF-8: refuse it here.
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
