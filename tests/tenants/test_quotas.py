"""Plans and quotas (`tenants.quotas`, `knowledge.usage`): limits from the settings or the tenant's
plan, atomic consumption in the caller's unit of work, exact stored counters through uploads,
replacements, deletions and restores, rates per period, one count per question, one
``quota.exceeded`` event per resource per hour, and clear refusals for bad limits."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from knowledge import usage
from knowledge.audit import Actor
from knowledge.models import Document, DocumentStatus
from knowledge.service import request_deletion, restore_document, submit_upload
from parley.blobs import StoredBlob
from parley.bus.models import OutboxMessage
from parley.db import unit_of_work
from parley.errors import InvalidInput, QuotaExceeded
from parley.http_errors import status_for
from parley.settings import Settings
from tenants import quotas
from tenants import service as tenants
from tenants.quota_models import TenantUsage
from tenants.quotas import PlanDefaults
from tests.conftest import Db

ADMIN = Actor("cli", "ops", may_replace=True)
NOON = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


async def _tenant(db: Db, name: str = "acme") -> str:
    async with unit_of_work(db.sessions, admin=True) as session:
        return (await tenants.create_tenant(session, name=name)).id


def _blob(tenant_id: str, content: bytes) -> StoredBlob:
    sha = hashlib.sha256(content).hexdigest()
    return StoredBlob(f"{tenant_id}/{sha}", sha, len(content))


async def _upload(db: Db, tenant_id: str, name: str, content: bytes, plan: PlanDefaults) -> Document:
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        return (await submit_upload(session, tenant_id=tenant_id, source="cli", filename=name, declared_mime=None,
                                    blob=_blob(tenant_id, content), actor=ADMIN, plan=plan)).document


async def _usage(db: Db, tenant_id: str) -> TenantUsage:
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        return (await session.execute(select(TenantUsage).where(TenantUsage.tenant_id == tenant_id))).scalar_one()


async def _stored(db: Db, tenant_id: str) -> usage.Stored:
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        return await usage.stored(session, tenant_id)


async def test_limits_come_from_the_settings_unless_the_tenant_has_its_own(db: Db) -> None:
    # Given defaults from the settings and a tenant with two limits of its own
    tenant_id = await _tenant(db)
    defaults = PlanDefaults.from_settings(Settings(plan_max_documents=10, plan_max_products=0))
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        before = await quotas.limits_for(session, tenant_id, defaults)
        await quotas.set_plan(session, tenant_id=tenant_id, name="pro",
                              limits={"max_documents": "500", "max_stored_bytes": "2GiB", "max_chunks": 0})
    # When the limits are read again, and after --clear
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        after = await quotas.limits_for(session, tenant_id, defaults)
        report = await quotas.usage_report(session, tenant_id=tenant_id, defaults=defaults)
        await quotas.clear_plan(session, tenant_id=tenant_id)
        cleared = await quotas.limits_for(session, tenant_id, defaults)
    # Then the tenant's own win, 0 means unlimited, and clearing returns to the defaults
    assert before["documents"] == 10 and before["products"] is None
    assert after["documents"] == 500 and after["stored_bytes"] == 2 * 1024**3 and after["chunks"] is None
    assert report["plan"] == "pro"
    assert {r["resource"]: r["default"] for r in report["resources"]}["documents"] is False
    assert cleared == before


@pytest.mark.parametrize("value, why", [("-1", "cannot be negative"), ("10000000000000", "beyond any real plan"),
                                        ("lots", "whole number"), ("1.5", "whole number")])
async def test_bad_limits_are_refused_and_nothing_is_changed(db: Db, value: str, why: str) -> None:
    # Given a tenant with a documents limit of its own
    tenant_id = await _tenant(db)
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        await quotas.set_plan(session, tenant_id=tenant_id, limits={"max_documents": 7})
    # When a bad value is given beside a good one
    with pytest.raises(InvalidInput, match=why):
        async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
            await quotas.set_plan(session, tenant_id=tenant_id, limits={"max_products": 5, "max_chunks": value})
    # Then neither was applied
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        limits = await quotas.limits_for(session, tenant_id, PlanDefaults())
    assert limits["documents"] == 7 and limits["products"] == PlanDefaults().max_products


def test_settings_refuse_negative_and_absurd_defaults() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Settings(plan_max_documents=-5)
    with pytest.raises(ValidationError, match="less than or equal to"):
        Settings(plan_max_questions_per_day=10**15)
    assert Settings(plan_max_documents=0).plan_max_documents == 0  # unlimited


async def test_uploads_are_counted_with_the_upload_and_refused_past_the_limit(db: Db) -> None:
    # Given a plan of 2 documents and 1 KB
    tenant_id = await _tenant(db)
    plan = PlanDefaults(max_documents=2, max_stored_bytes=1024)
    await _upload(db, tenant_id, "a.md", b"a" * 100, plan)
    await _upload(db, tenant_id, "b.md", b"b" * 100, plan)
    # When a third document comes
    with pytest.raises(QuotaExceeded) as refused:
        await _upload(db, tenant_id, "c.md", b"c" * 100, plan)
    # Then it is refused naming the limit, nothing of it is stored, and the counters are what is stored
    exc = refused.value
    assert (exc.resource, exc.limit, exc.used) == ("documents", 2, 2)
    assert exc.message == "This workspace's plan allows 2 documents; 2 are stored. Remove some or upgrade."
    assert status_for(exc) == 413 and exc.body() == {"resource": "documents", "limit": 2, "used": 2, "requested": 1}
    counted = await _usage(db, tenant_id)
    assert (counted.documents, counted.blob_bytes, counted.uploads_hour) == (2, 200, 2)
    assert (await _stored(db, tenant_id)) == usage.Stored(2, 200, 0, 0)
    # And the same content again is a no-op that counts nothing
    await _upload(db, tenant_id, "a.md", b"a" * 100, plan)
    assert (await _usage(db, tenant_id)).uploads_hour == 2


async def test_bytes_limit_names_the_sizes(db: Db) -> None:
    tenant_id = await _tenant(db)
    plan = PlanDefaults(max_stored_bytes=3 * 1024)
    await _upload(db, tenant_id, "a.md", b"a" * 2048, plan)
    with pytest.raises(QuotaExceeded) as refused:
        await _upload(db, tenant_id, "b.md", b"b" * 2048, plan)
    assert refused.value.resource == "stored_bytes" and status_for(refused.value) == 413
    assert "3 KB of stored files; 2 KB are stored" in refused.value.message


async def test_a_new_version_at_the_limit_is_taken_by_its_net_change(db: Db) -> None:
    # Given a tenant at its limit of 1 document
    tenant_id = await _tenant(db)
    plan = PlanDefaults(max_documents=1)
    old = await _upload(db, tenant_id, "faq.md", b"version one", plan)
    # When a new version of the same file comes, and then a second new file
    new = await _upload(db, tenant_id, "faq.md", b"version two", plan)
    with pytest.raises(QuotaExceeded):
        await _upload(db, tenant_id, "other.md", b"another file", plan)
    # Then the new version is taken (it replaces the old once indexed), both count while both are stored
    assert new.replaces_id == old.id
    assert (await _usage(db, tenant_id)).documents == 2 == (await _stored(db, tenant_id)).documents


async def test_deletion_releases_and_restore_charges_again(db: Db) -> None:
    tenant_id = await _tenant(db)
    plan = PlanDefaults(max_documents=1)
    doc = await _upload(db, tenant_id, "a.md", b"aaa", plan)
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        await request_deletion(session, tenant_id=tenant_id, document_id=doc.id, actor=ADMIN)
    assert (await _usage(db, tenant_id)).documents == 0
    other = await _upload(db, tenant_id, "b.md", b"bbb", plan)  # room again
    # restoring the deleted one would make 2 of 1: refused, nothing changed
    with pytest.raises(QuotaExceeded):
        async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
            await restore_document(session, tenant_id=tenant_id, document_id=doc.id, actor=ADMIN, plan=plan)
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        assert (await session.get(Document, doc.id)).status == DocumentStatus.deleted
        await request_deletion(session, tenant_id=tenant_id, document_id=other.id, actor=ADMIN)
        await restore_document(session, tenant_id=tenant_id, document_id=doc.id, actor=ADMIN, plan=plan)
    assert (await _usage(db, tenant_id)).documents == 1 == (await _stored(db, tenant_id)).documents


async def test_rates_count_within_their_period_and_start_again(db: Db) -> None:
    # Given 2 questions a day and 3 a month
    tenant_id = await _tenant(db)
    plan = PlanDefaults(max_questions_per_day=2, max_questions_per_month=3)

    async def ask(key: str, at: dt.datetime) -> bool:
        async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
            return await quotas.charge_question(session, tenant_id=tenant_id, defaults=plan, key=key, now=at)

    assert await ask("m1", NOON) and await ask("m2", NOON)
    # When the same message is counted again it counts nothing; a third today is refused
    assert await ask("m1", NOON) is False
    with pytest.raises(QuotaExceeded) as today:
        await ask("m3", NOON)
    assert today.value.resource == "questions_per_day" and today.value.rate and status_for(today.value) == 429
    assert today.value.retry_after == 12 * 3600
    # Then tomorrow the day starts again, but the month's third is the last
    assert await ask("m3", NOON + dt.timedelta(days=1))
    with pytest.raises(QuotaExceeded) as month:
        await ask("m4", NOON + dt.timedelta(days=1))
    assert month.value.resource == "questions_per_month"
    counted = await _usage(db, tenant_id)
    assert (counted.questions_day, counted.day, counted.questions_month) == (1, "2026-12-04", 3)


async def test_a_refusal_is_announced_once_per_resource_per_hour(db: Db) -> None:
    tenant_id = await _tenant(db)
    exc = quotas.refusal(quotas.RESOURCES["documents"], limit=5, used=5, requested=1)
    noted = [await quotas.note_refusal(db.sessions, tenant_id=tenant_id, exc=exc, now=NOON + dt.timedelta(minutes=m))
             for m in (0, 10, 59, 61)]
    other = await quotas.note_refusal(db.sessions, tenant_id=tenant_id, now=NOON,
                                      exc=quotas.refusal(quotas.RESOURCES["chunks"], limit=9, used=9, requested=3))
    assert noted == [True, False, False, True] and other is True
    async with unit_of_work(db.sessions, admin=True) as session:
        events = [m for m in (await session.execute(select(OutboxMessage))).scalars()
                  if m.message_type == "tenant.event" and '"quota.exceeded"' in m.body]
    assert len(events) == 3


async def test_recount_repairs_drift(db: Db) -> None:
    tenant_id = await _tenant(db)
    await _upload(db, tenant_id, "a.md", b"12345", PlanDefaults())
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        row = (await session.execute(select(TenantUsage).where(TenantUsage.tenant_id == tenant_id))).scalar_one()
        row.documents, row.blob_bytes = 40, 7
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        drift = await usage.recount(session, tenant_id)
    assert drift == {"documents": (40, 1), "stored_bytes": (7, 5)}
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        assert await usage.recount(session, tenant_id) == {}
