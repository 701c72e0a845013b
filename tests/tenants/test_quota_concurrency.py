"""Quotas hold under concurrency: N uploads (and N questions) at once, each in its own session on
its own connection, at a tenant one below its limit: exactly one succeeds. On PostgreSQL the usage
row is locked FOR UPDATE; on SQLite the first write takes the database's write lock."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from knowledge.audit import Actor
from knowledge.models import Document
from knowledge.service import submit_upload
from parley.blobs import StoredBlob
from parley.db import _sqlite_pragmas, create_sessionmaker, unit_of_work
from parley.errors import QuotaExceeded
from sqlalchemy import event
from tenants import quotas
from tenants import service as tenants
from tenants.quota_models import TenantUsage
from tenants.quotas import PlanDefaults

N = 20


@pytest.fixture
async def sessions(db_url: str):  # type: ignore[no-untyped-def]
    engine = create_async_engine(db_url, pool_size=N + 2, max_overflow=0) if db_url.startswith("postgresql") \
        else create_async_engine(db_url)
    if db_url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def _tenant(sessions) -> str:  # type: ignore[no-untyped-def]
    async with unit_of_work(sessions, admin=True) as session:
        return (await tenants.create_tenant(session, name="acme")).id


async def _upload(sessions, tenant_id: str, i: int, plan: PlanDefaults, gate: asyncio.Event) -> bool:  # type: ignore[no-untyped-def]
    content = f"document number {i}".encode()
    sha = hashlib.sha256(content).hexdigest()
    await gate.wait()
    try:
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            await submit_upload(session, tenant_id=tenant_id, source="api", filename=f"doc{i}.md", declared_mime=None,
                                blob=StoredBlob(f"{tenant_id}/{sha}", sha, len(content)),
                                actor=Actor("cli", "ops", may_replace=True), plan=plan)
    except QuotaExceeded:
        return False
    return True


async def test_parallel_uploads_and_questions_one_below_the_limit_let_exactly_one_in(sessions) -> None:  # type: ignore[no-untyped-def]
    # Given a tenant one document below its limit of 5
    tenant_id = await _tenant(sessions)
    plan = PlanDefaults(max_documents=5)
    never = asyncio.Event()
    never.set()
    for i in range(4):
        assert await _upload(sessions, tenant_id, 1000 + i, plan, never)
    # When 20 uploads start at once, each on its own connection
    gate = asyncio.Event()
    tasks = [asyncio.create_task(_upload(sessions, tenant_id, i, plan, gate)) for i in range(N)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(*tasks)
    # Then exactly one succeeded, and the counter is what is stored
    assert sum(results) == 1
    async with unit_of_work(sessions, tenant_id=tenant_id) as session:
        stored = len(list((await session.execute(select(Document.id))).scalars()))
        counted = (await session.execute(select(TenantUsage.documents))).scalar_one()
    assert stored == counted == 5

    # Given (same database: one fresh PostgreSQL per test is the slow part) one question left today
    plan = PlanDefaults(max_questions_per_day=3)
    for key in ("q-a", "q-b"):
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            assert await quotas.charge_question(session, tenant_id=tenant_id, defaults=plan, key=key)
    gate = asyncio.Event()

    async def ask(i: int) -> bool:
        await gate.wait()
        try:
            async with unit_of_work(sessions, tenant_id=tenant_id) as session:
                return await quotas.charge_question(session, tenant_id=tenant_id, defaults=plan, key=f"q{i}")
        except QuotaExceeded:
            return False

    # When 20 questions are counted at once
    tasks = [asyncio.create_task(ask(i)) for i in range(N)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(*tasks)
    # Then exactly one was let in
    assert sum(results) == 1
    async with unit_of_work(sessions, tenant_id=tenant_id) as session:
        assert (await session.execute(select(TenantUsage.questions_day))).scalar_one() == 3
