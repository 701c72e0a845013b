"""Outbound webhooks on the real RabbitMQ and PostgreSQL: retries through the broker's delay tiers
with the same webhook-id, and a delivery that runs out of attempts lands in the broker's
``webhooks.dlq`` and is replayed from it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from parley.bus import replay
from parley.bus.contracts import stage_event
from parley.bus.models import DeadLetter
from parley.db import unit_of_work
from parley.webhook_signing import verify
from tests.webhooks.conftest import Answer, Receiver, Stack, eventually

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


@pytest.mark.parametrize("db_backend", ["postgres"])
@pytest.mark.parametrize("stack_overrides", [{"rabbitmq": True}])
async def test_retries_and_the_dead_letter_queue_on_rabbitmq(stack: Stack, receiver: Receiver) -> None:
    # Given an endpoint whose receiver fails twice, then answers 200
    endpoint, secret = await stack.endpoint(receiver.url, "job.completed,catalog.synced")
    receiver.script[:] = [Answer(500), Answer(502), Answer(200)]
    # When a job completes
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        stage_event(session, tenant_id=stack.tenant_id, event_type="job.completed", data={"job_id": "j1"})
    # Then it is delivered on the third attempt, every attempt with the same webhook-id, each verifying
    async def delivered() -> list | None:
        rows = [d for d in await stack.deliveries(endpoint.id) if d.status == "delivered"]
        return rows or None
    [delivery] = await eventually(delivered, what="delivered through RabbitMQ")
    assert delivery.attempts == 3 and {r["headers"]["webhook-id"] for r in receiver.requests} == {delivery.id}
    for request in receiver.requests:
        verify(secret, request["headers"], request["body"])

    # Given a receiver that now always fails
    receiver.script[:] = [Answer(500, body=b"maintenance") for _ in range(4)]
    # When the catalog syncs
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        stage_event(session, tenant_id=stack.tenant_id, event_type="catalog.synced", data={"shop": "acme.myshopify.com"})
    # Then after 4 attempts it is in the broker's dead-letter queue, recorded with status and answer
    dlq = stack.broker.topology.dlq("webhooks")
    await eventually(lambda: stack.broker.message_count(dlq), what="a message in webhooks.dlq")
    async with unit_of_work(stack.sessions, admin=True) as session:
        [dead] = (await session.execute(select(DeadLetter).where(DeadLetter.queue == "webhooks"))).scalars().all()
    assert "HTTP 500" in dead.reason and "maintenance" in dead.reason
    # When it is replayed after the receiver recovered
    receiver.script[:] = []
    await replay(stack.sessions, stack.broker, ids=[dead.id], relay=stack.relay)
    # Then it is delivered, and the dead-letter queue is empty
    async def both() -> list | None:
        rows = [d for d in await stack.deliveries(endpoint.id) if d.status == "delivered"]
        return rows if len(rows) == 2 else None
    await eventually(both, what="the replay delivered")
    assert await stack.broker.message_count(dlq) == 0
