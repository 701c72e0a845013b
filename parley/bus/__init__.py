"""The message bus kernel: envelope, topology, transactional outbox, consumer wrapper, dead letters.

Producers::

    async with unit_of_work(sessions, tenant_id=t) as session:
        document = ...                                   # the work
        stage(session, Envelope.new("document.uploaded", tenant_id=t, payload={...}), "documents")
    # committed: this process's OutboxRelay publishes it now (or any relay's sweep, later)

Consumers::

    consumer = Consumer(name="document-worker", queue="documents", broker=broker, sessions=sessions,
                        max_attempts=settings.max_attempts)

    @consumer.handler("document.uploaded", DocumentUploaded, on_dead_letter=mark_document_failed)
    async def index(msg: Received[DocumentUploaded]) -> None: ...

    await run_consumer(consumer, stop_event)

See the modules for the reasoning: :mod:`.topology` (queues), :mod:`.outbox` (publishing, claiming,
fairness), :mod:`.consumer` (retries, dead letters, shutdown), :mod:`.dead_letters` (list/replay).
"""

from parley.bus import context
from parley.bus.broker import Broker, Delivery, Outgoing, Subscription
from parley.bus.consumer import Backoff, Consumer, DeadLetterHook, Received, consuming, run_consumer
from parley.bus.dead_letters import describe, list_dead_letters, record_dead_letter, replay, stage_replay
from parley.bus.envelope import Envelope
from parley.bus.errors import Failure, Permanent, Retryable
from parley.bus.idempotency import already_processed, mark_processed, prune_processed
from parley.bus.memory import InMemoryBroker
from parley.bus.outbox import OutboxRelay, stage
from parley.bus.rabbit import RabbitBroker, declare_topology
from parley.bus.topology import Topology

__all__ = [
    "Backoff",
    "Broker",
    "Consumer",
    "DeadLetterHook",
    "Delivery",
    "Envelope",
    "Failure",
    "InMemoryBroker",
    "Outgoing",
    "OutboxRelay",
    "Permanent",
    "RabbitBroker",
    "Received",
    "Retryable",
    "Subscription",
    "Topology",
    "already_processed",
    "consuming",
    "context",
    "declare_topology",
    "describe",
    "list_dead_letters",
    "mark_processed",
    "prune_processed",
    "record_dead_letter",
    "replay",
    "run_consumer",
    "stage",
    "stage_replay",
]
