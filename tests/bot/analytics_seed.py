"""A known month of traffic for the analytics tests: conversations with known outcomes across
channels, feedback, handoffs and delivery failures for tenant ``acme``, plus another tenant's
traffic that must never be counted and an old conversation outside the default 30-day window.

Expected figures (the tests assert them; how each follows from the rows is in `EXPECTED`'s notes):

    conversation  channel    messages (outcome, answer_ms)                          extra
    C1            slack      return policy (answered 1000), a failed message          👍
    C2            slack      where is my order (refused 2000), order status please    👎 "useless" on the first
                             (refused 3000)
    C3            slack      How long does shipping take? (answered 4000)             👎 "too vague", 👎 "wrong"
    C4            instagram  do you ship to Canada (refused 500), gift cards          👍 on gift cards
                             (answered 1500), where's my order? (refused 700)
    C5            instagram  where's my order please (handed_off), hello? (silent)    with_human, reply after 120 s
    C6            web        PayPal (answered 800)                                    handed off 3 d ago, reply 600 s
    C7            web        "" (bad_question), blue one's price (quota_exceeded)
    C8            web        warranty question sent with a file (answered 60000,      waited for its file
                             files_taken)
    C9            slack      I want a human (handed_off)                              waiting_for_human, no reply
    C10           slack      40 days ago: where is my order (refused 900)             outside 30 d
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.models import AnswerFeedback, Conversation, DeliveryFailure, HandoffEvent, InboundMessage
from parley.db import new_id, unit_of_work
from tenants import service as tenants


@dataclass
class Seeded:
    tenant_id: str
    other_tenant_id: str
    now: dt.datetime


def _cite(*titles: str) -> list[dict[str, Any]]:
    return [{"n": i, "kind": "document", "title": t, "document_id": "d" * 32, "chunk_id": "c"} for i, t in enumerate(titles, 1)]


async def seed(sessions: async_sessionmaker[AsyncSession], *, now: dt.datetime, tenant_name: str = "acme",
               other_name: str = "other", tenant_id: str | None = None, other_tenant_id: str | None = None) -> Seeded:
    """Seed the month (tenants created unless their ids are given)."""
    async with unit_of_work(sessions, admin=True) as session:
        if tenant_id is None:
            tenant_id = (await tenants.create_tenant(session, name=tenant_name)).id
        if other_tenant_id is None:
            other_tenant_id = (await tenants.create_tenant(session, name=other_name)).id
    ago = lambda **kw: now - dt.timedelta(**kw)  # noqa: E731
    msgs: list[InboundMessage] = []

    def msg(tenant: str, channel: str, conv: str, text: str, outcome: str | None, at: dt.datetime, answer_ms: float | None,
            *, status: str = "answered", citations: list[dict[str, Any]] | None = None, **context: Any) -> InboundMessage:
        row = InboundMessage(id=new_id(), tenant_id=tenant, channel=channel, external_event_id=new_id(), conversation_id=conv,
                             sender_id="cust-" + conv, text=text, status=status, outcome=outcome, received_at=at,
                             answered_at=at + dt.timedelta(milliseconds=answer_ms or 0) if status == "answered" else None,
                             answer_ms=answer_ms, ack_ms=3.0, citations=citations, context={"route": {}, **context})
        msgs.append(row)
        return row

    t = tenant_id
    c1 = msg(t, "slack", "C1", "What is your return policy?", "answered", ago(days=5), 1000, citations=_cite("returns.md"))
    msg(t, "slack", "C1", "And for sale items?", None, ago(days=5, minutes=-1), None, status="failed")
    c2a = msg(t, "slack", "C2", "where is my order", "refused", ago(days=4), 2000, citations=_cite("shipping.md"))
    msg(t, "slack", "C2", "order status please", "refused", ago(days=4, minutes=-2), 3000)
    c3 = msg(t, "slack", "C3", "How long does shipping take?", "answered", ago(days=3), 4000, citations=_cite("shipping.md"))
    msg(t, "instagram", "C4", "do you ship to Canada", "refused", ago(days=2), 500)
    c4b = msg(t, "instagram", "C4", "Do you have gift cards?", "answered", ago(days=2, minutes=-1), 1500, citations=_cite("faq.md"))
    msg(t, "instagram", "C4", "where's my order?", "refused", ago(days=1), 700, citations=_cite("shipping.md", "faq.md"))
    msg(t, "instagram", "C5", "where's my order please", "handed_off", ago(days=2, hours=1), None)
    msg(t, "instagram", "C5", "hello?", "silent", ago(days=2), None)
    msg(t, "web", "C6", "Can I pay with PayPal?", "answered", ago(days=3, hours=1), 800, citations=_cite("payments.md"))
    msg(t, "web", "C7", "", "bad_question", ago(days=6), 20)
    msg(t, "web", "C7", "What does the blue one cost?", "quota_exceeded", ago(days=6, minutes=-1), 15)
    msg(t, "web", "C8", "Is this covered by the warranty?", "answered", ago(days=1, hours=2), 60000, files_taken=True)
    msg(t, "slack", "C9", "I want a human", "handed_off", ago(hours=1), None)
    msg(t, "slack", "C10", "where is my order", "refused", ago(days=40), 900)
    # another tenant: the same questions, many times; none of it may be counted for acme
    o = other_tenant_id
    other_msgs = [msg(o, "slack", f"X{i}", "where is my order", "refused", ago(days=1), 50) for i in range(5)]
    other_msgs.append(msg(o, "web", "X9", "Do you ship to Canada?", "answered", ago(days=1), 10))
    async with unit_of_work(sessions, admin=True) as session:
        session.add_all(msgs)
        await session.flush()

        def rate(row: InboundMessage, rater: str, rating: str, comment: str | None = None, **kw: Any) -> AnswerFeedback:
            return AnswerFeedback(tenant_id=row.tenant_id, message_id=row.id, rating=rating, comment=comment, channel=row.channel,
                                  rater_id=rater, question=row.text, sources=row.citations or [], answerer="extractive",
                                  created_at=row.received_at + dt.timedelta(minutes=1),
                                  updated_at=row.received_at + dt.timedelta(minutes=1), **kw)

        session.add_all([
            rate(c1, "U1", "up"), rate(c4b, "U2", "up"), rate(c3, "U3", "down", "too vague"), rate(c3, "U4", "down", "wrong"),
            rate(c2a, "U5", "down", "useless"),
            rate(other_msgs[0], "U1", "down", "other tenant"), rate(other_msgs[-1], "U2", "up"),
        ])
        c5 = Conversation(tenant_id=t, channel="instagram", conversation_id="C5", state="with_human", handoff_reason="asked",
                          handed_off_at=ago(days=2, hours=1), first_human_reply_at=ago(days=2, hours=1, seconds=-120))
        c6 = Conversation(tenant_id=t, channel="web", conversation_id="C6", state="closed", handoff_reason="keyword",
                          handed_off_at=ago(days=3), first_human_reply_at=ago(days=3, seconds=-600), closed_at=ago(days=2))
        c9 = Conversation(tenant_id=t, channel="slack", conversation_id="C9", state="waiting_for_human",
                          handoff_reason="asked", handed_off_at=ago(hours=1))
        c2 = Conversation(tenant_id=t, channel="slack", conversation_id="C2", state="bot", refused_streak=2)
        x = Conversation(tenant_id=o, channel="slack", conversation_id="X0", state="waiting_for_human", handed_off_at=ago(hours=2))
        session.add_all([c5, c6, c9, c2, x])
        await session.flush()
        session.add_all([
            HandoffEvent(tenant_id=t, conversation_id=c5.id, from_state="bot", to_state="waiting_for_human", trigger="asked",
                         at=ago(days=2, hours=1)),
            HandoffEvent(tenant_id=t, conversation_id=c5.id, from_state="waiting_for_human", to_state="with_human",
                         trigger="staff_reply", at=ago(days=2, hours=1, seconds=-120)),
            HandoffEvent(tenant_id=t, conversation_id=c6.id, from_state="bot", to_state="waiting_for_human", trigger="keyword",
                         at=ago(days=3)),
            HandoffEvent(tenant_id=t, conversation_id=c9.id, from_state="bot", to_state="waiting_for_human", trigger="asked",
                         at=ago(hours=1)),
        ])
        session.add_all([
            DeliveryFailure(tenant_id=t, channel="instagram", conversation_id="C5", reason_code="outside_window", by="human",
                            at=ago(days=1)),
            DeliveryFailure(tenant_id=t, channel="instagram", conversation_id="C5", reason_code="outside_window", by="human",
                            at=ago(hours=5)),
            DeliveryFailure(tenant_id=t, channel="instagram", conversation_id="C4", reason_code="graph_refused", by="bot",
                            at=ago(days=2)),
            DeliveryFailure(tenant_id=t, channel="instagram", conversation_id="C4", reason_code="graph_refused", by="bot",
                            at=ago(days=45)),
            DeliveryFailure(tenant_id=o, channel="instagram", conversation_id="X1", reason_code="outside_window", by="bot",
                            at=ago(days=1)),
        ])
    return Seeded(tenant_id=tenant_id, other_tenant_id=other_tenant_id, now=now)


#: The figures of acme's last 30 days (the default window), as `report_json` gives them.
EXPECTED: dict[str, Any] = {
    # C1..C9: 15 messages (C10 is 40 days old)
    "messages": 15, "conversations": 9,
    # answered: C1, C3, C4 gift cards, C6, C8; refused: C2 x2, C4 Canada, C4 order; handed off: C5, C9
    "questions": 11, "answered": 5, "refused": 4, "handed_off": 2,
    "with_person": 1, "not_questions": 1, "over_quota": 1, "other": 1,
    "answered_rate": round(5 / 11, 4), "refused_rate": round(4 / 11, 4), "handed_off_rate": round(2 / 11, 4),
    # with a question: all but C7 (8); handed off: C5, C6, C9; resolved: C1, C4, C8 (C2 nothing answered,
    # C3 rated 👎, C5/C6/C9 handed off)
    "resolution": {"resolved": 3, "conversations": 8, "rate": 0.375},
    "handed_off_conversations": 3, "automation_rate": 0.625,
    # 👍 C1, C4; 👎 C3 twice, C2's refusal once; rated answered questions: C1, C3, C4 of 5 answered
    "feedback": {"up": 2, "down": 3, "up_rate": 0.4, "rated_answers": 3, "rated_share": 0.6},
    # 500 700 800 1000 1500 2000 3000 4000 (C8 waited for its file: left out)
    "reply_latency": {"count": 8, "p50_ms": 1250.0, "p95_ms": 4000.0},
    "first_human_reply": {"handed_off": 3, "replied": 2, "waiting": 1, "p50_seconds": 360.0, "p95_seconds": 600.0},
    "delivery_failures": [{"reason": "outside_window", "by": "human", "count": 2},
                          {"reason": "graph_refused", "by": "bot", "count": 1}],
    "todo_questions": 5,
}

EXPECTED_CHANNELS: dict[str, dict[str, Any]] = {
    "slack": {"conversations": 4, "conversations_with_questions": 4, "questions": 5, "answered": 2, "refused": 2, "handed_off": 1, "resolved": 1,
              "resolution_rate": 0.25, "reply_latency": {"count": 4, "p50_ms": 2500.0, "p95_ms": 4000.0}},
    "instagram": {"conversations": 2, "conversations_with_questions": 2, "questions": 4, "answered": 1, "refused": 2, "handed_off": 1, "resolved": 1,
                  "resolution_rate": 0.5, "reply_latency": {"count": 3, "p50_ms": 700.0, "p95_ms": 1500.0}},
    "web": {"conversations": 3, "conversations_with_questions": 2, "questions": 2, "answered": 2, "refused": 0, "handed_off": 0, "resolved": 1,
            "resolution_rate": 0.5, "reply_latency": {"count": 1, "p50_ms": 800.0, "p95_ms": 800.0}},
}
