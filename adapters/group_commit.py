"""Group commit: a store's one writer task (the PostgreSQL store's; the SQLite store commits on its
writer connection's thread, adapters/db_thread.py).

Writes are queued (each with a future its caller awaits); the writer takes everything queued
(up to `max_batch`) and hands it to the store's `commit`, one transaction, which answers each
write's future once it has committed. Batches form by themselves while a commit is in flight;
a write that is not `urgent` may also wait up to `window` seconds, or until `flush_max` sizes
are queued, for others to join it. Stopping commits what was queued, then ends the writer.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from runengine import observe


class Write(Protocol):
    future: asyncio.Future[Any]


_W = TypeVar("_W", bound=Write)


class GroupCommit(Generic[_W]):
    def __init__(
        self,
        commit: Callable[[list[_W]], Awaitable[int]],
        *,
        store: str,
        name: str,
        closed: Callable[[], BaseException],
        max_batch: int | None = None,
        flush_max: int = 1,
        window: float = 0.0,
    ) -> None:
        #: Commits a batch, answering each write's future (a future left unanswered gets the
        #: error `commit` raised, or, if it returned, None); returns the events it wrote.
        self._commit = commit
        self._store = store
        #: Recent commits: seconds each, and events each (for benchmarks and observers).
        self.commit_times: collections.deque[float] = collections.deque(maxlen=100_000)
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=100_000)
        self._name = name
        #: The error for a write when the writer is stopped or stopping.
        self._closed = closed
        self.max_batch = max_batch
        self.flush_max = flush_max
        self.window = window
        self._queue: list[_W] = []
        self._queued_size = 0
        self._wakeup = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: Why the writer stopped on its own (None while it runs).
        self.broken: BaseException | None = None

    def start(self) -> None:
        self._stopping = False
        self.broken = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._stopping and self.broken is None

    async def submit(self, write: _W, *, urgent: bool = True, size: int = 1) -> Any:
        """Queue `write` and wait for its commit: its future's result."""
        if not self.running:
            raise self._closed()
        self._queue.append(write)
        self._queued_size += size
        if urgent or self._queued_size >= self.flush_max or self.window == 0:
            self._wakeup.set()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window, self._wakeup.set)
        return await write.future

    async def stop(self) -> None:
        """Commit what is queued, then end the writer (an error it stopped with is not raised)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wakeup.set()
        try:
            await task
        except Exception:  # noqa: S110 - it had stopped; the error is in self.broken
            pass

    async def _run(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                while self._queue:
                    cut = len(self._queue) if self.max_batch is None else self.max_batch
                    batch, self._queue = self._queue[:cut], self._queue[cut:]
                    self._queued_size = 0 if not self._queue else self._queued_size
                    batch = [write for write in batch if not write.future.cancelled()]
                    if batch:
                        await self._commit_batch(batch)
                    if self.max_batch is None:
                        break  # writes queued meanwhile: the next round takes them
                if self._stopping and not self._queue:
                    return
        except BaseException as exc:
            self.broken = exc
            for write in self._queue:
                _answer(write, self._closed())
            self._queue = []
            raise

    async def _commit_batch(self, batch: list[_W]) -> None:
        started = asyncio.get_running_loop().time()
        try:
            written = await self._commit(batch)
        except Exception as exc:  # the whole batch failed: each caller gets the error
            for write in batch:
                _answer(write, exc)
        except BaseException:  # cancelled: the callers cannot know whether it was written
            for write in batch:
                _answer(write, self._closed())
            raise
        else:
            self.commit_times.append(asyncio.get_running_loop().time() - started)
            self.batch_sizes.append(written)
            observe.current.store_commit(store=self._store, seconds=self.commit_times[-1])
        for write in batch:
            _answer(write, None)


def _answer(write: Write, error: BaseException | None) -> None:
    if not write.future.done():
        if error is not None:
            write.future.set_exception(error)
        else:
            write.future.set_result(None)


__all__ = ["GroupCommit", "Write"]
