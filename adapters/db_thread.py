"""A blocking database connection (DB-API: sqlite3 ...) used from asyncio on a thread of its own.

`call(fn, *args)` runs `fn(connection, *args)` on that thread: one hop from the event loop (a
queue in, a callback out), so a store can run a whole transaction as one call. Only the
driver's public API is used.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


class DatabaseThread:
    """One connection and the thread it lives on (made there by `connect(factory)`)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
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
        self._calls.put((future, fn, args))
        return await future

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            future, fn, args = item
            try:
                result = fn(self.raw, *args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.get_loop().call_soon_threadsafe(_fail, future, exc)
            else:
                future.get_loop().call_soon_threadsafe(_succeed, future, result)

    async def close(self) -> None:
        """Close the connection and end the thread (once what it is doing is done)."""
        if self.raw is not None:
            raw, self.raw = self.raw, None
            await self.call(lambda _raw: raw.close())
        self._calls.put(None)
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


__all__ = ["DatabaseThread"]
