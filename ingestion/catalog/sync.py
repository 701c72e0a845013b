"""A full catalog sync: list the store, fan out, and at the end remove what the store no longer has.

``catalog.sync_requested`` (the job already exists, made by :func:`integrations.shopify.messages.request_sync`):

1. open the shop (fresh token) and count its active products; at least ``bulk_threshold`` ->
   a bulk operation (JSONL, ``__parentId`` variant rows), fewer -> ``products`` pages;
2. in the consumer's unit of work: one ``job_item`` per product (item key = Shopify product id),
   the job's total, and the products as ``catalog.products_received`` batches staged in the outbox
   (published after the commit). A worker killed before the commit lists again on redelivery; after
   it, the processed marker makes the redelivery a no-op.

A revoked token or another permanent Shopify refusal fails the job at once with the reason
("... reconnect the store"); throttling only slows the listing down; 5xx and network errors are
retried by the consumer and, when attempts run out, fail the job through the dead-letter hook.

``catalog.sync_finished`` (staged by the batch that counted the last product): rows of the shop
that this sync did not list and that nothing touched since the sync began are removed, vectors
first. A partial listing (bulk ``partialDataUrl``) removes nothing: absence proves nothing then.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from knowledge.service import finish_job_items
from ingestion.catalog.service import CatalogDeps, catalog_report, notify_job, remove_products
from integrations.shopify.errors import ShopifyError
from parley.bus.contracts import stage_event
from parley.bus.contracts import (
    CATALOG_PRODUCTS_RECEIVED,
    CATALOG_SYNC_FINISHED,
    ProductsReceived,
    SyncFinished,
    SyncRequested,
    stage_catalog,
)
from integrations.shopify.products import ShopifyProduct, assemble_bulk, from_graphql
from parley.bus import Envelope, Failure, Permanent
from parley.db import utcnow
from knowledge.repository import JobRepository
from parley.errors import InvalidInput
from knowledge.models import Job, JobItem, JobItemStatus, JobStatus, Product
from tenants.repository import TenantDirectory

log = logging.getLogger(__name__)

LISTING_ITEM = "listing"


async def start_sync(deps: CatalogDeps, session: AsyncSession, *, tenant_id: str, payload: SyncRequested) -> None:
    job = await JobRepository(session, tenant_id).find(payload.job_id)
    if job is None:
        raise Permanent(f"catalog sync job {payload.job_id} does not exist", code="not_found")
    if job.status != JobStatus.running or job.total > 0:
        return  # already listed (or failed): a duplicate request changes nothing
    try:
        access = await deps.shops.open(tenant_id=tenant_id, shop=payload.shop)
        info = await access.client.shop_info()
        currency = info.currency or access.currency
        count = await access.client.products_count()
        products, failures, partial = await _list(deps, access.client, payload.shop, currency, count)
    except ShopifyError as exc:  # permanent: revoked token, missing scope, frozen shop
        await fail_job(session, job, code=exc.code, reason=exc.message)
        log.warning("catalog sync failed", extra={"shop": payload.shop, "job_id": job.id, "error": exc.code})
        return
    stats = access.client.stats
    log.info("catalog listed", extra={
        "shop": payload.shop, "job_id": job.id, "products": len(products), "unreadable": len(failures),
        "mode": "bulk" if count >= deps.config.bulk_threshold else "pages", "partial": bool(partial),
        "requests": stats.requests, "throttled": stats.throttled, "throttle_wait_s": round(stats.throttle_wait_s, 2)})
    await fan_out(deps, session, job=job, shop=payload.shop, products=products, failures=failures, partial_reason=partial)


async def _list(deps: CatalogDeps, client: Any, shop: str, currency: str | None, count: int,
                ) -> tuple[list[ShopifyProduct], list[tuple[Any, str]], str | None]:
    products: list[ShopifyProduct] = []
    failures: list[tuple[Any, str]] = []
    if count >= deps.config.bulk_threshold:
        result = await client.bulk_export()
        products, failures = assemble_bulk(result.rows, shop=shop, currency=currency)
        partial = None
        if result.partial:
            partial = (f"Shopify's bulk export stopped early ({result.error_code or 'no reason given'}); "
                       f"{len(products):,} products were exported and indexed, none were removed")
        return [p for p in products if p.listed], failures, partial
    async for page in client.iter_product_pages():
        for node in page:
            try:
                product = from_graphql(node, shop=shop, currency=currency)
            except (InvalidInput, ValueError, KeyError, TypeError) as exc:
                failures.append((node.get("id"), f"unreadable product data ({exc})"))
                continue
            if product.listed:
                products.append(product)
    return products, failures, None


def _batches(products: list[ShopifyProduct], *, size: int, max_bytes: int) -> list[list[dict[str, Any]]]:
    """Consecutive payloads of at most ``size`` products and about ``max_bytes`` of JSON."""
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    used = 0
    for product in products:
        data = product.to_payload()
        weight = len(json.dumps(data, default=str))
        if current and (len(current) >= size or used + weight > max_bytes):
            batches.append(current)
            current, used = [], 0
        current.append(data)
        used += weight
    if current:
        batches.append(current)
    return batches


async def fan_out(deps: CatalogDeps, session: AsyncSession, *, job: Job, shop: str, products: list[ShopifyProduct],
                  failures: list[tuple[Any, str]], partial_reason: str | None) -> None:
    tenant_id = job.tenant_id
    unique = list({p.id: p for p in products}.values())
    keys = {str(p.id) for p in unique}
    bad = [(str(key), why) for key, why in failures if str(key) not in keys]
    rows = [{"tenant_id": tenant_id, "job_id": job.id, "item_key": str(p.id), "label": p.title[:512],
             "status": JobItemStatus.pending} for p in unique]
    rows += [{"tenant_id": tenant_id, "job_id": job.id, "item_key": key, "label": key, "status": JobItemStatus.pending}
             for key, _ in dict(bad).items()]
    if rows:
        await session.execute(insert(JobItem), rows)
    total = len(rows)
    description = job.description + (f"; partial: {partial_reason}" if partial_reason else "")
    await session.execute(update(Job).where(Job.tenant_id == tenant_id, Job.id == job.id)
                          .values(total=total, description=description[:512]).execution_options(synchronize_session=False))
    for products_batch in _batches(unique, size=deps.config.batch_size, max_bytes=deps.config.max_batch_bytes):
        stage_catalog(session, CATALOG_PRODUCTS_RECEIVED, tenant_id=tenant_id,
                      payload=ProductsReceived(shop=shop, job_id=job.id, products=products_batch, partial_reason=partial_reason))
    closed = None
    by_reason: dict[str, list[str]] = {}
    for key, why in dict(bad).items():
        by_reason.setdefault(why, []).append(key)
    for why, keys_ in by_reason.items():
        closed = await finish_job_items(session, tenant_id=tenant_id, job_id=job.id, keys=keys_, ok=False,
                                    error_code="unreadable_product", error=why) or closed
    if total == 0:
        await session.execute(update(Job).where(Job.tenant_id == tenant_id, Job.id == job.id, Job.status == JobStatus.running)
                              .values(status=JobStatus.done, finished_at=utcnow()).execution_options(synchronize_session=False))
        closed = job
    if closed is not None:
        stage_catalog(session, CATALOG_SYNC_FINISHED, tenant_id=tenant_id, idempotency_key=f"sync-finished:{job.id}",
                      payload=SyncFinished(shop=shop, job_id=job.id, partial_reason=partial_reason))


async def finish_sync(deps: CatalogDeps, session: AsyncSession, *, tenant_id: str, payload: SyncFinished) -> None:
    job = await JobRepository(session, tenant_id).find(payload.job_id)
    if job is None:
        return
    await session.refresh(job)
    removed = 0
    if payload.partial_reason is None:
        listed = {key for key in (await session.execute(
            select(JobItem.item_key).where(JobItem.tenant_id == tenant_id, JobItem.job_id == job.id))).scalars()}
        stmt = select(Product).where(Product.tenant_id == tenant_id, Product.shop_domain == payload.shop,
                                     Product.deleted.is_(False), Product.updated_at < job.created_at)
        gone = [row for row in (await session.execute(stmt)).scalars() if str(row.shopify_id) not in listed]
        removed = await remove_products(deps, session, tenant_id=tenant_id, rows=gone)
        if removed:
            await TenantDirectory(session).bump_index_version(tenant_id)
    report = await catalog_report(session, job, removed=removed, partial_reason=payload.partial_reason)
    notify_job(session, job, report, kind="job_done")
    stage_event(session, tenant_id=tenant_id, event_type="catalog.synced", idempotency_key=f"catalog-synced:{job.id}",
                data={"shop": payload.shop, "job_id": job.id, "products": job.total, "indexed": job.done,
                      "failed": job.failed, "removed": removed, "partial_reason": payload.partial_reason})
    log.info("catalog sync done: %s", report, extra={"shop": payload.shop, "job_id": job.id, "total": job.total,
                                                     "done": job.done, "failed": job.failed, "removed": removed})


async def fail_job(session: AsyncSession, job: Job, *, code: str, reason: str) -> bool:
    """The listing itself failed: the job ends ``failed`` with the reason as its one failed item."""
    await session.refresh(job)
    if job.status != JobStatus.running:
        return False
    existing = (await session.execute(select(JobItem).where(
        JobItem.tenant_id == job.tenant_id, JobItem.job_id == job.id, JobItem.item_key == LISTING_ITEM))).scalar_one_or_none()
    if existing is None:
        session.add(JobItem(tenant_id=job.tenant_id, job_id=job.id, item_key=LISTING_ITEM, label="listing the store's products",
                            status=JobItemStatus.failed, error_code=code[:64], error=reason, finished_at=utcnow()))
        job.total += 1
        job.failed += 1
    job.status = JobStatus.failed
    job.finished_at = utcnow()
    await session.flush()
    notify_job(session, job, await catalog_report(session, job), kind="failed")
    return True


async def on_dead_letter(session: AsyncSession, envelope: Envelope, failure: Failure) -> None:
    """Attempts ran out (or the failure was permanent): the job says why instead of hanging."""
    tenant_id = envelope.tenant_id or ""
    job_id = str(envelope.payload.get("job_id") or "")
    if not tenant_id or not job_id:
        log.warning("catalog message dead-lettered", extra={"type": envelope.type, "reason": failure.reason})
        return
    job = await JobRepository(session, tenant_id).find(job_id)
    if job is None:
        return
    reason = failure.human_reason()
    if envelope.type == CATALOG_PRODUCTS_RECEIVED:
        shop = str(envelope.payload.get("shop") or "")
        keys = [str(product.get("id")) for product in envelope.payload.get("products") or []]
        closed = await finish_job_items(session, tenant_id=tenant_id, job_id=job_id, keys=keys, ok=False,
                                    error_code=failure.code[:64], error=reason)
        if closed is not None:
            stage_catalog(session, CATALOG_SYNC_FINISHED, tenant_id=tenant_id, idempotency_key=f"sync-finished:{job_id}",
                          payload=SyncFinished(shop=shop, job_id=job_id, partial_reason=envelope.payload.get("partial_reason")))
    elif envelope.type != CATALOG_SYNC_FINISHED:
        await fail_job(session, job, code=failure.code, reason=reason)
