"""Dead letters: listed from the table, replayed through the outbox, drained from the broker's DLQ."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from parley.bus import Consumer, Envelope, OutboxRelay, RabbitBroker, Received, consuming, describe, list_dead_letters, replay
from parley.bus.dead_letters import NotReplayable
from parley.bus.envelope import H_REPLAY_OF
from parley.db import unit_of_work
from parley.errors import UnsupportedType
from parley.bus.models import OutboxMessage
from tests.parley.bus_support import eventually, stage_committed

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


async def test_list_and_replay_dead_letters(sessions, broker: RabbitBroker) -> None:
    # Given three uploads that failed permanently (the parser could not read them)
    relay = OutboxRelay(sessions, broker)
    originals = [Envelope.new("document.uploaded", tenant_id=f"t{i}", payload={"doc": f"d{i}"}) for i in range(3)]
    await stage_committed(sessions, originals, "documents")
    await relay.flush()
    parser_fixed = False
    deliveries: list[Received[dict]] = []
    consumer = Consumer(name="worker", queue="documents", broker=broker, sessions=sessions)

    @consumer.handler("document.uploaded")
    async def index(msg: Received[dict]) -> None:
        deliveries.append(msg)
        if not parser_fixed:
            raise UnsupportedType(f"cannot parse {msg.payload['doc']}")

    dlq = broker.topology.dlq("documents")
    async with consuming(consumer):
        await eventually(lambda: consumer.outcomes["dead"] == 3)

        # When an operator lists them
        async with unit_of_work(sessions, admin=True) as session:
            listed = [describe(row) for row in await list_dead_letters(session, queue="documents")]
        # Then each shows id, type, tenant, reason, attempts and when, newest first
        assert {row["message_id"] for row in listed} == {e.id for e in originals}
        assert [row["id"] for row in listed] == sorted((row["id"] for row in listed), reverse=True)
        assert {row["reason"] for row in listed} == {f"unsupported_type: cannot parse d{i}" for i in range(3)}
        assert {(row["type"], row["attempts"], row["status"]) for row in listed} == {("document.uploaded", 1, "dead")}
        assert {row["tenant_id"] for row in listed} == {"t0", "t1", "t2"} and all(row["when"] for row in listed)
        assert await broker.message_count(dlq) == 3

        # When one is replayed before anything changed, it is refused: it failed for good
        first = next(row for row in listed if row["message_id"] == originals[0].id)
        assert all(row["failed_for_good"] for row in listed)
        with pytest.raises(NotReplayable, match="cannot parse d0: it failed for good"):
            await replay(sessions, broker, queue="documents", ids=[first["id"]], relay=relay)
        assert await replay(sessions, broker, queue="documents", relay=relay) == []  # all: it is left too
        # When the parser is fixed and the operator forces a replay of one dead letter
        parser_fixed = True
        [replayed] = await replay(sessions, broker, queue="documents", ids=[first["id"]], relay=relay, force=True)
        await eventually(lambda: consumer.outcomes["ok"] == 1)
        # Then it ran again as a fresh first attempt, carrying the replay in its headers
        again = deliveries[-1]
        assert again.envelope.payload == {"doc": "d0"} and again.envelope.attempt == 1
        assert again.envelope.id == replayed.replay_message_id != originals[0].id
        assert again.envelope.idempotency_key == originals[0].idempotency_key
        assert again.envelope.correlation_id == originals[0].correlation_id
        async with unit_of_work(sessions) as session:
            headers = (
                await session.execute(select(OutboxMessage.headers).where(OutboxMessage.message_id == again.envelope.id))
            ).scalar_one()
        assert headers[H_REPLAY_OF] == originals[0].id
        # and the broker's DLQ no longer holds it; the table shows it replayed
        assert sorted(m.message_id for m in await _peek(broker, dlq)) == sorted(e.id for e in originals[1:])
        async with unit_of_work(sessions, admin=True) as session:
            assert len(await list_dead_letters(session, queue="documents")) == 2
            statuses = {r.message_id: r.status for r in await list_dead_letters(session, include_replayed=True)}
        assert statuses == {originals[0].id: "replayed", originals[1].id: "dead", originals[2].id: "dead"}

        # When the rest are replayed at once
        assert len(await replay(sessions, broker, queue="documents", relay=relay, force=True)) == 2
        await eventually(lambda: consumer.outcomes["ok"] == 3)
    # Then nothing is dead any more, in the table or in the broker
    async with unit_of_work(sessions, admin=True) as session:
        assert await list_dead_letters(session, queue="documents") == []
    assert await broker.message_count(dlq) == 0
    # and replaying again finds nothing
    assert await replay(sessions, broker, queue="documents", relay=relay, force=True) == []


async def _peek(broker: RabbitBroker, queue: str) -> list:
    """Look at a queue's messages and put them back."""
    channel = await broker.connection.channel()
    try:
        q = await channel.declare_queue(queue, passive=True, robust=False)
        held = []
        while (m := await q.get(no_ack=False, fail=False)) is not None:
            held.append(m)
        for m in held:
            await m.nack(requeue=True)
        return held
    finally:
        await channel.close()
