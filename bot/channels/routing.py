"""Which tenant owns this Slack team / Instagram account, with its decrypted secrets, briefly cached.

Every webhook starts with this lookup, so it is cached for ``ttl`` seconds (default 10): an
uninstall seen by this process is forgotten at once (`forget`), one seen by another replica within
``ttl``. Secrets stay in memory only, never in logs (`repr` hides them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.crypto import SecretBox
from parley.db import unit_of_work
from tenants.models import ChannelKind
from tenants.repository import reveal_secrets, route_installation


@dataclass(frozen=True)
class Route:
    tenant_id: str
    installation_id: str
    external_id: str
    display_name: str
    details: dict[str, Any]
    secrets: dict[str, Any] = field(repr=False)


class InstallationDirectory:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], box: SecretBox, *, ttl: float = 10.0) -> None:
        self.sessions = sessions
        self.box = box
        self.ttl = ttl
        self._cache: dict[tuple[ChannelKind, str], tuple[float, Route | None]] = {}

    async def find(self, kind: ChannelKind, external_id: str) -> Route | None:
        key = (kind, external_id)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        async with unit_of_work(self.sessions, admin=True) as session:
            row = await route_installation(session, kind, external_id)
            route = None if row is None else Route(
                tenant_id=row.tenant_id, installation_id=row.id, external_id=row.external_id, display_name=row.display_name,
                details=dict(row.details or {}), secrets=reveal_secrets(self.box, row),
            )
        self._cache[key] = (now + self.ttl, route)
        if len(self._cache) > 10_000:
            self._cache.clear()
        return route

    def forget(self, kind: ChannelKind, external_id: str) -> None:
        self._cache.pop((kind, external_id), None)
