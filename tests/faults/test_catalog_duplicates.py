"""Duplicate deliveries of every catalog message through the real catalog worker process: each envelope
published twice in a row (prefetch 2: both copies in flight together), after the sync that produced
them and again on their own. Nothing happens twice: no second listing of the store, no product row or
vector written again, no job counter, index version or report moved twice.

The stack (Shopify emulator, catalog worker, real RabbitMQ and PostgreSQL) is the catalog tests' own.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from parley.bus.contracts import (
    CATALOG_PRODUCT_CHANGED,
    CATALOG_PRODUCT_DELETED,
    CATALOG_SHOP_REDACTED,
    ProductChanged,
    ProductDeleted,
    ShopRedacted,
)
from parley.bus import Envelope, Outgoing, RabbitBroker, Topology
from parley.bus.models import DeadLetter
from parley.db import unit_of_work
from knowledge.models import Job, Product
from parley.bus.models import OutboxMessage
from parley.vectors.models import VectorEntry
from tests.faults.support import eventually, queue_depths
from tests.ingestion.catalog.conftest import Stack, stack, worker_env_extra  # noqa: F401  (fixtures)
from tests.integrations.catalog_data import BASE_ID, synthetic_catalog
from tests.support import services

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

SHOP = "twice-told.myshopify.com"
TERMINAL = {"ok", "duplicate", "dead"}


async def _snapshot(stack: Stack, job_id: str) -> dict[str, Any]:
    async with unit_of_work(stack.sessions, admin=True) as s:
        products = {p.shopify_id: (p.title, p.deleted, p.content_hash, p.updated_at)
                    for p in (await s.execute(select(Product).where(Product.tenant_id == stack.tenant_id))).scalars()}
        vectors = {v.id: (v.seq, v.deleted, v.content_hash)
                   for v in (await s.execute(select(VectorEntry).where(VectorEntry.tenant_id == stack.tenant_id))).scalars()}
        job = (await s.execute(select(Job).where(Job.id == job_id))).scalar_one()
        outbox = Counter(dict((await s.execute(select(OutboxMessage.message_type, func.count())
                                               .group_by(OutboxMessage.message_type))).all()))
    return {"products": products, "vectors": vectors, "job": (job.status, job.total, job.done, job.failed, job.finished_at),
            "outbox": outbox, "version": await stack.index_version(), "shopify_calls": len(stack.emulator.operations())}


async def _published(stack: Stack) -> list[Envelope]:
    async with unit_of_work(stack.sessions, admin=True) as s:
        rows = (await s.execute(select(OutboxMessage).where(OutboxMessage.routing_key == "catalog")
                                .order_by(OutboxMessage.id))).scalars()
        return [Envelope.from_bytes(row.body) for row in rows]


async def _twice(stack: Stack, envelopes: list[Envelope]) -> None:
    """Each envelope twice in a row, then wait until the worker logged an outcome for every copy."""
    before = _outcomes(stack)
    broker = RabbitBroker(services.AMQP_URL, topology=Topology(prefix=stack.settings.amqp_prefix),
                          connection_name=f"{stack.settings.amqp_prefix}dups")
    await broker.start()
    try:
        for envelope in envelopes:
            for _ in range(2):
                await broker.publish(Outgoing.of(envelope), routing_key="catalog")
    finally:
        await broker.close()

    def handled() -> bool:
        now = _outcomes(stack)
        if not all(now[e.id] - before[e.id] >= 2 for e in envelopes):
            return False
        depths = queue_depths(stack.settings.amqp_prefix)  # rabbitmqctl: only once the log says so
        busy = {name: depth for name, depth in depths.items() if depth != (0, 0) and not name.endswith(("notifications", "webhooks", "dlq"))}
        return not busy

    await eventually(handled, timeout=90, interval=0.3, what="every copy handled",
                     log=lambda: f"{queue_depths(stack.settings.amqp_prefix)}\n{stack.worker.log()}")


def _outcomes(stack: Stack) -> Counter[str]:
    seen: Counter[str] = Counter()
    for line in stack.worker.log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("outcome") in TERMINAL and record.get("message_id"):
            seen[record["message_id"]] += 1
    return seen


def _webhook(message_type: str, payload: Any, tenant_id: str, event_id: str) -> Envelope:
    """As the gateway's webhook route stages it: the Shopify event id is the idempotency key."""
    return Envelope.new(message_type, tenant_id=tenant_id, payload=payload, idempotency_key=f"shopify:{event_id}")


async def test_every_catalog_message_delivered_twice_changes_nothing_twice(stack: Stack) -> None:
    # Given a store of 23 products, fully synced (paged listing, three batches of up to 10)
    stack.emulator.add_products(SHOP, synthetic_catalog(23, seed=5))
    job_id = (await stack.connect(SHOP)).job_id
    job = await stack.finished(job_id)
    assert (job.total, job.done, job.failed) == (23, 23, 0)
    await eventually(lambda: queue_depths(stack.settings.amqp_prefix).get("catalog") == (0, 0), what="sync settled")
    sync_messages = await _published(stack)
    assert Counter(e.type for e in sync_messages) == {"catalog.sync_requested": 1, "catalog.products_received": 3,
                                                      "catalog.sync_finished": 1}
    before = await _snapshot(stack, job_id)

    # When every message of that sync is delivered twice more
    await _twice(stack, sync_messages)
    # Then the store was not listed again and nothing moved: rows, vectors, counters, version, report
    after = await _snapshot(stack, job_id)
    assert after == before

    # When a products/update for one product is delivered twice at once
    target = BASE_ID + 3
    stack.emulator.update_product(SHOP, target, title="Storm Grey Parka")
    changed = _webhook(CATALOG_PRODUCT_CHANGED, ProductChanged(shop=SHOP, product=stack.emulator.rest_payload(SHOP, target),
                                                                event_id="evt-1"), stack.tenant_id, "evt-1")
    await _twice(stack, [changed])
    # Then it was applied once: one row renamed, one vector rewritten, the index version moved by one
    renamed = await _snapshot(stack, job_id)
    assert renamed["products"][target][0] == "Storm Grey Parka"
    assert {k: v for k, v in renamed["products"].items() if k != target} == \
           {k: v for k, v in before["products"].items() if k != target}
    assert sum(renamed["vectors"][k] != before["vectors"].get(k) for k in renamed["vectors"]) == 1
    assert renamed["version"] == before["version"] + 1

    # When a products/delete is delivered twice at once
    gone = BASE_ID + 7
    deleted = _webhook(CATALOG_PRODUCT_DELETED, ProductDeleted(shop=SHOP, product_id=gone, event_id="evt-2",
                                                                triggered_at=dt.datetime.now(dt.UTC)), stack.tenant_id, "evt-2")
    await _twice(stack, [deleted])
    # Then the product is removed once
    removed = await _snapshot(stack, job_id)
    assert removed["products"][gone][1] is True
    assert sum(1 for k, v in removed["vectors"].items() if v[1] and not renamed["vectors"][k][1]) == 1
    assert removed["version"] == renamed["version"] + 1

    # When shop/redact is delivered twice at once
    redact = _webhook(CATALOG_SHOP_REDACTED, ShopRedacted(shop=SHOP, event_id="evt-3"), stack.tenant_id, "evt-3")
    await _twice(stack, [redact])
    # Then the shop's products and vectors are erased, and the index version moved by one
    erased = await _snapshot(stack, job_id)
    assert erased["products"] == {}
    assert not any(not v[1] for v in erased["vectors"].values())
    assert erased["version"] == removed["version"] + 1
    # And no copy of any of it was dead-lettered; nothing was retried for good
    async with unit_of_work(stack.sessions, admin=True) as s:
        assert (await s.execute(select(func.count()).select_from(DeadLetter))).scalar_one() == 0
    assert erased["job"] == before["job"] and erased["shopify_calls"] == before["shopify_calls"]
