"""Quorum work queues (PARLEY_AMQP_QUEUE_TYPE=quorum): their arguments, the fast and bulk lanes that
replace priorities (routing in the relay, fast-lane-first consumption), and the real broker: a
publish/retry/dead-letter round trip, the broker's delivery limit, and a clear error when an
install switches queue type under existing queues.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from parley.bus import (Consumer, Envelope, InMemoryBroker, OutboxRelay, Outgoing, Permanent, RabbitBroker, Received,
                        Retryable, Topology, consuming, list_dead_letters)
from parley.bus.envelope import H_LANE
from parley.bus.stats import work_stats
from parley.bus.topology import BULK, FAST, TopologyMismatch
from parley.db import unit_of_work
from parley.runtime import topology as topology_from_settings
from parley.settings import Settings
from tests.parley.bus_support import drain, eventually, handling_order, new_topology, stage_committed
from tests.support import services


@pytest.fixture
def db_backend() -> str:
    """SQLite only: lane placement does not depend on the database (the outbox tests cover both)."""
    return "sqlite"


@pytest.fixture
def topology() -> Topology:
    """The real-broker tests' topology (``make_broker`` in conftest.py declares and deletes it)."""
    return new_topology(queue_type="quorum", delivery_limit=2, fast_lane=2)


def _message(tenant: str = "t1", lane: str | None = None, **payload) -> Outgoing:
    headers = {H_LANE: lane} if lane else None
    return Outgoing.of(Envelope.new("document.uploaded", tenant_id=tenant, payload=payload), headers=headers)


# --- topology -------------------------------------------------------------------------------


def test_quorum_queues_have_a_delivery_limit_and_at_least_once_dead_lettering_and_no_priorities() -> None:
    # Given the settings of a quorum install
    t = topology_from_settings(Settings(amqp_queue_type="quorum", amqp_delivery_limit=7, amqp_prefix="p."))
    # Then both lanes are quorum queues dead-lettering to the kind's one DLQ
    for lane in (FAST, BULK):
        assert t.work_queue_arguments("documents", lane) == {
            "x-queue-type": "quorum", "x-delivery-limit": 7, "x-dead-letter-exchange": "p.parley.dead",
            "x-dead-letter-routing-key": "documents", "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish"}
    assert t.work_queues("documents") == ("p.documents", "p.documents.bulk")
    # and the delay tiers and DLQs are quorum too, the tiers returning to the work exchange
    assert t.delay_queue_arguments(5) == {"x-queue-type": "quorum", "x-message-ttl": 5000,
                                          "x-dead-letter-exchange": "p.parley", "x-dead-letter-strategy": "at-least-once",
                                          "x-overflow": "reject-publish"}
    assert t.dlq_arguments() == {"x-queue-type": "quorum"}


def test_classic_queues_keep_their_shape_and_priorities() -> None:
    t = Topology()
    assert t.work_queue_arguments("documents") == {"x-queue-type": "classic", "x-max-priority": 9,
                                                  "x-dead-letter-exchange": "parley.dead"}
    assert t.work_queues("documents") == ("documents",)
    assert [t.placement(n) for n in (0, 1, 9)] == [(FAST, 9), (FAST, 8), (FAST, 0)]
    with pytest.raises(ValueError, match="unknown lane 'bulk'"):
        t.lane_key("documents", BULK)
    with pytest.raises(ValueError, match="queue_type must be one of classic, quorum"):
        Topology(queue_type="stream")


def test_with_lanes_a_tenants_first_messages_go_fast_and_the_rest_bulk() -> None:
    t = Topology(queue_type="quorum", fast_lane=3)
    assert [t.placement(n) for n in (0, 1, 2, 3, 500)] == [(FAST, None)] * 3 + [(BULK, None)] * 2


# --- in memory ------------------------------------------------------------------------------


async def test_the_relay_routes_a_backlog_past_the_fast_lane_to_the_bulk_lane(sessions) -> None:
    # Given a quorum topology whose fast lane takes 2 messages per tenant
    broker = InMemoryBroker(new_topology(queue_type="quorum", fast_lane=2))
    await broker.start()
    t = broker.topology
    # When tenant A stages 5 uploads and tenant B one, and the relay publishes them
    await stage_committed(sessions, [Envelope.new("document.uploaded", tenant_id="A") for _ in range(5)], "documents")
    await stage_committed(sessions, [Envelope.new("document.uploaded", tenant_id="B")], "documents")
    assert await OutboxRelay(sessions, broker).flush() == 6
    # Then A's first two and B's one are in the fast lane, A's other three in the bulk lane
    assert await broker.message_count(t.lane_queue("documents", FAST)) == 3
    assert await broker.message_count(t.lane_queue("documents", BULK)) == 3
    # and the queue's figures add both lanes up
    stats = await broker.queue_stats(list(t.work_queues("documents")))
    assert work_stats(t, stats, "documents").messages == 6


async def test_a_fast_lane_delivery_takes_the_next_free_slot_before_the_bulk_backlog() -> None:
    # Given 6 messages in the bulk lane and a subscription of 2 slots holding two of them
    broker = InMemoryBroker(new_topology(queue_type="quorum"))
    await broker.start()
    for n in range(6):
        await broker.publish(_message("A", BULK, n=n), routing_key="documents")
    held: list = []

    async def hold(delivery) -> None:
        held.append(delivery)

    subscription = await broker.consume("documents", prefetch=2, callback=hold)
    await eventually(lambda: len(held) == 2)
    # When a fast-lane message arrives while both slots are busy
    await broker.publish(_message("B", FAST), routing_key="documents")
    await asyncio.sleep(0.05)
    assert len(held) == 2  # it waits for a slot: the gate never runs more than the prefetch
    await held[0].ack()
    # Then it is the next one handed out, ahead of the 4 bulk messages that were there first
    await eventually(lambda: len(held) == 3)
    assert (held[2].lane, held[2].headers["x-parley-tenant-id"]) == (FAST, "B")
    # and the bulk lane gets every slot back once the fast lane is empty
    for delivery in held[1:]:
        await delivery.ack()
    await eventually(lambda: len(held) == 5)
    assert [d.lane for d in held[3:]] == [BULK, BULK]
    # When the subscription is cancelled, what waited in the gate goes back to its queue
    await subscription.close()
    assert await broker.message_count(broker.topology.lane_queue("documents", BULK)) == 4  # 2 requeued, 2 never taken
    assert broker.pending() == 4


# --- the real broker ------------------------------------------------------------------------

@pytest.mark.rabbitmq
async def test_quorum_round_trip_with_a_retry_through_its_lane_and_a_dead_letter(sessions, broker: RabbitBroker) -> None:
    # Given a worker on quorum queues whose handler fails once (retryable) for "flaky" and for good for "broken"
    seen: list[tuple[str, int]] = []
    consumer = Consumer(name="worker", queue="documents", broker=broker, sessions=sessions, prefetch=2)

    @consumer.handler("document.uploaded")
    async def index(msg: Received[dict]) -> None:
        kind = msg.envelope.payload["kind"]
        seen.append((kind, msg.envelope.attempt))
        if kind == "broken":
            raise Permanent("no text in this file", code="no_text")
        if kind == "flaky" and msg.envelope.attempt == 1:
            raise Retryable("embedding service busy")

    # When the relay publishes A's three uploads (the third goes to the bulk lane: fast_lane=2)
    await stage_committed(sessions, [Envelope.new("document.uploaded", tenant_id="A", payload={"kind": k})
                                     for k in ("ok", "broken", "flaky")], "documents")
    assert await OutboxRelay(sessions, broker).flush() == 3
    t = broker.topology
    assert await broker.message_count(t.lane_queue("documents", BULK)) == 1
    async with consuming(consumer):
        await eventually(lambda: consumer.outcomes["ok"] == 2 and consumer.outcomes["dead"] == 1)
    # Then the flaky one came back from its delay tier (quorum, TTL) for a second attempt
    assert sorted(seen) == [("broken", 1), ("flaky", 1), ("flaky", 2), ("ok", 1)]
    assert consumer.outcomes["retry"] == 1
    # and the broken one is in the quorum DLQ and the dead-letter table
    assert await broker.message_count(t.dlq("documents")) == 1
    async with unit_of_work(sessions, admin=True) as session:
        [row] = await list_dead_letters(session, queue="documents")
    assert row.error_code == "no_text"


@pytest.mark.rabbitmq
async def test_the_delivery_limit_dead_letters_a_message_requeued_again_and_again(sessions, broker: RabbitBroker) -> None:
    # Given a bulk-lane message and a "worker" that crashes on it each time (it is only ever requeued:
    # our attempt counter never runs)
    t = broker.topology
    poison = _message("A", BULK, poison=True)
    await broker.publish(poison, routing_key="documents")
    deliveries: list[int] = []

    async def crash(delivery) -> None:
        deliveries.append(int(delivery.headers.get("x-delivery-count", 0)))
        await delivery.nack(requeue=True)

    subscription = await broker.consume("documents", prefetch=1, callback=crash)
    try:
        # When it has been delivered delivery_limit (2) + 1 times
        await eventually(lambda: broker.message_count(t.dlq("documents")))
    finally:
        await subscription.close()
    # Then the broker dead-lettered it to the kind's DLQ
    assert deliveries == [0, 1, 2]
    assert await broker.message_count(t.lane_queue("documents", BULK)) == 0
    # When the (restarted) worker starts, with a dead-letter hook for the message type
    hooked: list[str] = []
    consumer = Consumer(name="worker", queue="documents", broker=broker, sessions=sessions)

    async def mark_failed(session, envelope, failure) -> None:
        hooked.append(failure.code)

    consumer.register("document.uploaded", lambda msg: asyncio.sleep(0), on_dead_letter=mark_failed)
    async with consuming(consumer):
        pass
    # Then it was recorded like any dead letter, saying why, and its DLQ copy carries our headers
    assert hooked == ["delivery_limit"]
    async with unit_of_work(sessions, admin=True) as session:
        [row] = await list_dead_letters(session, queue="documents")
    assert (row.message_id, row.error_code) == (poison.message_id, "delivery_limit")
    assert "delivered 3 times and never finished" in row.reason
    [dead] = await drain(broker, t.dlq("documents"))
    assert dead.headers["x-first-death-reason"] == "delivery_limit"
    assert dead.headers["x-first-death-queue"] == t.lane_queue("documents", BULK)
    assert dead.headers["x-parley-error-code"] == "delivery_limit"


@pytest.mark.rabbitmq
async def test_switching_a_classic_install_to_quorum_says_what_to_do() -> None:
    if not services.reachable("127.0.0.1", 5672):
        pytest.fail("RabbitMQ is not reachable on 127.0.0.1:5672")
    # Given queues declared by a classic install
    prefix = f"t{uuid.uuid4().hex[:10]}."
    classic = RabbitBroker(services.AMQP_URL, topology=Topology(prefix=prefix, delays=(0.05,)), connection_name=f"{prefix}classic")
    await classic.start()
    try:
        # When the same install starts with PARLEY_AMQP_QUEUE_TYPE=quorum
        quorum = RabbitBroker(services.AMQP_URL, topology=Topology(prefix=prefix, delays=(0.05,), queue_type="quorum"),
                              connection_name=f"{prefix}quorum")
        with pytest.raises(TopologyMismatch) as raised:
            await quorum.start()
        # Then the error names the queue, what RabbitMQ said, and the ways out
        message = str(raised.value)
        assert f"'{prefix}documents'" in message
        assert "PRECONDITION_FAILED - inequivalent arg" in message  # RabbitMQ names the first argument it compared
        assert "PARLEY_AMQP_QUEUE_TYPE" in message and "PARLEY_AMQP_PREFIX" in message and "drain" in message
        assert message.index("RabbitMQ said") < 600  # what to do survives the CLI's one-line limit (cli/shell.py)
        assert not quorum.is_connected  # its connection was closed, not left retrying
    finally:
        await classic.delete_topology()
        await classic.close()


@pytest.mark.rabbitmq
async def test_a_lone_upload_overtakes_a_queued_backlog_on_quorum_lanes(sessions, broker: RabbitBroker) -> None:
    # Given tenant A's 40 uploads published (2 in the fast lane, 38 in the bulk lane), then tenant B's one
    # When one worker with prefetch 1 drains both lanes
    order = await handling_order(sessions, broker, 40)
    # Then B's upload comes right after A's fast-lane two (plus at most the one bulk delivery the
    # worker held when it started), not behind A's 38 others
    print(f"\nquorum lanes, queued backlog: B handled at position {order.index('B')} of {len(order)}")
    assert order.index("B") <= 3, order
