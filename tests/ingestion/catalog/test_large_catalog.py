"""A realistic store: 1,000+ products built from ../shared/data/catalog (Shopify's product-import
CSVs and real retail listings), synced through a bulk export by the real worker process."""

from __future__ import annotations

import pytest

from ingestion.catalog.service import document_id
from tests.ingestion.catalog.conftest import Stack
from tests.integrations.catalog_data import CatalogMissing, csv_catalog
from tests.support import services

pytestmark = pytest.mark.skipif(not services.reachable("127.0.0.1", 5672), reason="RabbitMQ is not reachable on 127.0.0.1:5672")

SHOP = "leipzig-electronics.myshopify.com"


@pytest.fixture
def worker_env_extra() -> dict[str, str]:
    """The sync machinery at scale is under test here, not the embedding model: the packaged 3-layer
    model (4x faster) when it is installed, bigger batches."""
    from parley.embeddings.local import model_installed

    fast = "paraphrase-MiniLM-L3-v2"
    return {"PARLEY_SHOPIFY_BATCH_SIZE": "25", **({"PARLEY_EMBEDDING_MODEL": fast} if model_installed(fast) else {})}


@pytest.fixture
def catalog() -> list[dict]:
    try:
        return csv_catalog(1000)
    except CatalogMissing as exc:
        pytest.skip(f"{exc}; the realistic-catalog test needs ../shared/data/catalog")


@pytest.mark.parametrize("db_backend", ["postgres"])  # one backend: the small-store tests cover both
async def test_a_store_of_1000_real_products_is_fully_indexed(stack: Stack, catalog: list[dict]) -> None:
    # Given a store with 1,000 products from the real catalogs (some with sizes and colours, most single-variant)
    stack.emulator.add_products(SHOP, catalog)
    # When it is connected
    job = await stack.finished((await stack.connect(SHOP)).job_id, timeout=240)
    # Then the bulk export listed them all and each was counted once
    assert "bulkOperationRunQuery" in stack.emulator.operations(SHOP)
    assert (job.status.value, job.total, job.done, job.failed) == ("done", 1000, 1000, 0)
    products = await stack.products(SHOP)
    assert len(products) == 1000
    vectors = await stack.vectors()
    assert {document_id(p.id) for p in products.values()} == {d for d in vectors if d.startswith("product:")}
    # And products with variants kept them (Shopify's CSV format: variants as extra rows)
    assert max(len(p.variants) for p in products.values()) > 1
    assert all(p.price_min is not None and p.price_min > 0 for p in products.values())
