"""A tenant's connected store: its installation, a fresh access token, an Admin API client.

Expiring offline tokens are refreshed here, shortly before they expire. The refresh token rotates
on every refresh, so the new pair is committed in its own unit of work at once (before any other
work of the handler), even if the handler fails afterwards. Two workers refreshing at the same
time: the loser's refresh is refused; it then re-reads the installation and uses the winner's
token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from integrations.shopify import oauth
from integrations.shopify.client import ShopifyClient
from integrations.shopify.config import ShopifyConfig
from integrations.shopify.errors import ShopifyError, TokenRevoked
from parley.crypto import SecretBox
from parley.db import unit_of_work
from parley.keyed_locks import KeyedLocks
from tenants.models import ChannelInstallation, ChannelKind
from tenants.repository import InstallationRepository, reveal_secrets, seal_secrets

log = logging.getLogger(__name__)


class StoreDisconnected(ShopifyError):
    code = "shopify_disconnected"


@dataclass(frozen=True)
class ShopAccess:
    shop: str
    currency: str | None
    client: ShopifyClient


async def find_installation(session: AsyncSession, *, tenant_id: str, shop: str) -> ChannelInstallation | None:
    repo = InstallationRepository(session, tenant_id)
    stmt = repo.select().where(ChannelInstallation.kind == ChannelKind.shopify, ChannelInstallation.external_id == shop)
    return (await session.execute(stmt)).scalar_one_or_none()


def _disconnected(shop: str) -> StoreDisconnected:
    return StoreDisconnected(f"{shop} is no longer connected to Parley (the app was uninstalled); "
                             "reconnect the store to sync its catalog again")


class ShopConnector:
    """Opens :class:`ShopAccess` for (tenant, shop); one per worker process."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], box: SecretBox, config: ShopifyConfig,
                 http: aiohttp.ClientSession) -> None:
        self.sessions = sessions
        self.box = box
        self.config = config
        self.http = http
        self._locks: KeyedLocks[tuple[str, str]] = KeyedLocks()  # only the shops refreshing now: no per-tenant growth

    async def _read(self, tenant_id: str, shop: str) -> tuple[dict[str, Any], dict[str, Any]]:
        async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
            row = await find_installation(session, tenant_id=tenant_id, shop=shop)
            if row is None or row.status != "active":
                raise _disconnected(shop)
            return reveal_secrets(self.box, row), dict(row.details or {})

    async def open(self, *, tenant_id: str, shop: str) -> ShopAccess:
        secrets, details = await self._read(tenant_id, shop)
        tokens = oauth.TokenSet.from_secrets(secrets)
        if not tokens.access_token:
            raise _disconnected(shop)
        if tokens.needs_refresh(margin=self.config.refresh_margin):
            tokens = await self._refresh(tenant_id, shop, tokens)
        client = ShopifyClient(self.http, self.config, shop=shop, access_token=tokens.access_token)
        return ShopAccess(shop=shop, currency=details.get("currency"), client=client)

    async def _refresh(self, tenant_id: str, shop: str, tokens: oauth.TokenSet) -> oauth.TokenSet:
        async with self._locks.hold((tenant_id, shop)):
            secrets, _ = await self._read(tenant_id, shop)
            current = oauth.TokenSet.from_secrets(secrets)
            if not current.needs_refresh(margin=self.config.refresh_margin):
                return current  # refreshed meanwhile (by this process or another)
            try:
                fresh = await oauth.refresh(self.http, self.config, shop=shop, refresh_token=current.refresh_token or "")
            except TokenRevoked:
                secrets, _ = await self._read(tenant_id, shop)
                again = oauth.TokenSet.from_secrets(secrets)
                if again.refresh_token != current.refresh_token and not again.needs_refresh(margin=0):
                    return again  # another worker rotated the token first
                raise
            if not fresh.scopes:
                fresh = oauth.TokenSet(fresh.access_token, current.scopes, fresh.expires_at,
                                       fresh.refresh_token or current.refresh_token, fresh.refresh_expires_at)
            async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
                row = await find_installation(session, tenant_id=tenant_id, shop=shop)
                if row is None or row.status != "active":
                    raise _disconnected(shop)
                merged = {**reveal_secrets(self.box, row), **fresh.to_secrets()}
                row.secrets_encrypted = seal_secrets(self.box, merged)
            log.info("refreshed shopify access token", extra={"shop": shop, "tenant_id": tenant_id})
            return fresh
