"""Restart recovery: what a stopped gateway left unanswered is answered once by the next one."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from bot.channels.slack.events import to_incoming
from bot.conversation.repository import InboundWriter
from bot.models import InboundMessage
from parley.db import unit_of_work
from tests.bot.conftest import TEAM, Stack, dm

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


async def test_restart_answers_interrupted_messages_once(make_stack) -> None:
    # Given a gateway that stored two DMs but was stopped while their answers were held back
    first: Stack = await make_stack()
    first.retrieval.gate.clear()
    await first.post_slack(dm("What sizes do the boots come in?"))
    await first.post_slack(dm("Can I pay by invoice?"))
    await first.retrieval.started.wait()
    await first.close()  # graceful stop: the held answers are cancelled and their claims given back
    rows = await first.messages()
    assert [r.status for r in rows] == ["received", "received"] and first.slack.posted == []
    # And one of them left mid-answer by a crashed process (its claim is 10 minutes old), and a third, too old DM
    crashed_claim = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)).isoformat()
    async with unit_of_work(first.sessions, admin=True) as session:
        await session.execute(update(InboundMessage).where(InboundMessage.id == rows[1].id).values(
            status="answering", context={**rows[1].context, "claimed_at": crashed_claim}))
    stale = await _store_old_message(first)
    first.retrieval.gate.set()
    # When two gateways start on the same database (a restart racing a second replica)
    second: Stack = await make_stack()
    third: Stack = await make_stack()
    await second.settle()
    await third.settle()
    # Then each interrupted message is answered exactly once, and the old one is left alone
    posted = second.slack.posted
    assert len(posted) == 2
    by_id = {m.id: m for m in await second.messages()}
    assert by_id[rows[0].id].status == by_id[rows[1].id].status == "answered"
    assert by_id[stale].status == "received"


async def _store_old_message(stack: Stack) -> str:
    """A DM stored 2 hours ago (beyond the 30-minute recovery window) and never answered."""
    payload = dm("Hello from two hours ago")
    accepted = await InboundWriter(stack.sessions).add(to_incoming(stack.tenant_id, TEAM, payload["event"]))
    async with unit_of_work(stack.sessions, admin=True) as session:
        await session.execute(update(InboundMessage).where(InboundMessage.id == accepted.message_id)
                              .values(received_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)))
    return accepted.message_id
