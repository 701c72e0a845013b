"""The few metadata reads of the answer path, kept off the hot path where possible.

`TenantProfiles` reads a tenant's row (index version, persona, name) at most once per ``ttl``
seconds per tenant, negative answers included (an unknown tenant id does not cost a query per
request). Concurrent misses for one tenant share one query.

Staleness bound: a new ``index_version`` (bumped by every indexing or deletion) is seen at most
``ttl`` seconds after its commit, so for at most that long an answer cached under the previous
version can still be served; then the key changes and the cache misses. A persona change is seen
within the same bound. ``ttl=0`` reads the row on every request (the tests use it to be exact).

`document_names` is the fallback for citations whose index entry has no title (the index stores
the document's name as the title, so normally no query is needed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.db import unit_of_work
from parley.errors import Forbidden, NotFound
from knowledge.models import Document
from retrieval.answer import TenantProfile
from retrieval.cache import SingleFlight, TTLCache
from tenants.models import Tenant

_MISSING = TenantProfile("", "", "", "", -1)


class TenantProfiles:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, ttl: float = 1.0, maxsize: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self._cache: TTLCache[str, TenantProfile] = TTLCache(maxsize, ttl, clock=clock)
        self._flight: SingleFlight[str, TenantProfile] = SingleFlight()

    async def get(self, tenant_id: str) -> TenantProfile:
        profile = self._cache.get(tenant_id)
        if profile is None:
            profile, _ = await self._flight.run(tenant_id, lambda: self._load(tenant_id))
            self._cache.set(tenant_id, profile)
        if profile is _MISSING:
            raise NotFound(f"no such tenant: {tenant_id}")
        return profile

    def forget(self, tenant_id: str) -> None:
        self._cache.pop(tenant_id)

    async def _load(self, tenant_id: str) -> TenantProfile:
        async with unit_of_work(self.sessions) as session:
            row = (
                await session.execute(
                    select(
                        Tenant.id, Tenant.name, Tenant.display_name, Tenant.persona, Tenant.index_version, Tenant.status
                    ).where(Tenant.id == tenant_id)
                )
            ).one_or_none()
        if row is None:
            return _MISSING
        if row.status != "active":
            raise Forbidden(f"tenant {tenant_id} is {row.status}", code="tenant_inactive")
        return TenantProfile(row.id, row.name, row.display_name or "", row.persona or "", int(row.index_version or 0))

    async def ids(self) -> list[str]:
        """Every active tenant's id (the start-up warm-up)."""
        async with unit_of_work(self.sessions) as session:
            rows = await session.execute(select(Tenant.id).where(Tenant.status == "active"))
            return [r.id for r in rows]


async def document_names(sessions: async_sessionmaker[AsyncSession], tenant_id: str, ids: Sequence[str]) -> dict[str, str]:
    if not ids:
        return {}
    async with unit_of_work(sessions, tenant_id=tenant_id) as session:
        rows = await session.execute(select(Document.id, Document.filename).where(Document.id.in_(list(ids))))
        return {r.id: r.filename for r in rows}
