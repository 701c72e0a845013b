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

Two queue types (``queue_type``, settings ``PARLEY_AMQP_QUEUE_TYPE``):

* ``classic`` (the default, one broker node): the shape above. Fairness through priorities: the
  outbox relay gives a tenant's first message ``max_priority``, each further one of its backlog one
  less (`priority_for`). Poison messages are bounded by our own attempt counter.
* ``quorum`` (a cluster: replicated queues that survive a node). RabbitMQ 3.10 quorum queues have no
  priorities and 4.x only two levels, so fairness uses two *lanes* per job kind instead, which work
  the same on both::

      <p>documents        fast lane: a tenant's first `fast_lane` messages of its backlog
      <p>documents.bulk   bulk lane: the rest (routing key "documents.bulk")

  Workers consume both lanes and run fast-lane deliveries first (:mod:`parley.bus.lanes`), so a
  lone upload waits for one running item at most, not for a big tenant's backlog. Every queue
  (work lanes, delay tiers, DLQs) is ``x-queue-type: quorum``; 3.10 quorum queues support
  ``x-message-ttl`` with dead-lettering, so the delay tiers work unchanged. Work lanes carry
  ``x-delivery-limit``: a message that crashes its worker again and again (our attempt counter
  never runs) is dead-lettered by the broker after ``delivery_limit`` returns to the queue (every
  requeue counts: a graceful stop, a database outage, so the limit is generous). Work lanes and delay
  tiers dead-letter ``at-least-once`` (kept in the source queue until the target confirms it, instead
  of RabbitMQ's default at-most-once), which RabbitMQ only honours with ``x-overflow:
  reject-publish``; no queue has a length limit, so reject-publish never rejects anything here.
  Both lanes dead-letter to the one ``<kind>.dlq`` (``x-dead-letter-routing-key`` = kind).

A broker refuses to change an existing queue's type (406 PRECONDITION_FAILED): switching a
deployment means draining and deleting its queues, or a new prefix or vhost (`TopologyMismatch`).
``<p>`` is an optional prefix (tests use a unique one per test).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from parley.errors import ConfigurationError

DEFAULT_QUEUES = ("documents", "catalog", "notifications", "webhooks")
DEFAULT_DELAYS = (1.0, 5.0, 30.0, 300.0)
QUEUE_TYPES = ("classic", "quorum")
FAST, BULK = "fast", "bulk"
LANES = (FAST, BULK)
#: Quorum dead-lettering that keeps the message until the target queue confirms it; RabbitMQ
#: falls back to at-most-once unless the queue's overflow is reject-publish.
AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


class TopologyMismatch(ConfigurationError):
    """The broker already has a queue of this topology with other arguments (406 PRECONDITION_FAILED)."""

    code = "topology_mismatch"

    @classmethod
    def of(cls, queue: str, broker_says: str, topology: Topology) -> TopologyMismatch:
        """What to do first, RabbitMQ's words last (trimmed to the argument it named): the CLI prints
        errors as one line of at most 600 characters."""
        p, kind = topology.prefix, topology.queue_type
        said = broker_says.split(" for queue ")[0]
        return cls(
            f"RabbitMQ already has the queue {queue!r} with other arguments than this install's {kind} queues "
            f"(PARLEY_AMQP_QUEUE_TYPE={kind}) and cannot change them. Either set PARLEY_AMQP_QUEUE_TYPE back; or use a "
            "new PARLEY_AMQP_PREFIX or vhost and retire the old queues once empty; or drain them (`parley status`: "
            f"nothing ready or unfinished), stop every process and delete them (`rabbitmqctl delete_queue NAME` for "
            f"{p}<kind>, {p}<kind>.bulk, {p}<kind>.dlq, {p}parley.delay.*). RabbitMQ said: {said}"
        )


@dataclass(frozen=True)
class Topology:
    prefix: str = ""
    queues: tuple[str, ...] = DEFAULT_QUEUES
    #: Delay tiers in seconds. Per-message TTL only expires at a queue's head, so one queue per tier.
    delays: tuple[float, ...] = DEFAULT_DELAYS
    #: Highest message priority; RabbitMQ recommends at most 10 levels.
    max_priority: int = 9
    #: "classic" or "quorum" (settings ``amqp_queue_type``).
    queue_type: str = "classic"
    #: Quorum mode: times a message may return to its queue before the broker dead-letters it
    #: (``x-delivery-limit``).
    delivery_limit: int = 20
    #: Fast lane + bulk lane per job kind instead of priorities. None: in quorum mode only.
    lanes: bool | None = None
    #: With lanes: how many messages of a tenant's backlog on a queue go to the fast lane.
    fast_lane: int = 4

    def __post_init__(self) -> None:
        if self.queue_type not in QUEUE_TYPES:
            raise ValueError(f"queue_type must be one of {', '.join(QUEUE_TYPES)}, not {self.queue_type!r}")
        if self.delivery_limit < 1:
            raise ValueError("delivery_limit must be at least 1")
        if self.fast_lane < 1:
            raise ValueError("fast_lane must be at least 1")
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

    # --- lanes ----------------------------------------------------------------------------
    @property
    def uses_lanes(self) -> bool:
        return self.queue_type == "quorum" if self.lanes is None else self.lanes

    @property
    def lane_names(self) -> tuple[str, ...]:
        """The lanes of every job kind: fast (the queue named after the kind) and, with lanes, bulk."""
        return LANES if self.uses_lanes else (FAST,)

    def lane_key(self, kind: str, lane: str = FAST) -> str:
        """The routing key (and unprefixed queue name) of a lane: ``documents``, ``documents.bulk``."""
        self.check(kind)
        if lane == FAST:
            return kind
        if lane == BULK and self.uses_lanes:
            return f"{kind}.{BULK}"
        raise ValueError(f"unknown lane {lane!r}; this topology has {', '.join(self.lane_names)}")

    def lane_queue(self, kind: str, lane: str = FAST) -> str:
        return self.name(self.lane_key(kind, lane))

    def work_queues(self, kind: str) -> tuple[str, ...]:
        """Every queue holding work of ``kind`` (both lanes): what depths and stats must add up."""
        return tuple(self.lane_queue(kind, lane) for lane in self.lane_names)

    def placement(self, backlog: int) -> tuple[str, int | None]:
        """Lane and priority of a message whose tenant already has ``backlog`` unfinished on its queue:
        with lanes, its first `fast_lane` go fast and the rest bulk (no priority); without, one lane
        and `priority_for`."""
        if self.uses_lanes:
            return (FAST if backlog < self.fast_lane else BULK), None
        return FAST, self.priority_for(backlog)

    # --- arguments ------------------------------------------------------------------------
    def work_queue_arguments(self, kind: str | None = None, lane: str = FAST) -> dict[str, Any]:
        # a message rejected without requeue (never by our consumer) still lands in the DLQ
        if self.queue_type == "quorum":
            return {
                "x-queue-type": "quorum",
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-exchange": self.dead_exchange,
                **({"x-dead-letter-routing-key": kind} if kind else {}),  # both lanes to <kind>.dlq
                **AT_LEAST_ONCE,
            }
        arguments: dict[str, Any] = {
            "x-queue-type": "classic",
            "x-max-priority": self.max_priority,
            "x-dead-letter-exchange": self.dead_exchange,
        }
        if lane == BULK and kind:  # a new queue may say where its dead letters go (the fast lane keeps its old shape)
            arguments["x-dead-letter-routing-key"] = kind
        return arguments

    def delay_queue_arguments(self, seconds: float) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-queue-type": self.queue_type,
            "x-message-ttl": round(seconds * 1000),
            "x-dead-letter-exchange": self.exchange,
        }
        if self.queue_type == "quorum":  # a retry waiting in a tier must not be lost on its way back
            arguments.update(AT_LEAST_ONCE)
        return arguments

    def dlq_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": self.queue_type}

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
