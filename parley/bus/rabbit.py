"""RabbitMQ through aio-pika: a robust connection, a publisher-confirm channel, the topology.

Everything is declared through robust channels, and aio-pika re-declares what was declared
through them (exchanges, queues, bindings, QoS, consumers) when it reconnects; the tests verify it
by deleting a queue, closing the connection from the broker side and finding the queue back.
With several hosts in the URL (a cluster) the connection moves to the next node on every attempt.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from parley.bus.broker import AdoptCallback, DeliveryCallback, Outgoing, QueueStats, Subscription
from parley.bus.envelope import H_DELAY, H_ERROR, H_LANE
from parley.bus.failover import connect_failover
from parley.bus.lanes import consume_lanes
from parley.bus.topology import FAST, Topology, TopologyMismatch

log = logging.getLogger(__name__)


async def declare_topology(channel: AbstractChannel, topology: Topology) -> dict[str, AbstractExchange]:
    """Idempotent: re-declaring with the same arguments is a no-op for RabbitMQ. Returns the exchanges by name."""
    work = await channel.declare_exchange(topology.exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    delay = await channel.declare_exchange(topology.delay_exchange, aio_pika.ExchangeType.HEADERS, durable=True)
    dead = await channel.declare_exchange(topology.dead_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    for kind in topology.queues:
        for lane in topology.lane_names:
            queue = await declare_work_queue(channel, topology, kind, lane)
            await queue.bind(work, routing_key=topology.lane_key(kind, lane))
        dlq = await _declare_queue(channel, topology, topology.dlq(kind), topology.dlq_arguments())
        await dlq.bind(dead, routing_key=kind)
    for seconds in topology.delays:
        tier = await _declare_queue(channel, topology, topology.delay_queue(seconds), topology.delay_queue_arguments(seconds))
        await tier.bind(delay, routing_key="", arguments={"x-match": "all", H_DELAY: topology.delay_tag(seconds)})
    return {exchange.name: exchange for exchange in (work, delay, dead)}


async def declare_work_queue(channel: AbstractChannel, topology: Topology, kind: str, lane: str = FAST) -> AbstractQueue:
    """A lane's work queue, durable, with the topology's arguments; `TopologyMismatch` when it exists with others."""
    return await _declare_queue(channel, topology, topology.lane_queue(kind, lane), topology.work_queue_arguments(kind, lane))


async def _declare_queue(channel: AbstractChannel, topology: Topology, name: str, arguments: dict[str, Any]) -> AbstractQueue:
    """A durable queue; one that exists with other arguments (a classic install switched to quorum) is a
    `TopologyMismatch` that says what to do, not aiormq's bare 406."""
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyMismatch.of(name, _reply_text(exc), topology) from exc


def _reply_text(exc: aiormq.exceptions.AMQPError) -> str:
    frame = exc.args[0] if exc.args else None
    return str(getattr(frame, "reply_text", None) or exc)


async def inspect_queues(connection: aio_pika.abc.AbstractConnection, names: list[str]) -> dict[str, QueueStats | None]:
    """Passive declarations (they create nothing): ready messages and consumers of each queue, as
    RabbitMQ's declare-ok reports them; None for a queue that does not exist. No management plugin needed."""
    stats: dict[str, QueueStats | None] = {}
    channel = await connection.channel()
    try:
        for name in names:
            try:
                if isinstance(channel, aio_pika.abc.AbstractRobustChannel):  # do not re-declare it on reconnect
                    queue = await channel.declare_queue(name, passive=True, robust=False)
                else:
                    queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:  # 404 NOT_FOUND closes the channel
                stats[name] = None
                channel = await connection.channel()
                continue
            result = queue.declaration_result
            stats[name] = QueueStats(messages=result.message_count or 0, consumers=result.consumer_count or 0)
    finally:
        if not channel.is_closed:
            await channel.close()
    return stats


class _RabbitSubscription:
    def __init__(self, channel: AbstractChannel, queue: AbstractQueue, tag: str) -> None:
        self._channel, self._queue, self._tag = channel, queue, tag
        self._cancelled = False

    async def cancel(self) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        try:
            async with asyncio.timeout(10):
                await self._queue.cancel(self._tag)
        except Exception:  # channel already gone: nothing more will be delivered anyway
            log.debug("consumer cancel failed", exc_info=True)

    async def close(self) -> None:
        await self.cancel()
        if not self._channel.is_closed:
            await self._channel.close()


class RabbitBroker:
    """One robust connection per process, named so ``rabbitmqctl list_connections`` shows who is who."""

    def __init__(
        self,
        url: str,
        *,
        topology: Topology | None = None,
        connection_name: str = "parley",
        reconnect_interval: float = 1.0,
        publish_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.topology = topology or Topology()
        self.connection_name = connection_name
        self.reconnect_interval = reconnect_interval
        self.publish_timeout = publish_timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    async def start(self) -> None:
        # several hosts (a cluster): each reconnect attempt goes to the next one (parley/bus/failover.py)
        self._connection = await connect_failover(
            self.url,
            client_properties={"connection_name": self.connection_name},
            reconnect_interval=self.reconnect_interval,
        )
        # on_return_raises: an unroutable message (missing binding) fails the publish instead of vanishing
        self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            self._exchanges = await declare_topology(self._channel, self.topology)
        except TopologyMismatch:  # nothing to reconnect to: stop the robust connection's retries
            await self.close()
            raise
        self._connection.reconnect_callbacks.add(self._renew_publisher)

    async def _renew_publisher(self, *_: Any) -> None:
        """After a reconnect, publish on a channel opened on the new connection. Measured on a 3-node
        cluster: after a failover to another node the *restored* confirm channel had every publish to
        a quorum queue nacked (for 20 s and more) while a new channel on the same connection published
        at once (tests/cluster). Publishes that fail meanwhile surface to the caller (the relay retries)."""
        if self._connection is None:
            return
        old, channel = self._channel, await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._exchanges = await declare_topology(channel, self.topology)
        self._channel = channel
        if old is not None and not old.is_closed:
            await old.close()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._channel = None
        self._exchanges = {}

    @property
    def is_connected(self) -> bool:
        return self._connection is not None and self._connection.connected.is_set()

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("broker not started")
        return self._connection

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None:
            raise RuntimeError("broker not started")
        return self._channel

    # --- publishing -----------------------------------------------------------------------
    async def _publish(self, exchange: str, message: Outgoing, routing_key: str, extra: dict[str, Any] | None = None) -> None:
        amqp = aio_pika.Message(
            message.body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            type=message.type,
            priority=message.priority,
            headers={**message.headers, **(extra or {})},
            app_id="parley",
        )
        if exchange not in self._exchanges:
            raise RuntimeError("broker not started")
        # The bound covers waiting for a reconnect too: a caller (the relay) may hold a claim meanwhile.
        async with asyncio.timeout(self.publish_timeout):
            await self._exchanges[exchange].publish(amqp, routing_key=routing_key)

    def _lane_key(self, message: Outgoing, kind: str) -> str:
        """The routing key of the message's lane (header ``x-parley-lane``; the fast lane without lanes)."""
        lane = message.headers.get(H_LANE, FAST) if self.topology.uses_lanes else FAST
        return self.topology.lane_key(kind, lane)

    async def publish(self, message: Outgoing, *, routing_key: str) -> None:
        await self._publish(self.topology.exchange, message, self._lane_key(message, routing_key))

    async def publish_delayed(self, message: Outgoing, *, routing_key: str, delay: float) -> None:
        # the tier dead-letters it with this routing key: back to the lane it came from
        key = self._lane_key(message, routing_key)
        tier = self.topology.pick_delay(delay)
        await self._publish(self.topology.delay_exchange, message, key, {H_DELAY: self.topology.delay_tag(tier)})

    async def publish_dead(self, message: Outgoing, *, queue: str) -> None:
        self.topology.check(queue)
        await self._publish(self.topology.dead_exchange, message, queue)

    # --- consuming ------------------------------------------------------------------------
    async def consume(self, queue: str, *, prefetch: int, callback: DeliveryCallback) -> Subscription:
        """With lanes: a consumer on each lane, each on its own channel (its own prefetch, restored as
        it was on a reconnect), fast lane first (:mod:`.lanes`)."""
        self.topology.check(queue)

        async def subscribe(lane: str, receive: DeliveryCallback, lane_prefetch: int) -> _RabbitSubscription:
            channel = await self.connection.channel()
            await channel.set_qos(prefetch_count=lane_prefetch)  # per consumer, never global
            amqp_queue = await declare_work_queue(channel, self.topology, queue, lane)

            async def on_message(message: AbstractIncomingMessage) -> None:
                await receive(message)  # type: ignore[arg-type]

            return _RabbitSubscription(channel, amqp_queue, await amqp_queue.consume(on_message))

        if not self.topology.uses_lanes:
            return await subscribe(FAST, callback, prefetch)
        return await consume_lanes(subscribe, self.topology.lane_names, prefetch=prefetch, callback=callback)

    # --- dead letters and inspection ------------------------------------------------------
    async def drain_dead(self, queue: str, message_ids: set[str], *, limit: int = 10_000) -> int:
        """Take the DLQ's messages without acking, ack the wanted ones, requeue the rest.

        RabbitMQ puts requeued messages back in their original position, so the rest keep their
        order. Holds up to ``limit`` messages in memory: a dead-letter queue is meant to be short.
        """
        if not message_ids:
            return 0
        channel = await self.connection.channel()
        try:
            dlq = await _declare_queue(channel, self.topology, self.topology.dlq(queue), self.topology.dlq_arguments())
            held: list[AbstractIncomingMessage] = []
            while len(held) < limit:
                message = await dlq.get(no_ack=False, fail=False)
                if message is None:
                    break
                held.append(message)
            removed = 0
            for message in held:
                if message.message_id in message_ids:
                    await message.ack()
                    removed += 1
                else:
                    await message.nack(requeue=True)
            return removed
        finally:
            await channel.close()

    async def adopt_dead(self, queue: str, record: AdoptCallback, *, limit: int = 10_000) -> int:
        """Dead letters the broker made by itself (a quorum lane's ``x-delivery-limit``) bear none of our
        headers and have no ``dead_letter`` row. For each one in the DLQ of ``queue``, ``record(message)``
        writes its row and returns the headers to add; a copy with them replaces it in the DLQ (the
        original is acked only after the copy is confirmed). Ours are put back. Returns how many."""
        channel = await self.connection.channel()
        adopted = 0
        try:
            dlq = await _declare_queue(channel, self.topology, self.topology.dlq(queue), self.topology.dlq_arguments())
            held: list[AbstractIncomingMessage] = []
            while len(held) < limit and (message := await dlq.get(no_ack=False, fail=False)) is not None:
                held.append(message)
            for message in held:
                if H_ERROR in (message.headers or {}):
                    await message.nack(requeue=True)
                    continue
                headers = await record(message)  # type: ignore[arg-type]
                copy = Outgoing(body=message.body, message_id=message.message_id or "", correlation_id=message.correlation_id,
                                type=message.type, headers={**(message.headers or {}), **headers})
                await self.publish_dead(copy, queue=queue)
                await message.ack()
                adopted += 1
            return adopted
        finally:
            await channel.close()

    async def message_count(self, name: str) -> int:
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True, robust=False)
            return queue.declaration_result.message_count or 0
        finally:
            await channel.close()

    async def queue_stats(self, names: list[str]) -> dict[str, QueueStats | None]:
        return await inspect_queues(self.connection, names)

    async def delete_topology(self) -> None:
        """Delete every queue and exchange of this topology (tests; ``parley bus reset``)."""
        channel = await self.connection.channel()
        try:
            t = self.topology
            names = [n for k in t.queues for n in t.work_queues(k)] + [t.dlq(k) for k in t.queues] + [t.delay_queue(d) for d in t.delays]
            for name in names:
                await channel.queue_delete(name, if_unused=False, if_empty=False)
            for name in (t.exchange, t.delay_exchange, t.dead_exchange):
                await channel.exchange_delete(name)
        finally:
            await channel.close()
