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
from parley.errors import InvalidInput, NotFound, TenantScopeError

M = TypeVar("M", bound=TenantOwned)

#: The shortest id prefix taken for an id (as git takes 4 characters of a commit hash).
MIN_PREFIX = 4
#: How many candidates an "ambiguous prefix" error names.
_CANDIDATES = 5


async def resolve_id(session: AsyncSession, stmt: Select[Any], column: Any, text: str, *, noun: str,
                     label: Any = None, hint: str = "") -> Any:
    """The one row of ``stmt`` whose ``column`` is ``text``, or starts with it (a unique prefix of at
    least :data:`MIN_PREFIX` characters: ``jobs show 0a26b8``). The one resolver of ids a person
    types: an unknown id is `NotFound`, an ambiguous prefix an `InvalidInput` naming the candidates
    (with their ``label`` column, e.g. the file name), so they can type more of the one they mean."""
    text = (text or "").strip()
    if not text:
        raise InvalidInput(f"give the {noun}'s id" + (f" ({hint})" if hint else ""))
    exact = (await session.execute(stmt.where(column == text))).scalars().first()
    if exact is not None:
        return exact
    unknown = f"no such {noun}: {text}" + (f" ({hint})" if hint else "")
    if len(text) < MIN_PREFIX:
        raise NotFound(unknown + f"; a prefix needs at least {MIN_PREFIX} characters")
    rows = list((await session.execute(
        stmt.where(column.startswith(text, autoescape=True)).order_by(column).limit(_CANDIDATES + 1))).scalars())
    if not rows:
        raise NotFound(unknown)
    if len(rows) > 1:
        key, name = column.key, getattr(label, "key", None)
        shown = [f"{getattr(r, key)}" + (f" ({getattr(r, name)})" if name and getattr(r, name, None) else "")
                 for r in rows[:_CANDIDATES]]
        more = ", …" if len(rows) > _CANDIDATES else ""
        raise InvalidInput(f"{text} is ambiguous: it starts the ids of several {noun}s: {', '.join(shown)}{more}; "
                           "type more of the one you mean", code="ambiguous_id")
    return rows[0]



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

    #: The column an "ambiguous id" error shows beside each candidate (a file name, a description).
    label: str | None = None

    async def resolve(self, id_or_prefix: str, *, hint: str = "") -> M:
        """The row with this id, or the one whose id starts with it (see :func:`resolve_id`)."""
        return await resolve_id(self.session, self.select(), self.model.id, id_or_prefix,  # type: ignore[attr-defined]
                                noun=self.noun, label=getattr(self.model, self.label) if self.label else None, hint=hint)

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
