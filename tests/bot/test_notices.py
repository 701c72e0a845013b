"""The notifications consumer: the document worker's notices posted into the DM they belong to,
once, through the real broker; vendor failures retried through the bus; web targets dropped."""

from __future__ import annotations

import pytest

from parley.bus import Envelope, Outgoing
from parley.bus.contracts import NOTICE_REQUESTED, QUEUE_NOTIFICATIONS, NoticeRequested
from tests.bot.conftest import TEAM, Stack, eventually

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def notice(stack: Stack, text: str, target: dict) -> Envelope:
    return Envelope.new(NOTICE_REQUESTED, tenant_id=stack.tenant_id,
                        payload=NoticeRequested(text=text, target=target, kind="indexed").model_dump())


async def test_a_notice_is_posted_once_even_when_delivered_twice_and_slack_fails_first(stack: Stack) -> None:
    # Given a running notifications consumer, and Slack failing the first chat.postMessage with a 500
    [consumer] = stack.gw.consumers
    await stack.gw.bus_ready.wait()
    stack.slack.fail("chat.postMessage", 500)
    slack_target = {"channel": "slack", "team": TEAM, "channel_id": "D0442US94JD", "user": "U043H11ES4V"}
    envelope = notice(stack, "indexed returns.md (4 sections)", slack_target)
    web = notice(stack, "indexed faq.md (2 sections)", {"channel": "web"})
    # When the worker's notice is published twice (a redelivery), along with one for the web chat
    for message in (envelope, envelope, web):
        await stack.gw.broker.publish(Outgoing.of(message), routing_key=QUEUE_NOTIFICATIONS)
    # Then it reaches the DM exactly once, after a retry through the bus's delay tier
    [posted] = await stack.slack.wait_posted(1)
    assert posted["text"] == "indexed returns.md (4 sections)" and posted["channel"] == "D0442US94JD"
    await eventually(lambda: consumer.outcomes["ok"] >= 2 and consumer.outcomes["retry"] >= 1
                     and consumer.outcomes["duplicate"] >= 1)
    assert len(stack.slack.posted) == 1 and stack.slack.calls["chat.postMessage"] == 2
