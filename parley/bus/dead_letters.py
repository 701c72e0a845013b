"""Dead letters: the ``dead_letter`` table is the index, the broker's ``<queue>.dlq`` the copy.

RabbitMQ cannot list a queue without taking messages off it, so the consumer wrapper records every
dead letter in the table, in the same transaction as the domain's ``on_dead_letter`` hook, before
publishing the copy to the DLQ. ``parley dlq list`` reads the table; ``parley dlq replay`` stages a
fresh copy through the outbox (new message id, attempt reset to 1, same idempotency and correlation
ids, the replay recorded in ``x-parley-replay-of`` / ``x-parley-replayed-at`` headers), marks the
row replayed in the same transaction, and after the commit drains the replayed messages from the
broker's DLQ so it holds only what is still dead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.bus.broker import Broker
from parley.bus.envelope import H_REPLAY_OF, H_REPLAYED_AT, Envelope
from parley.bus.errors import Failure
from parley.bus.models import DeadLetter
from parley.bus.outbox import OutboxRelay, stage
from parley.db import new_id, unit_of_work, utcnow
from parley.errors import InvalidInput

log = logging.getLogger(__name__)


async def record_dead_letter(
    session: AsyncSession,
    *,
    queue: str,
    message_id: str,
    message_type: str,
    tenant_id: str | None,
    correlation_id: str | None,
    failure: Failure,
    attempts: list[dict[str, Any]],
    body: bytes,
) -> DeadLetter:
    """Insert (or, for a redelivered copy of the same message, update) the dead letter's row."""
    found = await session.execute(select(DeadLetter).where(DeadLetter.queue == queue, DeadLetter.message_id == message_id))
    row = found.scalar_one_or_none()
    if row is None:
        row = DeadLetter(queue=queue, message_id=message_id)
        session.add(row)
    row.message_type = message_type
    row.tenant_id = tenant_id
    row.correlation_id = correlation_id
    row.error_code = failure.code
    row.reason = failure.reason
    row.attempts = attempts
    row.body = body.decode("utf-8", errors="replace")
    row.dead_lettered_at = utcnow()
    row.status = "dead"
    await session.flush()
    return row


async def is_dead_lettered(session: AsyncSession, *, queue: str, message_id: str) -> bool:
    """True if this very message (not a replay of it: those get a new id) already ended in the DLQ."""
    found = await session.execute(
        select(DeadLetter.id).where(DeadLetter.queue == queue, DeadLetter.message_id == message_id, DeadLetter.status == "dead")
    )
    return found.first() is not None


async def list_dead_letters(
    session: AsyncSession,
    *,
    queue: str | None = None,
    tenant_id: str | None = None,
    include_replayed: bool = False,
    limit: int = 100,
) -> Sequence[DeadLetter]:
    """Newest first. Each row: id, queue, message_id, message_type, tenant_id, reason, attempts, dead_lettered_at."""
    stmt = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
    if queue is not None:
        stmt = stmt.where(DeadLetter.queue == queue)
    if tenant_id is not None:
        stmt = stmt.where(DeadLetter.tenant_id == tenant_id)
    if not include_replayed:
        stmt = stmt.where(DeadLetter.status == "dead")
    return (await session.execute(stmt)).scalars().all()


async def stage_replay(session: AsyncSession, *, queue: str, ids: Sequence[int] | None = None) -> list[DeadLetter]:
    """Stage replays of the given dead letters of ``queue`` (all still-dead ones if ``ids`` is None).

    Services never commit: the caller's unit of work makes the replay real. A malformed message
    (no readable envelope) cannot be replayed and raises :class:`InvalidInput`.
    """
    stmt = select(DeadLetter).where(DeadLetter.queue == queue, DeadLetter.status == "dead").order_by(DeadLetter.id)
    if ids is not None:
        stmt = stmt.where(DeadLetter.id.in_(list(ids)))
    rows = list((await session.execute(stmt)).scalars().all())
    now = utcnow()
    for row in rows:
        try:
            original = Envelope.from_bytes(row.body)
        except ValueError as exc:
            raise InvalidInput(f"dead letter {row.id} has no readable envelope and cannot be replayed") from exc
        replay = original.model_copy(update={"id": new_id(), "attempt": 1})
        stage(session, replay, queue, headers={H_REPLAY_OF: row.message_id, H_REPLAYED_AT: now.isoformat()})
        row.status = "replayed"
        row.replayed_at = now
        row.replay_message_id = replay.id
    return rows


async def replay(
    sessions: async_sessionmaker[AsyncSession],
    broker: Broker,
    *,
    queue: str,
    ids: Sequence[int] | None = None,
    relay: OutboxRelay | None = None,
) -> list[DeadLetter]:
    """The CLI's edge: replay in one transaction, publish (through ``relay`` if given, else the
    process's running relays are nudged by the commit), then drain the replayed copies from the DLQ."""
    async with unit_of_work(sessions, admin=True) as session:
        rows = await stage_replay(session, queue=queue, ids=ids)
    if relay is not None:
        await relay.flush()
    if rows:
        removed = await broker.drain_dead(queue, {row.message_id for row in rows})
        log.info("replayed %d dead letters of %s; %d removed from the dead-letter queue", len(rows), queue, removed)
    return rows


def describe(row: DeadLetter) -> dict[str, Any]:
    """One line of ``parley dlq list``."""
    return {
        "id": row.id,
        "queue": row.queue,
        "message_id": row.message_id,
        "type": row.message_type,
        "tenant_id": row.tenant_id,
        "reason": row.reason,
        "attempts": len(row.attempts),
        "when": row.dead_lettered_at.isoformat(),
        "status": row.status,
    }

