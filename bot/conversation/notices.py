"""The notifications consumer: "indexed returns.pdf (12 sections)" back into the DM the file came from.

The document worker stages ``notice.requested`` with ``target`` = the ``notify`` dict the gateway
gave `submit_upload` (``{"channel": "slack", "team": ..., "channel_id": "D...", "user": "U..."}``).
Delivery is idempotent through the consumer wrapper's processed marker (a redelivered notice whose
first copy committed is not posted again); vendor failures that may pass are retried through the
bus's delay tiers, the rest are dead-lettered with the reason. Targets of channels that have no
DM to post into (the web chat polls instead) are acknowledged and dropped. A target carries the
route of the message the file came with, so a file sent in a Slack thread hears back in that
thread (``thread_ts``). After an "indexed" / "failed" / job report notice, the questions sent with
files of that tenant that are now read are answered (``on_settled``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.conversation.schemas import Channel, DeliveryError, Reply
from bot.metrics import GatewayMetrics
from tenants.deletion import tenant_exists
from parley.bus import Broker, Consumer, Permanent, Received, Retryable, mark_processed
from parley.bus.contracts import NOTICE_REQUESTED, QUEUE_NOTIFICATIONS, NoticeRequested

log = logging.getLogger("parley.gateway.notices")

SILENT_CHANNELS = {"web", "cli", "api"}
#: Notices that say a document or job is done: a question waiting for its files may be answered.
SETTLING_KINDS = {"indexed", "failed", "job_done"}
POSTING = "gateway-notifier:posted"  # processed_message marker of a notice posted (see on_notice)


def notifications_consumer(
    *,
    broker: Broker,
    sessions: async_sessionmaker[AsyncSession],
    channels: Mapping[str, Channel],
    metrics: GatewayMetrics,
    max_attempts: int = 5,
    prefetch: int = 16,
    on_settled: Callable[[str], Awaitable[Any]] | None = None,
) -> Consumer:
    """``on_settled(tenant_id)`` runs after a notice that a document or job is done (indexed,
    failed, a job's report) was posted: the gateway answers the questions that waited for it."""
    consumer = Consumer(name="gateway-notifier", queue=QUEUE_NOTIFICATIONS, broker=broker, sessions=sessions,
                        max_attempts=max_attempts, prefetch=prefetch, tenant_exists=tenant_exists)

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
        # Copies of one notice in flight at once (a relay's at-least-once republish, two workers failing
        # the same upload) all passed the wrapper's "already processed?" check. This marker, written
        # before the post in the handler's transaction, makes them take turns: a copy that finds it
        # waits for the first copy's transaction, then finds the post done (or, if that one failed and
        # rolled back, posts itself).
        if not await mark_processed(msg.session, POSTING, msg.envelope.idempotency_key, msg.envelope.id):
            metrics.notices.labels(kind, "duplicate").inc()
            await settled(msg)
            return
        try:
            await channel.send(tenant_id=msg.envelope.tenant_id or "", route=target, reply=Reply(msg.payload.text), progress={})
        except DeliveryError as exc:
            metrics.notices.labels(kind, "retry" if exc.retryable else "failed").inc()
            if exc.retryable:
                raise Retryable(exc.message, code=exc.code) from exc
            raise Permanent(exc.message, code=exc.code) from exc
        metrics.notices.labels(kind, "sent").inc()
        await settled(msg)

    releasing: set[asyncio.Task[Any]] = set()

    async def settled(msg: Received[NoticeRequested]) -> None:
        """After the notice that a file is read (or could not be) is committed: the questions
        waiting for it. After the commit: they write the messages' rows, and this transaction
        holds its marker's lock until then (SQLite would wait on itself)."""
        tenant_id = msg.envelope.tenant_id
        if on_settled is None or msg.payload.kind not in SETTLING_KINDS or not tenant_id:
            return
        callback = on_settled

        def after_commit(_: Any) -> None:
            task = asyncio.get_running_loop().create_task(callback(tenant_id), name="parley-release-waiting")
            releasing.add(task)
            task.add_done_callback(releasing.discard)

        event.listen(msg.session.sync_session, "after_commit", after_commit, once=True)

    consumer.register(NOTICE_REQUESTED, on_notice, NoticeRequested)
    return consumer
