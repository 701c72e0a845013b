"""Outbound webhooks end to end on the in-memory broker, over SQLite and PostgreSQL: a tenant event
fanned out to its endpoints, signed deliveries a receiver verifies, retries with the same
webhook-id, timeouts, huge answers, dead letters and their replay, secret rotation, and an endpoint
disabled after failing for a day."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from parley.bus import Envelope, replay
from parley.bus.contracts import stage_event
from parley.bus.dead_letters import NotReplayable
from parley.bus.models import DeadLetter, OutboxMessage
from parley.db import unit_of_work
from parley.webhook_signing import WebhookVerificationError, verify
from tenants.models import ChannelKind
from tenants.service import install_channel
from tests.webhooks.conftest import Answer, Receiver, Stack, eventually
from webhooks import service
from webhooks.schemas import WebhookPayload


async def _emit(stack: Stack, event_type: str = "job.completed", key: str | None = None, **data: object) -> None:
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        stage_event(session, tenant_id=stack.tenant_id, event_type=event_type, data=dict(data) or {"job_id": "j1"},
                    idempotency_key=key)


async def _settled(stack: Stack, endpoint_id: str, status: str, count: int = 1) -> list:
    async def check() -> list | None:
        rows = await stack.deliveries(endpoint_id)
        return rows if len([r for r in rows if r.status == status]) >= count else None
    return await eventually(check, what=f"{count} delivery(ies) {status}")


async def test_an_event_reaches_each_subscribed_endpoint_signed(stack: Stack, receiver: Receiver) -> None:
    # Given an endpoint subscribed to job.completed, one subscribed only to document.failed, and a
    # disabled one subscribed to job.completed
    endpoint, secret = await stack.endpoint(receiver.url, "job.completed,document.indexed")
    other, _ = await stack.endpoint(receiver.url + "?other", "document.failed")
    off, _ = await stack.endpoint(receiver.url + "?off", "job.completed")
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        await service.set_enabled(session, tenant_id=stack.tenant_id, ref=off.id, enabled=False)
    # When a job completes
    await _emit(stack, job_id="job-1", total=2)
    [delivery] = await _settled(stack, endpoint.id, "delivered")
    # Then the subscribed endpoint got exactly one POST, which verifies with its secret
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    verify(secret, request["headers"], request["body"])
    assert request["headers"]["webhook-id"] == delivery.id and delivery.id.startswith("msg_")
    assert request["headers"]["Content-Type"] == "application/json"
    body = receiver.bodies()[0]
    assert WebhookPayload.model_validate_json(request["body"]).model_dump() == body  # the documented shape, nothing else
    assert body["type"] == "job.completed" and body["data"] == {"job_id": "job-1", "total": 2}
    assert body["timestamp"].endswith("Z") and body["id"] == delivery.id
    # And the log says delivered, with the answer, without keeping the body
    assert (delivery.attempts, delivery.last_status_code, delivery.response_excerpt, delivery.body) == (1, 200, "ok", None)
    # And the other two endpoints got nothing
    assert await stack.deliveries(other.id) == [] and await stack.deliveries(off.id) == []
    assert stack.deps.outcomes["delivered"] == 1


@pytest.mark.parametrize("db_backend", ["sqlite"])  # HTTP behaviour: the database does not matter
async def test_the_same_event_twice_is_delivered_once(stack: Stack, receiver: Receiver) -> None:
    # Given an endpoint
    endpoint, _ = await stack.endpoint(receiver.url, "job.completed")
    # When the same event is emitted twice (a redelivered message finishing the same job again)
    await _emit(stack, key="job-completed:j1")
    await _emit(stack, key="job-completed:j1")
    await _emit(stack, key="job-completed:j2")
    # Then each distinct event is one delivery
    await _settled(stack, endpoint.id, "delivered", 2)
    await eventually(lambda: stack.consumer.outcomes["duplicate"] + stack.consumer.outcomes["ok"] >= 5)
    assert len(await stack.deliveries(endpoint.id)) == 2 and len(receiver.requests) == 2


async def test_failures_are_retried_with_the_same_webhook_id_until_delivered(stack: Stack, receiver: Receiver) -> None:
    # Given a receiver that answers 500 twice, then 200
    endpoint, secret = await stack.endpoint(receiver.url, "job.completed")
    receiver.script[:] = [Answer(500, body=b"busy"), Answer(503, body=b"still busy"), Answer(200)]
    # When an event is emitted
    await _emit(stack)
    [delivery] = await _settled(stack, endpoint.id, "delivered")
    # Then it got three POSTs with the same webhook-id, each signed for its own timestamp
    assert len(receiver.requests) == 3
    assert {r["headers"]["webhook-id"] for r in receiver.requests} == {delivery.id}
    for request in receiver.requests:
        verify(secret, request["headers"], request["body"])
    # And it is recorded delivered once, after three attempts, each in its history
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 3, 200)
    assert [(h["status_code"], h["error"]) for h in delivery.details["history"]] == [
        (500, "HTTP 500"), (503, "HTTP 503"), (200, None)]
    assert stack.deps.outcomes == {"failed": 2, "delivered": 1}
    registry = stack.deps.metrics_registry
    assert registry.get_sample_value("parley_webhook_deliveries_total", {"outcome": "failed"}) == 2
    assert registry.get_sample_value("parley_webhook_deliveries_total", {"outcome": "delivered"}) == 1
    # And the endpoint's failure streak ended with the success
    assert (await stack.endpoint_row(endpoint.id)).failing_since is None


@pytest.mark.parametrize("db_backend", ["sqlite"])  # HTTP behaviour: the database does not matter
async def test_a_slow_receiver_times_out_and_is_retried(stack: Stack, receiver: Receiver) -> None:
    # Given a receiver that takes 3 s to answer the first time (the timeout is 0.5 s)
    endpoint, _ = await stack.endpoint(receiver.url, "job.completed")
    receiver.script[:] = [Answer(200, delay=3.0), Answer(200)]
    # When an event is emitted
    await _emit(stack)
    [delivery] = await _settled(stack, endpoint.id, "delivered")
    # Then the first attempt is logged as a timeout, and the retry delivered it
    first, second = delivery.details["history"]
    assert first["status_code"] is None and first["error"].startswith("timeout: no complete answer within 0.5 s")
    assert second == {**second, "status_code": 200, "error": None}


@pytest.mark.parametrize("db_backend", ["sqlite"])  # HTTP behaviour: the database does not matter
async def test_only_a_few_kilobytes_of_a_huge_answer_are_read(stack: Stack, receiver: Receiver) -> None:
    # Given a receiver answering 500 with a 64 MB body, then 200
    endpoint, _ = await stack.endpoint(receiver.url, "job.completed")
    receiver.script[:] = [Answer(500, huge=64 * 1024 * 1024), Answer(200)]
    # When an event is emitted
    await _emit(stack)
    [delivery] = await _settled(stack, endpoint.id, "delivered")
    # Then the failed attempt kept an excerpt of at most 2 KB, and the sender hung up long before
    # the receiver could write its whole answer
    assert delivery.details["history"][0]["status_code"] == 500
    await eventually(lambda: receiver.written, what="the receiver noticed the hang-up")
    assert receiver.written[0] < 64 * 1024 * 1024


@pytest.mark.parametrize("db_backend", ["sqlite"])  # HTTP behaviour: the database does not matter
async def test_a_huge_answer_leaves_an_excerpt_of_at_most_2_kb(stack: Stack, receiver: Receiver) -> None:
    # Given a receiver that always answers 500 with a 1 MB body (4 attempts)
    endpoint, _ = await stack.endpoint(receiver.url, "job.completed")
    receiver.script[:] = [Answer(500, huge=1024 * 1024) for _ in range(4)]
    await _emit(stack)
    [delivery] = await _settled(stack, endpoint.id, "dead")
    # Then the excerpt is clipped to 2 KB
    assert delivery.response_excerpt is not None and 1000 < len(delivery.response_excerpt) <= 2048


async def test_a_permanent_failure_is_dead_lettered_with_status_and_excerpt_and_replay_delivers(
        stack: Stack, receiver: Receiver) -> None:
    # Given a receiver that answers 500 "database down" to every one of the 4 attempts
    endpoint, secret = await stack.endpoint(receiver.url, "job.completed")
    receiver.script[:] = [Answer(500, body=b"database down") for _ in range(4)]
    # When an event is emitted
    await _emit(stack)
    [delivery] = await _settled(stack, endpoint.id, "dead")
    # Then it was tried 4 times and dead-lettered, the reason carrying the last status and answer
    assert delivery.attempts == 4 and delivery.last_status_code == 500 and delivery.response_excerpt == "database down"
    assert delivery.body is not None  # kept: a replay sends it again
    async with unit_of_work(stack.sessions, admin=True) as session:
        [dead] = (await session.execute(select(DeadLetter).where(DeadLetter.queue == "webhooks"))).scalars().all()
    assert dead.reason.startswith("gave up after 4 attempts") and "HTTP 500" in dead.reason and "database down" in dead.reason
    assert len(stack.broker.dead["webhooks"]) == 1
    # When the receiver is fixed and the dead letter replayed
    await replay(stack.sessions, stack.broker, ids=[dead.id], relay=stack.relay)
    [delivery] = await _settled(stack, endpoint.id, "delivered")
    # Then it is delivered with the same webhook-id, and verifies
    assert len(receiver.requests) == 5 and {r["headers"]["webhook-id"] for r in receiver.requests} == {delivery.id}
    verify(secret, receiver.requests[-1]["headers"], receiver.requests[-1]["body"])
    assert delivery.attempts == 5 and stack.broker.dead["webhooks"] == []


async def test_a_rotated_secret_signs_beside_the_new_one_until_the_overlap_ends(stack: Stack, receiver: Receiver) -> None:
    # Given an endpoint whose secret is rotated with a one-hour overlap
    endpoint, old = await stack.endpoint(receiver.url, "job.completed")
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        _, new = await service.rotate_secret(session, tenant_id=stack.tenant_id, ref=endpoint.id, box=stack.box,
                                             overlap=dt.timedelta(hours=1))
    assert new != old
    # When a delivery goes out during the overlap
    await _emit(stack, key="e1")
    await _settled(stack, endpoint.id, "delivered")
    first = receiver.requests[0]
    # Then it carries two signatures, and a receiver knowing either secret accepts it
    assert len(first["headers"]["webhook-signature"].split(" ")) == 2
    verify(old, first["headers"], first["body"])
    verify(new, first["headers"], first["body"])
    # When the overlap has passed
    stack.clock.advance(hours=2)
    await _emit(stack, key="e2")
    await _settled(stack, endpoint.id, "delivered", 2)
    second = receiver.requests[1]
    # Then only the new secret signs
    ts = int(second["headers"]["webhook-timestamp"])
    assert len(second["headers"]["webhook-signature"].split(" ")) == 1
    verify(new, second["headers"], second["body"], now=ts)
    with pytest.raises(WebhookVerificationError):
        verify(old, second["headers"], second["body"], now=ts)


async def test_an_endpoint_failing_for_a_day_is_disabled_and_gets_nothing_more(stack: Stack, receiver: Receiver) -> None:
    # Given a tenant whose Slack bot was installed by U0ADMIN, and an endpoint whose receiver always fails
    async with unit_of_work(stack.sessions, admin=True) as session:
        await install_channel(session, box=stack.box, tenant_id=stack.tenant_id, kind=ChannelKind.slack,
                              external_id="T0ACME", secrets={"bot_token": "xoxb-1"},
                              details={"team_id": "T0ACME", "installer_user_id": "U0ADMIN"})
    endpoint, _ = await stack.endpoint(receiver.url, "job.completed")
    receiver.script[:] = [Answer(500) for _ in range(100)]
    await _emit(stack, key="e1")
    await _settled(stack, endpoint.id, "dead")
    row = await stack.endpoint_row(endpoint.id)
    assert row.enabled and row.failing_since is not None
    # When a day passes and another delivery fails
    stack.clock.advance(hours=24, minutes=1)
    await _emit(stack, key="e2")
    await _settled(stack, endpoint.id, "dead", 2)
    # Then the endpoint is disabled with a reason, after one attempt of that delivery
    row = await stack.endpoint_row(endpoint.id)
    assert not row.enabled and "every delivery failed for 24 h" in row.disabled_reason
    assert "parley webhooks enable" in row.disabled_reason
    e2 = next(d for d in await stack.deliveries(endpoint.id) if d.attempts == 1)
    assert e2.status == "dead"
    # And the tenant's Slack admin is told, once, in a DM
    async with unit_of_work(stack.sessions, admin=True) as session:
        notices = (await session.execute(select(OutboxMessage).where(OutboxMessage.routing_key == "notifications"))).scalars().all()
    [notice] = [Envelope.from_bytes(n.body).payload for n in notices]
    assert notice["target"] == {"channel": "slack", "team": "T0ACME", "channel_id": "U0ADMIN", "user": "U0ADMIN"}
    assert notice["text"].startswith(f"Parley stopped sending webhooks to {endpoint.url}: every delivery failed for 24 h")
    # And a later event makes no delivery for it
    requests = len(receiver.requests)
    await _emit(stack, key="e3")
    await eventually(lambda: stack.consumer.outcomes["ok"] >= 3)
    assert len(await stack.deliveries(endpoint.id)) == 2 and len(receiver.requests) == requests
    # And the dead letter of the delivery that found it failing is not replayable while it is disabled
    async with unit_of_work(stack.sessions, admin=True) as session:
        dead = (await session.execute(select(DeadLetter).where(DeadLetter.queue == "webhooks",
                                                               DeadLetter.error_code == "webhook_endpoint_disabled"))).scalar_one()
    with pytest.raises(NotReplayable, match="is disabled"):
        await replay(stack.sessions, stack.broker, ids=[dead.id], relay=stack.relay, rules=service.REPLAY_RULES)
    # When the tenant enables it again, its failure streak starts over
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        again = await service.set_enabled(session, tenant_id=stack.tenant_id, ref=endpoint.id[:6], enabled=True)
    assert again.enabled and again.failing_since is None and again.disabled_reason is None
    # And once the receiver is fixed, the replay delivers what it missed
    receiver.script[:] = []
    await replay(stack.sessions, stack.broker, ids=[dead.id], relay=stack.relay, rules=service.REPLAY_RULES)
    delivered = await _settled(stack, endpoint.id, "delivered")
    assert [d.id for d in delivered if d.status == "delivered"] == [e2.id]


@pytest.mark.parametrize("stack_overrides", [{"webhooks_allow_private": False}])
@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_url_that_now_resolves_to_a_private_address_is_refused_at_delivery(stack: Stack, receiver: Receiver) -> None:
    # Given an endpoint registered while private addresses were allowed, and a worker that refuses them
    endpoint, _ = await stack.endpoint(receiver.url, "job.completed")
    # When an event is emitted
    await _emit(stack)
    [delivery] = await _settled(stack, endpoint.id, "dead")
    # Then nothing was sent, and each attempt says why
    assert receiver.requests == []
    assert delivery.last_error.startswith("webhook_url_rejected: the URL must use https")


@pytest.mark.parametrize("db_backend", ["sqlite"])  # HTTP behaviour: the database does not matter
async def test_finished_deliveries_leave_the_log_after_30_days(stack: Stack, receiver: Receiver) -> None:
    # Given a delivered event
    endpoint, _ = await stack.endpoint(receiver.url, "job.completed")
    await _emit(stack, key="old")
    [old] = await _settled(stack, endpoint.id, "delivered")
    # When 31 days pass and another event comes
    stack.clock.advance(days=31)
    await _emit(stack, key="new")
    # Then the old delivery is gone from the log and the new one is there
    async def only_new() -> list | None:
        rows = await stack.deliveries(endpoint.id)
        return rows if [r.event_key for r in rows] == ["new"] else None
    await eventually(only_new, what="the old delivery pruned")
    assert old.id not in {r.id for r in await stack.deliveries(endpoint.id)}


async def test_the_connect_time_resolver_refuses_a_name_that_resolves_to_a_private_address(receiver: Receiver) -> None:
    # Given the worker's HTTP client without the development flag, and a name that resolves to
    # 127.0.0.1 (as a rebinding DNS answer would, after the URL check passed)
    from webhooks.delivery import client_session, post

    http = client_session(allow_private=False)
    try:
        port = receiver.url.split(":")[2].split("/")[0]
        # When a delivery is attempted there
        result = await post(http, f"http://localhost:{port}/hook", b"{}", {}, timeout=5)
    finally:
        await http.close()
    # Then no connection was made, and the attempt says why
    assert receiver.requests == []
    assert result.status_code is None and result.error is not None
    assert result.error.startswith("webhook_url_rejected: localhost resolved to") and "loopback" in result.error
