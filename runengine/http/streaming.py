"""Following a run's log for a stream: replay after a cursor, then live, with idle ticks for keep-alives."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextvars import ContextVar

from ..events import Event
from ..ports import DEFAULT_PAGE, EventStore

class ServerStop:
    """Whether the server is stopping. A binding that ends its streams when it stops (telling
    clients to reconnect) puts its own in `server_stop` for each stream it sends."""

    def __init__(self) -> None:
        self.stopping = False


#: Read in a stream body's cleanup: a stream ended because the server stops is no disconnect of
#: the client's (so no on_disconnect=cancel).
server_stop: ContextVar[ServerStop] = ContextVar("runengine_server_stop", default=ServerStop())


async def follow_batches(
    store: EventStore, run_id: str, *, after_seq: int, idle: float, page_size: int = DEFAULT_PAGE
) -> AsyncGenerator[list[Event], None]:
    """Yield the run's committed events after `after_seq`, a batch per read, until its terminal event.

    Yields [] whenever `idle` seconds pass without news (the caller sends a keep-alive
    then). Each read starts after the last seq yielded, so the output has no gap and
    no duplicate whatever the timing. Ends at once for an unknown run.
    """
    cursor = after_seq
    while True:
        batch = await store.read(run_id, after_seq=cursor, limit=page_size)
        for index, event in enumerate(batch):
            if event.terminal:
                yield batch[: index + 1]
                return
        if batch:
            yield batch
            cursor = batch[-1].seq
        if len(batch) == page_size:
            continue
        summary = await store.get_run(run_id)
        if summary is None or (summary.status.terminal and summary.last_seq <= cursor):
            return
        if not await store.wait(run_id, after_seq=cursor, timeout=idle):
            yield []


async def follow(
    store: EventStore, run_id: str, *, after_seq: int, idle: float, page_size: int = DEFAULT_PAGE
) -> AsyncIterator[Event | None]:
    """`follow_batches` one event at a time; None for an idle tick."""
    async for batch in follow_batches(store, run_id, after_seq=after_seq, idle=idle, page_size=page_size):
        if not batch:
            yield None
        for event in batch:
            yield event
