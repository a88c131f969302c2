"""uvicorn's h11 protocol with a deadline for each request's headers.

uvicorn has no such timeout (its `timeout_keep_alive` starts only after a response, and any
byte cancels it), so a client that opens a connection and sends nothing, or half a request
line, holds the connection for ever: thousands of them exhaust the server. Here each request's
headers must be complete within `header_timeout` seconds of the connection opening or of the
previous response; otherwise the connection is closed, after a 408 in the one error format if
part of a request had arrived. The body has its own timeout in the ASGI binding (`body_timeout`).

    uvicorn.run(asgi_app, http=header_timeout_protocol(10.0))
"""

from __future__ import annotations

import asyncio
import http
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from runengine.http.core import request_timeout

#: Seconds for a request's headers to arrive, by default.
HEADER_TIMEOUT = 10.0


class HeaderDeadlineProtocol(H11Protocol):
    """H11Protocol whose connections wait at most `header_timeout` seconds for a request's headers."""

    header_timeout: float = HEADER_TIMEOUT

    _deadline: asyncio.TimerHandle | None = None
    _bytes_since_armed = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._bytes_since_armed = True
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request's headers (a pipelined one may have started already)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._disarm()  # the connection belongs to the websocket protocol from here on
        super().handle_websocket_upgrade(event)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _arm(self) -> None:
        self._disarm()
        self._bytes_since_armed = False
        self._deadline = self.loop.call_later(self.header_timeout, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline = None
        in_flight = self.cycle is not None and not self.cycle.response_complete
        if in_flight or self.transport.is_closing():
            return  # the headers came in time (or the connection is already going)
        if self._bytes_since_armed:
            response = request_timeout(self.header_timeout, "headers").response()
            reason = http.HTTPStatus(response.status).phrase
            head = [f"HTTP/1.1 {response.status} {reason}"]
            head += [f"{name}: {value}" for name, value in response.headers]
            head += [f"content-length: {len(response.body)}", "connection: close"]
            self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
        self.transport.close()


def header_timeout_protocol(header_timeout: float = HEADER_TIMEOUT) -> type[HeaderDeadlineProtocol]:
    """A protocol class for uvicorn's `http` option with this header timeout."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": header_timeout})
