"""Queries on process requests; tenant scoping from the repository base."""

from __future__ import annotations

from collections.abc import Sequence

from parley.repository import TenantRepository
from passthrough.models import ProcessRequest


class ProcessRequestRepository(TenantRepository[ProcessRequest]):
    model = ProcessRequest
    noun = "process request"

    async def recent(self, *, limit: int = 100) -> Sequence[ProcessRequest]:
        stmt = self.select().order_by(ProcessRequest.created_at.desc(), ProcessRequest.id).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()
