"""Server-sent event frames. Each event frame carries `id: <seq>` so clients resume by seq."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import AsyncIterator

from ..events import Event
from ..limits import MAX_FRAME_CACHE_BYTES
from ..wire import event_to_json
from .core import StreamResponse

#: Seconds between keep-alive comments on an idle stream.
KEEPALIVE = 15.0
#: The last bytes of a stream the server ends because it is stopping: a comment saying so and a
#: short reconnection delay (an EventSource reconnects with Last-Event-ID; others see the comment).
RECONNECT = b": the server is shutting down; reconnect to resume\nretry: 500\n\n"

#: What ends a line in an event stream (WHATWG HTML, "Parsing an event stream").
_LINE_END = re.compile(r"\r\n|\r|\n")


def sse_frame(data: str, *, event: str | None = None, id: int | str | None = None) -> bytes:
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    if "\n" in data or "\r" in data:
        for line in _LINE_END.split(data):  # one data line per line of `data`: clients join them with \n
            lines.append(f"data: {line}")
    else:  # one line (JSON text always is): no split
        lines.append(f"data: {data}")
    return ("\n".join(lines) + "\n\n").encode()


def sse_comment(text: str = "keep-alive") -> bytes:
    return f": {text}\n\n".encode()


class FrameCache:
    """Encoded SSE frames of recent events, shared by every subscriber of a run.

    A committed event never changes, so (run_id, seq) names its frame for good: with
    many subscribers, each event is encoded once instead of once per subscriber. Bounded
    both in frames (`size`) and in bytes (`max_bytes`), the oldest going first.
    """

    def __init__(self, size: int = 16384, max_bytes: int = MAX_FRAME_CACHE_BYTES) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self._frames: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    def frame(self, event: Event) -> bytes:
        key = (event.run_id, event.seq)
        frame = self._frames.get(key)
        if frame is None:
            frame = sse_frame(event_to_json(event), event=event.type, id=event.seq)
            if len(frame) > self.max_bytes // 16:
                return frame  # a frame this large would push out many: encoded again when needed
            self._frames[key] = frame
            self.bytes += len(frame)
            while len(self._frames) > self.size or self.bytes > self.max_bytes:
                self.bytes -= len(self._frames.popitem(last=False)[1])  # the oldest entry goes first
        return frame


#: What every event stream is sent with, whatever the profile.
SSE_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),  # tell nginx-like proxies not to buffer the stream
)


def sse_response(body: AsyncIterator[bytes], *, headers: tuple[tuple[str, str], ...] = ()) -> StreamResponse:
    """A 200 event stream of `body`'s frames, with SSE_HEADERS and a profile's own `headers`."""
    return StreamResponse(status=200, headers=SSE_HEADERS + headers, body=body)
