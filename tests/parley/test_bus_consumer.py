"""The consumer wrapper against real RabbitMQ and real databases."""

from __future__ import annotations

import asyncio
from collections import Counter

import aio_pika
import pydantic
import pytest
from sqlalchemy import select

from parley.bus import Consumer, Envelope, Failure, RabbitBroker, Received, consuming, context, stage
from parley.bus.envelope import H_ATTEMPTS, H_CONSUMER, H_ERROR, H_ERROR_CODE, H_QUEUE
from parley.bus.models import DeadLetter
from parley.db import unit_of_work
from parley.errors import Unavailable, UnsupportedType
from parley.bus.models import OutboxMessage
from tests.parley.bus_support import drain, eventually, publish_direct

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


class Uploaded(pydantic.BaseModel):
    document_id: str


def _upload(doc: str = "d1", tenant: str = "t1") -> Envelope:
    return Envelope.new("document.uploaded", tenant_id=tenant, payload={"document_id": doc})


async def _effects(sessions) -> Counter[str]:
    """The handlers' database effect: one staged notice per processed document."""
    async with unit_of_work(sessions) as session:
        rows = (await session.execute(select(OutboxMessage.body).where(OutboxMessage.message_type == "notice.requested"))).scalars()
        return Counter(Envelope.from_bytes(body).payload["document_id"] for body in rows)


def _notice(msg: Received[Uploaded], kind: str = "indexed") -> Envelope:
    return Envelope.new("notice.requested", tenant_id=msg.envelope.tenant_id, payload={"document_id": msg.payload.document_id, "kind": kind})


def _consumer(broker, sessions, **kwargs) -> Consumer:
    kwargs.setdefault("max_attempts", 4)
    return Consumer(name="documents-test", queue="documents", broker=broker, sessions=sessions, requeue_pause=0.05, **kwargs)


async def test_handler_commits_then_acks_with_context_bound(sessions, broker: RabbitBroker) -> None:
    consumer = _consumer(broker, sessions)
    seen = []

    @consumer.handler("document.uploaded", Uploaded)
    async def index(msg: Received[Uploaded]) -> None:
        seen.append((msg.payload, msg.envelope.attempt, context.current()))
        stage(msg.session, _notice(msg), "notifications")

    envelope = _upload("d1")
    await publish_direct(broker, envelope, "documents")
    async with consuming(consumer):
        await eventually(lambda: consumer.outcomes["ok"] == 1)
    [(payload, attempt, ctx)] = seen
    assert payload == Uploaded(document_id="d1") and attempt == 1
    assert ctx == {"correlation_id": envelope.correlation_id, "message_id": envelope.id, "tenant_id": "t1", "message_type": "document.uploaded"}
    assert await _effects(sessions) == {"d1": 1}
    assert await broker.message_count(broker.topology.queue("documents")) == 0  # acked


async def test_transient_errors_retry_through_the_delay_tiers_then_succeed(sessions, broker: RabbitBroker) -> None:
    consumer = _consumer(broker, sessions)
    attempts: list[int] = []

    @consumer.handler("document.uploaded", Uploaded)
    async def flaky(msg: Received[Uploaded]) -> None:
        stage(msg.session, _notice(msg), "notifications")  # rolled back when the attempt fails
        attempts.append(msg.envelope.attempt)
        if msg.envelope.attempt < 3:
            raise Unavailable("embedding service returned 503")

    await publish_direct(broker, _upload("d2"), "documents")
    async with consuming(consumer):
        await eventually(lambda: consumer.outcomes["ok"] == 1)
    assert attempts == [1, 2, 3]
    assert consumer.outcomes == {"retry": 2, "ok": 1}
    assert await _effects(sessions) == {"d2": 1}  # the failed attempts left nothing behind


async def test_a_permanent_error_goes_straight_to_the_dlq_with_a_readable_reason(sessions, broker: RabbitBroker) -> None:
    consumer = _consumer(broker, sessions)
    hook_calls: list[Failure] = []

    async def mark_failed(session, envelope: Envelope, failure: Failure) -> None:
        hook_calls.append(failure)
        # the domain marks its row failed; here: a "failed" notice, in the dead-letter step's transaction
        stage(session, Envelope.new("notice.requested", tenant_id=envelope.tenant_id, payload={"document_id": envelope.payload["document_id"], "kind": "failed"}), "notifications")

    @consumer.handler("document.uploaded", Uploaded, on_dead_letter=mark_failed)
    async def index(msg: Received[Uploaded]) -> None:
        raise UnsupportedType("cannot read .exe files")

    envelope = _upload("d3")
    await publish_direct(broker, envelope, "documents")
    async with consuming(consumer):
        await eventually(lambda: consumer.outcomes["dead"] == 1)
    # Then one attempt only, the hook ran once, the DLQ has the message with the reason in headers
    assert [f.reason for f in hook_calls] == ["unsupported_type: cannot read .exe files"]
    assert await _effects(sessions) == {"d3": 1}
    [dead] = await drain(broker, broker.topology.dlq("documents"))
    assert Envelope.from_bytes(dead.body).id == envelope.id and dead.message_id == envelope.id
    assert dead.headers[H_ERROR] == "unsupported_type: cannot read .exe files"
    assert dead.headers[H_ERROR_CODE] == "unsupported_type"
    assert dead.headers[H_QUEUE] == "documents" and dead.headers[H_CONSUMER] == "documents-test"
    [entry] = dead.headers[H_ATTEMPTS]
    assert entry["attempt"] == 1 and entry["error"] == "unsupported_type: cannot read .exe files" and entry["at"]
    async with unit_of_work(sessions) as session:
        [row] = (await session.execute(select(DeadLetter))).scalars().all()
    assert (row.queue, row.message_id, row.tenant_id, row.error_code) == ("documents", envelope.id, "t1", "unsupported_type")


async def test_exhausted_attempts_dead_letter_with_the_history_and_run_the_hook(sessions, broker: RabbitBroker) -> None:
    consumer = _consumer(broker, sessions, max_attempts=3)
    hook_calls: list[tuple[int, str]] = []

    async def mark_failed(session, envelope: Envelope, failure: Failure) -> None:
        hook_calls.append((envelope.attempt, failure.reason))

    @consumer.handler("document.uploaded", Uploaded, on_dead_letter=mark_failed)
    async def broken(msg: Received[Uploaded]) -> None:
        raise RuntimeError(f"boom {msg.envelope.attempt}")  # unknown error: retryable, but bounded

    await publish_direct(broker, _upload("d4"), "documents")
    async with consuming(consumer):
        await eventually(lambda: consumer.outcomes["dead"] == 1)
    assert consumer.outcomes == {"retry": 2, "dead": 1}
    assert hook_calls == [(3, "gave up after 3 attempts; last error: RuntimeError: boom 3")]
    [dead] = await drain(broker, broker.topology.dlq("documents"))
    assert [(a["attempt"], a["error"]) for a in dead.headers[H_ATTEMPTS]] == [
        (1, "RuntimeError: boom 1"),
        (2, "RuntimeError: boom 2"),
        (3, "RuntimeError: boom 3"),
    ]
    assert dead.headers[H_ERROR] == "gave up after 3 attempts; last error: RuntimeError: boom 3"
    async with unit_of_work(sessions) as session:
        [row] = (await session.execute(select(DeadLetter))).scalars().all()
    assert len(row.attempts) == 3 and row.reason.startswith("gave up after 3 attempts")


async def test_unknown_types_and_unreadable_bodies_are_dead_lettered(sessions, broker: RabbitBroker) -> None:
    consumer = _consumer(broker, sessions)
    await publish_direct(broker, Envelope.new("document.deleted", tenant_id="t1"), "documents")
    channel = await broker.connection.channel()
    exchange = await channel.get_exchange(broker.topology.exchange)
    await exchange.publish(aio_pika.Message(b"not json", message_id="raw-1"), routing_key="documents")
    async with consuming(consumer):
        await eventually(lambda: consumer.outcomes["dead"] == 2)
    async with unit_of_work(sessions) as session:
        rows = (await session.execute(select(DeadLetter).order_by(DeadLetter.message_type))).scalars().all()
    assert [(r.message_type, r.error_code) for r in rows] == [("document.deleted", "no_handler"), ("unknown", "malformed_message")]
    assert rows[1].message_id == "raw-1" and rows[1].body == "not json"


async def test_a_duplicated_message_changes_nothing_twice(sessions, broker: RabbitBroker) -> None:
    # Given the same message delivered twice in a row, and twice concurrently
    consumer = _consumer(broker, sessions, prefetch=4)
    both_running = asyncio.Barrier(2)

    @consumer.handler("document.uploaded", Uploaded)
    async def index(msg: Received[Uploaded]) -> None:
        if msg.payload.document_id == "concurrent":
            await asyncio.wait_for(both_running.wait(), 10)
        stage(msg.session, _notice(msg), "notifications")

    sequential, concurrent = _upload("sequential"), _upload("concurrent")
    for envelope in (concurrent, concurrent):
        await publish_direct(broker, envelope, "documents")
    async with consuming(consumer):
        await eventually(lambda: sum(consumer.outcomes.values()) == 2)
        for envelope in (sequential, sequential):
            await publish_direct(broker, envelope, "documents")
        await eventually(lambda: sum(consumer.outcomes.values()) == 4)
    # Then each document was processed once in effect
    assert await _effects(sessions) == {"sequential": 1, "concurrent": 1}
    assert consumer.outcomes["ok"] == 2
    assert consumer.outcomes["duplicate"] + consumer.outcomes["retry"] == 2


async def test_graceful_stop_finishes_what_it_can_and_requeues_the_rest(sessions, broker: RabbitBroker) -> None:
    consumer = _consumer(broker, sessions, prefetch=2)
    release_quick = asyncio.Event()

    @consumer.handler("document.uploaded", Uploaded)
    async def index(msg: Received[Uploaded]) -> None:
        stage(msg.session, _notice(msg), "notifications")
        if msg.payload.document_id == "quick":
            await release_quick.wait()
        else:
            await asyncio.Event().wait()  # never finishes

    await publish_direct(broker, _upload("quick"), "documents")
    await publish_direct(broker, _upload("stuck"), "documents")
    await consumer.start()
    await eventually(lambda: consumer.in_flight == 2)
    # When stop begins, "quick" finishes within the deadline and "stuck" does not
    stopping = asyncio.create_task(consumer.stop(timeout=1.0))
    await asyncio.sleep(0)
    release_quick.set()
    await stopping
    # Then quick was committed and acked; stuck was rolled back and is back in the queue
    assert consumer.outcomes == {"ok": 1, "requeued": 1}
    assert await _effects(sessions) == {"quick": 1}
    queue = broker.topology.queue("documents")
    await eventually(lambda: _equals(broker.message_count(queue), 1))
    [message] = await drain(broker, queue)
    assert Envelope.from_bytes(message.body).payload == {"document_id": "stuck"}


async def _equals(awaitable, expected) -> bool:
    return await awaitable == expected


async def test_a_handler_that_outlives_its_deadline_is_retried_then_dead_lettered(sessions, broker: RabbitBroker) -> None:
    # RabbitMQ would close the channel of a delivery held past consumer_timeout; the wrapper gives up first
    consumer = _consumer(broker, sessions, max_attempts=2, handler_timeout=0.1)

    @consumer.handler("document.uploaded", Uploaded)
    async def hangs(msg: Received[Uploaded]) -> None:
        await asyncio.Event().wait()

    await publish_direct(broker, _upload("d5"), "documents")
    async with consuming(consumer):
        await eventually(lambda: consumer.outcomes["dead"] == 1)
    assert consumer.outcomes == {"retry": 1, "dead": 1}
    async with unit_of_work(sessions) as session:
        [row] = (await session.execute(select(DeadLetter))).scalars().all()
    assert row.error_code == "timeout"
    assert row.reason == "gave up after 2 attempts; last error: timeout: handler did not finish within 0.1s"
