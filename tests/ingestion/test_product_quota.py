"""Products count against the tenant's plan in the catalog worker's own step
(`ingestion.catalog.service.index_products`: real embedding calls to a local OpenAI-compatible
server, the real embedded vector index): past the limit the new products fail with the plan's
reason and nothing of them is indexed; a redelivered batch counts nothing twice; a removed product
gives its place back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import func, select

from ingestion.catalog.service import CatalogDeps, index_products, remove_products
from integrations.shopify.config import ShopifyConfig
from integrations.shopify.products import from_graphql
from knowledge import usage
from knowledge.models import Product
from parley.crypto import load_secret_box
from parley.db import unit_of_work
from parley.embeddings.openai_provider import OpenAIEmbedder
from parley.settings import Settings
from parley.vectors import create_vector_index
from parley.vectors.models import VectorEntry
from tenants import service as tenants
from tenants.quota_models import TenantUsage
from tenants.quotas import PlanDefaults
from tests.conftest import Db
from tests.integrations.catalog_data import synthetic_catalog
from tests.parley.test_embeddings import FakeOpenAI

SHOP = "acme.myshopify.com"


@pytest.fixture
async def deps(db: Db, tmp_path: Path) -> AsyncIterator[CatalogDeps]:
    fake = FakeOpenAI()
    app = web.Application()
    app.router.add_post("/v1/embeddings", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    settings = Settings(data_dir=tmp_path / "var", log_json=False)
    embedder = OpenAIEmbedder(api_key="sk-test", base_url=f"http://{host}:{port}/v1", max_retries=1, timeout=10)
    index = create_vector_index(settings, role="writer", sessions=db.sessions)
    http = aiohttp.ClientSession()
    yield CatalogDeps(sessions=db.sessions, embedder=embedder, index=index, config=ShopifyConfig(),
                      box=load_secret_box(settings), http=http, plan=PlanDefaults(max_products=3))
    await http.close()
    await embedder.aclose()
    await index.aclose()
    await runner.cleanup()


async def _counts(db: Db, tenant_id: str) -> tuple[int, int, int]:
    """(products counted, products stored, product vectors)"""
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        counted = (await session.execute(select(TenantUsage.products))).scalar_one()
        stored = (await usage.stored(session, tenant_id)).products
    async with unit_of_work(db.sessions, admin=True) as session:
        vectors = (await session.execute(select(func.count()).select_from(VectorEntry).where(
            VectorEntry.tenant_id == tenant_id, VectorEntry.document_id.like("product:%"),
            VectorEntry.deleted.is_(False)))).scalar_one()
    return counted, stored, vectors


async def test_products_past_the_plan_fail_and_a_removed_one_gives_its_place_back(db: Db, deps: CatalogDeps) -> None:
    # Given a tenant whose plan allows 3 products, and a batch of 5
    async with unit_of_work(db.sessions, admin=True) as session:
        tenant_id = (await tenants.create_tenant(session, name="acme")).id
    products = [from_graphql(node, shop=SHOP) for node in synthetic_catalog(5)]

    async def sync() -> object:
        async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
            return await index_products(deps, session, tenant_id=tenant_id, shop=SHOP, products=products)

    # When the batch is indexed, and delivered again
    first = await sync()
    again = await sync()
    # Then 3 are indexed and 2 fail naming the limit, nothing of those is in the index, and the
    # redelivery counted nothing more
    assert len(first.indexed) == 3 and len(first.failed) == 2  # type: ignore[attr-defined]
    assert all(why.startswith("This workspace's plan allows 3 catalog products") for why in first.failed.values())  # type: ignore[attr-defined]
    assert len(again.indexed) == 0 and len(again.unchanged) == 3 and len(again.failed) == 2  # type: ignore[attr-defined]
    assert await _counts(db, tenant_id) == (3, 3, 3)
    # When one product is removed from the store, and the batch comes again
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        row = (await session.execute(select(Product).order_by(Product.shopify_id).limit(1))).scalar_one()
        await remove_products(deps, session, tenant_id=tenant_id, rows=[row])
    assert await _counts(db, tenant_id) == (2, 2, 2)
    third = await sync()
    # Then one place was free: the removed product comes back (it is in the batch) and the rest still fail
    assert len(third.indexed) == 1 and len(third.failed) == 2  # type: ignore[attr-defined]
    assert await _counts(db, tenant_id) == (3, 3, 3)
