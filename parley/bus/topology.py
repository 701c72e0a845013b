"""Names and shape of the broker topology, shared by the RabbitMQ and in-memory brokers.

::

    <p>parley        direct  work exchange; routing key = job kind
      -> <p>documents, <p>catalog, <p>notifications, <p>webhooks
                             classic, durable, x-max-priority; x-dead-letter-exchange = <p>parley.dead
    <p>parley.delay  headers delay tiers, shared by every work queue; header parley-delay = "<ms>ms"
      -> <p>parley.delay.<ms>ms   x-message-ttl = ms, x-dead-letter-exchange = <p>parley
                             (no dead-letter routing key: the message keeps the routing key it was
                             published with, so it returns to the work queue it came from)
    <p>parley.dead   direct  routing key = job kind
      -> <p>documents.dlq, <p>catalog.dlq, <p>notifications.dlq, <p>webhooks.dlq

Work queues are classic, not quorum: RabbitMQ 3.10 refuses x-max-priority on quorum queues and
the fairness scheme needs priorities (4.0 quorum queues have two priority levels, which is enough
for it: top priority vs the rest). On one broker node quorum's replication buys nothing, and
poison messages are bounded by our own attempt counter rather than x-delivery-limit.
``<p>`` is an optional prefix (tests use a unique one per test).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

DEFAULT_QUEUES = ("documents", "catalog", "notifications", "webhooks")
DEFAULT_DELAYS = (1.0, 5.0, 30.0, 300.0)


@dataclass(frozen=True)
class Topology:
    prefix: str = ""
    queues: tuple[str, ...] = DEFAULT_QUEUES
    #: Delay tiers in seconds. Per-message TTL only expires at a queue's head, so one queue per tier.
    delays: tuple[float, ...] = DEFAULT_DELAYS
    #: Highest message priority; RabbitMQ recommends at most 10 levels.
    max_priority: int = 9

    def __post_init__(self) -> None:
        if not self.delays or list(self.delays) != sorted(set(self.delays)) or min(self.delays) <= 0:
            raise ValueError("delays must be positive, distinct and ascending")
        if not 1 <= self.max_priority <= 10:
            raise ValueError("max_priority must be between 1 and 10")

    # --- names ----------------------------------------------------------------------------
    def name(self, logical: str) -> str:
        return f"{self.prefix}{logical}"

    @property
    def exchange(self) -> str:
        return self.name("parley")

    @property
    def delay_exchange(self) -> str:
        return self.name("parley.delay")

    @property
    def dead_exchange(self) -> str:
        return self.name("parley.dead")

    def queue(self, kind: str) -> str:
        self.check(kind)
        return self.name(kind)

    def dlq(self, kind: str) -> str:
        self.check(kind)
        return self.name(f"{kind}.dlq")

    @staticmethod
    def delay_tag(seconds: float) -> str:
        return f"{round(seconds * 1000)}ms"

    def delay_queue(self, seconds: float) -> str:
        return self.name(f"parley.delay.{self.delay_tag(seconds)}")

    def check(self, kind: str) -> None:
        if kind not in self.queues:
            raise ValueError(f"unknown queue {kind!r}; the topology has {', '.join(self.queues)}")

    # --- arguments ------------------------------------------------------------------------
    def work_queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "classic",
            "x-max-priority": self.max_priority,
            # a message rejected without requeue (never by our consumer) still lands in the DLQ
            "x-dead-letter-exchange": self.dead_exchange,
        }

    def delay_queue_arguments(self, seconds: float) -> dict[str, Any]:
        return {
            "x-queue-type": "classic",
            "x-message-ttl": round(seconds * 1000),
            "x-dead-letter-exchange": self.exchange,
        }

    def dlq_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "classic"}

    # --- policies -------------------------------------------------------------------------
    def pick_delay(self, wanted: float) -> float:
        """The longest tier not above ``wanted`` (the shortest tier if all are longer)."""
        fitting = [d for d in self.delays if d <= wanted]
        return fitting[-1] if fitting else self.delays[0]

    def spread_delay(self, wanted: float, rng: random.Random | None = None) -> float:
        """A tier for a retry wanted after ``wanted`` seconds, chosen at random between the two tiers
        around it, the upper one with probability ``(wanted - lower) / (upper - lower)``, so the
        expected delay is the wanted one. `pick_delay` alone would floor every jittered delay between
        two tiers to the lower one: a burst of failures would come back as the same burst."""
        below = [d for d in self.delays if d <= wanted]
        above = [d for d in self.delays if d > wanted]
        if not below:
            return self.delays[0]
        if not above:
            return self.delays[-1]
        low, high = below[-1], above[0]
        draw = (rng or random).random()
        return high if draw < (wanted - low) / (high - low) else low

    def priority_for(self, backlog: int) -> int:
        """A tenant's first message gets the top priority, each further one in its backlog one less."""
        return max(0, self.max_priority - backlog)
