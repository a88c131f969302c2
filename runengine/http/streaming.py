"""What a profile's event stream needs besides its frames: the server-stop flag, one event at a time."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from contextvars import ContextVar

from ..events import Event


class ServerStop:
    """Whether the server is stopping. A binding that ends its streams when it stops (telling
    clients to reconnect) puts its own in `server_stop` for each stream it sends."""

    def __init__(self) -> None:
        self.stopping = False


#: Read in a stream body's cleanup: a stream ended because the server stops is no disconnect of
#: the client's (so no on_disconnect=cancel).
server_stop: ContextVar[ServerStop] = ContextVar("runengine_server_stop", default=ServerStop())


async def each_event(batches: AsyncGenerator[list[Event], None]) -> AsyncIterator[Event | None]:
    """`engine.follow`'s batches one event at a time; None for an idle tick. Closing this closes them."""
    async with aclosing(batches):
        async for batch in batches:
            if not batch:
                yield None
            for event in batch:
                yield event
