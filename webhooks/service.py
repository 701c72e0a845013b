"""Webhook endpoints (register, rotate, enable, remove), the fan-out of tenant events into
deliveries, and the bookkeeping of each delivery attempt. Services never commit.

The delivery itself (HTTP) is in :mod:`webhooks.delivery`; the queue edge in :mod:`webhooks.consumer`.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets as _secrets
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from parley.bus.contracts import EVENT_TYPES, QUEUE_WEBHOOKS, WEBHOOK_DELIVERY_REQUESTED, WebhookDeliveryRequested
from parley.bus.envelope import Envelope
from parley.bus.outbox import stage
from parley.crypto import SecretBox
from parley.db import utcnow
from parley.errors import InvalidInput
from parley.webhook_signing import new_secret
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.repository import DeliveryRepository, EndpointRepository
from webhooks.schemas import WebhookPayload
from webhooks.urls import check_url

log = logging.getLogger(__name__)

#: The event type of `parley webhooks test` (and the dashboard's "Send test"): sent to one endpoint,
#: whatever it subscribed to.
TEST_EVENT = "webhook.test"
#: Most endpoints one tenant may register.
MAX_ENDPOINTS = 20
#: Most bytes (UTF-8) of an endpoint's answer kept in the delivery log.
EXCERPT_CHARS = 2048
#: Attempts remembered per delivery (status and error of each, for the delivery log).
MAX_HISTORY = 20


def new_message_id() -> str:
    """A ``webhook-id``: ``msg_`` and 27 random url-safe characters."""
    return "msg_" + _secrets.token_urlsafe(20)[:27]


def parse_event_types(value: str | Iterable[str] | None) -> list[str]:
    """``document.indexed,job.completed`` (or a list) -> the event types, checked; ``*``/``all``: every type."""
    if value is None:
        raise InvalidInput(f"choose the events to send: one or more of {', '.join(EVENT_TYPES)} (or 'all')")
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v and v.strip()]
    if any(v in ("*", "all") for v in items):
        return list(EVENT_TYPES)
    unknown = [v for v in items if v not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(f"unknown event type {', '.join(unknown)}; choose from {', '.join(EVENT_TYPES)} (or 'all')")
    if not items:
        raise InvalidInput(f"choose the events to send: one or more of {', '.join(EVENT_TYPES)} (or 'all')")
    return sorted(set(items), key=EVENT_TYPES.index)


# --- endpoints --------------------------------------------------------------------------------


async def create_endpoint(session: AsyncSession, *, tenant_id: str, url: str, event_types: str | Iterable[str] | None,
                          box: SecretBox, allow_private: bool, description: str = "") -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it and its signing secret (shown this once, stored sealed)."""
    checked = check_url(url, allow_private=allow_private)
    types = parse_event_types(event_types)
    repo = EndpointRepository(session, tenant_id)
    if len(await repo.list()) >= MAX_ENDPOINTS:
        raise InvalidInput(f"a tenant may register at most {MAX_ENDPOINTS} webhook endpoints; remove one first")
    secret = new_secret()
    endpoint = repo.add(WebhookEndpoint(url=checked, event_types=types, secret_sealed=box.encrypt(secret),
                                        description=(description or "")[:255], enabled=True))
    await session.flush()
    log.info("webhook endpoint registered", extra={"endpoint_id": endpoint.id, "events": ",".join(types)})
    return endpoint, secret


async def list_endpoints(session: AsyncSession, *, tenant_id: str) -> Sequence[WebhookEndpoint]:
    return await EndpointRepository(session, tenant_id).list()


async def get_endpoint(session: AsyncSession, *, tenant_id: str, ref: str) -> WebhookEndpoint:
    """The tenant's endpoint with this id or unique id prefix (`NotFound` otherwise)."""
    return await EndpointRepository(session, tenant_id).resolve(ref, hint="see `parley webhooks list`")


async def endpoint_for_url(session: AsyncSession, *, tenant_id: str, url: str) -> WebhookEndpoint | None:
    """The tenant's endpoint registered for exactly this URL (as normalised at registration), if any."""
    repo = EndpointRepository(session, tenant_id)
    found = await repo.by_url(url)
    if found is not None:
        return found
    try:
        normalised = check_url(url, allow_private=True)  # normalising only; delivery checks the address
    except InvalidInput:
        return None
    return await repo.by_url(normalised) if normalised != url else None


async def update_endpoint(session: AsyncSession, *, tenant_id: str, ref: str, event_types: str | Iterable[str] | None = None,
                          description: str | None = None) -> WebhookEndpoint:
    endpoint = await get_endpoint(session, tenant_id=tenant_id, ref=ref)
    if event_types is not None:
        endpoint.event_types = parse_event_types(event_types)
    if description is not None:
        endpoint.description = description[:255]
    await session.flush()
    return endpoint


async def remove_endpoint(session: AsyncSession, *, tenant_id: str, ref: str) -> WebhookEndpoint:
    """Delete the endpoint and its delivery log (a queued delivery for it then finds nothing and ends)."""
    endpoint = await get_endpoint(session, tenant_id=tenant_id, ref=ref)
    await session.execute(DeliveryRepository(session, tenant_id).delete().where(WebhookDelivery.endpoint_id == endpoint.id))
    await session.delete(endpoint)
    await session.flush()
    return endpoint


async def rotate_secret(session: AsyncSession, *, tenant_id: str, ref: str, box: SecretBox, overlap: dt.timedelta,
                        now: dt.datetime | None = None) -> tuple[WebhookEndpoint, str]:
    """A new signing secret (returned, shown once); the current one keeps signing beside it for
    ``overlap`` (both signatures in ``webhook-signature``), so a receiver can switch without a gap."""
    endpoint = await get_endpoint(session, tenant_id=tenant_id, ref=ref)
    now = now or utcnow()
    secret = new_secret()
    if overlap > dt.timedelta(0):
        endpoint.previous_secret_sealed = endpoint.secret_sealed
        endpoint.previous_secret_expires_at = now + overlap
    else:
        endpoint.previous_secret_sealed = None
        endpoint.previous_secret_expires_at = None
    endpoint.secret_sealed = box.encrypt(secret)
    await session.flush()
    return endpoint, secret


async def set_enabled(session: AsyncSession, *, tenant_id: str, ref: str, enabled: bool, reason: str | None = None,
                      now: dt.datetime | None = None) -> WebhookEndpoint:
    """Turn an endpoint on (clearing why it was disabled and its failure streak) or off."""
    endpoint = await get_endpoint(session, tenant_id=tenant_id, ref=ref)
    if enabled:
        endpoint.enabled = True
        endpoint.disabled_reason = None
        endpoint.disabled_at = None
        endpoint.failing_since = None
    else:
        endpoint.enabled = False
        endpoint.disabled_reason = reason or "disabled by the tenant"
        endpoint.disabled_at = now or utcnow()
    await session.flush()
    return endpoint


def signing_secrets(endpoint: WebhookEndpoint, box: SecretBox, *, now: dt.datetime | None = None) -> list[str]:
    """The secrets that sign a delivery now: the current one first, the previous one while its overlap lasts."""
    found = [box.decrypt(endpoint.secret_sealed)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_sealed and expires is not None and (now or utcnow()) < expires:
        found.append(box.decrypt(endpoint.previous_secret_sealed))
    return found


# --- deliveries -------------------------------------------------------------------------------


def event_body(*, msg_id: str, event_type: str, data: dict[str, Any], occurred_at: dt.datetime) -> str:
    """The JSON a receiver gets: ``{"type", "timestamp", "data"}`` (Standard Webhooks' payload shape),
    plus ``id`` (the ``webhook-id`` again, for receivers that log bodies)."""
    stamp = occurred_at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return WebhookPayload(type=event_type, timestamp=stamp, id=msg_id, data=data).model_dump_json()


def _stage_delivery(session: AsyncSession, delivery: WebhookDelivery) -> Envelope:
    envelope = Envelope.new(WEBHOOK_DELIVERY_REQUESTED, tenant_id=delivery.tenant_id,
                            payload=WebhookDeliveryRequested(delivery_id=delivery.id, endpoint_id=delivery.endpoint_id),
                            idempotency_key=f"webhook-delivery:{delivery.id}")
    stage(session, envelope, QUEUE_WEBHOOKS)
    return envelope


async def fan_out(session: AsyncSession, *, tenant_id: str, event_key: str, event_type: str, data: dict[str, Any],
                  occurred_at: dt.datetime) -> list[WebhookDelivery]:
    """One delivery (and its queued message) per enabled endpoint subscribed to ``event_type``; an
    endpoint that already has a delivery for ``event_key`` gets no second one."""
    repo = DeliveryRepository(session, tenant_id)
    created = []
    for endpoint in await EndpointRepository(session, tenant_id).subscribed(event_type):
        if await repo.find_for_event(endpoint.id, event_key) is not None:
            continue
        msg_id = new_message_id()
        delivery = repo.add(WebhookDelivery(
            id=msg_id, endpoint_id=endpoint.id, event_key=event_key[:200], event_type=event_type, status="pending",
            attempts=0, body=event_body(msg_id=msg_id, event_type=event_type, data=data, occurred_at=occurred_at),
            details={}, created_at=utcnow()))
        created.append(delivery)
    await session.flush()
    for delivery in created:
        _stage_delivery(session, delivery)
    return created


async def send_test(session: AsyncSession, *, tenant_id: str, ref: str) -> WebhookDelivery:
    """Queue a ``webhook.test`` delivery to one endpoint (enabled or not: a test is how you check a
    fixed receiver before `enable`)."""
    endpoint = await get_endpoint(session, tenant_id=tenant_id, ref=ref)
    msg_id = new_message_id()
    now = utcnow()
    delivery = DeliveryRepository(session, tenant_id).add(WebhookDelivery(
        id=msg_id, endpoint_id=endpoint.id, event_key=f"test:{msg_id}", event_type=TEST_EVENT, status="pending", attempts=0,
        body=event_body(msg_id=msg_id, event_type=TEST_EVENT, occurred_at=now,
                        data={"endpoint_id": endpoint.id, "message": "a test delivery from Parley"}),
        details={"test": True}, created_at=now))
    await session.flush()
    _stage_delivery(session, delivery)
    return delivery


async def list_deliveries(session: AsyncSession, *, tenant_id: str, ref: str, limit: int = 50,
                          status: str | None = None) -> tuple[WebhookEndpoint, Sequence[WebhookDelivery]]:
    endpoint = await get_endpoint(session, tenant_id=tenant_id, ref=ref)
    return endpoint, await DeliveryRepository(session, tenant_id).for_endpoint(endpoint.id, limit=limit, status=status)


def clip_excerpt(text: str | None) -> str | None:
    """At most 2 KB (UTF-8) of a receiver's answer, cut at a character boundary."""
    if text is None:
        return None
    return text.encode()[:EXCERPT_CHARS].decode(errors="ignore")


def note_result(endpoint: WebhookEndpoint, *, ok: bool, now: dt.datetime, disable_after: dt.timedelta) -> bool:
    """Update the endpoint's failure streak after an attempt; True when this failure disabled it
    (failing without a success for ``disable_after``)."""
    if ok:
        endpoint.failing_since = None
        return False
    if endpoint.failing_since is None:
        endpoint.failing_since = now
        return False
    if endpoint.enabled and now - endpoint.failing_since >= disable_after:
        hours = disable_after.total_seconds() / 3600
        endpoint.enabled = False
        endpoint.disabled_at = now
        endpoint.disabled_reason = (
            f"every delivery failed for {hours:g} h (since {endpoint.failing_since:%Y-%m-%d %H:%M} UTC); "
            "fix the receiver, then `parley webhooks enable` or Enable on the dashboard")
        return True
    return False


async def record_attempt(session: AsyncSession, *, endpoint: WebhookEndpoint, msg_id: str, event_type: str,
                         status_code: int | None, error: str | None, excerpt: str | None, ok: bool | None = None,
                         event_key: str | None = None, disable_after: dt.timedelta = dt.timedelta(hours=24),
                         now: dt.datetime | None = None, body: str | None = None) -> WebhookDelivery:
    """Log one attempt of delivery ``msg_id`` to ``endpoint``: its status code, error and response
    excerpt (≤ 2 KB), the attempt count, and the endpoint's failure streak (which may disable it).

    For deliveries made outside the webhooks worker (pass-through results, ``process.completed``):
    the row is created on the first attempt and never holds the delivered content. ``ok`` defaults to
    "a 2xx status and no error"."""
    now = now or utcnow()
    ok = (error is None and status_code is not None and 200 <= status_code < 300) if ok is None else ok
    repo = DeliveryRepository(session, endpoint.tenant_id)
    delivery = await repo.find(msg_id)
    if delivery is None:
        delivery = repo.add(WebhookDelivery(id=msg_id, endpoint_id=endpoint.id, event_key=(event_key or msg_id)[:200],
                                            event_type=event_type, status="pending", attempts=0, body=body, details={},
                                            created_at=now))
    delivery.attempts = (delivery.attempts or 0) + 1
    delivery.last_attempt_at = now
    history = list((delivery.details or {}).get("history", []))[-(MAX_HISTORY - 1):]
    history.append({"attempt": delivery.attempts, "at": now.isoformat(), "status_code": status_code,
                    "error": error[:300] if error else None})
    delivery.details = {**(delivery.details or {}), "history": history}
    delivery.last_status_code = status_code
    delivery.last_error = error[:2000] if error else None
    delivery.response_excerpt = clip_excerpt(excerpt)
    if ok:
        delivery.status = "delivered"
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        delivery.body = None  # not needed any more
    else:
        delivery.status = "failed"
    if note_result(endpoint, ok=ok, now=now, disable_after=disable_after):
        log.warning("webhook endpoint disabled: %s", endpoint.disabled_reason,
                    extra={"endpoint_id": endpoint.id, "tenant_id": endpoint.tenant_id})
    await session.flush()
    return delivery


# --- dead letters -------------------------------------------------------------------------------


async def delivery_replay_rule(session: AsyncSession, rows: Sequence[Any]) -> dict[int, Any]:
    """Dead deliveries that failed for good (their endpoint was disabled, or its URL refused): a
    replay helps once the endpoint is enabled again; one whose endpoint was removed cannot be sent."""
    from parley.bus.dead_letters import ReplayCheck

    verdicts: dict[int, Any] = {}
    for row in rows:
        try:
            payload = Envelope.from_bytes(row.body).payload
        except ValueError:
            continue
        tenant_id = row.tenant_id or ""
        endpoint = await EndpointRepository(session, tenant_id).find(str(payload.get("endpoint_id", ""))) if tenant_id else None
        if endpoint is None:
            verdicts[row.id] = ReplayCheck(False, "its webhook endpoint was removed; nothing to send it to",
                                           todo="nothing: the endpoint is gone")
        elif not endpoint.enabled:
            verdicts[row.id] = ReplayCheck(False, f"its webhook endpoint {endpoint.url} is disabled "
                                                  f"({endpoint.disabled_reason}); enable it first",
                                           todo=f"`parley webhooks enable {endpoint.id[:8]}`, then replay")
        else:
            verdicts[row.id] = ReplayCheck(True, f"its endpoint {endpoint.url} is enabled again")
    return verdicts


#: The webhooks domain's replay rules, by message type (merged with the others by the CLI and dashboard).
REPLAY_RULES = {WEBHOOK_DELIVERY_REQUESTED: delivery_replay_rule}


# --- telling the tenant -------------------------------------------------------------------------


async def tell_disabled(session: AsyncSession, endpoint: WebhookEndpoint) -> int:
    """A DM to whoever installed the tenant's Slack bot (its admin, the one person Parley knows to
    ask) that the endpoint was disabled and why; staged in the caller's unit of work. Returns how
    many notices were staged (none for a tenant without Slack: the dashboard and `parley webhooks
    list` show the reason)."""
    from parley.bus.contracts import NOTICE_REQUESTED, QUEUE_NOTIFICATIONS, NoticeRequested
    from tenants.models import ChannelKind
    from tenants.service import list_installations

    text = (f"Parley stopped sending webhooks to {endpoint.url}: {endpoint.disabled_reason} "
            "The Webhooks page of the dashboard shows its delivery log.")
    staged = 0
    for installation in await list_installations(session, tenant_id=endpoint.tenant_id):
        installer = (installation.details or {}).get("installer_user_id")
        if installation.kind != ChannelKind.slack or installation.status != "active" or not installer:
            continue
        target = {"channel": "slack", "team": installation.external_id, "channel_id": installer, "user": installer}
        stage(session, Envelope.new(NOTICE_REQUESTED, tenant_id=endpoint.tenant_id, payload=NoticeRequested(
            text=text, target=target, kind="info"), idempotency_key=f"webhook-disabled:{endpoint.id}:{endpoint.disabled_at}"),
            QUEUE_NOTIFICATIONS)
        staged += 1
    return staged


#: Days a finished delivery (delivered, dead) stays in the delivery log.
KEEP_DELIVERIES_DAYS = 30


async def prune_deliveries(session: AsyncSession, *, now: dt.datetime | None = None,
                           keep: dt.timedelta = dt.timedelta(days=KEEP_DELIVERIES_DAYS)) -> int:
    """Delete deliveries finished (delivered or dead) more than ``keep`` ago, of every tenant (an
    admin session: the webhooks worker's housekeeping). Returns how many."""
    from sqlalchemy import delete

    cutoff = (now or utcnow()) - keep
    result = await session.execute(
        delete(WebhookDelivery).where(WebhookDelivery.status.in_(("delivered", "dead", "skipped")),
                                      WebhookDelivery.created_at < cutoff)
        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
