"""The OAuth helpers and the GraphQL client against the local Shopify emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from integrations.shopify import oauth
from integrations.shopify.client import ShopifyClient
from integrations.shopify.config import ShopifyConfig
from integrations.shopify.errors import MissingScopes, ShopifyUnavailable, TokenRevoked
from integrations.shopify.products import assemble_bulk, from_graphql
from tests.integrations.catalog_data import synthetic_catalog
from tests.integrations.shopify_emulator import ShopifyEmulator, running

SHOP = "acme.myshopify.com"


@pytest.fixture
async def emulator() -> AsyncIterator[ShopifyEmulator]:
    emu = ShopifyEmulator()
    async with running(emu):
        yield emu


@pytest.fixture
def config(emulator: ShopifyEmulator) -> ShopifyConfig:
    return ShopifyConfig(client_id=emulator.client_id, client_secret=emulator.client_secret,
                         base_url=f"{emulator.base_url}/{{shop}}", poll_interval=0.01, public_url="https://parley.example")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Sleeps:
    """Records the client's waits (and waits for real): what throttling did, not how long it took."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(min(seconds, 0.05))


async def test_code_exchange_asks_for_an_expiring_token_and_refresh_rotates(emulator, config, http) -> None:
    # Given a code Shopify issued on the callback
    emulator.codes["c0de"] = (SHOP, "read_products")
    # When it is exchanged
    tokens = await oauth.exchange_code(http, config, shop=SHOP, code="c0de")
    # Then the request said expiring=1 and the answer is an expiring offline token with a refresh token
    assert emulator.token_requests[-1]["expiring"] == "1"
    assert tokens.expiring and tokens.refresh_token and tokens.scopes == {"read_products"}
    oauth.check_scopes(tokens.scopes, ["read_products"], shop=SHOP)
    with pytest.raises(MissingScopes):
        oauth.check_scopes(tokens.scopes, ["read_products", "read_inventory"], shop=SHOP)
    assert not tokens.needs_refresh(margin=300) and tokens.needs_refresh(margin=3600)
    # When it is refreshed
    fresh = await oauth.refresh(http, config, shop=SHOP, refresh_token=tokens.refresh_token or "")
    # Then both tokens rotate, the old access token stops working and the old refresh token is spent
    assert fresh.access_token != tokens.access_token and fresh.refresh_token != tokens.refresh_token
    with pytest.raises(TokenRevoked):
        await ShopifyClient(http, config, shop=SHOP, access_token=tokens.access_token).shop_info()
    assert (await ShopifyClient(http, config, shop=SHOP, access_token=fresh.access_token).shop_info()).currency == "USD"
    with pytest.raises(TokenRevoked, match="reconnect|Reconnect"):
        await oauth.refresh(http, config, shop=SHOP, refresh_token=tokens.refresh_token or "")
    # And the sealed form round-trips
    assert oauth.TokenSet.from_secrets(fresh.to_secrets()) == fresh


async def test_pages_fit_the_cost_limit_and_fetch_extra_variants(emulator, config, http) -> None:
    # Given 30 products, one of them with more variants than a page asks for
    nodes = synthetic_catalog(30)
    big = nodes[3]
    big["variants"] = [dict(big["variants"][0], id=f"gid://shopify/ProductVariant/{2**60 + i}") for i in range(45)]
    emulator.add_products(SHOP, nodes)
    token = emulator.issue_token(SHOP)
    # When a client whose configured page would cost too much lists them
    client = ShopifyClient(http, config.with_(page_size=250, variants_per_product=40), shop=SHOP, access_token=token)
    pages = [page async for page in client.iter_product_pages()]
    # Then every product comes exactly once, with all its variants, and no query exceeded the limit
    products = [from_graphql(n, shop=SHOP) for page in pages for n in page]
    assert [p.id for p in products] == sorted(int(n["id"].rsplit("/", 1)[1]) for n in nodes)
    assert len(next(p for p in products if p.id == int(big["id"].rsplit("/", 1)[1])).variants) == 45
    assert "MAX_COST_EXCEEDED" not in [r["status"] for r in emulator.requests]
    assert len(pages) > 1 and "product" in emulator.operations()
    assert all(r["version"] == "2026-10" for r in emulator.requests)


async def test_an_oversized_page_is_halved_when_shopify_says_max_cost_exceeded(emulator, config, http) -> None:
    # Given a store whose single-query limit is lower than the documented 1,000 points
    emulator.add_products(SHOP, synthetic_catalog(12))
    emulator.shop(SHOP, max_cost=300)
    token = emulator.issue_token(SHOP)
    client = ShopifyClient(http, config.with_(variants_per_product=10), shop=SHOP, access_token=token)
    # When the catalog is listed, Then the page shrinks until Shopify accepts it, and nothing is lost
    pages = [page async for page in client.iter_product_pages()]
    assert sum(len(p) for p in pages) == 12
    assert "MAX_COST_EXCEEDED" in [r["status"] for r in emulator.requests]


@pytest.mark.parametrize("status", [200, 429])
async def test_throttling_backs_off_and_completes(emulator, config, http, status: int) -> None:
    # Given a store whose bucket is small and refills slowly, and that answers THROTTLED with HTTP <status>
    emulator.add_products(SHOP, synthetic_catalog(200))
    emulator.shop(SHOP, bucket_max=1000.0, available=1000.0, restore_rate=5000.0, force_throttle=2, throttle_status=status)
    token = emulator.issue_token(SHOP)
    sleeps = Sleeps()
    client = ShopifyClient(http, config.with_(variants_per_product=10), shop=SHOP, access_token=token, sleep=sleeps)
    # When the whole catalog is listed
    pages = [page async for page in client.iter_product_pages()]
    # Then it completes, after waiting where Shopify said THROTTLED (and before spending an empty bucket)
    assert sum(len(p) for p in pages) == 200
    assert client.stats.throttled >= 2 and len(sleeps.waits) > client.stats.throttled
    assert [r["status"] for r in emulator.requests].count("THROTTLED") >= 2


async def test_unauthorized_is_token_revoked_with_a_reconnect_hint(emulator, config, http) -> None:
    emulator.shop(SHOP)
    client = ShopifyClient(http, config, shop=SHOP, access_token="shpat_revoked")
    with pytest.raises(TokenRevoked) as caught:
        await client.products_count()
    assert "Reconnect the store" in caught.value.message and caught.value.code == "shopify_token_revoked"
    assert not caught.value.retryable


async def test_server_errors_are_retried_then_reported_retryable(emulator, config, http) -> None:
    emulator.add_products(SHOP, synthetic_catalog(2))
    token = emulator.issue_token(SHOP)
    sleeps = Sleeps()
    emulator.shop(SHOP, fail_5xx=2)
    assert await ShopifyClient(http, config, shop=SHOP, access_token=token, sleep=sleeps).products_count() == 2
    emulator.shop(SHOP, fail_5xx=10)
    with pytest.raises(ShopifyUnavailable) as caught:
        await ShopifyClient(http, config, shop=SHOP, access_token=token, sleep=sleeps).products_count()
    assert caught.value.retryable


async def test_bulk_export_lifecycle_and_partial_data(emulator, config, http) -> None:
    # Given a store with 25 products
    nodes = synthetic_catalog(25)
    emulator.add_products(SHOP, nodes)
    token = emulator.issue_token(SHOP)
    client = ShopifyClient(http, config, shop=SHOP, access_token=token)
    # When a bulk export runs to completion
    result = await client.bulk_export()
    products, failures = assemble_bulk(result.rows, shop=SHOP)
    # Then it was created, polled and downloaded; variants joined their products through __parentId
    assert not result.partial and not failures and len(products) == 25
    assert sum(len(p.variants) for p in products) == sum(len(n["variants"]) for n in nodes)
    assert emulator.operations().count("bulkOperation") >= 2
    # When the next export fails part way with a partialDataUrl
    emulator.shop(SHOP, bulk_partial_after=10)
    partial = await client.bulk_export()
    # Then the partial rows are used and the result says so
    assert partial.partial and partial.error_code == "TIMEOUT"
    assert len(assemble_bulk(partial.rows, shop=SHOP)[0]) == 10


async def test_webhook_subscriptions_are_created_once(emulator, config, http) -> None:
    token = emulator.issue_token(SHOP)
    client = ShopifyClient(http, config, shop=SHOP, access_token=token)
    assert await client.subscribe_webhook("products/update", config.webhook_uri)
    assert await client.subscribe_webhook("products/update", config.webhook_uri) is None  # already there: fine
    assert emulator.shops[SHOP].webhooks == [{"topic": "PRODUCTS_UPDATE", "uri": "https://parley.example/shopify/webhooks"}]
