"""Fairness: one tenant's backlog does not delay another tenant's single upload.

Positions, not times: we record the order in which deliveries reach the handlers.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from parley.bus import Consumer, Envelope, OutboxRelay, RabbitBroker, Received, consuming
from parley.bus.models import PendingMessage
from parley.db import unit_of_work
from tests.parley.bus_support import count_outbox, eventually, handling_order, stage_committed

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

BACKLOG = 300


def _uploads(tenant: str, n: int) -> list[Envelope]:
    return [Envelope.new("document.uploaded", tenant_id=tenant, payload={"n": i}) for i in range(n)]


async def _pending(sessions) -> int:
    async with unit_of_work(sessions) as session:
        return (await session.execute(select(func.count()).select_from(PendingMessage))).scalar_one()


async def test_a_lone_upload_overtakes_a_queued_backlog(sessions, broker: RabbitBroker) -> None:
    # Given tenant A's 300 uploads published, then tenant B's single upload
    # When one worker with prefetch 1 drains the queue
    order = await handling_order(sessions, broker, BACKLOG, timeout=60)
    # Then B's upload is handled second (after A's first, which has the same top priority and was first)
    print(f"\nqueued backlog: B handled at position {order.index('B')} of {len(order)}")
    assert order.index("B") <= 2
    assert await _pending(sessions) == 0  # every finished message left its tenant's backlog


async def test_a_lone_upload_waits_behind_a_constant_with_several_busy_workers(sessions, make_broker) -> None:
    # Given two workers (own connections, prefetch 1) busy with tenant A's 300-upload backlog,
    # and a relay running in the producing process
    producer = await make_broker("producer")
    relay = OutboxRelay(sessions, producer, sweep_interval=3600)
    await relay.start()
    order: list[str] = []
    go = asyncio.Event()
    workers = [
        Consumer(name="worker", queue="documents", broker=await make_broker(f"worker-{i}"), sessions=sessions, prefetch=1)
        for i in range(2)
    ]

    async def index(msg: Received[dict]) -> None:
        order.append(msg.envelope.tenant_id or "")
        if len(order) >= 50 and not go.is_set():
            await go.wait()

    for worker in workers:
        worker.register("document.uploaded", index)
    try:
        async with consuming(*workers):
            await stage_committed(sessions, _uploads("A", BACKLOG), "documents")
            await eventually(lambda: sum(w.in_flight for w in workers) == 2 and len(order) >= 50, timeout=60)
            # When tenant B uploads one document while both workers are mid-item
            mark = len(order)
            await stage_committed(sessions, _uploads("B", 1), "documents")
            await eventually(lambda: _all_published(sessions))
            go.set()
            await eventually(lambda: len(order) == BACKLOG + 1, timeout=60)
    finally:
        await relay.stop()
    # Then B's upload is among the first deliveries after it was staged, not behind ~250 of A's
    position = order.index("B") - mark
    print(f"\nlive backlog, 2 workers: B handled {position} deliveries after it was staged ({mark} of A's before)")
    assert 0 <= position <= 2


async def _all_published(sessions) -> bool:
    return await count_outbox(sessions, published_at=None) == 0
