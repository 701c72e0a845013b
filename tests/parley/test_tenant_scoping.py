"""No query can forget the tenant: scoping is enforced on every ORM statement of a session."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from parley.db import bind_admin, bind_tenant
from parley.errors import TenantScopeError
from knowledge.models import Document
from parley.repository import TenantRepository
from tenants.models import Tenant


class Documents(TenantRepository[Document]):
    model = Document
    noun = "document"


def _doc(tenant_id: str, name: str) -> Document:
    return Document(
        tenant_id=tenant_id, source="cli", filename=name, size_bytes=1, sha256=name * 2,
        blob_key=f"{tenant_id}/{name}", idempotency_key=name,
    )


@pytest.fixture
async def two_tenants(db):  # type: ignore[no-untyped-def]
    async with db.sessions() as s:
        bind_admin(s)
        a, b = Tenant(name="alpha"), Tenant(name="beta")
        s.add_all([a, b])
        await s.flush()
        s.add_all([_doc(a.id, "a1"), _doc(a.id, "a2"), _doc(b.id, "b1")])
        await s.commit()
        return a.id, b.id


async def test_hand_written_select_is_filtered(db, two_tenants) -> None:  # type: ignore[no-untyped-def]
    a, b = two_tenants
    async with db.sessions() as s:
        bind_tenant(s, a)
        # a query that "forgets" the tenant filter still only sees tenant a
        names = set((await s.execute(select(Document.filename))).scalars())
        count = (await s.execute(select(func.count()).select_from(Document))).scalar_one()
    assert names == {"a1", "a2"}
    assert count == 2


async def test_unbound_session_refuses_tenant_owned_queries(db, two_tenants) -> None:  # type: ignore[no-untyped-def]
    async with db.sessions() as s:
        with pytest.raises(TenantScopeError):
            await s.execute(select(Document))
        # tenants themselves are not tenant-owned
        assert len((await s.execute(select(Tenant))).scalars().all()) == 2


async def test_updates_cannot_reach_another_tenant(db, two_tenants) -> None:  # type: ignore[no-untyped-def]
    a, b = two_tenants
    async with db.sessions() as s:
        bind_tenant(s, a)
        await s.execute(update(Document).values(error="touched"))
        await s.commit()
    async with db.sessions() as s:
        bind_admin(s)
        touched = dict((await s.execute(select(Document.filename, Document.error))).all())
    assert touched == {"a1": "touched", "a2": "touched", "b1": None}


async def test_writing_a_row_of_another_tenant_is_refused(db, two_tenants) -> None:  # type: ignore[no-untyped-def]
    a, b = two_tenants
    async with db.sessions() as s:
        bind_tenant(s, a)
        s.add(_doc(b, "sneaky"))
        with pytest.raises(TenantScopeError):
            await s.flush()


async def test_repository_get_does_not_find_other_tenants_rows(db, two_tenants) -> None:  # type: ignore[no-untyped-def]
    a, b = two_tenants
    async with db.sessions() as s:
        bind_admin(s)
        b_doc = (await s.execute(select(Document).where(Document.tenant_id == b))).scalar_one()
    async with db.sessions() as s:
        repo = Documents(s, a)
        assert await repo.find(b_doc.id) is None
        with pytest.raises(Exception, match="no such document"):
            await repo.get(b_doc.id)
    async with db.sessions() as s:
        bind_tenant(s, a)
        with pytest.raises(TenantScopeError):
            Documents(s, b)
