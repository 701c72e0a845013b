"""The notifications consumer: "indexed returns.pdf (12 sections)" back into the DM the file came from.

The document worker stages ``notice.requested`` with ``target`` = the ``notify`` dict the gateway
gave `submit_upload` (``{"channel": "slack", "team": ..., "channel_id": "D...", "user": "U..."}``).
Delivery is idempotent through the consumer wrapper's processed marker (a redelivered notice whose
first copy committed is not posted again); vendor failures that may pass are retried through the
bus's delay tiers, the rest are dead-lettered with the reason. Targets of channels that have no
DM to post into (the web chat polls instead) are acknowledged and dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.conversation.schemas import Channel, DeliveryError, Reply
from bot.metrics import GatewayMetrics
from parley.bus import Broker, Consumer, Permanent, Received, Retryable
from parley.contracts import NOTICE_REQUESTED, QUEUE_NOTIFICATIONS, NoticeRequested

log = logging.getLogger("parley.gateway.notices")

SILENT_CHANNELS = {"web", "cli", "api"}


def notifications_consumer(
    *,
    broker: Broker,
    sessions: async_sessionmaker[AsyncSession],
    channels: Mapping[str, Channel],
    metrics: GatewayMetrics,
    max_attempts: int = 5,
    prefetch: int = 16,
) -> Consumer:
    consumer = Consumer(name="gateway-notifier", queue=QUEUE_NOTIFICATIONS, broker=broker, sessions=sessions,
                        max_attempts=max_attempts, prefetch=prefetch)

    async def on_notice(msg: Received[NoticeRequested]) -> None:
        target = dict(msg.payload.target)
        kind = str(target.get("channel") or "")
        if kind in SILENT_CHANNELS or not kind:
            metrics.notices.labels(kind or "none", "dropped").inc()
            return
        channel = channels.get(kind)
        if channel is None:
            metrics.notices.labels(kind, "no_channel").inc()
            raise Permanent(f"no {kind!r} channel is configured in this gateway", code="no_channel")
        try:
            await channel.send(tenant_id=msg.envelope.tenant_id or "", route=target, reply=Reply(msg.payload.text), progress={})
        except DeliveryError as exc:
            metrics.notices.labels(kind, "retry" if exc.retryable else "failed").inc()
            if exc.retryable:
                raise Retryable(exc.message, code=exc.code) from exc
            raise Permanent(exc.message, code=exc.code) from exc
        metrics.notices.labels(kind, "sent").inc()

    consumer.register(NOTICE_REQUESTED, on_notice, NoticeRequested)
    return consumer
