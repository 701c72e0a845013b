"""Full catalog syncs through the real catalog worker process, real RabbitMQ and real databases."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select

from ingestion.catalog.service import catalog_report, document_id, product_row_id
from knowledge.service import request_sync
from integrations.shopify.oauth import TokenSet
from parley.db import unit_of_work, utcnow
from knowledge.service import job_report
from tenants.models import ChannelInstallation, ChannelKind
from tenants.repository import reveal_secrets
from tenants.service import install_channel
from tests.ingestion.catalog.conftest import Stack, eventually
from tests.integrations.catalog_data import BASE_ID, synthetic_catalog
from tests.support import services

pytestmark = pytest.mark.skipif(not services.reachable("127.0.0.1", 5672), reason="RabbitMQ is not reachable on 127.0.0.1:5672")

SHOP = "acme-outfitters.myshopify.com"


async def _resync(stack: Stack, shop: str = SHOP) -> str:
    async with unit_of_work(stack.sessions) as session:
        job = await request_sync(session, tenant_id=stack.tenant_id, shop=shop, reason="manual")
    await stack.relay.flush()
    return job.id


async def test_small_store_is_paged_indexed_and_resynced_incrementally(stack: Stack) -> None:
    # Given a store of 23 good products and one whose price Shopify cannot have meant (under the bulk threshold: paged)
    nodes = synthetic_catalog(23)
    broken = synthetic_catalog(1, start=500)[0]
    broken["variants"][0]["price"] = "twelve"
    stack.emulator.add_products(SHOP, nodes + [broken])
    # When it is connected (the CLI path) and the first sync finishes
    connected = await stack.connect(SHOP)
    job = await stack.finished(connected.job_id)
    # Then the job's counters are exact and every good product is a row and one vector document
    assert (job.status.value, job.total, job.done, job.failed) == ("done", 24, 23, 1)
    products = await stack.products(SHOP)
    assert sorted(products) == sorted(BASE_ID + i for i in range(23))
    vectors = await stack.vectors()
    assert set(vectors) == {document_id(p.id) for p in products.values()}
    assert "bulkOperationRunQuery" not in stack.emulator.operations(SHOP)
    # And the rows and metadata carry the structured fields answers filter on
    first = products[BASE_ID]
    assert first.id == product_row_id(stack.tenant_id, SHOP, BASE_ID)
    assert first.currency == "USD" and first.price_min is not None and first.price_min <= first.price_max
    assert first.url == f"https://{SHOP}/products/{nodes[0]['handle']}"
    meta = vectors[document_id(first.id)].meta
    assert meta["price_min"] == float(first.price_min) and meta["available"] == first.available
    assert meta["url"] == first.url and meta["options"] and meta["colors"]
    # And the report says how many were indexed and why the rest failed
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        report = await catalog_report(session, job)
        assert await job_report(session, job) == "23 of 24 indexed; 1 failed: unreadable product data (not a price: 'twelve') (1)"
    assert report == "23 / 24 products indexed, 1 failed: unreadable product data (not a price: 'twelve') (1)"
    version = await stack.index_version()
    assert version >= 1
    # And the tenant's webhooks hear of it: job.completed, then catalog.synced (ids and counts only)
    events = await eventually(lambda: _tenant_events(stack, "catalog.synced"))
    assert events["catalog.synced"] == {"shop": SHOP, "job_id": job.id, "products": 24, "indexed": 23, "failed": 1,
                                        "removed": 0, "partial_reason": None}
    assert events["job.completed"] == {**events["job.completed"], "job_id": job.id, "kind": "catalog_sync", "done": 23}

    # Given two products changed, one deleted and one added in the store
    stack.emulator.update_product(SHOP, BASE_ID + 1, title="Renamed Hoodie")
    stack.emulator.update_product(SHOP, BASE_ID + 2, variants=[dict(nodes[2]["variants"][0], price="1.00")])
    stack.emulator.delete_product(SHOP, BASE_ID + 3)
    stack.emulator.add_products(SHOP, synthetic_catalog(1, start=100))
    seqs = {k: v.seq for k, v in vectors.items()}
    # When the store is synced again
    job2 = await stack.finished(await _resync(stack))
    # Then only changed and new products were re-indexed, the deleted one is gone
    assert (job2.total, job2.done, job2.failed) == (24, 23, 1)
    # (removal happens right after the last product is counted, on catalog.sync_finished)
    after = await eventually(lambda: _products_without(stack, BASE_ID + 3))
    assert BASE_ID + 100 in after
    assert after[BASE_ID + 1].title == "Renamed Hoodie" and after[BASE_ID + 2].price_min == Decimal("1.00")
    removed = product_row_id(stack.tenant_id, SHOP, BASE_ID + 3)
    vectors2 = await eventually(lambda: _without(stack, document_id(removed)))
    rewritten = {k for k, v in vectors2.items() if seqs.get(k) != v.seq}
    assert rewritten == {document_id(after[i].id) for i in (BASE_ID + 1, BASE_ID + 2, BASE_ID + 100)}
    assert await stack.index_version() > version


async def _tenant_events(stack: Stack, wanted: str) -> dict | None:
    """The ``tenant.event`` messages staged so far (for webhooks), type -> data, once ``wanted`` is among them."""
    from parley.bus import Envelope
    from parley.bus.models import OutboxMessage

    async with unit_of_work(stack.sessions, admin=True) as session:
        rows = (await session.execute(select(OutboxMessage).where(OutboxMessage.message_type == "tenant.event")
                                      .order_by(OutboxMessage.id))).scalars().all()
    events = {p["event_type"]: p["data"] for p in (Envelope.from_bytes(r.body).payload for r in rows)}
    return events if wanted in events else None


async def _products_without(stack: Stack, shopify_id: int, shop: str = SHOP) -> dict | None:
    products = await stack.products(shop)
    return products if shopify_id not in products else None


async def _without(stack: Stack, doc: str) -> dict | None:
    vectors = await stack.vectors()
    return vectors if doc not in vectors else None


async def _install(stack: Stack, shop: str, secrets: dict, *, currency: str = "USD") -> None:
    """An installation as the OAuth callback stores it (tokens sealed in the channel's secrets)."""
    async with unit_of_work(stack.sessions) as session:
        await install_channel(session, box=stack.box, tenant_id=stack.tenant_id, kind=ChannelKind.shopify, external_id=shop,
                              details={"currency": currency}, secrets=secrets)


async def test_bulk_throttling_partial_data_refresh_and_revocation(stack: Stack) -> None:
    big, slow, revoked, expiring = (f"{name}.myshopify.com" for name in ("big-store", "slow-store", "gone-store", "fresh-store"))
    # Given a store over the bulk threshold, a store that throttles hard (HTTP 429), a store whose token was
    # revoked and a store whose expiring token is about to run out
    stack.emulator.add_products(big, synthetic_catalog(50))
    stack.emulator.add_products(slow, synthetic_catalog(30, seed=3))
    stack.emulator.shop(slow, bucket_max=1000.0, available=0.0, restore_rate=20_000.0, force_throttle=3, throttle_status=429)
    stack.emulator.add_products(expiring, synthetic_catalog(5, seed=5))
    grant = stack.emulator._grant(expiring, "read_products", expiring=True)
    soon = TokenSet(grant["access_token"], frozenset({"read_products"}), utcnow() + dt.timedelta(seconds=60), grant["refresh_token"])
    await _install(stack, revoked, {"access_token": "shpat_no_longer_valid"})
    await _install(stack, expiring, soon.to_secrets())
    # When all four are synced at once
    big_job = (await stack.connect(big)).job_id
    slow_job = (await stack.connect(slow)).job_id
    revoked_job, expiring_job = await _resync(stack, revoked), await _resync(stack, expiring)
    # Then the big store went through a bulk export with __parentId rows, all counted
    job = await stack.finished(big_job)
    assert (job.status.value, job.total, job.done, job.failed) == ("done", 50, 50, 0)
    assert "bulkOperationRunQuery" in stack.emulator.operations(big)
    assert len(await stack.products(big)) == 50
    # And throttling only slowed the slow store down
    job = await stack.finished(slow_job)
    assert (job.status.value, job.done) == ("done", 30)
    assert [r["status"] for r in stack.emulator.requests if r["shop"] == slow].count("THROTTLED") >= 3
    # And the revoked token failed its job at once, telling the merchant to reconnect
    job = await stack.finished(revoked_job)
    assert job.status.value == "failed"
    [item] = await stack.failed_items(revoked_job)
    assert "Reconnect the store" in (item.error or "") and item.error_code == "shopify_token_revoked"
    # And the expiring token was refreshed (rotated, persisted) before the sync used it
    job = await stack.finished(expiring_job)
    assert (job.status.value, job.done) == ("done", 5)
    assert any(r.get("grant_type") == "refresh_token" for r in stack.emulator.token_requests)
    async with unit_of_work(stack.sessions, admin=True) as session:
        row = (await session.execute(select(ChannelInstallation).where(ChannelInstallation.external_id == expiring))).scalar_one()
        stored = TokenSet.from_secrets(reveal_secrets(stack.box, row))
    assert stored.refresh_token != soon.refresh_token and not stored.needs_refresh(margin=300)

    # Given the big store's next export fails part way (Shopify hands out a partialDataUrl)
    stack.emulator.shop(big, bulk_partial_after=20)
    # When it is synced again
    job = await stack.finished(await _resync(stack, big))
    # Then the partial data was indexed and reported, and nothing was removed for being absent
    assert (job.total, job.done, job.failed) == (20, 20, 0)
    assert "partial" in job.description
    await eventually(lambda: _sync_finished_logged(stack, job.id))
    assert len(await stack.products(big)) == 50


def _sync_finished_logged(stack: Stack, job_id: str) -> bool:
    return any(f'"job_id": "{job_id}"' in line and "catalog sync done" in line and "partial" in line
               for line in stack.worker.log_path.read_text().splitlines())


async def test_a_worker_killed_mid_sync_finishes_after_restart_with_nothing_lost_or_doubled(stack: Stack) -> None:
    # Given a sync of 160 products under way (bulk export, batches of 10)
    shop = "busy-store.myshopify.com"
    stack.emulator.add_products(shop, synthetic_catalog(160, seed=11))
    job_id = (await stack.connect(shop)).job_id

    async def progressed() -> bool:
        job = await stack.job(job_id)
        return 20 <= job.done

    await eventually(progressed, timeout=120)
    # When the worker is killed (SIGKILL: unacked batches go back to the queue) and started again
    stack.worker.kill()
    at_kill = await stack.job(job_id)
    assert at_kill.done < at_kill.total == 160, "the sync finished before the kill; nothing was tested"
    stack.worker.start()
    # Then the job completes with exact counters, every product once, every vector document once
    job = await stack.finished(job_id, timeout=180)
    assert (job.status.value, job.total, job.done, job.failed) == ("done", 160, 160, 0)
    assert await stack.item_count(job_id) == 160
    products = await stack.products(shop)
    assert len(products) == 160
    vectors = await stack.vectors()
    assert {document_id(p.id) for p in products.values()} <= set(vectors) and len(vectors) == 160
