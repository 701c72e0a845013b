"""The RabbitMQ topology: declared idempotently, delay tiers route back, re-declared on reconnect."""

from __future__ import annotations

import asyncio

import aiormq
import pytest

from parley.bus import Envelope, Outgoing, RabbitBroker, declare_topology
from parley.bus.envelope import H_DELAY
from tests.support import services
from tests.parley.bus_support import (
    new_topology,
    close_connection_from_broker,
    drain,
    eventually,
)

pytestmark = pytest.mark.rabbitmq


async def test_topology_is_declared_idempotently(broker: RabbitBroker, make_broker) -> None:
    # Given a started broker (topology declared once)
    # When a second process starts on the same topology, and the first declares again
    second = await make_broker()
    await declare_topology(broker.channel, broker.topology)
    # Then every queue exists once, empty, with the arguments we chose
    t = broker.topology
    for name in [t.queue(k) for k in t.queues] + [t.dlq(k) for k in t.queues] + [t.delay_queue(d) for d in t.delays]:
        assert await second.message_count(name) == 0
    # and the work queues really are priority queues: a different x-max-priority is refused
    channel = await broker.connection.channel()
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
        await channel.declare_queue(t.queue("documents"), durable=True, arguments={"x-max-priority": 3}, robust=False)


async def test_a_delayed_message_enters_exactly_one_tier() -> None:
    # Given tiers long enough to look at (a topology of its own)
    slow = RabbitBroker(services.AMQP_URL, topology=new_topology(delays=(30.0, 60.0, 120.0)), connection_name="tiers")
    await slow.start()
    try:
        t = slow.topology
        # When a message is delayed by ~60 s
        await slow.publish_delayed(Outgoing.of(Envelope.new("catalog.sync_requested", tenant_id="t1")), routing_key="catalog", delay=61)
        # Then it waits in the 60 s tier only
        assert [await slow.message_count(t.delay_queue(d)) for d in t.delays] == [0, 1, 0]
    finally:
        await slow.delete_topology()
        await slow.close()


async def test_a_delayed_message_returns_to_its_work_queue(broker: RabbitBroker) -> None:
    envelope = Envelope.new("catalog.sync_requested", tenant_id="t1")
    # When it is published through the shortest delay tier with routing key "catalog"
    await broker.publish_delayed(Outgoing.of(envelope, priority=7), routing_key="catalog", delay=0.01)
    # Then after the TTL it is in the catalog queue (not documents), priority and body intact
    t = broker.topology
    await eventually(lambda: broker.message_count(t.queue("catalog")))
    [message] = await drain(broker, t.queue("catalog"))
    assert Envelope.from_bytes(message.body) == envelope
    assert message.priority == 7
    assert message.headers[H_DELAY] == t.delay_tag(t.delays[0])
    assert message.headers["x-death"][0]["reason"] == "expired"
    assert await broker.message_count(t.queue("documents")) == 0


async def test_unroutable_publish_fails_instead_of_vanishing(broker: RabbitBroker) -> None:
    # A queue deleted behind our back: the publish must fail, so the outbox keeps the row
    channel = await broker.connection.channel()
    await channel.queue_delete(broker.topology.queue("notifications"))
    await channel.close()
    with pytest.raises(aiormq.exceptions.PublishError):
        await broker.publish(Outgoing.of(Envelope.new("notice.requested", tenant_id=None)), routing_key="notifications")


async def test_topology_is_redeclared_after_a_broker_side_close(broker: RabbitBroker) -> None:
    # Given a queue deleted by someone else while the robust connection is up
    t = broker.topology
    channel = await broker.connection.channel()
    await channel.queue_delete(t.dlq("documents"))
    await channel.close()
    reconnected = asyncio.Event()
    broker.connection.reconnect_callbacks.add(lambda *_: reconnected.set())
    # When the broker closes our connection
    await asyncio.to_thread(close_connection_from_broker, broker.connection_name)
    await eventually(reconnected.is_set)
    # Then aio-pika re-declared what was declared through it, bindings included
    await eventually(lambda: _exists(broker, t.dlq("documents")))
    envelope = Envelope.new("document.uploaded", tenant_id="t1")
    await broker.publish_dead(Outgoing.of(envelope), queue="documents")
    assert await broker.message_count(t.dlq("documents")) == 1


async def _exists(broker: RabbitBroker, name: str) -> bool:
    try:
        await broker.message_count(name)
        return True
    except Exception:
        return False
