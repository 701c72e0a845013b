"""Shopify's signatures, every comparison constant-time.

* OAuth redirects (install hit and callback): hex HMAC-SHA256, keyed with the client secret, over
  the query parameters except ``hmac`` (and the legacy ``signature``), each written ``k=v`` with
  ``%``, ``&`` and ``=`` escaped so a value cannot forge a pair, sorted and joined with ``&``.
  Array parameters (``ids[]=1&ids[]=2``) are signed as ``ids=["1", "2"]``.
* Webhooks: base64 of HMAC-SHA256 over the *raw* request body (never a re-serialised one), in the
  ``X-Shopify-Hmac-Sha256`` header.
* Shop names: ``<name>.myshopify.com`` only (``^[a-zA-Z0-9][a-zA-Z0-9\\-]*\\.myshopify\\.com$``),
  the same rule as ShopifyAPI's ``sanitize_shop_domain``, which also completes a bare ``my-shop``.
* Install links: our own signature (tenant id, link id and expiry, hex HMAC-SHA256) so
  ``/shopify/install`` knows which tenant a merchant is connecting without a login; the link id
  lets the gateway spend a link once.

Every ``verify_*`` is total: whatever text a stranger sends (non-ASCII, aiohttp's stand-ins for
invalid UTF-8, empty, huge) it returns False, never raises.
"""

from __future__ import annotations

import base64
import hashlib
import hmac as _hmac
import json
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from integrations.shopify.errors import InvalidShop
from parley.crypto import constant_time_equals, text_bytes

SHOP_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9\-]*\.myshopify\.com$")
_SKIP = ("hmac", "signature")




def _key(secret: str | bytes) -> bytes:
    return text_bytes(secret)


def _pairs(params: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Iterable[str]:
    items = params.items() if isinstance(params, Mapping) else params
    arrays: dict[str, list[str]] = {}
    for name, value in items:
        if name in _SKIP:
            continue
        if name.endswith("[]"):
            values = value if isinstance(value, (list, tuple)) else [value]
            arrays.setdefault(name[:-2], []).extend(str(v) for v in values)
            continue
        yield _escape(str(name), str(value))
    for name, values in arrays.items():
        yield _escape(name, json.dumps(values))


def _escape(name: str, value: str) -> str:
    name = name.replace("%", "%25").replace("=", "%3D")
    value = value.replace("%", "%25")
    return f"{name}={value}".replace("&", "%26")


def oauth_message(params: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """The string Shopify signs for an OAuth redirect (exposed for tests and debugging)."""
    return "&".join(sorted(_pairs(params)))


def oauth_hmac(params: Mapping[str, Any] | Iterable[tuple[str, Any]], secret: str | bytes) -> str:
    return _hmac.new(_key(secret), text_bytes(oauth_message(params)), hashlib.sha256).hexdigest()


def verify_oauth_hmac(params: Mapping[str, Any] | Iterable[tuple[str, Any]], secret: str | bytes) -> bool:
    """``params``: the query as a mapping or as (name, value) pairs (a MultiDict's ``items()``)."""
    pairs = list(params.items() if isinstance(params, Mapping) else params)
    given = [str(v) for k, v in pairs if k == "hmac"]
    if len(given) != 1 or not secret:
        return False
    expected = oauth_hmac(pairs, secret)
    return constant_time_equals(expected, given[0].strip().lower())


def webhook_hmac(body: bytes, secret: str | bytes) -> str:
    return base64.b64encode(_hmac.new(_key(secret), body, hashlib.sha256).digest()).decode()


def verify_webhook_hmac(body: bytes, header: str | None, secret: str | bytes) -> bool:
    if not header or not secret or body is None:
        return False
    expected = webhook_hmac(body, secret)
    return constant_time_equals(expected, header.strip())


def is_valid_shop(shop: str | None) -> bool:
    return bool(shop) and SHOP_RE.fullmatch(shop or "") is not None


def normalize_shop(shop: str | None) -> str:
    """``My-Shop``, ``my-shop.myshopify.com`` or ``https://my-shop.myshopify.com/`` -> ``my-shop.myshopify.com``.

    Anything that is not a myshopify domain (``evil.com``, ``a.myshopify.com.evil.com``, paths,
    ports, credentials) raises :class:`InvalidShop`.
    """
    name = (shop or "").strip().lower()
    name = re.sub(r"^https?://", "", name).rstrip("/")
    if name and "." not in name:
        name += ".myshopify.com"
    if not is_valid_shop(name):
        raise InvalidShop(f"{shop!r} is not a Shopify store address (expected something like your-store.myshopify.com)")
    return name


# --- install links ------------------------------------------------------------------------


def _link_message(tenant_id: str, expires: int, link_id: str) -> bytes:
    return text_bytes(f"parley-shopify-install/v2\n{tenant_id}\n{expires}\n{link_id}")


def sign_install_link(key: bytes, tenant_id: str, expires: int, link_id: str) -> str:
    return _hmac.new(key, _link_message(tenant_id, expires, link_id), hashlib.sha256).hexdigest()


def verify_install_link(key: bytes, tenant_id: str, expires: str | int, signature: str, link_id: str, *,
                        now: float | None = None) -> bool:
    """True for a link we signed that has not expired (whether it was used is the gateway's to say)."""
    if not tenant_id or not signature or not link_id or not isinstance(expires, (str, int)):
        return False
    if isinstance(expires, str) and not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
        return False
    expires_at = int(expires)
    expected = sign_install_link(key, tenant_id, expires_at, link_id)
    if not constant_time_equals(expected, signature.strip().lower()):
        return False
    return expires_at >= (time.time() if now is None else now)
