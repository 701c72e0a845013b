"""The webhooks worker's consumer (queue ``webhooks``): fan tenant events out, deliver each one.

``tenant.event``  ->  one ``webhook_delivery`` row and one ``webhook.delivery_requested`` message per
enabled endpoint subscribed to the event's type (idempotent per event and endpoint).

``webhook.delivery_requested``  ->  one attempt: the URL checked again (DNS may have changed), the
body signed with the endpoint's secrets and a fresh ``webhook-timestamp``, the same ``webhook-id``
as every earlier attempt, POSTed within the timeout, at most 4 KB of the answer read. The attempt
is logged in its own transaction (it happened, whatever the message's fate). 2xx: delivered.
Anything else: the bus retries it through its delay tiers (:class:`SpreadBackoff`: exponential,
with jitter that survives the fixed tiers), and after ``webhooks_max_attempts`` the message goes
to the ``webhooks`` dead-letter queue with the last status and answer excerpt in its reason;
``parley dlq replay`` sends it again with the same ``webhook-id``. An endpoint failing without a
success for ``webhooks_disable_after_hours`` is disabled on the attempt that finds it so.

Runs in a worker process of its own (``parley worker webhooks``, started by ``parley up``): delivery
is network I/O that must neither sit in the gateway's answer path nor hold up indexing.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.bus import Backoff, Broker, Consumer, Envelope, Failure, Permanent, Received, Retryable, context
from tenants.deletion import tenant_exists  # a deleted tenant's queued event: dropped, not retried
from parley.bus.contracts import (
    QUEUE_WEBHOOKS,
    TENANT_EVENT,
    WEBHOOK_DELIVERY_REQUESTED,
    TenantEvent,
    WebhookDeliveryRequested,
)
from parley.crypto import SecretBox, load_secret_box
from parley.db import unit_of_work, utcnow
from parley.settings import Settings
from parley.webhook_signing import headers_for
from parley.worker import WorkerContext
from webhooks.delivery import AttemptResult, client_session, post
from webhooks.repository import DeliveryRepository, EndpointRepository
from webhooks.service import KEEP_DELIVERIES_DAYS, fan_out, prune_deliveries, record_attempt, signing_secrets, tell_disabled
from webhooks.urls import WebhookUrlRejected, check_url

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


@dataclass(frozen=True)
class SpreadBackoff(Backoff):
    """Exponential backoff with jitter that the broker's fixed delay tiers cannot snap away.

    The wanted delay is ``base * factor**(attempt-1)`` (capped) times a random factor; a tier is then
    chosen between the two around it at random, the upper one with the probability that makes the
    expected delay the wanted one. A burst of failures therefore spreads over adjacent tiers instead
    of coming back all at once. The delivery handler chooses the delay first (it records the next
    attempt's time) and the consumer's retry takes that choice (:meth:`plan` / :meth:`delay`)."""

    tiers: tuple[float, ...] = (1.0,)
    _planned: dict[tuple[str, int], float] = field(default_factory=dict, compare=False, repr=False)

    def choose(self, attempt: int) -> float:
        wanted = Backoff.delay(self, attempt)
        tiers = self.tiers
        below = [t for t in tiers if t <= wanted]
        above = [t for t in tiers if t > wanted]
        if not below:
            return tiers[0]
        if not above:
            return tiers[-1]
        low, high = below[-1], above[0]
        return high if random.random() < (wanted - low) / (high - low) else low

    def plan(self, message_id: str, attempt: int) -> float:
        chosen = self.choose(attempt)
        if len(self._planned) > 10_000:
            self._planned.clear()
        self._planned[(message_id, attempt)] = chosen
        return chosen

    def delay(self, attempt: int) -> float:
        message_id = context.current().get("message_id", "")
        planned = self._planned.pop((message_id, attempt), None)
        return planned if planned is not None else self.choose(attempt)


@dataclass
class WebhookDeps:
    sessions: async_sessionmaker[AsyncSession]
    box: SecretBox
    http: aiohttp.ClientSession
    allow_private: bool
    timeout: float
    max_attempts: int
    disable_after: dt.timedelta
    backoff: SpreadBackoff
    clock: Clock = utcnow
    registry: Any = None
    last_prune: dt.datetime | None = None
    #: Deliveries by outcome (delivered, failed, dead, disabled), also exported as a Prometheus counter.
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)

    def __post_init__(self) -> None:
        registry = self.registry if self.registry is not None else CollectorRegistry()
        self.metrics_registry = registry
        self.counter = Counter("parley_webhook_deliveries", "Webhook delivery attempts by outcome (delivered, "
                               "failed: a retry follows, dead: out of attempts, refused: endpoint disabled or URL refused).",
                               ["outcome"], registry=registry)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.counter.labels(outcome=outcome).inc()

    @classmethod
    def from_settings(cls, settings: Settings, *, sessions: async_sessionmaker[AsyncSession], http: aiohttp.ClientSession,
                      tiers: tuple[float, ...], registry: Any = None, clock: Clock = utcnow) -> WebhookDeps:
        return cls(sessions=sessions, box=load_secret_box(settings), http=http,
                   allow_private=settings.webhooks_allow_private, timeout=settings.webhooks_timeout_seconds,
                   max_attempts=settings.webhooks_max_attempts,
                   disable_after=dt.timedelta(hours=settings.webhooks_disable_after_hours),
                   backoff=SpreadBackoff(base=tiers[0], factor=4.0, cap=tiers[-1], jitter=0.5, tiers=tiers),
                   clock=clock, registry=registry)


async def housekeeping(deps: WebhookDeps) -> None:
    """At most hourly: drop finished deliveries past their retention from the delivery log."""
    now = deps.clock()
    if deps.last_prune is not None and now - deps.last_prune < dt.timedelta(hours=1):
        return
    deps.last_prune = now
    async with unit_of_work(deps.sessions, admin=True) as session:
        removed = await prune_deliveries(session, now=now)
    if removed:
        log.info("webhook delivery log: %d finished deliveries older than %d days removed", removed, KEEP_DELIVERIES_DAYS)


async def on_event(deps: WebhookDeps, msg: Received[TenantEvent]) -> None:
    await housekeeping(deps)
    tenant_id = msg.envelope.tenant_id
    if not tenant_id:
        raise Permanent("a tenant event without a tenant", code="invalid_payload")
    created = await fan_out(msg.session, tenant_id=tenant_id, event_key=msg.envelope.idempotency_key,
                            event_type=msg.payload.event_type, data=msg.payload.data, occurred_at=msg.payload.occurred_at)
    if created:
        log.info("%s: %d webhook deliveries", msg.payload.event_type, len(created))


async def _attempt(deps: WebhookDeps, url: str, msg_id: str, body: str, secrets: list[str], now: dt.datetime) -> AttemptResult:
    try:
        await asyncio.to_thread(check_url, url, allow_private=deps.allow_private)
    except WebhookUrlRejected as exc:
        return AttemptResult(None, f"{exc.code}: {exc.message}", None)
    headers = headers_for(secrets, msg_id, body.encode(), timestamp=int(now.timestamp()))
    return await post(deps.http, url, body.encode(), headers, timeout=deps.timeout)


async def on_delivery(deps: WebhookDeps, msg: Received[WebhookDeliveryRequested]) -> None:
    tenant_id = msg.envelope.tenant_id or ""
    request = msg.payload
    delivery = await DeliveryRepository(msg.session, tenant_id).find(request.delivery_id)
    endpoint = await EndpointRepository(msg.session, tenant_id).find(request.endpoint_id)
    if delivery is None or endpoint is None:
        log.info("webhook delivery %s: the endpoint was removed; nothing to send", request.delivery_id)
        return
    if delivery.status == "delivered":
        return
    if delivery.body is None:
        raise Permanent(f"delivery {delivery.id} has no body left to send", code="webhook_body_gone")
    is_test = bool((delivery.details or {}).get("test"))
    if not endpoint.enabled and not is_test:
        deps.count("refused")
        raise Permanent(f"the endpoint is disabled ({endpoint.disabled_reason or 'by the tenant'}); "
                        "enable it, then replay this dead letter", code="webhook_endpoint_disabled")
    now = deps.clock()
    result = await _attempt(deps, endpoint.url, delivery.id, delivery.body, signing_secrets(endpoint, deps.box, now=now), now)
    last = msg.envelope.attempt >= deps.max_attempts
    next_delay = None if result.ok or last else deps.backoff.plan(msg.envelope.id, msg.envelope.attempt)
    async with unit_of_work(deps.sessions, tenant_id=tenant_id) as session:
        fresh = await EndpointRepository(session, tenant_id).find(endpoint.id)
        if fresh is None:
            return
        was_enabled = fresh.enabled
        row = await record_attempt(session, endpoint=fresh, msg_id=delivery.id, event_type=delivery.event_type,
                                   status_code=result.status_code, error=result.error, excerpt=result.excerpt,
                                   ok=result.ok, disable_after=deps.disable_after, now=now)
        row.next_attempt_at = now + dt.timedelta(seconds=next_delay) if next_delay is not None else None
        disabled = not fresh.enabled
        if was_enabled and disabled:
            await tell_disabled(session, fresh)
    if result.ok:
        deps.count("delivered")
        return
    deps.count("dead" if last else "failed")
    detail = result.error or "failed"
    if result.excerpt:
        detail += f"; answer: {result.excerpt[:300]!r}"
    if disabled and not is_test:
        raise Permanent(f"{detail}; the endpoint is now disabled: {fresh.disabled_reason}", code="webhook_endpoint_disabled")
    raise Retryable(detail, code="webhook_failed")


async def on_dead_delivery(session: AsyncSession, envelope: Envelope, failure: Failure) -> None:
    """The delivery ran out of attempts (or cannot be made): its log row says so, body kept for a replay."""
    delivery_id = str(envelope.payload.get("delivery_id", ""))
    row = await DeliveryRepository(session, envelope.tenant_id or "").find(delivery_id)
    if row is not None and row.status != "delivered":
        row.status = "dead"
        row.next_attempt_at = None
        if not row.last_error:
            row.last_error = failure.human_reason()[:2000]


def webhooks_consumer(deps: WebhookDeps, broker: Broker, *, prefetch: int = 16) -> Consumer:
    consumer = Consumer(name="webhooks-worker", queue=QUEUE_WEBHOOKS, broker=broker, sessions=deps.sessions,
                        max_attempts=deps.max_attempts, prefetch=prefetch, backoff=deps.backoff,
                        handler_timeout=max(60.0, deps.timeout * 3), tenant_exists=tenant_exists)

    async def handle_event(msg: Received[TenantEvent]) -> None:
        await on_event(deps, msg)

    async def handle_delivery(msg: Received[WebhookDeliveryRequested]) -> None:
        await on_delivery(deps, msg)

    consumer.register(TENANT_EVENT, handle_event, TenantEvent)
    consumer.register(WEBHOOK_DELIVERY_REQUESTED, handle_delivery, WebhookDeliveryRequested, on_dead_letter=on_dead_delivery)
    return consumer


def build_webhooks_consumer(context: WorkerContext, *, clock: Clock = utcnow) -> Consumer:
    """The webhooks queue's consumer over a worker context (its own worker process, single-process
    mode, tests). Opens the delivery HTTP client, closed with the context."""
    settings = context.settings
    http = client_session(allow_private=settings.webhooks_allow_private)
    context.on_close(http.close)
    deps = WebhookDeps.from_settings(settings, sessions=context.sessions, http=http,
                                     tiers=context.broker.topology.delays, registry=context.registry, clock=clock)
    return webhooks_consumer(deps, context.broker)
