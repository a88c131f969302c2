"""The requests each principal holds open, bounded: SSE streams and sync waits, each one count
shared by every surface.

    streams = OpenStreams(limit=100, sync_limit=100)   # build_app shares one across the native API and profiles
    with streams.slot(request) as slot:         # 429 `rate_limited` when the principal is at the limit
        ...                                     # anything raised here gives the slot back
        return slot.bind(StreamResponse(...))   # held until the stream ends, fails or is closed
    with streams.waiting(request):              # a sync request: 429 past `sync_limit`, before any run
        state = await engine.execute(..., mode="sync")

A stream, like a sync request waiting for its run, holds a connection, server memory and a task
for as long as it lasts, so a principal may hold at most `limit` streams and `sync_limit` sync
waits at once. Without a principal (auth off) nobody can be told apart, so nothing is counted:
bound connections at the server or proxy there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from .. import observe
from ..limits import MAX_OPEN_STREAMS_PER_PRINCIPAL, MAX_SYNC_WAITS_PER_PRINCIPAL
from .core import HttpError, Request, StreamResponse
from .ratelimit import principal_key


class OpenStreams:
    """How many streams and sync waits each principal has open; refuses one past its limit with a 429."""

    def __init__(self, limit: int = MAX_OPEN_STREAMS_PER_PRINCIPAL, sync_limit: int = MAX_SYNC_WAITS_PER_PRINCIPAL) -> None:
        if limit < 1 or sync_limit < 1:
            raise ValueError("limit and sync_limit must be at least 1")
        self.limit = limit
        self.sync_limit = sync_limit
        self._open: dict[str, int] = {}
        self._waiting: dict[str, int] = {}

    def waiting_count(self, key: str) -> int:
        return self._waiting.get(key, 0)

    @contextmanager
    def waiting(self, request: Request) -> Iterator[None]:
        """Hold one of the principal's sync waits for the block (a 429 past `sync_limit`)."""
        key = None if request.principal is None else principal_key(request)
        if key is not None:
            held = self._waiting.get(key, 0)
            if held >= self.sync_limit:
                raise _refused(f"at most {self.sync_limit} sync requests may wait at once; use mode async or wait for one", self.sync_limit, held)
            self._waiting[key] = held + 1
        try:
            yield
        finally:
            if key is not None:
                left = self._waiting.get(key, 0) - 1
                if left > 0:
                    self._waiting[key] = left
                else:
                    self._waiting.pop(key, None)

    def count(self, key: str) -> int:
        return self._open.get(key, 0)

    @contextmanager
    def slot(self, request: Request) -> Iterator[Slot]:
        """A slot for one stream of the request's principal, given back unless a response is bound to it."""
        key = None if request.principal is None else principal_key(request)
        if key is not None:
            held = self._open.get(key, 0)
            if held >= self.limit:
                raise _refused(f"at most {self.limit} event streams may be open at once; close one first", self.limit, held)
            self._open[key] = held + 1
        slot = Slot(self, key)
        try:
            yield slot
        finally:
            if not slot.bound:
                slot.release()

    def _release(self, key: str) -> None:
        left = self._open.get(key, 0) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)


def _refused(message: str, limit: int, held: int) -> HttpError:
    return HttpError(429, "rate_limited", message, {"limit": limit, "open": held}, headers=(("retry-after", "1"),))


class Slot:
    """One stream's place in its principal's count."""

    def __init__(self, streams: OpenStreams, key: str | None) -> None:
        self._streams = streams
        self._key = key
        self.bound = False
        self._subscribed = False  # counted as an open SSE subscriber (runengine.observe)

    def bind(self, response: StreamResponse) -> StreamResponse:
        """The response, its body giving the slot back when it ends, fails or is closed."""
        self.bound = True
        self._subscribed = True
        observe.current.stream_opened()
        return attrs.evolve(response, body=_Releasing(response.body, self))

    def release(self) -> None:
        """Give the slot back (once; later calls do nothing)."""
        key, self._key = self._key, None
        if key is not None:
            self._streams._release(key)
        if self._subscribed:
            self._subscribed = False
            observe.current.stream_closed()


class _Releasing:
    """An SSE body that gives its slot back at its end, on an error, on aclose, or when dropped."""

    def __init__(self, body: AsyncIterator[bytes], slot: Slot) -> None:
        self._body = body
        self._slot = slot

    def __aiter__(self) -> _Releasing:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._body.__anext__()
        except BaseException:
            self._slot.release()
            raise

    async def aclose(self) -> None:
        self._slot.release()
        aclose: Any = getattr(self._body, "aclose", None)
        if aclose is not None:
            await aclose()

    def __del__(self) -> None:  # a binding that never iterated nor closed the body
        self._slot.release()


__all__ = ["OpenStreams", "Slot"]
