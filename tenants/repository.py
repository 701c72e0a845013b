"""Queries for tenants, channel installations and API keys.

Tenants themselves are the root of scoping, so `TenantDirectory` is the one admin-level
repository; everything tenant-owned goes through `TenantRepository` subclasses. Routing an
inbound webhook to its tenant (before any tenant is known) is the only cross-tenant lookup of
installations and API keys, and it lives here, named as such.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.crypto import SecretBox, hash_api_key
from parley.db import bind_admin, utcnow
from parley.errors import NotFound
from parley.repository import TenantRepository
from tenants.models import ApiKey, ChannelInstallation, ChannelKind, Tenant, Uploader, UploaderPolicy


class TenantDirectory:
    """Admin-level access to the tenant table (it has no tenant_id: it *is* the tenant)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_name(self, name: str) -> Tenant | None:
        return (await self.session.execute(select(Tenant).where(Tenant.name == name))).scalar_one_or_none()

    async def by_id(self, tenant_id: str) -> Tenant | None:
        return await self.session.get(Tenant, tenant_id)

    async def resolve(self, name_or_id: str) -> Tenant:
        tenant = await self.by_name(name_or_id) or await self.by_id(name_or_id)
        if tenant is None:
            raise NotFound(f"no such tenant: {name_or_id!r} (see `parley tenants list`)")
        return tenant

    async def all(self) -> list[Tenant]:
        return list((await self.session.execute(select(Tenant).order_by(Tenant.name))).scalars())

    def add(self, tenant: Tenant) -> Tenant:
        self.session.add(tenant)
        return tenant

    async def bump_index_version(self, tenant_id: str) -> None:
        """Atomic increment: invalidates every cached answer of the tenant."""
        await self.session.execute(
            update(Tenant).where(Tenant.id == tenant_id).values(index_version=Tenant.index_version + 1)
        )


class ApiKeyRepository(TenantRepository[ApiKey]):
    model = ApiKey
    noun = "API key"
    label = "name"

    async def list(self) -> list[ApiKey]:
        return list((await self.session.execute(self.select().order_by(ApiKey.created_at))).scalars())


class InstallationRepository(TenantRepository[ChannelInstallation]):
    model = ChannelInstallation
    noun = "channel installation"

    async def list(self) -> list[ChannelInstallation]:
        stmt = self.select().order_by(ChannelInstallation.kind, ChannelInstallation.external_id)
        return list((await self.session.execute(stmt)).scalars())


class UploaderPolicyRepository(TenantRepository[UploaderPolicy]):
    model = UploaderPolicy
    noun = "uploader policy"

    async def for_channel(self, channel: str) -> UploaderPolicy | None:
        return (await self.session.execute(self.select().where(UploaderPolicy.channel == channel))).scalar_one_or_none()

    async def list(self) -> list[UploaderPolicy]:
        return list((await self.session.execute(self.select().order_by(UploaderPolicy.channel))).scalars())


class UploaderRepository(TenantRepository[Uploader]):
    model = Uploader
    noun = "uploader"

    async def find_user(self, channel: str, user_id: str) -> Uploader | None:
        stmt = self.select().where(Uploader.channel == channel, Uploader.user_id == user_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list(self, channel: str | None = None) -> list[Uploader]:
        stmt = self.select().order_by(Uploader.channel, Uploader.created_at)
        if channel:
            stmt = stmt.where(Uploader.channel == channel)
        return list((await self.session.execute(stmt)).scalars())


def seal_secrets(box: SecretBox, secrets: dict[str, Any]) -> str:
    return box.encrypt(json.dumps(secrets, sort_keys=True))


def reveal_secrets(box: SecretBox, installation: ChannelInstallation) -> dict[str, Any]:
    if not installation.secrets_encrypted:
        return {}
    return json.loads(box.decrypt(installation.secrets_encrypted))


async def route_installation(session: AsyncSession, kind: ChannelKind, external_id: str) -> ChannelInstallation | None:
    """Which tenant owns this Slack team / Instagram account / shop? The one cross-tenant lookup.

    Runs on an admin-marked session of its own: it is the step that *finds* the tenant.
    """
    bind_admin(session)
    stmt = select(ChannelInstallation).where(
        ChannelInstallation.kind == kind,
        ChannelInstallation.external_id == external_id,
        ChannelInstallation.status == "active",
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def authenticate_api_key(session: AsyncSession, key: str) -> ApiKey | None:
    """The tenant an API key belongs to, or None. Looked up by hash (the key itself is never stored)."""
    bind_admin(session)
    stmt = select(ApiKey).where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None))
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is not None:
        row.last_used_at = utcnow()
    return row
