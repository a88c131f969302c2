"""Following a run's log: replay after a cursor, then live, with idle ticks for keep-alives."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from .errors import RunDeleted
from .events import Event
from .ports import DEFAULT_PAGE, EventStore


async def follow_batches(
    store: EventStore, run_id: str, *, after_seq: int, idle: float, page_size: int = DEFAULT_PAGE
) -> AsyncGenerator[list[Event], None]:
    """Yield the run's committed events after `after_seq`, a batch per read, until its terminal event.

    Yields [] whenever `idle` seconds pass without news (the caller sends a keep-alive
    then). Each read starts after the last seq yielded, so the output has no gap and
    no duplicate whatever the timing. Ends at once for an unknown run; raises RunDeleted when
    the run is gone after the stream began (it read events, or resumed after a seq): every
    profile then ends its stream with a last frame saying so.
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
        if summary is None and cursor > 0:
            raise RunDeleted(run_id)
        if summary is None or (summary.status.terminal and summary.last_seq <= cursor):
            return
        if not await store.wait(run_id, after_seq=cursor, timeout=idle):
            yield []
