"""An in-memory broker with the RabbitMQ broker's interface, for ``parley up --single-process``.

Same semantics where they matter to the relay and the consumer wrapper: priority queues (highest
first, FIFO within a priority), prefetch per subscription, ack / nack-requeue, delay tiers
(``loop.call_later``), dead-letter lists, and with a topology that uses lanes (quorum mode) a fast
and a bulk queue per job kind, read through the same fast-lane-first gate (:mod:`.lanes`). Not durable: messages live as long as the process, which
is fine for a quick look; the outbox still holds everything that was never published.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import weakref
from dataclasses import dataclass, field
from typing import Any

from parley.bus.broker import AdoptCallback, DeliveryCallback, Outgoing, QueueStats, Subscription
from parley.bus.envelope import H_DELAY, H_LANE
from parley.bus.lanes import consume_lanes
from parley.bus.topology import FAST, Topology

_sequence = itertools.count()


@dataclass
class _Queue:
    heap: list[tuple[int, int, Outgoing, bool]] = field(default_factory=list)
    ready: asyncio.Condition = field(default_factory=asyncio.Condition)
    consumers: int = 0

    async def put(self, message: Outgoing, *, redelivered: bool = False, seq: int | None = None) -> None:
        async with self.ready:
            order = next(_sequence) if seq is None else seq
            heapq.heappush(self.heap, (-(message.priority or 0), order, message, redelivered))
            self.ready.notify()


class _MemoryDelivery:
    def __init__(self, subscription: _MemorySubscription, message: Outgoing, seq: int, redelivered: bool) -> None:
        self._subscription, self._message, self._seq = subscription, message, seq
        self.body = message.body
        self.headers = dict(message.headers)
        self.message_id: str | None = message.message_id
        self.priority = message.priority
        self.redelivered: bool | None = redelivered
        self._settled = False

    async def ack(self) -> None:
        self._settle()

    async def nack(self, requeue: bool = True) -> None:
        self._settle()
        if requeue:  # back to its old position, as RabbitMQ does
            await self._subscription.queue.put(self._message, redelivered=True, seq=self._seq)

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError("delivery already acked or nacked")
        self._settled = True
        self._subscription.release(self)


class _MemorySubscription:
    def __init__(self, queue: _Queue, prefetch: int, callback: DeliveryCallback) -> None:
        self.queue = queue
        self._slots = asyncio.Semaphore(prefetch)
        self._callback = callback
        self._unacked: set[_MemoryDelivery] = set()
        self._task = asyncio.create_task(self._pump())
        queue.consumers += 1

    def release(self, delivery: _MemoryDelivery) -> None:
        if delivery in self._unacked:
            self._unacked.discard(delivery)
            self._slots.release()

    async def _pump(self) -> None:
        while True:
            await self._slots.acquire()
            async with self.queue.ready:
                await self.queue.ready.wait_for(lambda: bool(self.queue.heap))
                _, seq, message, redelivered = heapq.heappop(self.queue.heap)
            delivery = _MemoryDelivery(self, message, seq, redelivered)
            self._unacked.add(delivery)
            await self._callback(delivery)

    async def cancel(self) -> None:
        if not self._task.done():
            self.queue.consumers -= 1
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def close(self) -> None:
        await self.cancel()
        for delivery in list(self._unacked):  # what a closed channel does: requeue the unacked
            await delivery.nack(requeue=True)


class InMemoryBroker:
    def __init__(self, topology: Topology | None = None) -> None:
        self.topology = topology or Topology()
        #: By full queue name: ``<p>documents`` (the fast lane) and, with lanes, ``<p>documents.bulk``.
        self._queues: dict[str, _Queue] = {}
        self.dead: dict[str, list[Outgoing]] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._subscriptions: weakref.WeakSet[_MemorySubscription] = weakref.WeakSet()

    @property
    def is_connected(self) -> bool:
        return True

    async def start(self) -> None:
        for kind in self.topology.queues:
            for name in self.topology.work_queues(kind):
                self._queues.setdefault(name, _Queue())
            self.dead.setdefault(kind, [])

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _lane_queue(self, message: Outgoing, kind: str) -> str:
        lane = message.headers.get(H_LANE, FAST) if self.topology.uses_lanes else FAST
        return self.topology.lane_queue(kind, lane)

    async def publish(self, message: Outgoing, *, routing_key: str) -> None:
        await self._queues[self._lane_queue(message, routing_key)].put(message)

    async def publish_delayed(self, message: Outgoing, *, routing_key: str, delay: float) -> None:
        self._lane_queue(message, routing_key)  # a bad kind or lane fails now, not when the timer fires
        tier = self.topology.pick_delay(delay)
        delayed = dataclasses.replace(message, headers={**message.headers, H_DELAY: self.topology.delay_tag(tier)})
        loop = asyncio.get_running_loop()

        def due() -> None:
            self._timers.discard(timer)
            loop.create_task(self.publish(delayed, routing_key=routing_key))

        timer = loop.call_later(tier, due)
        self._timers.add(timer)

    async def publish_dead(self, message: Outgoing, *, queue: str) -> None:
        self.topology.check(queue)
        self.dead[queue].append(message)

    async def consume(self, queue: str, *, prefetch: int, callback: DeliveryCallback) -> Subscription:
        self.topology.check(queue)

        async def subscribe(lane: str, receive: DeliveryCallback, lane_prefetch: int) -> _MemorySubscription:
            subscription = _MemorySubscription(self._queues[self.topology.lane_queue(queue, lane)], lane_prefetch, receive)
            self._subscriptions.add(subscription)
            return subscription

        if not self.topology.uses_lanes:
            return await subscribe(FAST, callback, prefetch)
        return await consume_lanes(subscribe, self.topology.lane_names, prefetch=prefetch, callback=callback)

    async def adopt_dead(self, queue: str, record: AdoptCallback) -> int:
        """Nothing to adopt: this broker has no delivery limit, every dead letter is the consumer's own."""
        return 0

    async def drain_dead(self, queue: str, message_ids: set[str]) -> int:
        kept = [m for m in self.dead[queue] if m.message_id not in message_ids]
        removed = len(self.dead[queue]) - len(kept)
        self.dead[queue] = kept
        return removed

    def _stats(self, name: str) -> QueueStats | None:
        if (q := self._queues.get(name)) is not None:
            return QueueStats(messages=len(q.heap), consumers=q.consumers)
        for kind, dead in self.dead.items():
            if name == self.topology.dlq(kind):
                return QueueStats(messages=len(dead), consumers=0)
        return None

    async def message_count(self, name: str) -> int:
        if (stats := self._stats(name)) is None:
            raise KeyError(name)
        return stats.messages

    async def queue_stats(self, names: list[str]) -> dict[str, QueueStats | None]:
        return {name: self._stats(name) for name in names}

    def pending(self) -> int:
        """Messages that would be dropped if the process stopped now: queued, unacked, or waiting in a delay tier."""
        unacked = sum(len(s._unacked) for s in self._subscriptions)
        return sum(len(q.heap) for q in self._queues.values()) + unacked + len(self._timers)

    def __repr__(self) -> str:
        sizes: dict[str, Any] = {k: len(q.heap) for k, q in self._queues.items()}
        return f"<InMemoryBroker {sizes}>"
