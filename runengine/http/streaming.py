"""What a profile's event stream needs besides its frames: the server-stop flag, one event at a time."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing
from contextvars import ContextVar

from ..errors import RunDeleted
from ..events import Event, MessageDelta, MessageDiscarded
from ..wire import dumps
from .sse import sse_frame

#: The event name of the last frame of a stream whose run was deleted while it was streamed
#: (native, /v1; profiles with an error event of their own use theirs, with the same error).
RUN_DELETED_EVENT = "run.deleted"


def deleted_frame(deleted: RunDeleted, *, event: str = RUN_DELETED_EVENT) -> bytes:
    """The last frame of a stream whose run was deleted: the one error format, code `not_found`,
    details {"run_id", "deleted": true}."""
    return sse_frame(dumps(deleted.error_body()), event=event)


class ServerStop:
    """Whether the server is stopping. A binding that ends its streams when it stops (telling
    clients to reconnect) puts its own in `server_stop` for each stream it sends."""

    def __init__(self) -> None:
        self.stopping = False


#: Read in a stream body's cleanup: a stream ended because the server stops is no disconnect of
#: the client's (so no on_disconnect=cancel).
server_stop: ContextVar[ServerStop] = ContextVar("runengine_server_stop", default=ServerStop())


async def each_event(
    batches: AsyncGenerator[list[Event], None], *, discarded: Iterable[str] | None = None
) -> AsyncIterator[Event | None]:
    """`engine.follow`'s batches one event at a time; None for an idle tick. Closing this closes them.
    `discarded`: as for `KeptText`, leave out the deltas of discarded messages."""
    kept = KeptText(discarded) if discarded is not None else None
    async with aclosing(batches):
        async for batch in batches:
            if not batch:
                yield None
            for event in kept.filter(batch) if kept is not None else batch:
                yield event


class KeptText:
    """For a protocol whose token frames cannot tell a client to drop text (no `message.discarded`
    of its own): a stream's batches without the deltas of the messages a resumed run discarded,
    those the run's state lists when the stream starts (`RunState.discarded`) and any the stream
    meets. Deltas sent live before their message was discarded cannot be taken back."""

    def __init__(self, discarded: Iterable[str]) -> None:
        self._dropped = set(discarded)

    def filter(self, batch: list[Event]) -> list[Event]:
        dropped = self._dropped
        kept = []
        for event in batch:
            if type(event) is MessageDelta and event.message_id in dropped:
                continue
            if type(event) is MessageDiscarded:
                dropped.add(event.message_id)
            kept.append(event)
        return kept
