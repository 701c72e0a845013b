"""Fast lane first: one consumer of both lanes of a job kind (quorum mode, see :mod:`.topology`).

Priorities would let the broker hand a worker its most urgent message; quorum queues on RabbitMQ
3.10 have none, so the worker chooses instead. It subscribes to the bulk lane with the prefetch
``n`` and to the fast lane with ``2n``, and runs at most ``n`` deliveries at a time: whenever a slot
frees, a waiting fast-lane delivery goes before any bulk one. The bulk lane's unacked deliveries
are at most ``n``, so while every slot runs bulk work none waits here, and a fast-lane message
that arrives takes the next free slot: it waits for one running item, never for the backlog. The
fast lane's extra ``n`` matter when fast work runs: the next fast message is already here when a
slot frees (with only ``n`` it would still be on its way, the broker sending it only after the ack,
and a waiting bulk delivery would take the slot first; measured: B 5th instead of 3rd). When the
fast lane is empty the bulk lane gets all ``n`` slots (no throughput is reserved for it).

A bulk delivery that waits here is held unacked by this worker (as a prefetched message is). On
:meth:`LanedSubscription.cancel` the waiting ones are handed back (nack with requeue); the running
ones stay with the caller, as for any subscription.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from parley.bus.broker import Delivery, DeliveryCallback, Subscription
from parley.bus.topology import BULK, FAST

log = logging.getLogger(__name__)


class LaneDelivery:
    """A delivery handed out by the gate; settling it (ack or nack) frees its slot."""

    def __init__(self, inner: Delivery, lane: str, release: Callable[[], None]) -> None:
        self._inner, self.lane, self._release = inner, lane, release
        self.body = inner.body
        self.headers = inner.headers
        self.message_id = inner.message_id
        self.priority = inner.priority
        self.redelivered = inner.redelivered

    def __getattr__(self, name: str) -> Any:  # the rest of aio-pika's IncomingMessage (routing_key, ...)
        return getattr(self._inner, name)

    async def ack(self) -> None:
        try:
            await self._inner.ack()
        finally:
            self._release()

    async def nack(self, requeue: bool = True) -> None:
        try:
            await self._inner.nack(requeue=requeue)
        finally:
            self._release()


class LaneGate:
    """At most ``slots`` deliveries handed to ``callback`` and not yet settled; fast lane first."""

    def __init__(self, slots: int, callback: DeliveryCallback) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.free = slots
        self._callback = callback
        self._waiting: dict[str, collections.deque[Delivery]] = {FAST: collections.deque(), BULK: collections.deque()}
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._pump(), name="parley-lane-gate")

    def receiver(self, lane: str) -> DeliveryCallback:
        """The callback to subscribe the lane's queue with."""
        waiting = self._waiting[lane]

        async def receive(delivery: Delivery) -> None:
            waiting.append(delivery)
            self._changed.set()

        return receive

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def _next(self) -> tuple[str, Delivery] | None:
        for lane in (FAST, BULK):
            if self._waiting[lane]:
                return lane, self._waiting[lane].popleft()
        return None

    async def _pump(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            while self.free > 0 and (picked := self._next()) is not None:
                lane, delivery = picked
                self.free -= 1
                await self._callback(LaneDelivery(delivery, lane, self._once()))

    def _once(self) -> Callable[[], None]:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.free += 1
                self._changed.set()

        return release

    async def stop(self) -> None:
        """Stop handing out deliveries; give the waiting ones back to the broker."""
        if not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for lane in (FAST, BULK):
            while self._waiting[lane]:
                delivery = self._waiting[lane].popleft()
                try:
                    await delivery.nack(requeue=True)
                except Exception:  # channel gone: the broker requeues it by itself
                    log.debug("could not hand a waiting delivery back", exc_info=True)


class LanedSubscription:
    """The subscriptions of both lanes behind one gate, as one :class:`Subscription`."""

    def __init__(self, gate: LaneGate, lanes: Sequence[Subscription],
                 on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        self.gate, self._lanes, self._on_close = gate, list(lanes), on_close

    async def cancel(self) -> None:
        for lane in self._lanes:
            await lane.cancel()
        await self.gate.stop()

    async def close(self) -> None:
        await self.cancel()
        for lane in self._lanes:
            await lane.close()
        if self._on_close is not None:
            await self._on_close()


#: ``subscribe(lane, receiver, prefetch)``: a broker's subscription to one lane's queue.
Subscribe = Callable[[str, DeliveryCallback, int], Awaitable[Subscription]]


def lane_prefetch(lane: str, prefetch: int) -> int:
    return 2 * prefetch if lane == FAST else prefetch


async def consume_lanes(
    subscribe: Subscribe, lanes: Sequence[str], *, prefetch: int, callback: DeliveryCallback,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> LanedSubscription:
    """Subscribe to each lane (fast: ``2 * prefetch``, bulk: ``prefetch``) through one gate of
    ``prefetch`` slots. Used by both brokers."""
    gate = LaneGate(prefetch, callback)
    subscriptions: list[Subscription] = []
    try:
        for lane in lanes:
            subscriptions.append(await subscribe(lane, gate.receiver(lane), lane_prefetch(lane, prefetch)))
    except BaseException:
        for subscription in subscriptions:
            await subscription.close()
        await gate.stop()
        raise
    return LanedSubscription(gate, subscriptions, on_close)
