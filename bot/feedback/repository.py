"""Feedback rows, tenant-scoped; one per (answer, rater), written with an insert that a concurrent
double click cannot duplicate (the unique constraint decides)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.models import AnswerFeedback
from parley.repository import TenantRepository


class FeedbackRepository(TenantRepository[AnswerFeedback]):
    model = AnswerFeedback
    noun = "feedback"

    async def of_rater(self, message_id: str, rater_id: str) -> AnswerFeedback | None:
        stmt = self.select().where(AnswerFeedback.message_id == message_id, AnswerFeedback.rater_id == rater_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def insert_once(self, values: dict[str, Any]) -> bool:
        """Insert unless (message_id, rater_id) exists already; True when this call inserted it."""
        insert = pg_insert if self.session.get_bind().dialect.name == "postgresql" else sqlite_insert
        result = await self.session.execute(
            insert(AnswerFeedback).values(tenant_id=self.tenant_id, **values)
            .on_conflict_do_nothing(index_elements=["message_id", "rater_id"]))
        return (result.rowcount or 0) == 1

    async def of_messages(self, message_ids: list[str]) -> list[AnswerFeedback]:
        if not message_ids:
            return []
        stmt = self.select().where(AnswerFeedback.message_id.in_(message_ids)).order_by(AnswerFeedback.created_at)
        return list((await self.session.execute(stmt)).scalars())

    async def awaiting_comment(self, *, channel: str, rater_id: str, since: dt.datetime) -> AnswerFeedback | None:
        """The rater's 👎 asked for a comment after ``since`` and not yet given one."""
        stmt = self.select().where(
            AnswerFeedback.channel == channel, AnswerFeedback.rater_id == rater_id, AnswerFeedback.rating == "down",
            AnswerFeedback.comment.is_(None), AnswerFeedback.comment_requested_at.is_not(None),
            AnswerFeedback.comment_requested_at >= since,
        ).order_by(AnswerFeedback.comment_requested_at.desc()).limit(1)
        return (await self.session.execute(stmt)).scalar_one_or_none()
