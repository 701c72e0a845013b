"""Connection loss: the broker closes the consumer's connection mid-stream; every message is still
processed exactly once in effect."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import func, select

from parley.bus import Consumer, Envelope, OutboxRelay, Received, consuming, stage
from parley.bus.models import PendingMessage
from parley.db import unit_of_work
from parley.bus.models import OutboxMessage
from tests.parley.bus_support import (
    close_connection_from_broker,
    count_outbox,
    eventually,
    stage_committed,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

N = 120
PREFETCH = 6  # the old and the redelivered window both hold a pooled connection: 2 x 6 < 5 + 10


async def _effects(sessions) -> Counter[str]:
    async with unit_of_work(sessions) as session:
        rows = (await session.execute(select(OutboxMessage.body).where(OutboxMessage.message_type == "notice.requested"))).scalars()
        return Counter(Envelope.from_bytes(body).payload["n"] for body in rows)


async def test_broker_side_close_mid_stream_loses_and_duplicates_nothing(sessions, make_broker) -> None:
    # Given N messages published through the outbox, and a consumer on its own named connection
    producer = await make_broker("producer")
    worker = await make_broker(f"{producer.topology.prefix}worker")
    await stage_committed(
        sessions, [Envelope.new("document.uploaded", tenant_id=f"t{i % 4}", payload={"n": i}) for i in range(N)], "documents"
    )
    assert await OutboxRelay(sessions, producer).flush() == N

    consumer = Consumer(name="worker", queue="documents", broker=worker, sessions=sessions, prefetch=PREFETCH)
    resume = asyncio.Event()
    started = Counter[int]()

    @consumer.handler("document.uploaded")
    async def index(msg: Received[dict]) -> None:
        started[msg.payload["n"]] += 1
        if sum(started.values()) > 40:
            await resume.wait()  # hold a full prefetch window in flight while the connection dies
        stage(msg.session, Envelope.new("notice.requested", tenant_id=msg.envelope.tenant_id, payload=msg.payload), "notifications")

    reconnected = asyncio.Event()
    worker.connection.reconnect_callbacks.add(lambda *_: reconnected.set())
    async with consuming(consumer):
        await eventually(lambda: consumer.in_flight == PREFETCH)
        # When the broker closes the worker's connection with a full window of unacked deliveries
        await asyncio.to_thread(close_connection_from_broker, worker.connection_name)
        await eventually(reconnected.is_set)
        # the broker redelivers the window to the restored consumer while the old handlers still run
        await eventually(lambda: sum(started.values()) >= 40 + 2 * PREFETCH)
        resume.set()
        # Then every message is processed, none twice in effect
        await eventually(lambda: _all_done(sessions))
    effects = await _effects(sessions)
    assert sorted(effects) == list(range(N)) and set(effects.values()) == {1}
    assert max(started.values()) == 2  # the redelivered window really ran twice
    assert consumer.outcomes["ok"] == N and consumer.outcomes["duplicate"] >= 1
    assert await worker.message_count(worker.topology.queue("documents")) == 0


async def _all_done(sessions) -> bool:
    async with unit_of_work(sessions) as session:
        pending = (await session.execute(select(func.count()).select_from(PendingMessage))).scalar_one()
    return pending == 0 and await count_outbox(sessions, message_type="notice.requested") == N
