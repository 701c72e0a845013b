"""The analytics queries: aggregates in SQL (one GROUP BY each), bounded selections for percentiles.

Every statement names the tenant on every table it reads (and the session is bound to the tenant,
so `parley.db` filters every ORM statement once more). They run on SQLite and PostgreSQL alike:
plain CASE/SUM/COUNT, no JSON operators, no percentile functions (percentiles are taken in Python
over at most :data:`SAMPLE_LIMIT` rows, the newest).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import and_, case, false, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.models import AnswerFeedback, Conversation, DeliveryFailure, HandoffEvent, InboundMessage
from parley.repository import scope_session

ANSWERED, REFUSED, HANDED_OFF, SILENT, BAD_QUESTION = "answered", "refused", "handed_off", "silent", "bad_question"
#: Not answered because the tenant's plan had no questions left (`tenants` quotas).
OVER_QUOTA = "quota_exceeded"
#: The outcomes that make a message a question the bot decided on.
QUESTION_OUTCOMES = (ANSWERED, REFUSED, HANDED_OFF)
#: Conversation states in which a person owns it.
HUMAN_STATES = ("waiting_for_human", "with_human")
#: Most rows a percentile (or the to-do list) is computed over: the newest of the window.
SAMPLE_LIMIT = 20_000
TODO_LIMIT = 2_000


@dataclass(frozen=True)
class OutcomeCount:
    channel: str
    outcome: str | None
    count: int


@dataclass(frozen=True)
class ConversationCount:
    channel: str
    conversations: int
    with_questions: int
    handed_off: int
    resolved: int


@dataclass(frozen=True)
class TodoRow:
    message_id: str
    text: str
    channel: str
    received_at: dt.datetime
    why: str
    citations: Any
    comments: tuple[str, ...] = ()


def _count_if(condition: Any) -> Any:
    return func.sum(case((condition, 1), else_=0))


class AnalyticsRepository:
    """The tenant's traffic between ``since`` and ``until``."""

    def __init__(self, session: AsyncSession, tenant_id: str, *, since: dt.datetime, until: dt.datetime) -> None:
        self.session = scope_session(session, tenant_id)
        self.tenant_id = tenant_id
        self.since, self.until = since, until

    def _messages(self) -> Any:
        m = InboundMessage
        return and_(m.tenant_id == self.tenant_id, m.received_at >= self.since, m.received_at < self.until)

    async def outcomes(self) -> list[OutcomeCount]:
        """Messages by channel and outcome (None: no outcome recorded)."""
        m = InboundMessage
        stmt = select(m.channel, m.outcome, func.count()).where(self._messages()).group_by(m.channel, m.outcome)
        return [OutcomeCount(c, o, int(n)) for c, o, n in (await self.session.execute(stmt)).all()]

    async def conversations(self) -> list[ConversationCount]:
        """Per channel: conversations with a message in the window, those with a question, those handed
        to a person in the window, and those resolved (`schemas.RESOLUTION_DEFINITION`)."""
        m, f, c, e = InboundMessage, AnswerFeedback, Conversation, HandoffEvent
        # One pass over the window's messages, grouped by conversation; what makes a conversation not
        # resolved is looked up per message (its 👎, its conversation row and handoff log) in
        # uncorrelated IN lists, which a planner hashes once whatever its statistics say - not by
        # joining two aggregates, whose row estimates it easily gets wrong (bench/RESULTS.md).
        # A rating is given after its question arrived: the window bounds the 👎 looked at too.
        rated_down = m.id.in_(select(f.message_id).where(f.tenant_id == self.tenant_id, f.rating == "down",
                                                         f.created_at >= self.since))
        logged = c.id.in_(select(e.conversation_id).where(e.tenant_id == self.tenant_id, e.to_state.in_(HUMAN_STATES),
                                                          e.at >= self.since, e.at < self.until))
        with_person = or_(and_(c.handed_off_at >= self.since, c.handed_off_at < self.until), c.state.in_(HUMAN_STATES), logged)
        per = (select(m.channel.label("channel"),
                      _count_if(m.outcome.in_(QUESTION_OUTCOMES)).label("questions"),
                      _count_if(m.outcome == ANSWERED).label("answered"),
                      _count_if(or_(m.outcome == HANDED_OFF, and_(c.id.is_not(None), with_person))).label("handed"),
                      _count_if(rated_down).label("downs"))
               .select_from(m)
               .outerjoin(c, and_(c.tenant_id == self.tenant_id, c.channel == m.channel,
                                  c.conversation_id == m.conversation_id))
               .where(self._messages()).group_by(m.channel, m.conversation_id).subquery("per"))
        handed, asked = per.c.handed > 0, per.c.questions > 0
        stmt = (select(per.c.channel, func.count(), _count_if(asked), _count_if(and_(asked, handed)),
                       _count_if(and_(asked, per.c.answered > 0, ~handed, per.c.downs == 0)))
                .group_by(per.c.channel))
        return [ConversationCount(ch, int(n), int(q or 0), int(h or 0), int(r or 0))
                for ch, n, q, h, r in (await self.session.execute(stmt)).all()]

    async def feedback(self) -> tuple[int, int, int]:
        """(👍, 👎, answered questions with a rating) on the answers of the window's questions."""
        m, f = InboundMessage, AnswerFeedback
        base = (select(func.count(), _count_if(f.rating == "up"), _count_if(f.rating == "down"))
                .select_from(f).join(m, and_(m.id == f.message_id, m.tenant_id == self.tenant_id))
                .where(f.tenant_id == self.tenant_id, self._messages()))
        _, up, down = (await self.session.execute(base)).one()
        rated = (await self.session.execute(
            select(func.count(func.distinct(f.message_id))).select_from(f)
            .join(m, and_(m.id == f.message_id, m.tenant_id == self.tenant_id))
            .where(f.tenant_id == self.tenant_id, self._messages(), m.outcome == ANSWERED))).scalar_one()
        return int(up or 0), int(down or 0), int(rated or 0)

    async def reply_latencies(self) -> list[tuple[str, float]]:
        """(channel, answer_ms) of the newest replied questions (at most SAMPLE_LIMIT), leaving out
        the questions that waited for the files sent with them (their time is the indexing's)."""
        m = InboundMessage
        waited = func.coalesce(m.context["files_taken"].as_boolean(), false())
        stmt = (select(m.channel, m.answer_ms)
                .where(self._messages(), m.outcome.in_((ANSWERED, REFUSED)), m.answer_ms.is_not(None), waited.is_(false()))
                .order_by(m.received_at.desc()).limit(SAMPLE_LIMIT))
        return [(ch, float(ms)) for ch, ms in (await self.session.execute(stmt)).all()]

    async def human_replies(self) -> list[tuple[str, dt.datetime, dt.datetime | None]]:
        """(channel, handed off at, first human reply at) of conversations handed off in the window."""
        c = Conversation
        stmt = (select(c.channel, c.handed_off_at, c.first_human_reply_at)
                .where(c.tenant_id == self.tenant_id, c.handed_off_at >= self.since, c.handed_off_at < self.until)
                .order_by(c.handed_off_at.desc()).limit(SAMPLE_LIMIT))
        return [(ch, at, first) for ch, at, first in (await self.session.execute(stmt)).all()]

    async def delivery_failures(self) -> list[tuple[str, str, int]]:
        d = DeliveryFailure
        stmt = (select(d.reason_code, d.by, func.count())
                .where(d.tenant_id == self.tenant_id, d.at >= self.since, d.at < self.until)
                .group_by(d.reason_code, d.by).order_by(func.count().desc(), d.reason_code, d.by))
        return [(r, b, int(n)) for r, b, n in (await self.session.execute(stmt)).all()]

    async def todo(self) -> tuple[list[TodoRow], int]:
        """The newest refused questions and 👎'd answers of the window (at most TODO_LIMIT), and how
        many there are in all. A question rated 👎 by several people is one row, with each comment."""
        m, f = InboundMessage, AnswerFeedback
        refused = (select(m.id, m.text, m.channel, m.received_at, m.citations, literal(None).label("sources"),
                          literal(None).label("comment"), literal("refused").label("why"))
                   .where(self._messages(), m.outcome == REFUSED))
        not_refused = or_(m.outcome.is_(None), m.outcome != REFUSED)  # a refused answer rated 👎 counts once
        down = (select(m.id, m.text, m.channel, m.received_at, m.citations, f.sources, f.comment,
                       literal("thumbs_down").label("why"), f.question)
                .join(f, and_(f.message_id == m.id, f.tenant_id == self.tenant_id))
                .where(self._messages(), f.rating == "down"))
        total = (await self.session.execute(select(func.count()).select_from(refused.subquery()))).scalar_one()
        total += (await self.session.execute(
            select(func.count(func.distinct(f.message_id))).select_from(f)
            .join(m, and_(m.id == f.message_id, m.tenant_id == self.tenant_id))
            .where(self._messages(), f.tenant_id == self.tenant_id, f.rating == "down", not_refused))).scalar_one()
        rows: dict[str, TodoRow] = {}
        for stmt in (refused, down):
            result = await self.session.execute(stmt.order_by(m.received_at.desc()).limit(TODO_LIMIT))
            for id_, text, channel, at, citations, sources, comment, why, *asked in result.all():
                seen = rows.get(id_)
                if seen is not None:  # another rater's 👎 on the same answer: keep every comment
                    rows[id_] = replace(seen, comments=seen.comments + ((comment,) if comment else ()))
                    continue
                rows[id_] = TodoRow(id_, text or (asked[0] if asked else "") or "", channel, at, why,
                                    citations or sources, (comment,) if comment else ())
        newest = sorted(rows.values(), key=lambda r: (r.received_at, r.message_id), reverse=True)[:TODO_LIMIT]
        return newest, int(total)
