"""Helpers for the bus tests (their fixtures, a broker on a per-test topology and databases with real
commits, are in ``conftest.py`` beside this file): topologies with short retry tiers, polling, draining
a queue, staging and counting outbox rows, closing a connection from the broker's side.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from functools import partial
from typing import Any

import aio_pika
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.bus import Envelope, Outgoing, RabbitBroker, Topology, stage
from parley.db import unit_of_work
from parley.bus.models import OutboxMessage
from tests.support import waiting

#: Short tiers so retries take milliseconds.
TEST_DELAYS = (0.05, 0.1, 0.2)


def new_topology(**kwargs: Any) -> Topology:
    kwargs.setdefault("delays", TEST_DELAYS)
    return Topology(prefix=f"t{uuid.uuid4().hex[:10]}.", **kwargs)


#: Polls until a condition holds (tests/support/waiting.py), with this suite's bounds.
eventually = partial(waiting.eventually, timeout=20.0, interval=0.02)


async def drain(broker: RabbitBroker, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take (and ack) every message ready in a queue."""
    channel = await broker.connection.channel()
    taken = []
    try:
        queue = await channel.declare_queue(queue_name, passive=True, robust=False)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    finally:
        await channel.close()
    return taken


async def stage_committed(
    sessions: async_sessionmaker[AsyncSession], envelopes: list[Envelope], routing_key: str
) -> None:
    async with unit_of_work(sessions, admin=True) as session:
        for envelope in envelopes:
            stage(session, envelope, routing_key)


async def count_outbox(sessions: async_sessionmaker[AsyncSession], **where: Any) -> int:
    async with unit_of_work(sessions, admin=True) as session:
        stmt = select(func.count()).select_from(OutboxMessage)
        for column, value in where.items():
            stmt = stmt.where(getattr(OutboxMessage, column) == value)
        return (await session.execute(stmt)).scalar_one()


async def publish_direct(broker: RabbitBroker, envelope: Envelope, routing_key: str, **kwargs: Any) -> None:
    """Publish without the outbox (to feed a consumer in a test)."""
    await broker.publish(Outgoing.of(envelope, **kwargs), routing_key=routing_key)


def close_connection_from_broker(connection_name: str, reason: str = "test: broker-side close") -> None:
    """``rabbitmqctl close_connection`` on the connection whose client-provided name matches."""
    rabbitmqctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    listing = subprocess.run(
        [rabbitmqctl, "-q", "list_connections", "pid", "client_properties"], capture_output=True, text=True, check=True
    ).stdout
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if f'{{"connection_name","{connection_name}"}}' in line]
    assert pids, f"no connection named {connection_name!r} in:\n{listing}"
    for pid in pids:
        subprocess.run([rabbitmqctl, "-q", "close_connection", pid, reason], check=True, capture_output=True)


async def handling_order(sessions: async_sessionmaker[AsyncSession], broker: RabbitBroker, backlog: int,
                         *, timeout: float = 20.0) -> list[str]:
    """Tenant A's ``backlog`` uploads published through the relay, then tenant B's one; the tenants in the
    order one worker (prefetch 1) handled them (the fairness tests)."""
    from parley.bus import Consumer, OutboxRelay, Received, consuming

    relay = OutboxRelay(sessions, broker)
    for tenant, n in (("A", backlog), ("B", 1)):
        await stage_committed(sessions, [Envelope.new("document.uploaded", tenant_id=tenant, payload={"n": i})
                                         for i in range(n)], "documents")
        await relay.flush()
    order: list[str] = []
    consumer = Consumer(name="worker", queue="documents", broker=broker, sessions=sessions, prefetch=1)

    @consumer.handler("document.uploaded")
    async def index(msg: Received[dict]) -> None:
        order.append(msg.envelope.tenant_id or "")

    async with consuming(consumer):
        await waiting.eventually(lambda: len(order) == backlog + 1, timeout=timeout, interval=0.02)
    return order
