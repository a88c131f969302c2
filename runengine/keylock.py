"""A lock per key (a session id, an app id), held only while someone holds or waits for it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Hashable, Iterator, Mapping

import anyio


class KeyLocks(Mapping[Hashable, anyio.Lock]):
    """`async with locks(key):` serialises this process's work on `key`.

    Each key's lock is counted by its holders and waiters and dropped when the last one leaves,
    so a stream of distinct keys (one per session) leaves nothing behind. As a mapping it shows
    the keys in use right now (empty when idle).
    """

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[anyio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def __call__(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (anyio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            _, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __getitem__(self, key: Hashable) -> anyio.Lock:
        return self._locks[key][0]

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._locks)

    def __len__(self) -> int:
        return len(self._locks)
