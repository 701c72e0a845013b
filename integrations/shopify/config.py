"""Shopify settings for the adapter, the catalog worker and the gateway routes.

:meth:`ShopifyConfig.from_settings` reads the ``shopify_*`` fields of ``Settings`` and, for knobs
``Settings`` does not list, the ``PARLEY_SHOPIFY_*`` environment variables (at call time, never at
import time):

=================================  ==========================================================
``PARLEY_SHOPIFY_CLIENT_ID``        the app's client id (API key)
``PARLEY_SHOPIFY_CLIENT_SECRET``    the app's client secret: OAuth HMAC, token exchange, webhook HMAC
``PARLEY_SHOPIFY_SCOPES``           comma-separated scopes to request (default ``read_products``)
``PARLEY_SHOPIFY_API_VERSION``      Admin API version (default ``2026-10``)
``PARLEY_SHOPIFY_BASE_URL``         where a shop's Admin API lives, ``{shop}`` is replaced
                                    (default ``https://{shop}``; tests point it at an emulator)
``PARLEY_SHOPIFY_BULK_THRESHOLD``   stores with at least this many products are listed with a bulk
                                    operation, smaller ones page through ``products`` (default 1000)
``PARLEY_SHOPIFY_BATCH_SIZE``       products per ``catalog.products_received`` message (default 25)
``PARLEY_SHOPIFY_POLL_INTERVAL``    seconds between bulk operation status polls (default 2)
=================================  ==========================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

DEFAULT_API_VERSION = "2026-10"
DEFAULT_SCOPES = ("read_products",)
#: The longest an install link may live (it was the default, when links were reusable).
MAX_INSTALL_LINK_TTL = 7 * 24 * 3600


def _get(settings: Any, environ: Mapping[str, str], name: str) -> Any:
    value = getattr(settings, f"shopify_{name}", None) if settings is not None else None
    if value is not None:
        secret = getattr(value, "get_secret_value", None)
        return secret() if callable(secret) else value
    return environ.get(f"PARLEY_SHOPIFY_{name.upper()}")


@dataclass(frozen=True)
class ShopifyConfig:
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    api_version: str = DEFAULT_API_VERSION
    #: Template of a shop's base URL; ``{shop}`` is the shop's myshopify domain.
    base_url: str = "https://{shop}"
    #: Where the gateway is reachable from outside (OAuth redirect, webhook address).
    public_url: str = "http://127.0.0.1:8080"
    bulk_threshold: int = 1000
    #: Products per page of the paginated listing (Shopify's maximum is 250). The client starts at
    #: the largest page whose requested cost fits Shopify's 1,000-point single-query limit
    #: (2 + first x (3 + variants_per_product)) and halves it if Shopify still says MAX_COST_EXCEEDED.
    page_size: int = 250
    #: Variants fetched with each product; a product with more gets the rest in follow-up pages.
    variants_per_product: int = 20
    batch_size: int = 25
    max_batch_bytes: int = 256 * 1024
    poll_interval: float = 2.0
    #: Give up waiting for a bulk operation after this long (the handler is then retried).
    bulk_timeout: float = 20 * 60
    #: Refresh an expiring access token when it has less than this many seconds left.
    refresh_margin: float = 300.0
    http_timeout: float = 60.0
    #: Longest single wait after a THROTTLED answer; throttling itself never fails a job.
    max_throttle_wait: float = 60.0
    #: Attempts for 5xx answers and connection errors before the error is raised as retryable.
    transient_attempts: int = 4
    #: An install link is single use and lives this long by default (``parley shopify link --ttl``,
    #: at most `MAX_INSTALL_LINK_TTL`).
    install_link_ttl: float = 24 * 3600
    state_ttl: float = 15 * 60
    #: A webhook whose ``X-Shopify-Triggered-At`` is older than this is refused as a replay: Shopify
    #: retries a delivery 8 times over 4 hours, with the original trigger time.
    webhook_max_age: float = 6 * 3600

    @property
    def configured(self) -> bool:
        return bool(self.client_id and self.client_secret)

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url.rstrip('/')}/shopify/callback"

    @property
    def webhook_uri(self) -> str:
        return f"{self.public_url.rstrip('/')}/shopify/webhooks"

    def shop_url(self, shop: str) -> str:
        return self.base_url.replace("{shop}", shop).rstrip("/")

    def graphql_url(self, shop: str) -> str:
        return f"{self.shop_url(shop)}/admin/api/{self.api_version}/graphql.json"

    def with_(self, **changes: Any) -> ShopifyConfig:
        return replace(self, **changes)

    @classmethod
    def from_settings(cls, settings: Any = None, environ: Mapping[str, str] | None = None) -> ShopifyConfig:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in ("client_id", "client_secret", "api_version", "base_url"):
            if (v := _get(settings, env, name)) not in (None, ""):
                values[name] = str(v)
        if (scopes := _get(settings, env, "scopes")) not in (None, ""):
            items = scopes if isinstance(scopes, (list, tuple)) else str(scopes).split(",")
            values["scopes"] = tuple(s.strip() for s in items if s.strip())
        for name, kind in (("bulk_threshold", int), ("batch_size", int), ("page_size", int),
                           ("poll_interval", float), ("bulk_timeout", float)):
            if (v := _get(settings, env, name)) not in (None, ""):
                values[name] = kind(v)
        public = getattr(settings, "effective_public_url", None) if settings is not None else None
        if public:
            values["public_url"] = str(public)
        return cls(**values)
