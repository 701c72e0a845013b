"""Shopify errors, in the one ParleyError hierarchy (stable codes, messages a person can read)."""

from __future__ import annotations

from parley.errors import InvalidInput, ParleyError, Unavailable


class ShopifyError(ParleyError):
    """Shopify refused the request for a reason that trying again will not fix."""

    code = "shopify_error"


class InvalidShop(InvalidInput):
    code = "invalid_shop"


class TokenRevoked(ShopifyError):
    """401 from the Admin API or a refused refresh: the merchant must connect the store again."""

    code = "shopify_token_revoked"

    def __init__(self, shop: str, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"Shopify rejected Parley's access token for {shop}{extra}: the app was uninstalled or its "
            "access was revoked. Reconnect the store: open a new install link from your Parley admin "
            "(or run `parley shopify connect`) and approve the app again."
        )
        self.shop = shop


class MissingScopes(ShopifyError):
    code = "shopify_missing_scopes"


class ShopifyUnavailable(Unavailable):
    """5xx, timeouts, connection errors: retried with backoff by the caller's consumer."""

    code = "shopify_unavailable"


class BulkOperationFailed(ShopifyError):
    code = "shopify_bulk_failed"
