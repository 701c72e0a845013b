"""Indexing products: content hash -> embedding -> vector index -> ``product`` rows -> job counters.

Per batch (a sync's ``catalog.products_received``) or per webhook (``catalog.product_changed``):

1. read the stored rows of the batch's products (reads only: on SQLite the handler's session
   must not hold the write lock while other transactions write vectors);
2. a product whose content hash is unchanged is a no-op (counted done); one older than the stored
   ``shopify_updated_at`` is a stale delivery and is ignored (counted done);
3. the rest are embedded in one call and written to the vector index, one document per product,
   ``product:<row id>``, holding one item under a deterministic id (so a batch is written with one
   upsert, which replaces each product's document, in one transaction);
4. then, in the consumer's unit of work: the ``product`` rows (deterministic ids too, so a
   redelivery after a crash overwrites instead of duplicating), each product counted exactly once
   on its job (:func:`ingestion.catalog.jobs.finish_items`, ``finish_job_item`` for a batch), the
   tenant's index version bumped once per batch.

A worker killed anywhere in between leaves the message unacked; the redelivery finds the vectors
already written and the rows not, and completes the same work under the same ids.
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from knowledge.service import finish_job_items
from ingestion.catalog.shops import ShopConnector, find_installation
from integrations.shopify.config import ShopifyConfig
from parley.bus.contracts import (
    CATALOG_SYNC_FINISHED,
    ProductChanged,
    ProductDeleted,
    ProductsReceived,
    ShopRedacted,
    SyncFinished,
    stage_catalog,
)
from integrations.shopify.products import ShopifyProduct, from_rest
from parley.bus import Envelope, Permanent, Retryable, stage
from parley.bus.contracts import NOTICE_REQUESTED, QUEUE_NOTIFICATIONS, NoticeRequested
from parley.crypto import SecretBox
from knowledge.repository import JobRepository
from parley.embeddings import Embedder
from parley.errors import InvalidInput
from knowledge.models import Job, Product
from parley.vectors import IndexItem, VectorIndex
from tenants import quotas
from tenants.quotas import PlanDefaults, QuotaExceeded
from tenants.repository import TenantDirectory

log = logging.getLogger(__name__)

PRODUCT_NAMESPACE = uuid.UUID("3c0e5b7e-8d5f-4b0a-9f53-6a2f1f5d8e41")


@dataclass
class CatalogDeps:
    sessions: async_sessionmaker[AsyncSession]
    embedder: Embedder
    index: VectorIndex
    config: ShopifyConfig
    box: SecretBox
    http: aiohttp.ClientSession
    shops: ShopConnector = field(init=False)
    _tenants_ready: set[str] = field(default_factory=set, init=False)
    #: The plan limits of tenants without their own (PARLEY_PLAN_MAX_*): products.
    plan: PlanDefaults | None = None

    def __post_init__(self) -> None:
        self.shops = ShopConnector(self.sessions, self.box, self.config, self.http)

    async def ensure_tenant(self, tenant_id: str) -> None:
        if tenant_id not in self._tenants_ready:
            await self.index.ensure_tenant(tenant_id)
            self._tenants_ready.add(tenant_id)


def product_row_id(tenant_id: str, shop: str, shopify_id: int) -> str:
    return uuid.uuid5(PRODUCT_NAMESPACE, f"{tenant_id}/{shop}/{shopify_id}").hex


def document_id(row_id: str) -> str:
    return f"product:{row_id}"


def vector_item_id(tenant_id: str, row_id: str) -> str:
    return str(uuid.uuid5(PRODUCT_NAMESPACE, f"{tenant_id}/{document_id(row_id)}/0"))


@dataclass
class IndexOutcome:
    indexed: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    embed_ms: float = 0.0
    write_ms: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.indexed)


async def stored_products(session: AsyncSession, *, tenant_id: str, shop: str, ids: Sequence[int]) -> dict[int, Product]:
    if not ids:
        return {}
    stmt = select(Product).where(Product.tenant_id == tenant_id, Product.shop_domain == shop, Product.shopify_id.in_(list(ids)))
    return {row.shopify_id: row for row in (await session.execute(stmt)).scalars()}


async def index_products(deps: CatalogDeps, session: AsyncSession, *, tenant_id: str, shop: str,
                         products: Sequence[ShopifyProduct]) -> IndexOutcome:
    """Steps 1-4 of the module docs, without the job counters (the caller counts)."""
    outcome = IndexOutcome()
    latest: dict[int, ShopifyProduct] = {p.id: p for p in products}  # a listing may repeat an id: last wins
    stored = await stored_products(session, tenant_id=tenant_id, shop=shop, ids=list(latest))
    todo: list[ShopifyProduct] = []
    for product in latest.values():
        row = stored.get(product.id)
        if row is not None and _is_stale(row, product):
            outcome.stale.append(product.id)
        elif row is not None and not row.deleted and row.content_hash == product.content_hash:
            outcome.unchanged.append(product.id)
        else:
            todo.append(product)
    todo = await _within_plan(deps, session, tenant_id, todo, stored, outcome)
    items: dict[int, IndexItem] = {}
    if todo:
        started = time.perf_counter()
        vectors = await deps.embedder.embed_documents([p.search_text() for p in todo])
        embedded = time.perf_counter()
        outcome.embed_ms = (embedded - started) * 1000
        for product, vector in zip(todo, vectors, strict=True):
            row_id = product_row_id(tenant_id, shop, product.id)
            try:
                items[product.id] = IndexItem(
                    id=vector_item_id(tenant_id, row_id), document_id=document_id(row_id), text=product.search_text(),
                    vector=vector, kind="product", title=product.title, metadata=product.index_metadata(),
                )
            except InvalidInput as exc:
                outcome.failed[product.id] = f"product could not be indexed ({exc.message})"
        await deps.ensure_tenant(tenant_id)
        if len(items) == 1:
            [item] = items.values()
            await deps.index.replace_document(tenant_id, item.document_id, [item])
        elif items:
            # One item per product under a deterministic id: an upsert replaces each product's document
            # exactly as replace_document would, in one transaction for the batch instead of one per
            # product (a commit costs ~50 ms on the PostgreSQL here: bench/shopify_sync.py).
            await deps.index.upsert(tenant_id, list(items.values()))
        outcome.write_ms = (time.perf_counter() - embedded) * 1000
    # --- writes, in the caller's unit of work --------------------------------------------
    added = sum(1 for pid in items if stored.get(pid) is None or stored[pid].deleted)
    try:  # the new products charged to the plan, locked (the early check may have raced another batch)
        await quotas.consume(session, tenant_id=tenant_id, defaults=deps.plan or PlanDefaults(), products=added)
    except QuotaExceeded as exc:
        # Try again: the early check then refuses the products past the limit (and removes their
        # vectors) before this handler writes anything, which the vector writes wait for on SQLite.
        raise Retryable(f"{exc.message} (checked again)", code="quota_recheck") from exc
    for product in latest.values():
        row = stored.get(product.id)
        if product.id in items:
            _write_row(session, row, product, tenant_id=tenant_id)
            outcome.indexed.append(product.id)
        elif product.id in outcome.unchanged and row is not None and _newer(product, row):
            row.shopify_updated_at = product.updated_at
    return outcome


async def _within_plan(deps: CatalogDeps, session: AsyncSession, tenant_id: str, todo: list[ShopifyProduct],
                       stored: dict[int, Product], outcome: IndexOutcome) -> list[ShopifyProduct]:
    """The products to index that the plan has room for (read only: `index_products` charges them,
    locked); the new ones past the limit fail with the plan's reason (and vectors a raced attempt
    wrote for them are removed)."""
    new = [p for p in todo if stored.get(p.id) is None or stored[p.id].deleted]
    if not new:
        return todo
    room = await quotas.room(session, tenant_id=tenant_id, defaults=deps.plan or PlanDefaults(), resource="products")
    if room is None or len(new) <= room:
        return todo
    refused = new[room:]
    limit = (await quotas.limits_for(session, tenant_id, deps.plan or PlanDefaults()))["products"] or 0
    exc = quotas.refusal(quotas.RESOURCES["products"], limit=limit, used=limit - room, requested=len(new))
    for product in refused:
        outcome.failed[product.id] = exc.message
        await deps.index.delete_document(tenant_id, document_id(product_row_id(tenant_id, product.shop, product.id)))
    await quotas.note_refusal(deps.sessions, tenant_id=tenant_id, exc=exc)
    gone = {p.id for p in refused}
    return [p for p in todo if p.id not in gone]


def _is_stale(row: Product, product: ShopifyProduct) -> bool:
    return bool(row.shopify_updated_at and product.updated_at and product.updated_at < row.shopify_updated_at)


def _newer(product: ShopifyProduct, row: Product) -> bool:
    return bool(product.updated_at and (row.shopify_updated_at is None or product.updated_at > row.shopify_updated_at))


def _write_row(session: AsyncSession, row: Product | None, product: ShopifyProduct, *, tenant_id: str) -> Product:
    if row is None:
        row = Product(id=product_row_id(tenant_id, product.shop, product.id), tenant_id=tenant_id,
                      shop_domain=product.shop, shopify_id=product.id)
        session.add(row)
    row.title = product.title[:512]
    row.handle = product.handle[:255]
    row.vendor = (product.vendor or None) and product.vendor[:255]
    row.product_type = (product.product_type or None) and product.product_type[:255]
    row.tags = list(product.tags)
    row.description = product.description
    row.options = [{"name": o.name, "values": list(o.values)} for o in product.options]
    row.variants = [_variant_json(v) for v in product.variants]
    row.price_min = product.price_min
    row.price_max = product.price_max
    row.currency = product.currency
    row.available = product.available
    row.total_inventory = product.total_inventory
    row.url = product.url[:1024]
    row.shopify_updated_at = product.updated_at
    row.content_hash = product.content_hash
    row.deleted = False
    return row


def _variant_json(variant: Any) -> dict[str, Any]:
    return {
        "id": str(variant.id),  # a string: JSON readers that use doubles would round it
        "title": variant.title,
        "sku": variant.sku,
        "price": str(variant.price) if variant.price is not None else None,
        "available": variant.available,
        "inventory": variant.inventory,
        "selected_options": [{"name": n, "value": v} for n, v in variant.selected_options],
    }


async def remove_products(deps: CatalogDeps, session: AsyncSession, *, tenant_id: str, rows: Sequence[Product],
                          hard: bool = False) -> int:
    """Vectors first (their own transactions), then the rows in the caller's unit of work (the
    products no longer counted against the plan)."""
    for row in rows:
        await deps.index.delete_document(tenant_id, document_id(row.id))
    await quotas.release(session, tenant_id=tenant_id, products=sum(1 for row in rows if not row.deleted))
    for row in rows:
        if hard:
            await session.delete(row)
        else:
            row.deleted = True
    return len(rows)


# --- a sync batch -------------------------------------------------------------------------


async def index_batch(deps: CatalogDeps, session: AsyncSession, *, tenant_id: str, payload: ProductsReceived) -> None:
    job = await JobRepository(session, tenant_id).find(payload.job_id)
    if job is None:
        raise Permanent(f"catalog sync job {payload.job_id} does not exist", code="not_found")
    products, unreadable = [], {}
    for data in payload.products:
        try:
            products.append(ShopifyProduct.from_payload(data))
        except ValueError as exc:
            unreadable[str(data.get("id"))] = f"unreadable product data ({exc.__class__.__name__})"
    installation = await find_installation(session, tenant_id=tenant_id, shop=payload.shop)
    connected = installation is not None and installation.status == "active"
    outcome = await index_products(deps, session, tenant_id=tenant_id, shop=payload.shop, products=products) \
        if connected else None
    done: list[str] = []
    failed: dict[str, list[str]] = collections.defaultdict(list)
    for key, why in unreadable.items():
        failed[why].append(key)
    for product in products:
        if outcome is None:
            failed["the store was disconnected during the sync"].append(str(product.id))
        elif product.id in outcome.failed:
            failed[outcome.failed[product.id]].append(str(product.id))
        else:
            done.append(str(product.id))
    if outcome is not None and outcome.changed:
        await TenantDirectory(session).bump_index_version(tenant_id)
    if outcome is not None:
        log.info("catalog batch", extra={"job_id": payload.job_id, "indexed": len(outcome.indexed),
                                         "unchanged": len(outcome.unchanged), "stale": len(outcome.stale),
                                         "failed": len(outcome.failed), "embed_ms": round(outcome.embed_ms),
                                         "vector_write_ms": round(outcome.write_ms)})
    closed = await finish_job_items(session, tenant_id=tenant_id, job_id=payload.job_id, keys=done, ok=True)
    for why, keys in failed.items():
        closed = await finish_job_items(session, tenant_id=tenant_id, job_id=payload.job_id, keys=keys, ok=False,
                                    error_code="product_failed", error=why) or closed
    if closed is not None:
        stage_catalog(session, CATALOG_SYNC_FINISHED, tenant_id=tenant_id, idempotency_key=f"sync-finished:{closed.id}",
                      payload=SyncFinished(shop=payload.shop, job_id=closed.id, partial_reason=payload.partial_reason))


# --- webhooks -----------------------------------------------------------------------------


async def apply_change(deps: CatalogDeps, session: AsyncSession, *, tenant_id: str, payload: ProductChanged) -> str:
    """``products/create|update``: returns what happened (indexed / unchanged / stale / removed / ignored)."""
    installation = await find_installation(session, tenant_id=tenant_id, shop=payload.shop)
    if installation is None or installation.status != "active":
        log.info("product webhook for a disconnected shop ignored", extra={"shop": payload.shop})
        return "ignored"
    currency = (installation.details or {}).get("currency")
    try:
        product = from_rest(payload.product, shop=payload.shop, currency=currency)
    except (InvalidInput, ValueError, KeyError, TypeError) as exc:
        raise Permanent(f"unreadable products webhook payload ({exc})", code="invalid_payload") from exc
    if not product.listed:
        stored = await stored_products(session, tenant_id=tenant_id, shop=payload.shop, ids=[product.id])
        row = stored.get(product.id)
        if row is None or row.deleted or _is_stale(row, product):
            return "ignored"
        await remove_products(deps, session, tenant_id=tenant_id, rows=[row])
        row.shopify_updated_at = product.updated_at or row.shopify_updated_at
        await TenantDirectory(session).bump_index_version(tenant_id)
        return "removed"
    outcome = await index_products(deps, session, tenant_id=tenant_id, shop=payload.shop, products=[product])
    if outcome.failed:
        raise Permanent(next(iter(outcome.failed.values())), code="product_failed")
    if outcome.changed:
        await TenantDirectory(session).bump_index_version(tenant_id)
        return "indexed"
    return "stale" if outcome.stale else "unchanged"


async def apply_delete(deps: CatalogDeps, session: AsyncSession, *, tenant_id: str, payload: ProductDeleted) -> str:
    stored = await stored_products(session, tenant_id=tenant_id, shop=payload.shop, ids=[payload.product_id])
    row = stored.get(payload.product_id)
    if row is None or row.deleted:
        return "ignored"
    if payload.triggered_at and row.shopify_updated_at and payload.triggered_at < row.shopify_updated_at:
        return "stale"  # the product was updated after this deletion was triggered (re-created)
    await remove_products(deps, session, tenant_id=tenant_id, rows=[row])
    if payload.triggered_at:
        row.shopify_updated_at = payload.triggered_at
    await TenantDirectory(session).bump_index_version(tenant_id)
    return "removed"


async def redact_shop(deps: CatalogDeps, session: AsyncSession, *, tenant_id: str, payload: ShopRedacted) -> int:
    """``shop/redact``: the shop's products and their vectors are erased (rows deleted, not flagged)."""
    stmt = select(Product).where(Product.tenant_id == tenant_id, Product.shop_domain == payload.shop)
    rows = list((await session.execute(stmt)).scalars())
    removed = await remove_products(deps, session, tenant_id=tenant_id, rows=rows, hard=True)
    if removed:
        await TenantDirectory(session).bump_index_version(tenant_id)
    log.info("shop redacted", extra={"shop": payload.shop, "products": removed})
    return removed


# --- reports ------------------------------------------------------------------------------


async def catalog_report(session: AsyncSession, job: Job, *, removed: int = 0, partial_reason: str | None = None) -> str:
    """'2,480 / 2,500 products indexed, 20 failed: price is not a number (12), ...' (mirrors job_report)."""
    failed_items = await JobRepository(session, job.tenant_id).failed_items(job.id)
    reasons = collections.Counter(item.error or "unknown error" for item in failed_items)
    if job.status.value == "failed":
        return "catalog sync failed: " + ("; ".join(reasons) or "unknown error")
    grouped = ", ".join(f"{reason} ({n})" for reason, n in reasons.most_common(5)) + (", …" if len(reasons) > 5 else "")
    text = f"{job.done:,} / {job.total:,} products indexed"
    if job.failed:
        text += f", {job.failed:,} failed: {grouped}"
    if removed:
        text += f"; {removed:,} removed (no longer in the store)"
    if partial_reason:
        text += f"; partial: {partial_reason}"
    return text


def notify_job(session: AsyncSession, job: Job, text: str, *, kind: str) -> None:
    if job.notify:
        stage(session, Envelope.new(NOTICE_REQUESTED, tenant_id=job.tenant_id, payload=NoticeRequested(
            text=text, target=job.notify, job_id=job.id, kind=kind)), QUEUE_NOTIFICATIONS)
