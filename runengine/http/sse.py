"""Server-sent event frames. Each event frame carries `id: <seq>` so clients resume by seq."""

from __future__ import annotations

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
