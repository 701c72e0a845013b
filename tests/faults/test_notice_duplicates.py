"""Duplicate `notice.requested` deliveries reaching the real gateway's notifications consumer and the
Slack emulator. tests/bot/test_notices.py covers one envelope delivered twice; this covers what the
document worker produces when two copies of one failing upload fail at the same moment: two
different messages carrying the same idempotency key. Either way the person is told once."""

from __future__ import annotations

import pytest

from parley.bus import Envelope, Outgoing
from parley.bus.contracts import NOTICE_REQUESTED, QUEUE_NOTIFICATIONS, NoticeRequested
from tests.bot.conftest import TEAM, Stack, embedder, eventually, make_stack, stack  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

TARGET = {"channel": "slack", "team": TEAM, "channel_id": "D0442US94JD", "user": "U043H11ES4V"}


def _failed_notice(stack: Stack, text: str, key: str) -> Envelope:
    """As `ingestion.documents.service.mark_failed` stages it (a fresh message id each time)."""
    return Envelope.new(NOTICE_REQUESTED, tenant_id=stack.tenant_id, idempotency_key=key,
                        payload=NoticeRequested(text=text, target=TARGET, document_id="d" * 32, kind="failed"))


async def test_notices_of_one_failure_are_posted_once(stack: Stack) -> None:
    [consumer] = stack.gw.consumers
    await stack.gw.bus_ready.wait()
    # Given the failure notice of one message staged twice (two messages, one idempotency key), each
    # delivered twice, and the notice of another failure
    first = _failed_notice(stack, "could not index scan.pdf: PDF has no extractable text", "document-failed:m1")
    twin = _failed_notice(stack, "could not index scan.pdf: PDF has no extractable text", "document-failed:m1")
    other = _failed_notice(stack, "could not index empty.txt: the file is empty", "document-failed:m2")
    assert first.id != twin.id
    for envelope in (first, twin, first, twin, other):
        await stack.gw.broker.publish(Outgoing.of(envelope), routing_key=QUEUE_NOTIFICATIONS)
    # Then each failure reaches the DM once
    await eventually(lambda: sum(consumer.outcomes.values()) >= 5)
    assert sorted(p["text"] for p in stack.slack.posted) == [
        "could not index empty.txt: the file is empty", "could not index scan.pdf: PDF has no extractable text"]
    assert consumer.outcomes["ok"] == 2 and consumer.outcomes["duplicate"] == 3
