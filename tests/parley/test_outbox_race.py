"""The outbox relay race that orphaned ``pending_message`` rows (issue 19, known gap 1).

The relay used to publish a batch and only then insert its ``pending_message`` rows, in the claim's
transaction. A consumer that took and finished a message between the broker's confirm and that
commit deleted nothing; the row committed after it stayed, counting in the tenant's backlog (and
lowering its priority) for 24 hours. The broker below makes that interleaving certain: its publish
returns only once the consumer has finished the message, as a slow publisher confirm would.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from parley.bus import Consumer, Envelope, InMemoryBroker, OutboxRelay, Received, consuming
from parley.bus.models import PendingMessage
from parley.db import unit_of_work
from tests.parley.bus_support import new_topology, stage_committed

pytestmark = pytest.mark.postgres


class ConfirmAfterConsume(InMemoryBroker):
    """The real in-memory broker whose publish confirms only after a consumer settled the message."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.settled: dict[str, asyncio.Event] = {}

    def outcome(self, outcome: str, envelope: Envelope | None, failure: object, seconds: float) -> None:
        if envelope is not None:
            self.settled.setdefault(envelope.id, asyncio.Event()).set()

    async def publish(self, message, *, routing_key: str) -> None:
        await super().publish(message, routing_key=routing_key)
        await asyncio.wait_for(self.settled.setdefault(message.message_id, asyncio.Event()).wait(), timeout=20)


async def _pending(sessions) -> int:
    async with unit_of_work(sessions, admin=True) as session:
        return (await session.execute(select(func.count()).select_from(PendingMessage))).scalar_one()


@pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)
async def test_a_message_finished_before_the_relay_commits_leaves_no_pending_row(sessions) -> None:
    # Given a worker consuming the documents queue and three staged uploads of one tenant
    broker = ConfirmAfterConsume(new_topology())
    await broker.start()
    consumer = Consumer(name="race-test", queue="documents", broker=broker, sessions=sessions, prefetch=10)
    consumer.listeners.append(broker.outcome)
    handled: list[str] = []

    @consumer.handler("document.uploaded")
    async def index(msg: Received[dict]) -> None:
        handled.append(msg.envelope.id)

    envelopes = [Envelope.new("document.uploaded", tenant_id="A", payload={"n": n}) for n in range(3)]
    await stage_committed(sessions, envelopes, "documents")
    async with consuming(consumer):
        # When the relay publishes them and each is finished before the relay's transaction commits
        published = await asyncio.wait_for(OutboxRelay(sessions, broker).flush(), timeout=30)
    await broker.close()
    # Then every message was handled once, and none is left counting in the tenant's backlog
    assert published == 3
    assert sorted(handled) == sorted(e.id for e in envelopes)
    assert await _pending(sessions) == 0
