"""The embedded vector index: the metadata store is the truth, the reader keeps searchable copies.

Writers (ingestion workers, any number of processes) only run SQL: one transaction per call
through :class:`~parley.vectors.store.VectorStore`. A ``role="writer"`` instance never builds an
in-memory index and refuses searches.

The reader (the retrieval process; ``role="reader"``) loads a tenant on first use or on
:meth:`EmbeddedVectorIndex.warm`: from its snapshot under ``data_dir`` when one matches the
tenant's generation, else from the change feed; then it replays the feed from the snapshot's seq.
Afterwards a background task checks every loaded tenant's head in one query each
``refresh_interval`` seconds and applies new changes in rounds of whole transactions (at most
``round_rows`` rows unless one transaction is bigger). Searches never touch the database and never
wait for a refresh: the blocking work (hnswlib, tantivy, numpy) runs off the event loop, on two
search threads and one index thread at nice 19 (applying changes is indexing work and yields the
CPU to searches: measured, a tantivy commit costs 15-70 ms and a merge now and then ~1 s).
Snapshots are written after ``snapshot_every`` applied changes and on :meth:`aclose`.

A reader that also writes (the single-process dev mode, the tests) refreshes the tenant after each
of its own writes, so it reads its writes.

To commit vectors together with other rows (chunk metadata), write through
:meth:`EmbeddedVectorIndex.store` inside the caller's transaction. On SQLite this is also the way
to write while the same process holds another open write transaction: SQLite has one writer at a
time, so a second connection would wait for the first (busy_timeout) instead.

Residency. With a memory budget (``memory_budget_bytes``, the retrieval service's
``PARLEY_RETRIEVAL_MEMORY_BUDGET_MB``) and/or a tenant cap (``max_tenants``), the reader releases
the least recently used tenants beyond it after each load (`parley.vectors.residency`): never one
with a query in flight; its snapshot is written first if it changed, its graph, payloads and
tantivy index are closed and dropped, and glibc is asked to return the freed pages
(``malloc_trim``). Its next query reloads it from the snapshot and replays the change feed, so
writes that arrived while it was out are there. Concurrent first queries of a cold tenant load it
once (they wait on the tenant's lock). ``warm`` stops loading at the budget.

Only one process may own ``data_dir``'s snapshots (an ``flock`` on ``vectors.lock``); a second
reader on the same directory still works, with in-memory tantivy indexes and without snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.db import unit_of_work
from parley.errors import ConfigurationError
from parley.keyed_locks import KeyedLocks
from parley.vectors.base import (
    Hit, IndexItem, Role, as_vector, check_document, check_items, check_limit, check_tenant, query_terms,
)
from parley.vectors.memory import TenantIndex
from parley.vectors.residency import Residency, trim_heap
from parley.vectors.store import Head, VectorStore, heads

log = logging.getLogger("parley.vectors")


def _lower_priority(niceness: int) -> None:
    """Run the index thread (and the tantivy threads it starts, which inherit it) at low priority:
    applying changes is indexing work and must not take CPU from searches (Linux nice is per thread)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


class EmbeddedVectorIndex:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        role: Role,
        data_dir: Path | None = None,
        refresh_interval: float = 1.0,
        round_rows: int = 2000,
        snapshot_every: int = 5000,
        search_threads: int = 2,
        index_nice: int = 19,
        title_weight: float = 1.0,
        memory_budget_bytes: int | None = None,
        max_tenants: int | None = None,
        trim_memory: bool = True,
    ) -> None:
        """``title_weight``: the title field's weight in keyword searches (`TenantIndex.keyword_search`).
        ``memory_budget_bytes`` / ``max_tenants`` (None or 0: unbounded): the reader's residency
        bounds (module docstring); ``trim_memory``: ``malloc_trim`` after releasing tenants."""
        if role not in ("reader", "writer"):
            raise ConfigurationError(f"role must be 'reader' or 'writer', not {role!r}")
        self.role = role
        self._sessions = sessions
        self._dir = Path(data_dir) if data_dir is not None and role == "reader" else None
        self.refresh_interval = refresh_interval
        self.round_rows = round_rows
        self.snapshot_every = snapshot_every
        self._search_threads = search_threads
        self.index_nice = index_nice
        if title_weight < 0:
            raise ConfigurationError(f"title_weight must be >= 0, not {title_weight}")
        self.title_weight = float(title_weight)
        self._tenants: dict[str, TenantIndex] = {}
        self._locks: KeyedLocks[str] = KeyedLocks()  # only tenants being loaded/applied/released
        if (memory_budget_bytes or 0) < 0 or (max_tenants or 0) < 0:
            raise ConfigurationError("memory_budget_bytes and max_tenants must be >= 0")
        self.residency = Residency(budget_bytes=memory_budget_bytes, max_tenants=max_tenants)
        self.trim_memory = trim_memory
        self._index_pool: ThreadPoolExecutor | None = None
        self._search_pool: ThreadPoolExecutor | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self._started = False
        self._closed = False

    # --- writes (both roles) ------------------------------------------------------------------

    @staticmethod
    def store(session: AsyncSession, tenant_id: str) -> VectorStore:
        """The SQL writer inside the caller's transaction; readers see its changes after that commit."""
        return VectorStore(session, tenant_id)

    async def ensure_tenant(self, tenant_id: str) -> None:
        await self._write(check_tenant(tenant_id), lambda store: store.ensure_tenant())

    async def upsert(self, tenant_id: str, items: Sequence[IndexItem]) -> None:
        check_tenant(tenant_id)
        items = check_items(items)
        await self._write(tenant_id, lambda store: store.upsert(items))

    async def replace_document(self, tenant_id: str, document_id: str, items: Sequence[IndexItem]) -> None:
        check_tenant(tenant_id)
        items = check_items(items, document_id=check_document(document_id))
        await self._write(tenant_id, lambda store: store.replace_document(document_id, items))

    async def delete_document(self, tenant_id: str, document_id: str) -> int:
        check_tenant(tenant_id)
        check_document(document_id)
        return await self._write(tenant_id, lambda store: store.delete_document(document_id))

    async def delete_tenant(self, tenant_id: str) -> None:
        await self._write(check_tenant(tenant_id), lambda store: store.delete_tenant())

    async def count(self, tenant_id: str) -> int:
        """Live entries in the store (the truth; a reader's searches may lag it by one refresh)."""
        async with unit_of_work(self._sessions, tenant_id=check_tenant(tenant_id)) as session:
            return await VectorStore(session, tenant_id).count()

    async def _write(self, tenant_id: str, op: Any) -> Any:
        self._check_open()
        async with unit_of_work(self._sessions, tenant_id=tenant_id) as session:
            result = await op(VectorStore(session, tenant_id))
        if self.role == "reader" and tenant_id in self._tenants:
            await self.refresh(tenant_id)  # read your own writes
        return result

    # --- searches (reader) --------------------------------------------------------------------

    async def vector_search(self, tenant_id: str, vector: np.ndarray, limit: int) -> list[Hit]:
        check_tenant(tenant_id)
        query, limit = as_vector(vector), check_limit(limit)
        with self.residency.pinned(tenant_id):  # not released while this query runs
            index = await self._index(tenant_id)
            if limit == 0 or index.count == 0:
                return []
            return await self._in(self._search_pool, index.vector_search, query, limit)

    async def keyword_search(self, tenant_id: str, query: str, limit: int) -> list[Hit]:
        check_tenant(tenant_id)
        terms, limit = query_terms(query), check_limit(limit)
        with self.residency.pinned(tenant_id):
            index = await self._index(tenant_id)
            if limit == 0 or not terms or index.count == 0:
                return []
            return await self._in(self._search_pool, index.keyword_search, terms, limit, self.title_weight)

    # --- reader lifecycle ---------------------------------------------------------------------

    async def warm(self, tenant_ids: Sequence[str]) -> None:
        """Load these tenants now (the retrieval service's start-up) instead of on their first query;
        with a residency bound, only while under it (the rest load on their first query)."""
        for tenant_id in tenant_ids:
            if self.residency.bounded and self.residency.full() and check_tenant(tenant_id) not in self._tenants:
                return
            await self._index(check_tenant(tenant_id))

    async def refresh(self, tenant_id: str | None = None) -> None:
        """Apply committed changes now: of one tenant, or of every loaded tenant."""
        self._require_reader()
        if tenant_id is not None:
            await self._refresh_one(check_tenant(tenant_id))
            return
        loaded = list(self._tenants)
        if not loaded:
            return
        async with unit_of_work(self._sessions, admin=True) as session:
            found = await heads(session, loaded)
        for tid in loaded:
            index, head = self._tenants.get(tid), found.get(tid)
            if index is None:
                continue
            if head is None and index.generation is None:
                continue
            if head is not None and head.generation == index.generation and head.last_seq == index.seq:
                continue
            await self._refresh_one(tid)
        await self._make_room()  # applied changes can grow tenants past the budget

    async def _refresh_one(self, tenant_id: str) -> None:
        async with self._lock(tenant_id):
            index = self._tenants.get(tenant_id)
            if index is not None:
                self._tenants[tenant_id] = index = await self._catch_up(tenant_id, index, None)
                if self._tenants.get(tenant_id) is index:
                    self.residency.update(tenant_id, index.estimated_bytes())

    async def snapshot(self, tenant_id: str | None = None) -> None:
        """Write snapshots now (of one tenant or of every loaded one that changed since its last)."""
        self._require_reader()
        for tid in [tenant_id] if tenant_id else list(self._tenants):
            index = self._tenants.get(tid)
            if index is not None and (tenant_id or index.changes_since_snapshot):
                async with self._lock(tid):
                    await self._in(self._index_pool, index.save)

    def stats(self, tenant_id: str) -> dict[str, Any] | None:
        """What the reader holds for a tenant (None when not loaded)."""
        index = self._tenants.get(check_tenant(tenant_id))
        return None if index is None else index.stats()

    def residency_stats(self) -> dict[str, Any]:
        """Resident tenants, their estimated bytes, the bounds, loads, evictions, load seconds."""
        return self.residency.stats()

    def resident(self) -> list[str]:
        """The tenants held in memory now, least recently used first."""
        return [tid for tid in self.residency.order() if tid in self._tenants]

    @property
    def follows_store(self) -> bool:
        """True when this reader applies new writes by itself (every ``refresh_interval`` seconds)."""
        return self.role == "reader" and self.refresh_interval > 0

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._index_pool is not None:
            for tid, index in list(self._tenants.items()):
                if index.changes_since_snapshot:
                    try:
                        async with self._lock(tid):
                            await self._in(self._index_pool, index.save)
                    except Exception:  # noqa: BLE001 - a failed snapshot only costs a rebuild
                        log.exception("vector snapshot of tenant %s failed", tid)
            self._index_pool.shutdown(wait=True)
        if self._search_pool is not None:
            self._search_pool.shutdown(wait=True)
        self._tenants.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # --- internals ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigurationError("the vector index is closed")

    def _require_reader(self) -> None:
        self._check_open()
        if self.role != "reader":
            raise ConfigurationError("a writer-role vector index does not search; use role='reader'")

    def _lock(self, tenant_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """``async with self._lock(tid):`` the tenant's load/apply/release lock (dropped when unused)."""
        return self._locks.hold(tenant_id)

    async def _in(self, pool: ThreadPoolExecutor | None, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        self._index_pool = ThreadPoolExecutor(
            1, thread_name_prefix="parley-vindex", initializer=_lower_priority, initargs=(self.index_nice,)
        )
        self._search_pool = ThreadPoolExecutor(self._search_threads, thread_name_prefix="parley-vsearch")
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._dir / "vectors.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_fd = fd
            except BlockingIOError:
                os.close(fd)
                log.warning("%s is owned by another reader; this one runs without snapshots", self._dir)
                self._dir = None
        if self.refresh_interval > 0:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop(), name="parley-vector-refresh")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep serving what we have; the next tick retries
                log.exception("vector index refresh failed")

    @staticmethod
    def drop_snapshot(data_dir: Path, tenant_id: str) -> bool:
        """Remove a tenant's snapshot files under ``data_dir`` (an erasure: they hold the text of
        deleted chunks until rewritten) when no reader owns the directory: the next reader rebuilds
        the tenant from the store. False when a running reader owns it (it rewrites the snapshot
        from the current state at its next snapshot or stop) or there is none."""
        check_tenant(tenant_id)
        directory = Path(data_dir)
        if not (directory / tenant_id).is_dir():
            return False
        fd = os.open(directory / "vectors.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            shutil.rmtree(directory / tenant_id, ignore_errors=True)
            return True
        finally:
            os.close(fd)  # closing releases the lock

    def _tenant_dir(self, tenant_id: str) -> Path | None:
        return None if self._dir is None else self._dir / tenant_id

    async def _index(self, tenant_id: str) -> TenantIndex:
        self._require_reader()
        index = self._tenants.get(tenant_id)
        if index is not None:
            self.residency.touch(tenant_id)
            return index
        self._start()
        loaded = False
        async with self._lock(tenant_id):
            if tenant_id not in self._tenants:
                started = time.perf_counter()
                await self._load(tenant_id)
                loaded = True
                self.residency.loaded(tenant_id, self._tenants[tenant_id].estimated_bytes(), time.perf_counter() - started)
            index = self._tenants[tenant_id]
        if loaded:
            await self._make_room(keep={tenant_id})
        return index

    async def _make_room(self, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Release least recently used tenants while over the residency bounds (module docstring)."""
        if not self.residency.bounded or self._closed:
            return
        released = 0
        for tid in self.residency.victims(keep=keep):
            released += await self._release(tid)
        if released and self.trim_memory:
            await self._in(self._index_pool, trim_heap)

    async def _release(self, tenant_id: str) -> bool:
        """Evict one tenant chosen by `Residency.victims`: unpublish it at once (a query arriving
        now reloads it after this, on the same lock), snapshot it if it changed, close it."""
        try:
            async with self._lock(tenant_id):
                index = self._tenants.get(tenant_id)
                if index is None:
                    self.residency.released(tenant_id, evicted=False)
                    return False
                if self.residency.is_pinned(tenant_id):  # a query arrived meanwhile: keep it
                    self.residency.kept(tenant_id)
                    return False
                del self._tenants[tenant_id]  # no await since the pin check: no query holds it
                self.residency.released(tenant_id)
                if index.changes_since_snapshot and index.generation is not None:
                    try:
                        await self._in(self._index_pool, index.save)
                    except Exception:  # noqa: BLE001 - the change feed rebuilds what the snapshot lacks
                        log.exception("vector snapshot of tenant %s failed before its release", tenant_id)
                await self._in(self._index_pool, index.close)
                return True
        finally:
            self.residency.kept(tenant_id)  # no-op when released

    async def _head(self, tenant_id: str) -> Head | None:
        async with unit_of_work(self._sessions, tenant_id=tenant_id) as session:
            return await VectorStore(session, tenant_id).head()

    async def _load(self, tenant_id: str) -> None:
        """Snapshot if it matches, else build from the feed; catch up, cross-check, then publish
        (caller holds the tenant's lock): a search never sees a half-loaded tenant."""
        head = await self._head(tenant_id)
        index = await self._catch_up(tenant_id, await self._open(tenant_id, head, from_snapshot=True), head)
        if index.origin == "snapshot" and index.count != index.bm25_count:
            log.warning("vector snapshot of tenant %s disagrees with its text index; rebuilding", tenant_id)
            index = await self._catch_up(tenant_id, await self._open(tenant_id, head, from_snapshot=False), None)
        self._tenants[tenant_id] = index

    async def _open(self, tenant_id: str, head: Head | None, *, from_snapshot: bool) -> TenantIndex:
        """The tenant's snapshot when it matches the head, else an empty index for its generation."""
        if head is None:  # nothing written yet: nothing to persist either
            return await self._in(self._index_pool, TenantIndex.fresh, tenant_id, None, None)
        directory = self._tenant_dir(tenant_id)
        if from_snapshot and directory is not None:
            try:
                index = await self._in(self._index_pool, TenantIndex.load, tenant_id, head.generation, directory)
            except Exception:  # noqa: BLE001 - an unreadable snapshot is rebuilt
                log.exception("vector snapshot of tenant %s is unreadable; rebuilding", tenant_id)
                index = None
            if index is not None and index.seq <= head.last_seq:  # (a newer snapshot means a restored database)
                return index
        async with unit_of_work(self._sessions, tenant_id=tenant_id) as session:
            live = await VectorStore(session, tenant_id).count()  # sizes the graph once instead of doubling it
        return await self._in(self._index_pool, TenantIndex.fresh, tenant_id, head.generation, directory, live)

    async def _catch_up(self, tenant_id: str, index: TenantIndex, head: Head | None) -> TenantIndex:
        """Bring ``index`` up to the tenant's head (caller holds the tenant's lock) and return it, or
        what replaces it: an empty index when the tenant's index was deleted, a rebuild for a new
        generation. The old generation stops being served at once; the caller publishes the result.
        A failed apply unpublishes the tenant, which is then rebuilt on next use."""
        if head is None:
            head = await self._head(tenant_id)
        directory = self._tenant_dir(tenant_id)
        if head is None:
            if index.generation is None:
                return index
            if directory is not None:
                await self._in(self._index_pool, shutil.rmtree, directory, True)
            return await self._open(tenant_id, None, from_snapshot=False)
        if head.generation != index.generation or head.last_seq < index.seq:
            if tenant_id in self._tenants:
                self._tenants[tenant_id] = await self._open(tenant_id, None, from_snapshot=False)
            index = await self._open(tenant_id, head, from_snapshot=False)
        try:
            while index.seq < head.last_seq:
                async with unit_of_work(self._sessions, tenant_id=tenant_id) as session:
                    changes, end = await VectorStore(session, tenant_id).changes(index.seq, head.last_seq, self.round_rows)
                await self._in(self._index_pool, index.apply, changes, end)
        except Exception:
            self._tenants.pop(tenant_id, None)
            self.residency.released(tenant_id, evicted=False)
            raise
        if index.generation is not None and index.changes_since_snapshot >= self.snapshot_every:
            await self._in(self._index_pool, index.save)
        return index
