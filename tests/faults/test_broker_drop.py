"""RabbitMQ drops connections mid-batch (`rabbitmqctl close_connection`, from the broker's side): the
worker's consumer and outbox relay and the producer's relay reconnect by themselves, and nothing is
lost or doubled."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from parley.db import unit_of_work
from parley.bus.models import OutboxMessage
from tests.faults.conftest import FaultStack
from tests.faults.support import (
    audit, broker_ids, check_job, check_nothing_lost, close_connections, connection_names, eventually, finished_count,
    queue_depths, text_documents,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

WEB = {"channel": "web", "conversation_id": "drops"}


async def _done(stack: FaultStack, ids: list[str]) -> int:
    return await finished_count(stack.sessions, ids)


async def test_connections_closed_by_the_broker_mid_batch_lose_nothing(stack: FaultStack) -> None:
    # Given a running worker and the producer's relay running as in the gateway (nudged by commits, swept every 5 s)
    worker = stack.worker()
    worker.start()
    await stack.relay.start()
    # And a 60-document job under way
    job = await stack.submit(text_documents(60, tag="j"), notify=WEB)
    ids = list(job.documents.values())
    await eventually(lambda: _at_least(stack, ids, 10), timeout=90, what="10 documents done", log=worker.log)
    # When the broker closes the worker's connection and the producer's, with deliveries in flight
    assert close_connections(worker.connection_name) == 1
    assert close_connections(f"{stack.prefix}producer") == 1
    # and 30 single uploads (each with its own notice) are committed while the producer is reconnecting
    singles = []
    for name, content in text_documents(30, tag="s"):
        singles += (await stack.submit([(name, content)], as_job=False, notify=WEB, publish=False)).documents.values()
    everything = ids + singles
    # and the worker's connection is closed again while it publishes those notices
    await eventually(lambda: _at_least(stack, singles, 5), timeout=90, what="singles under way", log=worker.log)
    assert close_connections(worker.connection_name) == 1
    # Then everything is indexed, by the same worker process, which reconnected by itself
    try:
        await eventually(lambda: _at_least(stack, everything, len(everything)), timeout=120, what="all documents done",
                         log=worker.log)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await _where_things_are(stack, everything)}") from None
    assert worker.alive() and worker.starts == 1
    await eventually(lambda: _quiet(stack), timeout=60, interval=0.5, what="queues drained, notices published", log=worker.log)
    result = await audit(stack.sessions, tenant_id=stack.tenant_id, document_ids=everything, job_id=job.job_id)
    problems = check_nothing_lost(result, tenant_id=stack.tenant_id, expected=90) + check_job(result, total=60)
    assert not problems, "\n".join(problems)
    assert len(result.indexed) == 90
    # And every notice (30 "indexed", one job report) was staged once and reached the broker
    kinds = sorted(n.payload["kind"] for n in result.notices)
    assert kinds == ["indexed"] * 30 + ["job_done"]
    assert {n.payload.get("document_id") for n in result.notices if n.payload["kind"] == "indexed"} == set(singles)
    published = await broker_ids(stack.broker, stack.broker.topology.queue("notifications"))
    assert set(published) == {n.id for n in result.notices}
    # And the reconnected connections are back under their names (`rabbitmqctl list_connections`)
    assert {worker.connection_name, f"{stack.prefix}producer"} <= set(connection_names())


async def _at_least(stack: FaultStack, ids: list[str], n: int) -> bool:
    return await _done(stack, ids) >= n


async def _quiet(stack: FaultStack) -> bool:
    async with unit_of_work(stack.sessions, admin=True) as session:
        unpublished = await session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None)))
    return unpublished == 0 and queue_depths(stack.prefix).get("documents") == (0, 0)


async def _where_things_are(stack: FaultStack, ids: list[str]) -> str:
    """For a failure message: documents by status, the outbox, and the queues."""
    from parley.bus.models import PendingMessage
    from knowledge.models import Document

    async with unit_of_work(stack.sessions, admin=True) as session:
        statuses = (await session.execute(
            select(Document.status, func.count()).where(Document.id.in_(ids)).group_by(Document.status))).all()
        outbox = (await session.execute(
            select(OutboxMessage.routing_key, OutboxMessage.published_at.is_(None), OutboxMessage.publish_attempts)
            .where(OutboxMessage.published_at.is_(None)))).all()
        pending = await session.scalar(select(func.count()).select_from(PendingMessage))
    return (f"documents by status: {dict((str(s), n) for s, n in statuses)}; unpublished outbox rows "
            f"(queue, attempts): {[(r[0], r[2]) for r in outbox]}; pending: {pending}; "
            f"relay rounds: {stack.relay.rounds}, connected: {stack.broker.is_connected}; queues: {queue_depths(stack.prefix)}")
