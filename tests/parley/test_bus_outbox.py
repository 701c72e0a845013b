"""The transactional outbox: published after commit, never lost, not double-published by concurrent relays."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from parley.bus import Envelope, OutboxRelay, RabbitBroker, stage
from parley.bus.broker import Outgoing
from parley.bus.models import PendingMessage
from parley.db import _sqlite_pragmas, unit_of_work
from parley.bus.models import OutboxMessage
from tests.parley.bus_support import (
    count_outbox,
    drain,
    eventually,
    stage_committed,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def _doc(tenant: str = "t1", **payload: object) -> Envelope:
    return Envelope.new("document.uploaded", tenant_id=tenant, payload=payload)


async def test_a_commit_nudges_the_relay_and_a_rollback_publishes_nothing(sessions, broker: RabbitBroker) -> None:
    # Given a running relay whose periodic sweep is far away
    relay = OutboxRelay(sessions, broker, sweep_interval=3600)
    await relay.start()
    await eventually(lambda: relay.rounds == 1)  # its start-up sweep is done; it now waits
    try:
        # When one unit of work stages and commits, and another stages and rolls back
        committed = _doc()
        await stage_committed(sessions, [committed], "documents")
        with pytest.raises(RuntimeError):
            async with unit_of_work(sessions, tenant_id="t1") as session:
                stage(session, _doc(), "documents")
                raise RuntimeError("the work failed")
        # Then the commit's nudge published the message (the next sweep is an hour away), the other never existed
        await eventually(lambda: _none_unpublished(sessions))
        queue = broker.topology.queue("documents")
        [message] = await drain(broker, queue)
        assert message.message_id == committed.id
        assert message.delivery_mode == 2  # persistent
        assert message.correlation_id == committed.correlation_id and message.type == "document.uploaded"
        assert message.headers["x-parley-tenant-id"] == "t1"
        assert await count_outbox(sessions) == 1
    finally:
        await relay.stop()


class _DiesBeforeConfirm:
    """A broker whose process 'dies' mid-publish: publish never returns a confirm."""

    def __init__(self, real: RabbitBroker) -> None:
        self.topology = real.topology

    async def publish(self, message: Outgoing, *, routing_key: str) -> None:
        raise ConnectionResetError("process killed before the broker confirmed")


async def test_a_message_committed_but_never_published_is_published_by_a_new_relay(sessions, make_broker) -> None:
    # Given work committed with its message, in a process that died before publishing:
    # one message whose process had no relay at all, one whose publish failed mid-way
    broker = await make_broker("first-process")
    orphan, interrupted = _doc(n=1), _doc(n=2)
    await stage_committed(sessions, [orphan], "documents")
    await stage_committed(sessions, [interrupted], "documents")
    dying = OutboxRelay(sessions, _DiesBeforeConfirm(broker))  # type: ignore[arg-type]
    assert await dying.flush() == 0
    assert await count_outbox(sessions, published_at=None) == 2
    await broker.close()
    # When another process starts with its own relay (its first sweep runs at start-up)
    restarted = await make_broker("second-process")
    relay = OutboxRelay(sessions, restarted, sweep_interval=3600)
    await relay.start()
    try:
        await eventually(lambda: _none_unpublished(sessions))
        # Then both messages are in the queue, in staging order, and marked published
        queue = restarted.topology.queue("documents")
        assert [m.message_id for m in await drain(restarted, queue)] == [orphan.id, interrupted.id]
        async with unit_of_work(sessions) as session:
            attempts = (await session.execute(select(OutboxMessage.publish_attempts).order_by(OutboxMessage.id))).scalars().all()
        assert attempts == [2, 2]  # one failed claim, one successful
    finally:
        await relay.stop()


async def _none_unpublished(sessions) -> bool:
    # published_at is committed after the broker confirmed: once it is set, the message is in the queue
    return await count_outbox(sessions, published_at=None) == 0


async def test_concurrent_relays_publish_each_message_once(sessions, bus_db_url: str, make_broker) -> None:
    # Given 300 committed messages and three relays in three "processes" (own engine, own connection)
    envelopes = [_doc(tenant=f"t{i % 3}", n=i) for i in range(300)]
    await stage_committed(sessions, envelopes, "documents")
    engines, relays = [], []
    for i in range(3):
        engine = create_async_engine(bus_db_url)
        if bus_db_url.startswith("sqlite"):
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        engines.append(engine)
        relays.append(OutboxRelay(async_sessionmaker(engine, expire_on_commit=False), await make_broker(f"relay-{i}"), batch_size=20))
    try:
        # When they all flush at the same time
        published = await asyncio.gather(*(relay.flush() for relay in relays))
        # Then every message was published exactly once, and each counts once in its tenant's backlog
        assert sum(published) == 300
        queue = relays[0].broker.topology.queue("documents")
        ids = Counter(m.message_id for m in await drain(relays[0].broker, queue))  # type: ignore[attr-defined]
        assert len(ids) == 300 and set(ids.values()) == {1}
        async with unit_of_work(sessions) as session:
            assert len((await session.execute(select(PendingMessage.message_id))).all()) == 300
    finally:
        for engine in engines:
            await engine.dispose()


async def test_priorities_fall_with_the_tenants_backlog(sessions, broker: RabbitBroker) -> None:
    # Given tenant A with 12 messages staged, then tenant B with one
    await stage_committed(sessions, [_doc("A", n=i) for i in range(12)], "documents")
    relay = OutboxRelay(sessions, broker)
    await relay.flush()
    await stage_committed(sessions, [_doc("B")], "documents")
    await relay.flush()
    # Then A's messages got 9, 8, ..., 0, 0, 0 and B's lone message the top priority again
    messages = await drain(broker, broker.topology.queue("documents"))
    by_tenant: dict[str, list[int]] = {}
    for m in messages:
        by_tenant.setdefault(m.headers["x-parley-tenant-id"], []).append(m.priority)
    assert sorted(by_tenant["A"], reverse=True) == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0]
    assert by_tenant["B"] == [9]
    # and the priority queue delivered B's message right after A's first one
    assert [m.headers["x-parley-tenant-id"] for m in messages][:2] == ["A", "B"]


async def test_a_tenant_session_cannot_stage_another_tenants_message(sessions) -> None:
    from parley.errors import TenantScopeError

    with pytest.raises(TenantScopeError):
        async with unit_of_work(sessions, tenant_id="t1") as session:
            stage(session, _doc(tenant="t2"), "documents")
    assert await count_outbox(sessions) == 0


async def test_maintenance_forgets_what_is_past_its_retention(sessions, broker: RabbitBroker) -> None:
    import datetime as dt

    from parley.bus import mark_processed
    from parley.bus.models import ProcessedMessage

    # Given a published message, its pending row, an unpublished one and a processed marker
    relay = OutboxRelay(
        sessions, broker, keep_published=dt.timedelta(0), keep_processed=dt.timedelta(0), forget_pending_after=dt.timedelta(0)
    )
    await stage_committed(sessions, [_doc(n=1)], "documents")
    await relay.flush()
    await stage_committed(sessions, [_doc(n=2)], "documents")
    async with unit_of_work(sessions) as session:
        assert await mark_processed(session, "worker", "k1", "m1")
        assert not await mark_processed(session, "worker", "k1", "m1")
    # When housekeeping runs with zero retention
    await relay.maintain()
    # Then only the unpublished message is left
    assert await count_outbox(sessions) == 1 and await count_outbox(sessions, published_at=None) == 1
    async with unit_of_work(sessions) as session:
        assert (await session.execute(select(PendingMessage))).first() is None
        assert (await session.execute(select(ProcessedMessage))).first() is None
