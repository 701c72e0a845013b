"""Repository base: every query on tenant-owned rows starts from one scoped statement.

Two layers hold tenant scoping. Here, `TenantRepository.select()` / `.get()` / `.update()` /
`.delete()` always filter by the repository's tenant. Underneath, `parley.db` filters every ORM
statement of a tenant-bound session, and refuses tenant-owned queries from an unbound one, so
even a hand-written query inside a repository cannot forget the tenant.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from sqlalchemy import Select, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.db import TenantOwned, bind_tenant, session_tenant
from parley.errors import NotFound, TenantScopeError

M = TypeVar("M", bound=TenantOwned)



def scope_session(session: AsyncSession, tenant_id: str) -> AsyncSession:
    """Bind ``session`` to ``tenant_id`` (or check it is already bound to it) for a tenant repository."""
    if not tenant_id:
        raise TenantScopeError("a tenant repository needs a tenant id")
    bound = session_tenant(session)
    if bound is None:
        bind_tenant(session, tenant_id)
    elif bound != tenant_id:
        raise TenantScopeError(f"session is bound to tenant {bound}, repository asked for {tenant_id}")
    return session

class TenantRepository(Generic[M]):
    model: type[M]
    #: Word used in "no such <noun>" errors.
    noun: str = "row"

    def __init__(self, session: AsyncSession, tenant_id: str) -> None:
        self.session = scope_session(session, tenant_id)
        self.tenant_id = tenant_id

    def select(self, *entities: Any) -> Select[Any]:
        stmt = select(*entities) if entities else select(self.model)
        return stmt.where(self.model.tenant_id == self.tenant_id)

    async def get(self, id_: Any) -> M:
        row = await self.find(id_)
        if row is None:
            raise NotFound(f"no such {self.noun}: {id_}")
        return row

    async def find(self, id_: Any) -> M | None:
        result = await self.session.execute(self.select().where(self.model.id == id_))  # type: ignore[attr-defined]
        return result.scalar_one_or_none()

    def add(self, row: M) -> M:
        row.tenant_id = self.tenant_id
        self.session.add(row)
        return row

    def update(self) -> Any:
        return update(self.model).where(self.model.tenant_id == self.tenant_id)

    def delete(self) -> Any:
        return delete(self.model).where(self.model.tenant_id == self.tenant_id)
