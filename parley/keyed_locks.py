"""asyncio locks (and semaphores) by key that exist only while someone holds or waits for one.

A ``dict.setdefault(key, asyncio.Lock())`` keyed by tenant grows by one lock per tenant ever seen
and never shrinks: with thousands of tenants over a process's life that is a leak. Here a key's
lock is created on first use and dropped when its last holder or waiter leaves, so the map holds
only the keys in use right now.

Not thread-safe: it lives on the event loop, like the locks it hands out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class KeyedSemaphores(Generic[K]):
    """At most ``limit`` holders per key at once (``KeyedLocks``: one)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a keyed semaphore needs a limit of at least 1")
        self.limit = limit
        self._locks: dict[K, tuple[asyncio.Semaphore, list[int]]] = {}  # key -> (semaphore, [holders + waiters])

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        """``async with locks.hold(key):`` - at most ``limit`` at once per key."""
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Semaphore(self.limit), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0] and self._locks.get(key) is entry:
                del self._locks[key]

    def locked(self, key: K) -> bool:
        entry = self._locks.get(key)
        return entry is not None and entry[0].locked()

    def in_use(self, key: K) -> bool:
        """Someone holds or waits for ``key``'s lock."""
        return key in self._locks

    def __len__(self) -> int:
        return len(self._locks)


class KeyedLocks(KeyedSemaphores[K]):
    """Exclusive per key."""

    def __init__(self) -> None:
        super().__init__(1)
