"""The authorization-code grant with expiring offline tokens, done asynchronously with aiohttp.

1. :func:`authorize_url` sends the merchant to ``https://{shop}/admin/oauth/authorize`` with our
   client id, scopes, redirect URI and a single-use ``state`` nonce the caller stored server-side.
2. The callback (HMAC, state and shop checked by the caller) hands the ``code`` to
   :func:`exchange_code`, which posts it with ``expiring=1``: the answer carries an access token
   valid ``expires_in`` seconds (an hour) and a refresh token (90 days).
3. :func:`refresh` trades the refresh token (``grant_type=refresh_token``) for a new pair before
   the access token expires. The refresh token *rotates*: persist the new one at once.

Custom (merchant-created) apps have a non-expiring Admin API token instead: a :class:`TokenSet`
without ``expires_at`` never needs a refresh.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp

from integrations.shopify.config import ShopifyConfig
from integrations.shopify.errors import MissingScopes, ShopifyError, ShopifyUnavailable, TokenRevoked
from parley.db import utcnow


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    scopes: frozenset[str] = frozenset()
    expires_at: dt.datetime | None = None
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: dt.datetime | None = None

    @property
    def expiring(self) -> bool:
        return self.expires_at is not None

    def needs_refresh(self, *, margin: float, now: dt.datetime | None = None) -> bool:
        if self.expires_at is None or not self.refresh_token:
            return False
        return self.expires_at - (now or utcnow()) <= dt.timedelta(seconds=margin)

    def to_secrets(self) -> dict[str, Any]:
        """What goes (encrypted) into the channel installation's secrets."""
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "refresh_expires_at": self.refresh_expires_at.isoformat() if self.refresh_expires_at else None,
            "scope": ",".join(sorted(self.scopes)),
        }

    @classmethod
    def from_secrets(cls, secrets: dict[str, Any]) -> TokenSet:
        def when(value: Any) -> dt.datetime | None:
            return dt.datetime.fromisoformat(value) if value else None

        return cls(
            access_token=str(secrets.get("access_token") or ""),
            scopes=parse_scopes(secrets.get("scope") or ""),
            expires_at=when(secrets.get("expires_at")),
            refresh_token=secrets.get("refresh_token") or None,
            refresh_expires_at=when(secrets.get("refresh_expires_at")),
        )

    @classmethod
    def from_response(cls, body: dict[str, Any], *, now: dt.datetime | None = None) -> TokenSet:
        now = now or utcnow()
        token = body.get("access_token")
        if not token or not isinstance(token, str):
            raise ShopifyError("Shopify's token endpoint answered without an access token")
        expires_in = body.get("expires_in")
        refresh_in = body.get("refresh_token_expires_in")
        return cls(
            access_token=token,
            scopes=parse_scopes(body.get("scope") or ""),
            expires_at=now + dt.timedelta(seconds=int(expires_in)) if expires_in else None,
            refresh_token=body.get("refresh_token") or None,
            refresh_expires_at=now + dt.timedelta(seconds=int(refresh_in)) if refresh_in else None,
        )


def parse_scopes(value: str | Iterable[str]) -> frozenset[str]:
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(s.strip() for s in items if s and s.strip())


def missing_scopes(granted: Iterable[str], required: Iterable[str]) -> list[str]:
    """Required scopes the grant does not cover (``write_x`` implies ``read_x``)."""
    have = set(granted)
    have |= {"read_" + s[len("write_"):] for s in have if s.startswith("write_")}
    return sorted(s for s in required if s not in have)


def check_scopes(granted: Iterable[str], required: Iterable[str], *, shop: str) -> None:
    missing = missing_scopes(granted, required)
    if missing:
        raise MissingScopes(
            f"{shop} granted Parley too little access: missing {', '.join(missing)}. "
            "Install the app again and approve every requested permission."
        )


def authorize_url(config: ShopifyConfig, *, shop: str, state: str) -> str:
    query = urlencode({
        "client_id": config.client_id,
        "scope": ",".join(config.scopes),
        "redirect_uri": config.redirect_uri,
        "state": state,
    })
    return f"{config.shop_url(shop)}/admin/oauth/authorize?{query}"


async def exchange_code(http: aiohttp.ClientSession, config: ShopifyConfig, *, shop: str, code: str) -> TokenSet:
    """Trade the callback's code for an expiring offline token (``expiring=1``)."""
    return await _token_request(http, config, shop, {
        "client_id": config.client_id,
        "client_secret": config.client_secret,
        "code": code,
        "expiring": "1",
    })


async def refresh(http: aiohttp.ClientSession, config: ShopifyConfig, *, shop: str, refresh_token: str) -> TokenSet:
    """A new access token and a new (rotated) refresh token. A refused refresh is TokenRevoked."""
    return await _token_request(http, config, shop, {
        "client_id": config.client_id,
        "client_secret": config.client_secret,
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
    })


async def _token_request(http: aiohttp.ClientSession, config: ShopifyConfig, shop: str, form: dict[str, str]) -> TokenSet:
    url = f"{config.shop_url(shop)}/admin/oauth/access_token"
    try:
        async with http.post(url, json=form, headers={"Accept": "application/json"},
                             timeout=aiohttp.ClientTimeout(total=config.http_timeout)) as response:
            status = response.status
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ShopifyUnavailable(f"could not reach Shopify's token endpoint for {shop}: {type(exc).__name__}") from exc
    if status >= 500 or status == 429:
        raise ShopifyUnavailable(f"Shopify's token endpoint for {shop} answered HTTP {status}")
    body: dict[str, Any] = {}
    try:
        parsed = json.loads(text) if text else {}
        body = parsed if isinstance(parsed, dict) else {}
    except ValueError:
        body = {}
    if status in (400, 401, 403):
        detail = str(body.get("error_description") or body.get("error") or f"HTTP {status}")
        raise TokenRevoked(shop, detail)
    if status != 200:
        raise ShopifyError(f"Shopify's token endpoint for {shop} answered HTTP {status}")
    return TokenSet.from_response(body)
