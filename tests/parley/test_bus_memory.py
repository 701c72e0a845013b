"""The in-memory broker behind ``parley up --single-process``: same relay, same consumer wrapper."""

from __future__ import annotations

import asyncio

import pytest

from parley.bus import Consumer, Envelope, InMemoryBroker, OutboxRelay, Received, consuming, list_dead_letters, replay
from parley.db import unit_of_work
from parley.errors import Unavailable, UnsupportedType
from tests.parley.bus_support import eventually, new_topology, stage_committed

pytestmark = pytest.mark.postgres


async def test_outbox_retry_dead_letter_and_fairness_in_memory(sessions) -> None:
    broker = InMemoryBroker(new_topology())
    await broker.start()
    relay = OutboxRelay(sessions, broker)
    # Given tenant A's 20 uploads, then B's one, a flaky one and a broken one
    await stage_committed(sessions, [Envelope.new("document.uploaded", tenant_id="A", payload={"k": "ok"}) for _ in range(20)], "documents")
    await stage_committed(sessions, [Envelope.new("document.uploaded", tenant_id="B", payload={"k": "ok"})], "documents")
    await stage_committed(sessions, [Envelope.new("document.uploaded", tenant_id="C", payload={"k": "flaky"})], "documents")
    await stage_committed(sessions, [Envelope.new("document.uploaded", tenant_id="D", payload={"k": "broken"})], "documents")
    assert await relay.flush() == 23
    order: list[tuple[str, int]] = []
    consumer = Consumer(name="worker", queue="documents", broker=broker, sessions=sessions, prefetch=1)

    @consumer.handler("document.uploaded")
    async def index(msg: Received[dict]) -> None:
        order.append((msg.envelope.tenant_id or "", msg.envelope.attempt))
        if msg.payload["k"] == "flaky" and msg.envelope.attempt < 3:
            raise Unavailable("try later")
        if msg.payload["k"] == "broken":
            raise UnsupportedType("unreadable")

    async with consuming(consumer):
        await eventually(lambda: consumer.outcomes["ok"] == 22 and consumer.outcomes["dead"] == 1)
    # Then the lone uploads of B, C and D overtook A's backlog
    assert [tenant for tenant, _ in order[:4]] == ["A", "B", "C", "D"]
    assert [attempt for tenant, attempt in order if tenant == "C"] == [1, 2, 3]
    assert consumer.outcomes == {"ok": 22, "retry": 2, "dead": 1}
    [dead] = broker.dead["documents"]
    assert dead.headers["x-parley-error"] == "unsupported_type: unreadable"
    async with unit_of_work(sessions, admin=True) as session:
        [row] = await list_dead_letters(session, queue="documents")
    assert row.tenant_id == "D"
    # and a replay (forced: it failed for good) drains the in-memory DLQ
    await replay(sessions, broker, queue="documents", relay=relay, force=True)
    assert broker.dead["documents"] == []
    await broker.close()


async def test_graceful_stop_requeues_in_memory(sessions) -> None:
    broker = InMemoryBroker(new_topology())
    await broker.start()
    await stage_committed(sessions, [Envelope.new("document.uploaded", tenant_id="A") for _ in range(3)], "documents")
    await OutboxRelay(sessions, broker).flush()
    consumer = Consumer(name="worker", queue="documents", broker=broker, sessions=sessions, prefetch=2)

    @consumer.handler("document.uploaded")
    async def stuck(msg: Received[dict]) -> None:
        await asyncio.Event().wait()

    await consumer.start()
    await eventually(lambda: consumer.in_flight == 2)
    await consumer.stop(timeout=0.05)
    assert consumer.outcomes == {"requeued": 2}
    assert await broker.message_count(broker.topology.queue("documents")) == 3


async def test_what_an_in_memory_broker_held_at_exit_is_requeued_at_the_next_start(sessions) -> None:
    from parley.bus.outbox import requeue_unfinished

    topology = new_topology()
    # Given two uploads published to an in-memory broker, one of them handled
    first = InMemoryBroker(topology)
    await first.start()
    await stage_committed(sessions, [Envelope.new("document.uploaded", tenant_id="A", payload={"n": n}) for n in (1, 2)],
                          "documents")
    assert await OutboxRelay(sessions, first).flush() == 2
    handled: list[int] = []
    consumer = Consumer(name="worker", queue="documents", broker=first, sessions=sessions, prefetch=1)

    @consumer.handler("document.uploaded")
    async def index(msg: Received[dict]) -> None:
        handled.append(msg.payload["n"])
        if len(handled) == 1:
            await asyncio.Event().wait()  # the second one is still in flight when the process stops

    async with consuming(consumer, shutdown_timeout=0.1):
        await eventually(lambda: len(handled) == 1)
        stats = await first.queue_stats([topology.queue("documents"), topology.dlq("documents"), "nope"])
        assert stats[topology.queue("documents")].consumers == 1 and stats[topology.queue("documents")].messages == 1
        assert stats[topology.dlq("documents")].messages == 0 and stats["nope"] is None
        assert first.pending() == 2  # one queued, one unacked
    await first.close()
    # When the process starts again with a new in-memory broker
    second = InMemoryBroker(topology)
    await second.start()
    assert await requeue_unfinished(sessions) == 2
    assert await OutboxRelay(sessions, second).flush() == 2
    # Then both messages are there again
    assert await second.message_count(topology.queue("documents")) == 2
    again = Consumer(name="worker", queue="documents", broker=second, sessions=sessions)

    @again.handler("document.uploaded")
    async def finish(msg: Received[dict]) -> None:
        handled.append(msg.payload["n"])

    async with consuming(again):
        await eventually(lambda: again.outcomes["ok"] == 2)
    # And once they are finished, a later start has nothing left to re-queue
    assert sorted(handled[1:]) == [1, 2]
    assert await requeue_unfinished(sessions) == 0
    await second.close()
