"""A blocking database connection (DB-API: sqlite3 ...) used from asyncio on a thread of its own.

`call(fn, *args)` runs `fn(connection, *args)` on that thread: one hop from the event loop (a
queue in, a callback out), so a store can run a whole transaction as one call. Only the
driver's public API is used.

The thread is also its connection's group-committing writer (`start_writes`, `write`): a write
goes straight into the thread's queue, no event-loop turn in between; the thread takes every
write queued, commits them as one batch (`commit(connection, batch)`) and hands the outcome back
to the loop in one callback (`committed(batch, outcome)`). Writes queued while a commit's fsync
is in flight make the next batch, whichever runs they belong to. Calls and writes keep their
queue order, so a `call` queued after a write runs once that write has committed.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

_T = TypeVar("_T")


class Write(Protocol):
    future: asyncio.Future[Any]


_W = TypeVar("_W", bound=Write)


class _Call:
    __slots__ = ("future", "fn", "args")

    def __init__(self, future: asyncio.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.future, self.fn, self.args = future, fn, args


class _Queued(Generic[_W]):
    """A write in the queue: the write, whether it must go at once, and its size (events)."""

    __slots__ = ("write", "urgent", "size")

    def __init__(self, write: _W, urgent: bool, size: int) -> None:
        self.write, self.urgent, self.size = write, urgent, size


class _Writes(Generic[_W]):
    """How the thread commits writes: set once by `start_writes`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        commit: Callable[[Any, list[_W]], Any],
        committed: Callable[[list[_W], Any, float], None],
        flush_max: int,
        window: float,
    ) -> None:
        self.loop, self.commit, self.committed = loop, commit, committed
        self.flush_max, self.window = flush_max, window


class DatabaseThread(Generic[_W]):
    """One connection and the thread it lives on (made there by `connect(factory)`)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | _Queued[_W] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._writes: _Writes[_W] | None = None
        self._closing = False
        self.raw: Any = None

    async def connect(self, factory: Callable[[], Any]) -> None:
        """Start the thread and make the connection there (`factory()`); on failure, stop it."""
        self._thread.start()
        try:
            self.raw = await self.call(lambda _raw: factory())
        except BaseException:
            await self.close()
            raise

    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._calls.put(_Call(future, fn, args))
        return await future

    def start_writes(
        self,
        commit: Callable[[Any, list[_W]], Any],
        committed: Callable[[list[_W], Any, float], None],
        *,
        flush_max: int = 1,
        window: float = 0.0,
    ) -> None:
        """Take writes from now on: the thread runs `commit(connection, batch)` (its result, or the
        exception it raised, is the outcome), then the loop `committed(batch, outcome, seconds)`,
        which must answer every write's future. A batch that is not urgent may wait up to `window`
        seconds, or until `flush_max` sizes are queued, for others to join it."""
        self._writes = _Writes(asyncio.get_running_loop(), commit, committed, flush_max, window)

    def write(self, write: _W, *, urgent: bool = True, size: int = 1) -> None:
        """Queue `write` for the next batch (its future is answered on the loop once committed)."""
        self._calls.put(_Queued(write, urgent, size))

    def _serve(self) -> None:
        held: _Call | _Queued[_W] | None = None
        while True:
            item = held if held is not None else self._calls.get()
            held = None
            if item is None:
                return
            if isinstance(item, _Call):
                self._run_call(item)
            else:
                held = self._commit_from(item)

    def _run_call(self, call: _Call) -> None:
        try:
            result = call.fn(self.raw, *call.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            _post(call.future.get_loop(), _fail, call.future, exc)
        else:
            _post(call.future.get_loop(), _succeed, call.future, result)

    def _commit_from(self, first: _Queued[_W]) -> _Call | _Queued[_W] | None:
        """Commit `first` and every write queued behind it; returns the item that ended the batch
        (a call, or the end) to be served next, or None."""
        writes = self._writes
        assert writes is not None, "write() before start_writes()"
        batch = [first.write]
        urgent, size = first.urgent, first.size
        deadline = None if urgent or writes.window <= 0 else time.monotonic() + writes.window
        held: _Call | _Queued[_W] | None = None
        while True:
            try:
                if deadline is None or size >= writes.flush_max:
                    item = self._calls.get_nowait()
                else:
                    item = self._calls.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not isinstance(item, _Queued):
                held = item  # a call or the end: after this batch has committed
                break
            batch.append(item.write)
            size += item.size
            if item.urgent:
                deadline = None
        batch = [write for write in batch if not write.future.cancelled()]
        if batch:
            started = time.perf_counter()
            try:
                outcome: Any = writes.commit(self.raw, batch)
            except Exception as exc:  # noqa: BLE001 - the whole batch failed: handed to the loop
                outcome = exc
            _post(writes.loop, writes.committed, batch, outcome, time.perf_counter() - started)
        return held

    async def close(self) -> None:
        """Close the connection and end the thread (once what it is doing is done, queued writes
        committed first)."""
        if self.raw is not None and not self._closing:
            self._closing = True  # the writes queued before the close still use the connection
            await self.call(lambda raw: raw.close())
            self.raw = None
        self._calls.put(None)
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop is closed: nobody is left to answer
        pass


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


__all__ = ["DatabaseThread", "Write"]
