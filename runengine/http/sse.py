"""Server-sent event frames. Each event frame carries `id: <seq>` so clients resume by seq."""

from __future__ import annotations

from collections import OrderedDict

from ..events import Event
from ..wire import event_to_json

#: Seconds between keep-alive comments on an idle stream.
KEEPALIVE = 15.0


def sse_frame(data: str, *, event: str | None = None, id: int | str | None = None) -> bytes:
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    for line in data.split("\n"):  # a data line may not contain a newline
        lines.append(f"data: {line}")
    return ("\n".join(lines) + "\n\n").encode()


def sse_comment(text: str = "keep-alive") -> bytes:
    return f": {text}\n\n".encode()


class FrameCache:
    """Encoded SSE frames of recent events, shared by every subscriber of a run.

    A committed event never changes, so (run_id, seq) names its frame for good: with
    many subscribers, each event is encoded once instead of once per subscriber.
    """

    def __init__(self, size: int = 16384) -> None:
        self.size = size
        self._frames: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    def frame(self, event: Event) -> bytes:
        key = (event.run_id, event.seq)
        frame = self._frames.get(key)
        if frame is None:
            frame = sse_frame(event_to_json(event), event=event.type, id=event.seq)
            self._frames[key] = frame
            if len(self._frames) > self.size:
                self._frames.popitem(last=False)  # the oldest entry goes first
        return frame
