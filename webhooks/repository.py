"""Queries on webhook endpoints and deliveries, scoped to one tenant."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from parley.repository import TenantRepository
from webhooks.models import WebhookDelivery, WebhookEndpoint


class EndpointRepository(TenantRepository[WebhookEndpoint]):
    model = WebhookEndpoint
    noun = "webhook endpoint"
    label = "url"

    async def list(self) -> Sequence[WebhookEndpoint]:
        result = await self.session.execute(self.select().order_by(WebhookEndpoint.created_at, WebhookEndpoint.id))
        return result.scalars().all()

    async def subscribed(self, event_type: str) -> list[WebhookEndpoint]:
        """The enabled endpoints that subscribed to ``event_type`` (JSON lists are filtered here:
        a tenant has a handful of endpoints)."""
        result = await self.session.execute(self.select().where(WebhookEndpoint.enabled.is_(True))
                                            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id))
        return [e for e in result.scalars() if event_type in (e.event_types or [])]

    async def by_url(self, url: str) -> WebhookEndpoint | None:
        result = await self.session.execute(self.select().where(WebhookEndpoint.url == url)
                                            .order_by(WebhookEndpoint.created_at).limit(1))
        return result.scalar_one_or_none()


class DeliveryRepository(TenantRepository[WebhookDelivery]):
    model = WebhookDelivery
    noun = "webhook delivery"

    async def for_endpoint(self, endpoint_id: str, *, limit: int = 50, status: str | None = None) -> Sequence[WebhookDelivery]:
        stmt = self.select().where(WebhookDelivery.endpoint_id == endpoint_id)
        if status:
            stmt = stmt.where(WebhookDelivery.status == status)
        result = await self.session.execute(stmt.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
                                            .limit(limit))
        return result.scalars().all()

    async def find_for_event(self, endpoint_id: str, event_key: str) -> WebhookDelivery | None:
        result = await self.session.execute(
            self.select().where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.event_key == event_key))
        return result.scalar_one_or_none()

    async def for_update(self, delivery_id: str) -> WebhookDelivery | None:
        result = await self.session.execute(
            select(WebhookDelivery).where(WebhookDelivery.tenant_id == self.tenant_id, WebhookDelivery.id == delivery_id)
            .with_for_update())
        return result.scalar_one_or_none()
