"""Publish after commit, never lost: the transactional outbox and its relay.

:func:`stage` adds an ``outbox_message`` row in the caller's unit of work, so the message exists
iff the work committed. :class:`OutboxRelay` publishes unpublished rows in id order, persistent and
with publisher confirms, and marks them published. Every process that stages runs one: a commit
that staged rows nudges the relays of its process to flush at once, and a periodic sweep publishes
rows left behind by a process that died between commit and publish.

Claiming. The relay claims a batch with one statement,
``UPDATE outbox_message SET publish_attempts = publish_attempts + 1 WHERE id IN (SELECT ... WHERE
published_at IS NULL ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED) RETURNING ...``, publishes, marks
the rows published and commits; the open transaction is the claim. On PostgreSQL concurrent relays
skip each other's locked rows. On SQLite ``SKIP LOCKED`` is dropped, but the UPDATE takes the
database's single write lock first thing, so relays take turns (``busy_timeout`` waits) and the
next one sees the rows already published. If a relay dies mid-publish its transaction rolls back
and another relay publishes the batch again: at-least-once, and consumers are idempotent.

Fairness. For each message the relay looks up its tenant's backlog on that queue (rows in
``pending_message``: published, not yet finished by a consumer) and sets the AMQP priority to
``max_priority - backlog``: a tenant's first message gets the top priority, its 10th and later the
lowest. A lone upload from a quiet tenant therefore overtakes a busy tenant's backlog and waits
behind at most the other tenants' first few messages and what consumers already prefetched.
With lanes (quorum mode: no priorities on RabbitMQ 3.10) the same backlog picks the lane instead:
a tenant's first ``fast_lane`` messages go to the fast lane, the rest to the bulk lane
(`Topology.placement`; the lane travels in the ``x-parley-lane`` header, so a retry returns to it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import weakref
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, event, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from parley.bus.broker import Broker, Outgoing
from parley.bus.envelope import H_LANE, Envelope
from parley.bus.idempotency import prune_processed
from parley.bus.models import PendingMessage
from parley.bus.topology import DEFAULT_QUEUES
from parley.db import session_tenant, unit_of_work, utcnow
from parley.errors import TenantScopeError
from parley.bus.models import OutboxMessage

log = logging.getLogger(__name__)

_relays: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()
_NUDGE_KEY = "parley_outbox_nudge"


def stage(
    session: AsyncSession, envelope: Envelope, routing_key: str, *, headers: dict[str, Any] | None = None
) -> OutboxMessage:
    """Add the message to the caller's unit of work; it is published after (and only if) it commits.

    ``routing_key`` is the job kind: ``documents``, ``catalog`` or ``notifications``.
    """
    if routing_key not in DEFAULT_QUEUES:
        raise ValueError(f"unknown routing key {routing_key!r}; use one of {', '.join(DEFAULT_QUEUES)}")
    bound = session_tenant(session)
    if bound is not None and envelope.tenant_id != bound:
        raise TenantScopeError(f"a session of tenant {bound} cannot stage a message for tenant {envelope.tenant_id}")
    row = OutboxMessage(
        message_id=envelope.id,
        routing_key=routing_key,
        message_type=envelope.type,
        tenant_id=envelope.tenant_id,
        body=envelope.model_dump_json(),
        headers=dict(headers or {}),
        created_at=utcnow(),
        publish_attempts=0,
    )
    session.add(row)
    if not session.info.get(_NUDGE_KEY):
        session.info[_NUDGE_KEY] = True
        event.listen(session.sync_session, "after_commit", _nudge_relays, once=True)
    return row


def _nudge_relays(session: Session) -> None:
    session.info.pop(_NUDGE_KEY, None)
    for relay in list(_relays):
        relay.nudge()


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        broker: Broker,
        *,
        batch_size: int = 100,
        sweep_interval: float = 5.0,
        forget_pending_after: dt.timedelta = dt.timedelta(hours=24),
        keep_published: dt.timedelta = dt.timedelta(days=7),
        keep_processed: dt.timedelta = dt.timedelta(days=14),
    ) -> None:
        self.sessions = sessions
        self.broker = broker
        self.batch_size = batch_size
        self.sweep_interval = sweep_interval
        self.forget_pending_after = forget_pending_after
        self.keep_published = keep_published
        self.keep_processed = keep_processed
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        #: Completed rounds of the background loop (a flush, then a wait for a nudge or the sweep).
        self.rounds = 0

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        _relays.add(self)
        self._task = asyncio.create_task(self._run(), name="parley-outbox-relay")

    async def stop(self) -> None:
        _relays.discard(self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def nudge(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            try:
                if self.broker.is_connected:
                    await self.flush()
                if loop.time() - self._last_prune > self.sweep_interval * 60:
                    self._last_prune = loop.time()
                    await self.maintain()
            except Exception:
                log.exception("outbox relay: flush failed; retrying at the next sweep")
            self.rounds += 1
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.sweep_interval)
            except TimeoutError:
                pass

    # --- publishing -----------------------------------------------------------------------
    async def flush(self) -> int:
        """Publish until nothing is left (or a batch could not be fully published). Returns how many."""
        total = 0
        while True:
            claimed, published = await self.publish_batch()
            total += published
            if claimed < self.batch_size or published < claimed:
                return total

    async def publish_batch(self) -> tuple[int, int]:
        """Claim, publish and mark one batch. Returns (claimed, published)."""
        async with unit_of_work(self.sessions) as session:
            rows = await _claim(session, self.batch_size)
            if not rows:
                return 0, 0
            backlog = await _backlog(session, {row.routing_key for row in rows})
            # The pending rows must exist before a consumer can finish the message: a consumer quick
            # enough to take it between the broker's confirm and this transaction's commit would
            # delete nothing, and the row committed after it would count in the tenant's backlog
            # (lowering its priority) until `maintain` forgets it a day later. On PostgreSQL they
            # are committed first, in their own transaction; on SQLite the claim holds the single
            # write lock, so a consumer's delete waits for this commit and sees them.
            early = session.get_bind().dialect.name != "sqlite"
            if early:
                await self._write_pending(rows)
            sends = []
            for row in rows:
                key = (row.routing_key, row.tenant_id)
                lane, priority = self.broker.topology.placement(backlog.get(key, 0))
                backlog[key] = backlog.get(key, 0) + 1
                sends.append(self._send(row, priority, lane))
            results = await asyncio.gather(*sends, return_exceptions=True)
            done, lost = [], []
            for row, result in zip(rows, results):
                if isinstance(result, BaseException):
                    log.warning("outbox relay: publish of %s failed: %r", row.message_id, result)
                    lost.append(row.message_id)
                else:
                    done.append(row)
            if early and lost:
                await session.execute(delete(PendingMessage).where(PendingMessage.message_id.in_(lost)))
            if done:
                now = utcnow()
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id.in_([row.id for row in done]))
                    .values(published_at=now)
                    .execution_options(synchronize_session=False)
                )
                if not early:
                    await session.execute(insert(PendingMessage), _pending_values(done, now))
            return len(rows), len(done)

    async def _write_pending(self, rows: Sequence[Any]) -> None:
        """Commit the batch's pending rows before it is published (PostgreSQL). A row already there
        (a batch published again after a relay died) stays as it is."""
        async with unit_of_work(self.sessions) as session:
            await session.execute(
                pg_insert(PendingMessage).values(_pending_values(rows, utcnow())).on_conflict_do_nothing(
                    index_elements=[PendingMessage.message_id])
            )

    async def _send(self, row: Any, priority: int | None, lane: str) -> None:
        envelope = Envelope.model_validate_json(row.body)
        headers = {**row.headers, H_LANE: lane} if self.broker.topology.uses_lanes else row.headers
        await self.broker.publish(Outgoing.of(envelope, headers=headers, priority=priority), routing_key=row.routing_key)

    async def maintain(self) -> None:
        """Housekeeping, every ~60 sweeps: drop published outbox rows and processed markers past their
        retention, and stop counting pending rows whose message was lost outside the bus (a purged queue)."""
        now = utcnow()
        async with unit_of_work(self.sessions) as session:
            await session.execute(delete(PendingMessage).where(PendingMessage.published_at < now - self.forget_pending_after))
            await session.execute(delete(OutboxMessage).where(OutboxMessage.published_at < now - self.keep_published))
            await prune_processed(session, older_than=self.keep_processed)


def _pending_values(rows: Sequence[Any], now: dt.datetime) -> list[dict[str, Any]]:
    return [{"message_id": r.message_id, "queue": r.routing_key, "tenant_id": r.tenant_id, "published_at": now}
            for r in rows]


async def _claim(session: AsyncSession, limit: int) -> Sequence[Any]:
    oldest = (
        select(OutboxMessage.id)
        .where(OutboxMessage.published_at.is_(None))
        .order_by(OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claim = (
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(oldest.scalar_subquery()))
        .values(publish_attempts=OutboxMessage.publish_attempts + 1)
        .returning(
            OutboxMessage.id,
            OutboxMessage.message_id,
            OutboxMessage.routing_key,
            OutboxMessage.tenant_id,
            OutboxMessage.body,
            OutboxMessage.headers,
        )
        .execution_options(synchronize_session=False)
    )
    rows = (await session.execute(claim)).all()
    return sorted(rows, key=lambda row: row.id)  # RETURNING order is not guaranteed


async def _backlog(session: AsyncSession, queues: set[str]) -> dict[tuple[str, str | None], int]:
    result = await session.execute(
        select(PendingMessage.queue, PendingMessage.tenant_id, func.count())
        .where(PendingMessage.queue.in_(queues))
        .group_by(PendingMessage.queue, PendingMessage.tenant_id)
    )
    return {(queue, tenant): count for queue, tenant, count in result.all()}


async def requeue_unfinished(sessions: async_sessionmaker[AsyncSession]) -> int:
    """After a broker lost its messages (the in-memory broker of ``parley up --single-process``, at
    exit): every message published and never finished goes back to the outbox, for the relay to
    publish again. Consumers are idempotent, so one that did finish meanwhile changes nothing.
    Only for a database no RabbitMQ-backed process shares. Returns how many were re-queued."""
    async with unit_of_work(sessions) as session:
        unfinished = select(PendingMessage.message_id).scalar_subquery()
        result = await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.message_id.in_(unfinished), OutboxMessage.published_at.is_not(None))
            .values(published_at=None)
            .execution_options(synchronize_session=False)
        )
        await session.execute(delete(PendingMessage))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def finish_pending(session: AsyncSession, message_id: str) -> None:
    """The consumer finished (or dead-lettered) the message: it no longer counts in its tenant's backlog."""
    await session.execute(delete(PendingMessage).where(PendingMessage.message_id == message_id))
