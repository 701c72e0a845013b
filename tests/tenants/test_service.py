from __future__ import annotations

import pytest
from sqlalchemy import select, text

from parley.crypto import load_secret_box
from parley.db import bind_admin
from parley.errors import AlreadyExists, InvalidInput
from parley.settings import Settings
from tenants import service
from tenants.models import ChannelKind
from tenants.repository import authenticate_api_key, reveal_secrets, route_installation


async def test_create_tenant_validates_and_refuses_duplicates(db) -> None:  # type: ignore[no-untyped-def]
    async with db.sessions() as s:
        bind_admin(s)
        t = await service.create_tenant(s, name="acme")
        assert t.id and t.display_name == "acme" and t.index_version == 0
        with pytest.raises(AlreadyExists):
            await service.create_tenant(s, name="acme")
        with pytest.raises(InvalidInput):
            await service.create_tenant(s, name="Not Valid!")


async def test_channel_secrets_are_encrypted_at_rest(db, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    box = load_secret_box(settings)
    async with db.sessions() as s:
        bind_admin(s)
        t = await service.create_tenant(s, name="acme")
        await service.install_channel(
            s, box=box, tenant_id=t.id, kind=ChannelKind.slack, external_id="T123",
            details={"bot_user_id": "U1"}, secrets={"bot_token": "xoxb-very-secret"},
        )
        await s.commit()
        raw = (await s.execute(text("select secrets_encrypted from channel_installation"))).scalar_one()
        assert "xoxb-very-secret" not in raw
        found = await route_installation(s, ChannelKind.slack, "T123")
        assert found is not None and found.tenant_id == t.id
        assert reveal_secrets(box, found) == {"bot_token": "xoxb-very-secret"}
        assert "xoxb" not in repr(found)


async def test_a_channel_belongs_to_one_tenant_until_revoked(db, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    box = load_secret_box(settings)
    async with db.sessions() as s:
        bind_admin(s)
        a = await service.create_tenant(s, name="alpha")
        b = await service.create_tenant(s, name="beta")
        await service.install_channel(s, box=box, tenant_id=a.id, kind=ChannelKind.shopify, external_id="x.myshopify.com", secrets={"t": "1"})
        with pytest.raises(AlreadyExists):
            await service.install_channel(s, box=box, tenant_id=b.id, kind=ChannelKind.shopify, external_id="x.myshopify.com")
        revoked = await service.revoke_channel(s, kind=ChannelKind.shopify, external_id="x.myshopify.com")
        assert revoked is not None and revoked.secrets_encrypted is None
        assert await route_installation(s, ChannelKind.shopify, "x.myshopify.com") is None
        moved = await service.install_channel(s, box=box, tenant_id=b.id, kind=ChannelKind.shopify, external_id="x.myshopify.com")
        assert moved.tenant_id == b.id and moved.status == "active"


async def test_api_keys_authenticate_until_revoked(db) -> None:  # type: ignore[no-untyped-def]
    async with db.sessions() as s:
        bind_admin(s)
        t = await service.create_tenant(s, name="acme")
        await s.commit()
    async with db.sessions() as s:
        row, key = await service.create_api_key(s, tenant_id=t.id, name="ops")
        await s.commit()
    async with db.sessions() as s:
        stored = (await s.execute(text("select key_hash from api_key"))).scalar_one()
        assert key not in stored
        found = await authenticate_api_key(s, key)
        assert found is not None and found.tenant_id == t.id and found.last_used_at is not None
        assert await authenticate_api_key(s, key + "x") is None
    async with db.sessions() as s:
        await service.revoke_api_key(s, tenant_id=t.id, key_id=row.id)
        await s.commit()
    async with db.sessions() as s:
        assert await authenticate_api_key(s, key) is None
