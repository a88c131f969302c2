"""uvicorn's h11 protocol with the limits `runengine serve` needs and uvicorn lacks.

- A deadline for each request's headers. uvicorn has none (its `timeout_keep_alive` starts only
  after a response, and any byte cancels it), so a client that opens a connection and sends
  nothing, or half a request line, holds the connection for ever: thousands of them exhaust the
  server. Here each request's headers must be complete within `header_timeout` seconds of the
  connection opening or of the previous response; otherwise the connection is closed, after a
  408 in the one error format if part of a request had arrived. (The body has its own timeout
  in the ASGI binding, `body_timeout`.)
- A cap on the size of a request's head (request line and header fields): h11's own limit only
  applies to a head still incomplete, so one sent in a single write of any size was accepted.
  Here the bytes of each head are counted as they arrive, whatever the write pattern: past
  `max_header_bytes`, a 431.
- A cap on open connections: past `max_connections`, a new connection gets a 503 with
  Retry-After at once (uvicorn's `limit_concurrency` answers only once a request has come, in
  plain text).

Two costs per request are cut too (issue 22): the header deadline is one timer per connection that
moves with each response (re-armed when it fires early) rather than a timer made and cancelled per
response, and a response whose length is known goes out in one write, head and body together
(uvicorn wrote the head and the body apart: two sends, and two wake-ups of the client, per
response); a streamed (chunked) response's head is written at once, as before.

Each refusal is written in the one error format with `connection: close`; the server then stops
writing and drops what the client still sends for at most LINGER_SECONDS / LINGER_BYTES before
closing, so a client that writes before it reads gets the answer rather than a reset.

    uvicorn.run(asgi_app, http=limited_protocol(header_timeout=10.0), h11_max_incomplete_event_size=MAX_HEADER_BYTES)
"""

from __future__ import annotations

import asyncio
import http
import re
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from runengine.http.admission import server_busy
from runengine.http.core import LINGER_BYTES, LINGER_SECONDS, HttpError, request_timeout
from runengine.limits import MAX_CONNECTIONS, MAX_HEADER_BYTES

#: Seconds for a request's headers to arrive, by default.
HEADER_TIMEOUT = 10.0
#: The end of a request's head, as h11 finds it (a blank line; bare LF line ends are accepted).
_HEAD_END = re.compile(rb"\n\r?\n")
#: What `_head_after` holds before the connection's first request.
_FIRST = object()


def header_fields_too_large(limit: int) -> HttpError:
    return HttpError(
        431,
        "header_fields_too_large",
        f"the request line and header fields are larger than {limit} bytes",
        {"limit_bytes": limit},
    )


class LimitedH11Protocol(H11Protocol):
    """H11Protocol with a header deadline, a head size cap and a connection cap (the module's doc)."""

    header_timeout: float = HEADER_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    max_header_bytes: int = MAX_HEADER_BYTES

    #: The connection's one header-deadline timer, and when the headers are due (None: not armed).
    _deadline: asyncio.TimerHandle | None = None
    _due: float | None = None
    _bytes_since_armed = False
    #: Bytes of the head being received; the cycle it follows (a new one starts the count again).
    _head_bytes = 0
    _head_after: object = _FIRST
    _head_done = True
    _head_tail = b""
    #: After a refusal: bytes dropped so far (None: not refused).
    _dropped: int | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _WholeResponses(transport, self)  # what the request cycles write to
        if len(self.connections) > self.max_connections:  # this one is counted already
            self._refuse(server_busy("open connections", self.max_connections))
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._dropped is not None:  # refused: drop what still comes, for a bounded while
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.close()
            return
        self._bytes_since_armed = True
        if self.conn.their_state is h11.IDLE and self._head_too_large(data):
            self._refuse(header_fields_too_large(self.max_header_bytes))
            return
        super().data_received(data)

    def eof_received(self) -> bool | None:
        if self._dropped is not None:
            self.transport.close()
        return super().eof_received()

    def on_response_complete(self) -> None:
        # A pipelined request's head may be waiting in h11's buffer already: measure it before it is parsed.
        if not self.transport.is_closing() and self.conn.their_state is h11.DONE:
            buffered, _ = self.conn.trailing_data
            self._head_after, self._head_bytes, self._head_done, self._head_tail = self.cycle, 0, False, b""
            if buffered and self._head_too_large(buffered):
                self._refuse(header_fields_too_large(self.max_header_bytes))
                return
        super().on_response_complete()
        self._arm()  # the next request's headers (a pipelined one may have started already)

    def connection_lost(self, exc: Exception | None) -> None:
        self._due = None
        self._cancel_timer()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._disarm()  # the connection belongs to the websocket protocol from here on
        super().handle_websocket_upgrade(event)

    def _head_too_large(self, data: bytes) -> bool:
        """Count `data`, received while a request's head is awaited, into that head; whether it is over the cap."""
        if self._head_after is not self.cycle:  # a new request's head begins (self.cycle is the previous one's)
            self._head_after, self._head_bytes, self._head_done, self._head_tail = self.cycle, 0, False, b""
        if self._head_done:
            return False
        seen = self._head_tail + data
        end = _HEAD_END.search(seen)
        if end is not None:
            self._head_done = True
            return self._head_bytes + end.end() - len(self._head_tail) > self.max_header_bytes
        self._head_bytes += len(data)
        self._head_tail = seen[-2:]
        return self._head_bytes > self.max_header_bytes

    def _disarm(self) -> None:
        self._due = None  # the timer, if any, finds nothing due when it fires
        if self.transport is None or self.transport.is_closing():  # nothing more to time: free it now
            self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _arm(self) -> None:
        """The next headers are due `header_timeout` seconds from now: the deadline moves, and a
        timer is made only if none is pending (a heap push and a cancel per response otherwise)."""
        self._bytes_since_armed = False
        self._due = self.loop.time() + self.header_timeout
        if self._deadline is None:
            self._deadline = self.loop.call_at(self._due, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline = None
        if self._due is None:
            return  # disarmed meanwhile
        if self._due > self.loop.time():  # moved on by later responses: wait for the new deadline
            self._deadline = self.loop.call_at(self._due, self._on_deadline)
            return
        self._due = None
        in_flight = self.cycle is not None and not self.cycle.response_complete
        if in_flight or self.transport.is_closing() or self._dropped is not None:
            return  # the headers came in time (or the connection is already going)
        if self._bytes_since_armed:
            self._refuse(request_timeout(self.header_timeout, "headers"))
        else:
            self.transport.close()

    def _refuse(self, error: HttpError) -> None:
        """Answer `error` outside any request cycle, then close after a bounded lingering read."""
        self._disarm()
        response = error.response()
        reason = http.HTTPStatus(response.status).phrase
        head = [f"HTTP/1.1 {response.status} {reason}"]
        head += [f"{name}: {value}" for name, value in response.headers]
        head += [f"content-length: {len(response.body)}", "connection: close"]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
        self._dropped = 0
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client reads the answer, then the end
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


class _WholeResponses:
    """The connection's transport as its request cycles see it: the head of a response with a
    Content-Length is held until the first write of its body and sent with it, in one write
    (uvicorn writes them apart). Everything else goes straight through."""

    __slots__ = ("_transport", "_protocol", "_held", "_head_of")

    def __init__(self, transport: asyncio.Transport, protocol: LimitedH11Protocol) -> None:
        self._transport, self._protocol = transport, protocol
        self._held = b""
        self._head_of: object = None  # the cycle whose response head was written (or held)

    def write(self, data: bytes) -> None:
        if self._held:
            data, self._held = self._held + data, b""
        else:
            cycle = self._protocol.cycle
            if cycle is not self._head_of and cycle is not None and cycle.response_started and not cycle.response_complete:
                self._head_of = cycle  # this cycle's first write since its response began: its head
                if b"\r\ncontent-length:" in data.lower():
                    self._held = data  # the body's first write follows at once (uvicorn writes even b"")
                    return
        self._transport.write(data)

    def close(self) -> None:
        if self._held:  # not reached by uvicorn (it writes the body first); nothing is dropped anyway
            self._transport.write(self._held)
            self._held = b""
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # the rest of the transport (reading, eof, extra info)
        return getattr(self._transport, name)


def limited_protocol(
    header_timeout: float = HEADER_TIMEOUT,
    *,
    max_connections: int = MAX_CONNECTIONS,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> type[LimitedH11Protocol]:
    """A protocol class for uvicorn's `http` option with these limits. Give uvicorn
    `h11_max_incomplete_event_size=max_header_bytes` too, so h11 buffers no more of a head."""
    return type(
        "LimitedH11Protocol",
        (LimitedH11Protocol,),
        {"header_timeout": header_timeout, "max_connections": max_connections, "max_header_bytes": max_header_bytes},
    )
