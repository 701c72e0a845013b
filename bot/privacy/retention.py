"""The retention sweeps: what each tenant's retention settings (`tenants.retention`) say to drop.

- **Transcripts** older than the tenant's ``transcript_days`` (0: kept for ever): inbound messages
  that finished (answered, failed, expired, ignored; a message still being answered or waiting
  for its files is left for the next sweep) and, with them, the feedback on them and failed
  deliveries (``answer_feedback``, ``delivery_failure``), conversation turns, staff replies relayed
  to customers (``handoff_message``, once sent or failed), and handoff rows
  (``conversation``, ``handoff_event``) of conversations that are back with the bot or closed and
  untouched since the cut-off. Rows are deleted, not blanked: a blank row says nothing anybody
  may keep, and the analytics read only what is left.
- **Dead letters** older than ``dead_letter_days`` (dead letters of no tenant: the platform
  default): their rows and, when a broker is given, their copies in the broker's ``<queue>.dlq``.
- **Uploaded files** of tenants whose ``raw_files`` is ``delete``: any indexed document whose file
  is still kept (the document worker deletes them as it indexes; this catches the ones indexed
  before the policy was set).

Every step is a plain conditional DELETE, so two processes sweeping at once (two gateways, the
gateway and `parley retention run`) remove each row once and report it once between them: running
it twice is harmless. The gateway runs it every ``PARLEY_RETENTION_SWEEP_INTERVAL_SECONDS``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import models as M
from knowledge import privacy
from parley.blobs import BlobStore
from parley.bus.models import DeadLetter
from parley.db import bind_admin, unit_of_work, utcnow
from parley.settings import Settings
from tenants.retention import Retention, all_policies, defaults, get_retention

log = logging.getLogger(__name__)

#: Inbound-message statuses that are finished: a sweep may remove them.
FINISHED = ("answered", "failed", "expired", "ignored")
SWEPT = ("messages", "turns", "feedback", "delivery_failures", "conversations", "handoff_events", "staff_messages",
         "dead_letters",
         "files")


@dataclass
class SweepReport:
    #: tenant id -> kind -> rows removed (only tenants where something was removed)
    tenants: dict[str, dict[str, int]] = field(default_factory=dict)
    #: dead letters of no tenant
    platform_dead_letters: int = 0

    def add(self, tenant_id: str, kind: str, n: int) -> None:
        if n:
            self.tenants.setdefault(tenant_id, dict.fromkeys(SWEPT, 0))[kind] += n

    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(SWEPT, 0)
        for counts in self.tenants.values():
            for k, v in counts.items():
                out[k] += v
        out["dead_letters"] += self.platform_dead_letters
        return out

    def to_json(self) -> dict[str, Any]:
        return {"tenants": self.tenants, "platform_dead_letters": self.platform_dead_letters, "totals": self.totals()}


def _n(result: Any) -> int:
    return int(result.rowcount or 0)


async def sweep_tenant(session: AsyncSession, *, tenant_id: str, retention: Retention, blobs: BlobStore,
                       report: SweepReport, now: dt.datetime) -> list[tuple[str, str]]:
    """One tenant's sweep in the caller's unit of work; returns the (queue, message id) of the dead
    letters removed, for their broker copies."""
    cutoff = retention.transcripts_cutoff(now)
    if cutoff is not None:
        old = (M.InboundMessage.tenant_id == tenant_id, M.InboundMessage.received_at < cutoff,
               M.InboundMessage.status.in_(FINISHED))
        old_ids = select(M.InboundMessage.id).where(*old)
        if hasattr(M, "AnswerFeedback"):
            report.add(tenant_id, "feedback", _n(await session.execute(
                delete(M.AnswerFeedback).where(M.AnswerFeedback.tenant_id == tenant_id,
                                               M.AnswerFeedback.message_id.in_(old_ids))
                .execution_options(synchronize_session=False))))
        if hasattr(M, "DeliveryFailure"):
            report.add(tenant_id, "delivery_failures", _n(await session.execute(
                delete(M.DeliveryFailure).where(M.DeliveryFailure.tenant_id == tenant_id, M.DeliveryFailure.at < cutoff)
                .execution_options(synchronize_session=False))))
        report.add(tenant_id, "messages", _n(await session.execute(
            delete(M.InboundMessage).where(*old).execution_options(synchronize_session=False))))
        report.add(tenant_id, "turns", _n(await session.execute(
            delete(M.ConversationTurn).where(M.ConversationTurn.tenant_id == tenant_id,
                                             M.ConversationTurn.created_at < cutoff)
            .execution_options(synchronize_session=False))))
        if hasattr(M, "HandoffMessage"):  # staff replies relayed to the customer: transcript too
            report.add(tenant_id, "staff_messages", _n(await session.execute(
                delete(M.HandoffMessage).where(M.HandoffMessage.tenant_id == tenant_id,
                                               M.HandoffMessage.created_at < cutoff,
                                               M.HandoffMessage.status != "pending")
                .execution_options(synchronize_session=False))))
        if hasattr(M, "Conversation"):
            idle = (M.Conversation.tenant_id == tenant_id, M.Conversation.updated_at < cutoff,
                    M.Conversation.state.in_(["bot", "closed"]))
            if hasattr(M, "HandoffEvent"):
                report.add(tenant_id, "handoff_events", _n(await session.execute(
                    delete(M.HandoffEvent).where(M.HandoffEvent.tenant_id == tenant_id,
                                                 M.HandoffEvent.conversation_id.in_(select(M.Conversation.id).where(*idle)))
                    .execution_options(synchronize_session=False))))
            if hasattr(M, "HandoffMessage"):
                report.add(tenant_id, "staff_messages", _n(await session.execute(
                    delete(M.HandoffMessage).where(M.HandoffMessage.tenant_id == tenant_id,
                                                   M.HandoffMessage.conversation_id.in_(select(M.Conversation.id).where(*idle)))
                    .execution_options(synchronize_session=False))))
            report.add(tenant_id, "conversations", _n(await session.execute(
                delete(M.Conversation).where(*idle).execution_options(synchronize_session=False))))
    dead = (DeadLetter.tenant_id == tenant_id, DeadLetter.dead_lettered_at < retention.dead_letters_cutoff(now))
    gone = [(q, m) for q, m in (await session.execute(select(DeadLetter.queue, DeadLetter.message_id).where(*dead))).all()]
    report.add(tenant_id, "dead_letters", _n(await session.execute(
        delete(DeadLetter).where(*dead).execution_options(synchronize_session=False))))
    if retention.delete_raw_files:
        report.add(tenant_id, "files", await privacy.discard_kept_originals(session, blobs, tenant_id=tenant_id))
    return gone


async def run_sweeps(sessions: async_sessionmaker[AsyncSession], *, settings: Settings, blobs: BlobStore,
                     tenant_id: str | None = None, broker: Any | None = None,
                     now: dt.datetime | None = None) -> SweepReport:
    """Sweep one tenant or every tenant (and the dead letters of no tenant), one transaction per
    tenant, so one tenant's failure leaves the others swept."""
    now = now or utcnow()
    report = SweepReport()
    async with unit_of_work(sessions, admin=True) as session:
        if tenant_id is None:
            policies = await all_policies(session, settings)
        else:
            policies = {tenant_id: await get_retention(bind_admin(session), tenant_id=tenant_id, settings=settings)}
    gone: list[tuple[str, str]] = []
    for tid, retention in policies.items():
        async with unit_of_work(sessions, admin=True) as session:
            gone += await sweep_tenant(session, tenant_id=tid, retention=retention, blobs=blobs, report=report, now=now)
    if tenant_id is None:
        async with unit_of_work(sessions, admin=True) as session:
            dead = (DeadLetter.tenant_id.is_(None), DeadLetter.dead_lettered_at < defaults(settings).dead_letters_cutoff(now))
            gone += list((await session.execute(select(DeadLetter.queue, DeadLetter.message_id).where(*dead))).all())
            report.platform_dead_letters = _n(await session.execute(
                delete(DeadLetter).where(*dead).execution_options(synchronize_session=False)))
    if broker is not None and gone:
        for queue in sorted({q for q, _ in gone}):
            try:
                await broker.drain_dead(queue, {m for q, m in gone if q == queue})
            except Exception:  # noqa: BLE001 - the rows are gone; the copies go at the next replay or sweep
                log.warning("could not remove swept dead letters from the broker's %s.dlq", queue, exc_info=True)
    return report


class RetentionSweeper:
    """The gateway's periodic sweep (one task; errors are logged and the next round tries again)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, settings: Settings, blobs: BlobStore,
                 interval: float, broker: Callable[[], Any] | None = None, metrics: Any = None) -> None:
        self.sessions, self.settings, self.blobs, self.interval = sessions, settings, blobs, interval
        self._broker = broker
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self.last: SweepReport | None = None

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="parley-retention-sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                broker = self._broker() if self._broker else None
                self.last = await run_sweeps(self.sessions, settings=self.settings, blobs=self.blobs,
                                             broker=broker if getattr(broker, "is_connected", False) else None)
                totals = self.last.totals()
                if self._metrics is not None:
                    for kind, n in totals.items():
                        if n:
                            self._metrics.retention_removed.labels(kind).inc(n)
                if any(totals.values()):
                    log.info("retention sweep", extra={"removed": totals})
            except Exception:  # noqa: BLE001
                log.exception("retention sweep failed; trying again at the next one")
