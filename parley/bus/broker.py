"""What the outbox relay and the consumer wrapper need from a broker.

Two implementations: :class:`parley.bus.rabbit.RabbitBroker` (aio-pika, production) and
:class:`parley.bus.memory.InMemoryBroker` (``parley up --single-process``). Both take
:class:`Outgoing` messages and hand :class:`Delivery` objects to a consumer callback.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from parley.bus.envelope import H_ATTEMPT, H_TENANT, Envelope
from parley.bus.topology import Topology


@dataclass(frozen=True)
class Outgoing:
    """Body plus the properties the bus sets on every message."""

    body: bytes
    message_id: str
    correlation_id: str | None = None
    type: str | None = None
    priority: int | None = None
    headers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, envelope: Envelope, *, headers: dict[str, Any] | None = None, priority: int | None = None) -> Outgoing:
        wire = dict(headers or {})
        wire[H_ATTEMPT] = envelope.attempt
        if envelope.tenant_id is not None:
            wire[H_TENANT] = envelope.tenant_id
        return cls(
            body=envelope.to_bytes(),
            message_id=envelope.id,
            correlation_id=envelope.correlation_id,
            type=envelope.type,
            priority=priority,
            headers=wire,
        )


@dataclass(frozen=True)
class QueueStats:
    """What a queue declaration reports: messages ready (not yet delivered) and consumers attached."""

    messages: int
    consumers: int


class Delivery(Protocol):
    """One received message (aio-pika's ``IncomingMessage`` satisfies this)."""

    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    priority: int | None
    redelivered: bool | None

    async def ack(self) -> None: ...

    async def nack(self, requeue: bool = True) -> None: ...


DeliveryCallback = Callable[[Delivery], Awaitable[None]]
#: Records a dead letter the broker made by itself; returns the headers its DLQ copy gets.
AdoptCallback = Callable[[Delivery], Awaitable[dict[str, Any]]]


class Subscription(Protocol):
    async def cancel(self) -> None:
        """Stop receiving new deliveries; unacked ones stay with this subscription."""

    async def close(self) -> None:
        """Release the subscription; the broker requeues anything still unacked."""


class Broker(Protocol):
    topology: Topology

    @property
    def is_connected(self) -> bool:
        """False while the connection is down (the relay then waits instead of claiming rows)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, message: Outgoing, *, routing_key: str) -> None:
        """To the work exchange; returns once the broker has the message (publisher confirm)."""

    async def publish_delayed(self, message: Outgoing, *, routing_key: str, delay: float) -> None:
        """Through the delay tier of ``delay`` seconds, back to the work queue ``routing_key``."""

    async def publish_dead(self, message: Outgoing, *, queue: str) -> None:
        """To the dead-letter queue of work queue ``queue``."""

    async def consume(self, queue: str, *, prefetch: int, callback: DeliveryCallback) -> Subscription: ...

    async def drain_dead(self, queue: str, message_ids: set[str]) -> int:
        """Remove the given messages from the dead-letter queue of ``queue``; returns how many."""

    async def adopt_dead(self, queue: str, record: AdoptCallback) -> int:
        """Record the dead letters the broker itself put in the DLQ of ``queue`` (quorum delivery limit)."""

    async def message_count(self, name: str) -> int:
        """Messages ready in a queue (full name, e.g. ``topology.dlq("documents")``)."""

    async def queue_stats(self, names: list[str]) -> dict[str, QueueStats | None]:
        """Ready messages and consumers of each queue (full names); None for a queue that does not exist."""
