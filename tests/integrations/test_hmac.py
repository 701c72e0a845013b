"""Shopify signatures against Shopify's published test vectors (and the fixture file's)."""

from __future__ import annotations

import json

import pytest
import shopify

from integrations.shopify.errors import InvalidShop
from integrations.shopify.hmac import (
    is_valid_shop, normalize_shop, oauth_hmac, sign_install_link, verify_install_link, verify_oauth_hmac,
    verify_webhook_hmac, webhook_hmac,
)
from tests.support.services import SHARED_DATA

VECTORS = SHARED_DATA / "fixtures" / "shopify" / "shopify_hmac_test_vectors.json"
DOC_PARAMS = {"code": "0907a61c0c8d55e99db179b68161bc00", "shop": "some-shop.myshopify.com",
              "state": "0.6784241404160823", "timestamp": "1337178173"}
DOC_HMAC = "700e2dadb827fcc8609e9d5ce208b2e9cdaab9df07390d2cbca10d7c328fc4bf"


@pytest.fixture
def vectors() -> dict:
    if not VECTORS.exists():
        pytest.skip(f"../shared/data is missing (looked for {VECTORS})")
    return json.loads(VECTORS.read_text())


def test_oauth_hmac_matches_shopifys_documented_vector() -> None:
    # Given Shopify's documented install parameters and the secret "hush"
    # When we sign them, and verify them with the hmac added (in any order, as a query would be)
    assert oauth_hmac(DOC_PARAMS, "hush") == DOC_HMAC
    pairs = [("timestamp", "1337178173"), ("hmac", DOC_HMAC), *((k, v) for k, v in DOC_PARAMS.items() if k != "timestamp")]
    # Then the signature matches and verifies; any tampering does not
    assert verify_oauth_hmac(pairs, "hush")
    assert not verify_oauth_hmac({**DOC_PARAMS, "hmac": DOC_HMAC, "shop": "evil.myshopify.com"}, "hush")
    assert not verify_oauth_hmac({**DOC_PARAMS, "hmac": DOC_HMAC}, "wrong-secret")
    assert not verify_oauth_hmac(DOC_PARAMS, "hush")  # no hmac at all
    assert not verify_oauth_hmac([*pairs, ("hmac", DOC_HMAC)], "hush")  # two hmacs


def test_oauth_hmac_matches_the_fixture_vector_and_shopify_python_api(vectors: dict) -> None:
    vector = vectors["oauth_query_hmac_vector"]
    assert oauth_hmac(vector["params"], vector["secret"]) == vector["expected_hmac_hex"]
    # the library computes the same string with its class-level secret (why we do not use it at run time)
    shopify.Session.setup(api_key="k", secret=vector["secret"])
    assert shopify.Session.calculate_hmac(vector["params"]) == vector["expected_hmac_hex"]
    weird = {"shop": "a.myshopify.com", "x": "a&b=c%d", "ids[]": ["1", "2"]}
    assert oauth_hmac(weird, vector["secret"]) == shopify.Session.calculate_hmac(weird)


def test_a_value_cannot_forge_another_pair() -> None:
    # "a=1&b=2" signed as one value must differ from two parameters a and b
    assert oauth_hmac({"a": "1&b=2"}, "k") != oauth_hmac({"a": "1", "b": "2"}, "k")


def test_webhook_hmac_matches_the_fixture_vector_and_its_negative_cases(vectors: dict) -> None:
    vector = vectors["webhook_hmac_vector"]
    body = vector["raw_body"].encode()
    header = vector["headers"]["X-Shopify-Hmac-Sha256"]
    assert webhook_hmac(body, vector["secret"]) == header
    assert verify_webhook_hmac(body, header, vector["secret"])
    assert not verify_webhook_hmac(body, "fake", vector["secret"])
    assert not verify_webhook_hmac(body, "", vector["secret"])
    assert not verify_webhook_hmac(body, None, vector["secret"])
    # re-serialising the JSON changes the bytes: only the raw body verifies
    assert not verify_webhook_hmac(json.dumps(json.loads(body)).replace(" ", "").encode(), header, vector["secret"])


def test_webhook_hmac_documented_example() -> None:
    assert webhook_hmac(b'{"id":1}', "hush") == "VnKUjZsLuN5iZWjn5EntcBVCF9kMN43LglzCE1/GSeY="


@pytest.mark.parametrize("given, expected", [
    ("my-shop.myshopify.com", "my-shop.myshopify.com"),
    ("My-Shop", "my-shop.myshopify.com"),
    ("https://my-shop.myshopify.com/", "my-shop.myshopify.com"),
    ("shop1.myshopify.com", "shop1.myshopify.com"),
])
def test_shop_names_are_normalised(given: str, expected: str) -> None:
    assert normalize_shop(given) == expected


@pytest.mark.parametrize("bad", [
    "evil.com", "my-shop.myshopify.com.evil.com", "-shop.myshopify.com", "my_shop.myshopify.com", "",
    "my-shop.myshopify.com/admin", "user@my-shop.myshopify.com", "my-shop.myshopify.com:443", "shop1.myshopify.io",
])
def test_anything_but_a_myshopify_domain_is_refused(bad: str) -> None:
    with pytest.raises(InvalidShop):
        normalize_shop(bad)
    assert not is_valid_shop(bad)


def test_install_links_are_signed_and_expire() -> None:
    key = b"k" * 32
    sig = sign_install_link(key, "tenant1", 2_000, "link1")
    assert verify_install_link(key, "tenant1", "2000", sig, "link1", now=1_000)
    assert not verify_install_link(key, "tenant1", "2000", sig, "link1", now=2_001)  # expired
    assert not verify_install_link(key, "tenant2", "2000", sig, "link1", now=1_000)  # another tenant
    assert not verify_install_link(key, "tenant1", "3000", sig, "link1", now=1_000)  # extended expiry
    assert not verify_install_link(key, "tenant1", "2000", sig, "link2", now=1_000)  # another link (a spent one's id swapped)
    assert not verify_install_link(key, "tenant1", "2000", sig, "", now=1_000)  # a link of before single use
    assert not verify_install_link(b"x" * 32, "tenant1", "2000", sig, "link1", now=1_000)
    assert not verify_install_link(key, "tenant1", "soon", sig, "link1", now=1_000)


@pytest.mark.parametrize("hostile", ["é", "\udcff\udcfe", "²", "v0=\x00", "", "x" * 10_000, "١٢٣"])
def test_every_verification_is_total_on_hostile_text(hostile: str) -> None:
    # Given text a stranger can put in a header or a query: non-ASCII, aiohttp's stand-ins for
    # invalid UTF-8 (lone surrogates), digits int() refuses, control characters, empty, huge
    key, body = b"k" * 32, b'{"id":1}'
    # When it is checked as a signature, an expiry, a tenant or a link id
    # Then every check says no, and none of them raises
    assert verify_webhook_hmac(body, hostile, "hush") is False
    assert verify_oauth_hmac({"shop": "a.myshopify.com", "hmac": hostile}, "hush") is False
    assert verify_oauth_hmac({"shop": hostile, "hmac": "00"}, "hush") is False
    assert verify_install_link(key, "tenant1", "2000", hostile, "link1", now=1_000) is False
    assert verify_install_link(key, "tenant1", hostile, "00", "link1", now=1_000) is False
    assert verify_install_link(key, hostile, "2000", "00", hostile, now=1_000) is False
