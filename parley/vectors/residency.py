"""Which tenants the embedded reader keeps in memory: a budget, least recently used out first.

The reader (`parley.vectors.embedded`) loads a tenant's HNSW graph, payloads and tantivy index on
its first query. Without a bound, a process serving a thousand tenants ends up holding all of them.
`Residency` keeps the accounting:

* each resident tenant's estimated bytes (`TenantIndex.estimated_bytes`: graph slots, payloads and
  id maps, the tantivy directory's size, which is what its mmap can make resident);
* an LRU order by last use (a query, a load);
* pins: a tenant with a query in flight is never chosen for release;
* counters for ``/metrics``: loads, releases (evictions), load seconds (a fixed-bucket histogram,
  no per-tenant labels).

`victims` names the tenants to release, least recently used first, while the total is over the
byte budget or the count over the tenant cap; the reader then releases each one under its lock
(snapshot if it changed, close, drop references) and asks glibc to hand freed pages back
(`trim_heap`). A released tenant reloads from its snapshot plus the change feed on its next query,
so a write that arrived meanwhile is not lost.

Not thread-safe: it lives on the event loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

#: Upper bounds of the load-seconds histogram buckets (a snapshot load is tens of milliseconds,
#: a rebuild from the change feed seconds).
LOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_libc: Any = None


def trim_heap() -> bool:
    """``malloc_trim(0)``: return the free pages of glibc's heaps to the system, so a released
    tenant's memory shows in RSS (glibc otherwise keeps freed arenas for reuse). False where
    there is no glibc."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    with contextlib.suppress(Exception):
        _libc.malloc_trim(0)
        return True
    return False


class Residency:
    def __init__(self, *, budget_bytes: int | None = None, max_tenants: int | None = None) -> None:
        """``budget_bytes`` / ``max_tenants``: None or 0 for no bound."""
        self.budget_bytes = budget_bytes or None
        self.max_tenants = max_tenants or None
        self._bytes: OrderedDict[str, int] = OrderedDict()  # resident tenants, least recently used first
        self._pins: dict[str, int] = {}
        self._releasing: set[str] = set()
        self.total_bytes = 0
        self.loads = 0
        self.evictions = 0
        self.load_seconds_sum = 0.0
        self.load_buckets = [0] * (len(LOAD_BUCKETS) + 1)  # the last one is +Inf

    # --- the accounting -----------------------------------------------------------------------

    def loaded(self, tenant_id: str, nbytes: int, seconds: float) -> None:
        self.loads += 1
        self.load_seconds_sum += seconds
        self.load_buckets[next((i for i, le in enumerate(LOAD_BUCKETS) if seconds <= le), len(LOAD_BUCKETS))] += 1
        self.update(tenant_id, nbytes)

    def update(self, tenant_id: str, nbytes: int) -> None:
        """The tenant is resident with ``nbytes`` now (after a load or an applied change); also a use."""
        self.total_bytes += nbytes - self._bytes.get(tenant_id, 0)
        self._bytes[tenant_id] = nbytes
        self._bytes.move_to_end(tenant_id)

    def touch(self, tenant_id: str) -> None:
        if tenant_id in self._bytes:
            self._bytes.move_to_end(tenant_id)

    def released(self, tenant_id: str, *, evicted: bool = True) -> None:
        self.total_bytes -= self._bytes.pop(tenant_id, 0)
        self._releasing.discard(tenant_id)
        if evicted:
            self.evictions += 1

    def kept(self, tenant_id: str) -> None:
        """A release chosen by `victims` did not happen (the tenant got busy meanwhile)."""
        self._releasing.discard(tenant_id)

    # --- pins ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def pinned(self, tenant_id: str) -> Iterator[None]:
        """The tenant is not released while the block runs (a query in flight)."""
        self._pins[tenant_id] = self._pins.get(tenant_id, 0) + 1
        try:
            yield
        finally:
            left = self._pins[tenant_id] - 1
            if left:
                self._pins[tenant_id] = left
            else:
                del self._pins[tenant_id]

    def is_pinned(self, tenant_id: str) -> bool:
        return tenant_id in self._pins

    # --- decisions ----------------------------------------------------------------------------

    @property
    def bounded(self) -> bool:
        return self.budget_bytes is not None or self.max_tenants is not None

    def full(self) -> bool:
        """At or over a bound: loading one more tenant would make room by releasing another."""
        return (self.budget_bytes is not None and self.total_bytes >= self.budget_bytes) or (
            self.max_tenants is not None and len(self._bytes) >= self.max_tenants
        )

    def victims(self, *, keep: frozenset[str] | set[str] = frozenset()) -> list[str]:
        """Tenants to release, least recently used first, until the rest fits; never a pinned one,
        one in ``keep`` or one already being released. Each is marked as being released until
        `released` or `kept`."""
        total, count = self.total_bytes, len(self._bytes)
        for tid in self._releasing:
            total -= self._bytes.get(tid, 0)
            count -= 1
        chosen = []
        for tid, nbytes in self._bytes.items():
            over_bytes = self.budget_bytes is not None and total > self.budget_bytes
            over_count = self.max_tenants is not None and count > self.max_tenants
            if not (over_bytes or over_count):
                break
            if tid in self._pins or tid in keep or tid in self._releasing:
                continue
            chosen.append(tid)
            total -= nbytes
            count -= 1
        self._releasing.update(chosen)
        return chosen

    def __contains__(self, tenant_id: object) -> bool:
        return tenant_id in self._bytes

    def __len__(self) -> int:
        return len(self._bytes)

    def order(self) -> list[str]:
        """Resident tenants, least recently used first."""
        return list(self._bytes)

    def _cumulative(self) -> list[tuple[float, int]]:
        out, running = [], 0
        for le, n in zip((*LOAD_BUCKETS, float("inf")), self.load_buckets):
            running += n
            out.append((le, running))
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "resident_tenants": len(self._bytes), "estimated_bytes": self.total_bytes,
            "budget_bytes": self.budget_bytes, "max_tenants": self.max_tenants, "loads": self.loads,
            "evictions": self.evictions, "load_seconds_sum": self.load_seconds_sum,
            "load_buckets": self._cumulative(),  # [(upper bound, loads that took at most that)], last +Inf
            "pinned": len(self._pins),
        }
