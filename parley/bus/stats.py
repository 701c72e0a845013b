"""What the bus is doing right now: queues, workers, the outbox.

Read by ``parley status`` and by the workers' ``/metrics`` (documents by status and running jobs
come from :mod:`knowledge.repository`). Two sources:

* RabbitMQ, through passive queue declarations (they create nothing and need no management
  plugin): each work queue's ready messages and consumers (= workers attached), and its DLQ's
  depth. A declare-ok counts *ready* messages only; the ones a worker holds unacked are not in it.
* The database: ``pending_message`` (published, not yet finished by a consumer: the backlog the
  fairness scheme keeps per tenant, in-flight included) gives each queue's backlog and the age of
  its oldest message; ``outbox_message`` rows not yet published are the outbox backlog (the broker
  was down, or a relay is behind).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.bus.topology import Topology
from parley.bus.broker import QueueStats
from parley.bus.models import OutboxMessage, PendingMessage
from parley.bus.failover import connect_any
from parley.bus.rabbit import inspect_queues
from parley.db import utcnow
from parley.logging import silenced


@dataclass
class Backlog:
    count: int = 0
    oldest: dt.datetime | None = None

    def age_seconds(self, now: dt.datetime | None = None) -> float | None:
        if self.oldest is None:
            return None
        return max(0.0, ((now or utcnow()) - self.oldest).total_seconds())


@dataclass
class QueueReport:
    queue: str  # logical name: documents, catalog, notifications
    ready: int | None = None  # None: the broker could not be asked, or the queue does not exist yet
    consumers: int | None = None
    dead_letters: int | None = None
    backlog: int = 0
    oldest_age_s: float | None = None


# --- database -----------------------------------------------------------------------------


async def pending_backlog(session: AsyncSession, queues: list[str] | None = None) -> dict[str, Backlog]:
    """Per work queue: messages published and not yet finished (in flight included), and the oldest."""
    stmt = select(PendingMessage.queue, func.count(), func.min(PendingMessage.published_at)).group_by(PendingMessage.queue)
    if queues is not None:
        stmt = stmt.where(PendingMessage.queue.in_(queues))
    out: dict[str, Backlog] = {}
    for queue, count, oldest in (await session.execute(stmt)).all():
        out[queue] = Backlog(count, _aware(oldest))
    return out


async def outbox_backlog(session: AsyncSession) -> Backlog:
    row = (await session.execute(
        select(func.count(), func.min(OutboxMessage.created_at)).where(OutboxMessage.published_at.is_(None))
    )).one()
    return Backlog(row[0], _aware(row[1]))


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # an aggregate over SQLite comes back as text
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# --- broker -------------------------------------------------------------------------------


async def broker_queue_stats(amqp_url: str, topology: Topology, *, timeout: float = 5.0) -> dict[str, QueueStats | None]:
    """Every work queue (both lanes) and DLQ of the topology, over a short-lived connection of its own."""
    names = [n for kind in topology.queues for n in (*topology.work_queues(kind), topology.dlq(kind))]
    with silenced("aiormq.connection"):  # the caller reports a broker that is down
        connection = await connect_any(amqp_url, timeout=timeout, client_properties={"connection_name": "parley-status"})
    try:
        return await inspect_queues(connection, names)
    finally:
        await connection.close()


def work_stats(topology: Topology, stats: dict[str, QueueStats | None] | None, kind: str) -> QueueStats | None:
    """A job kind's work queues as one: ready messages of both lanes added up, and its workers (each
    worker reads every lane, so the most consumers of one lane). None when no lane was found."""
    found = [q for q in ((stats or {}).get(name) for name in topology.work_queues(kind)) if q is not None]
    if not found:
        return None
    return QueueStats(messages=sum(q.messages for q in found), consumers=max(q.consumers for q in found))


def queue_reports(topology: Topology, stats: dict[str, QueueStats | None] | None,
                  backlog: dict[str, Backlog]) -> list[QueueReport]:
    now = utcnow()
    reports = []
    for kind in topology.queues:
        work = work_stats(topology, stats, kind)
        dead = (stats or {}).get(topology.dlq(kind))
        pending = backlog.get(kind, Backlog())
        reports.append(QueueReport(
            queue=kind, ready=work.messages if work else None, consumers=work.consumers if work else None,
            dead_letters=dead.messages if dead else None, backlog=pending.count, oldest_age_s=pending.age_seconds(now),
        ))
    return reports
