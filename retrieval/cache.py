"""In-process caches of the answer path: an LRU with a time-to-live, and single-flight.

`TTLCache` is the answer cache (keyed by tenant, normalised question, the tenant's index version
and everything else the answer depends on) and the short-lived tenant-row cache.

* In-process on purpose: a hit costs a dict lookup (microseconds), against ~1 ms for a round trip
  to Redis, and a retrieval process is one process. Several retrieval replicas each warm their
  own cache; correctness does not depend on sharing it, because invalidation is by key (the index
  version) rather than by message.
* LRU + TTL: the LRU bounds memory, the TTL bounds staleness from anything the key does not
  capture. Expired entries are dropped when read, and the LRU end is trimmed on every write.
* The clock is injectable so tests check expiry without sleeping.
* Not thread-safe: it lives on the event loop, like everything that calls it.

`SingleFlight` makes N concurrent identical cache misses compute once: the first caller runs
the work, the others await its result (or its exception). A burst of customers asking the same
new question then costs one embedding and one generation, not N.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, maxsize: int, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if maxsize < 0 or ttl < 0:
            raise ValueError("maxsize and ttl must be >= 0")
        self.maxsize = maxsize
        self.ttl = ttl
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.maxsize > 0 and self.ttl > 0

    def get(self, key: K) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            self.misses += 1
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._data[key]
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def set(self, key: K, value: V) -> None:
        if not self.enabled:
            return
        self._data[key] = (self._clock() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """(result, shared): ``shared`` is True when another caller's run produced the result."""
        while (pending := self._inflight.get(key)) is not None:
            try:
                return await asyncio.shield(pending), True
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise  # we were cancelled ourselves
                # the leader was cancelled (its client went away): someone else has to do the work
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await work()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # mark retrieved: followers re-raise it; nobody else must
            raise
        else:
            future.set_result(result)
            return result, False
        finally:
            del self._inflight[key]
