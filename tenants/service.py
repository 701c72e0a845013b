"""Tenant logic. Services take their session explicitly, use keyword-only arguments, never commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.crypto import SecretBox, generate_api_key, hash_api_key
from parley.db import bind_admin, utcnow
from parley.errors import AlreadyExists, InvalidInput
from tenants.models import ApiKey, ChannelInstallation, ChannelKind, Tenant
from tenants.repository import ApiKeyRepository, InstallationRepository, TenantDirectory, route_installation, seal_secrets
from tenants.schemas import validate_tenant_name


async def create_tenant(session: AsyncSession, *, name: str, display_name: str = "", persona: str = "") -> Tenant:
    validate_tenant_name(name)
    directory = TenantDirectory(session)
    if await directory.by_name(name) is not None:
        raise AlreadyExists(f"a tenant named {name!r} already exists")
    tenant = directory.add(Tenant(name=name, display_name=display_name or name, persona=persona))
    await session.flush()
    return tenant


async def create_api_key(session: AsyncSession, *, tenant_id: str, name: str = "") -> tuple[ApiKey, str]:
    """Returns the row and the key itself, which is shown once and never stored."""
    key = generate_api_key()
    row = ApiKeyRepository(session, tenant_id).add(
        ApiKey(name=name, key_hash=hash_api_key(key), prefix=key[:10], created_at=utcnow())
    )
    await session.flush()
    return row, key


async def revoke_api_key(session: AsyncSession, *, tenant_id: str, key_id: str) -> ApiKey:
    row = await ApiKeyRepository(session, tenant_id).get(key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


async def install_channel(
    session: AsyncSession,
    *,
    box: SecretBox,
    tenant_id: str,
    kind: ChannelKind,
    external_id: str,
    display_name: str = "",
    details: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> ChannelInstallation:
    """Map a Slack team / Instagram account / Shopify shop to a tenant (re-installing updates it).

    A channel already mapped to a *different* tenant is refused: moving a workspace between
    tenants is an explicit uninstall + install, never a side effect.
    """
    if not external_id:
        raise InvalidInput("a channel installation needs an external id")
    existing = await route_installation(session, kind, external_id)
    if existing is None:
        # A revoked row for the same channel is reused (unique per kind + external id).
        bind_admin(session)
        existing = (
            await session.execute(
                select(ChannelInstallation).where(
                    ChannelInstallation.kind == kind, ChannelInstallation.external_id == external_id
                )
            )
        ).scalar_one_or_none()
    if existing is not None and existing.tenant_id != tenant_id and existing.status == "active":
        raise AlreadyExists(f"{kind.value} {external_id} is already connected to another tenant")
    if existing is not None:
        existing.tenant_id = tenant_id
        row = existing
    else:
        row = ChannelInstallation(tenant_id=tenant_id, kind=kind, external_id=external_id)
        session.add(row)
    row.display_name = display_name or row.display_name or external_id
    row.details = dict(details or {})
    row.secrets_encrypted = seal_secrets(box, secrets) if secrets else None
    row.status = "active"
    row.revoked_at = None
    await session.flush()
    return row


async def revoke_channel(session: AsyncSession, *, kind: ChannelKind, external_id: str) -> ChannelInstallation | None:
    """Uninstall / token revocation: the installation stops routing and its secrets are erased."""
    row = await route_installation(session, kind, external_id)
    if row is None:
        return None
    row.status = "revoked"
    row.revoked_at = utcnow()
    row.secrets_encrypted = None
    return row


async def list_installations(session: AsyncSession, *, tenant_id: str) -> list[ChannelInstallation]:
    return await InstallationRepository(session, tenant_id).list()


async def get_tenant(session: AsyncSession, *, name_or_id: str) -> Tenant:
    return await TenantDirectory(session).resolve(name_or_id)
