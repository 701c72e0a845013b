"""Recording a rating of an answer: idempotent by state, changeable, with an optional comment.

    rate(message, rater, up|down)   the first click inserts the row (the question, the answer's
                                    citations as its sources, the answerer); the same rating again
                                    changes nothing; the other rating replaces it (a 👎's comment
                                    goes when the rater changes their mind to 👍)
    add_comment(...)                a 👎's comment (a Slack modal, the web chat, the message after
                                    Instagram's "what was wrong?")
    request_comment / take_requested_comment
                                    Instagram: the 👎 asks for a comment in the conversation; the
                                    rater's next message there within `COMMENT_WINDOW` is the comment

Only an answered message can be rated (its reply is what is judged), and only by whoever may see
it: ``asker`` (when the door knows who asked: Instagram, a widget visitor) must be its sender, or
the message is "not found" like any message of another tenant. Services never commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation.repository import ANSWERED, InboundRepository
from bot.feedback.repository import FeedbackRepository
from bot.models import AnswerFeedback, InboundMessage
from parley.db import new_id, utcnow
from parley.errors import InvalidInput, NotFound

UP, DOWN = "up", "down"
RATINGS = (UP, DOWN)
EMOJI = {UP: "👍", DOWN: "👎"}
PREFIX = "feedback"
MAX_COMMENT_CHARS = 2000
#: How long after Instagram's "what was wrong?" the rater's next message is taken as the comment.
COMMENT_WINDOW = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class Rated:
    id: str
    message_id: str
    rating: str
    comment: str | None
    created: bool
    #: The rating is new or different: counted (`parley_gateway_feedback`) and shown to the rater.
    changed: bool


def action_id(rating: str, message_id: str) -> str:
    return f"{PREFIX}:{rating}:{message_id}"


def parse_action(text: str | None) -> tuple[str, str] | None:
    """``feedback:<up|down>:<message id>`` -> (rating, message id); anything else None."""
    parts = (text or "").split(":")
    if len(parts) != 3 or parts[0] != PREFIX or parts[1] not in RATINGS or not parts[2] or len(parts[2]) > 32:
        return None
    return parts[1], parts[2]


def quick_replies(message_id: str) -> list[dict[str, str]]:
    """Instagram quick replies (Send API ``message.quick_replies``) rating an answer."""
    return [{"content_type": "text", "title": EMOJI[r], "payload": action_id(r, message_id)} for r in RATINGS]


def _rated(row: AnswerFeedback, *, created: bool, changed: bool) -> Rated:
    return Rated(id=row.id, message_id=row.message_id, rating=row.rating, comment=row.comment, created=created,
                 changed=changed)


def _comment(text: str | None) -> str | None:
    text = (text or "").strip()
    if len(text) > MAX_COMMENT_CHARS:
        raise InvalidInput(f"a comment is at most {MAX_COMMENT_CHARS} characters (this one has {len(text)})")
    return text or None


async def _answered(session: AsyncSession, tenant_id: str, message_id: str, asker: str | None) -> InboundMessage:
    row = await InboundRepository(session, tenant_id).find(message_id)
    if row is None or (asker is not None and row.sender_id != asker):
        raise NotFound(f"no such answer: {message_id}")
    if row.status != ANSWERED or not row.reply:
        raise InvalidInput("this message has no answer to rate (yet)")
    return row


async def rate(session: AsyncSession, *, tenant_id: str, message_id: str, rater_id: str, rating: str, channel: str,
               comment: str | None = None, asker: str | None = None) -> Rated:
    if rating not in RATINGS:
        raise InvalidInput(f"a rating is 'up' or 'down', not {rating!r}")
    if not rater_id:
        raise InvalidInput("who rated the answer is not known")
    text = _comment(comment)
    if text is not None and rating != DOWN:
        raise InvalidInput("a comment goes with a 👎 (rating 'down')")
    message = await _answered(session, tenant_id, message_id, asker)
    repo = FeedbackRepository(session, tenant_id)
    now = utcnow()
    created = await repo.insert_once({
        "id": new_id(), "message_id": message.id, "rating": rating, "comment": text, "channel": channel[:16],
        "rater_id": rater_id[:255], "question": message.text or "", "sources": list(message.citations or []),
        "answerer": str((message.context or {}).get("answered_by") or "")[:64], "created_at": now, "updated_at": now,
    })
    row = await repo.of_rater(message.id, rater_id[:255])
    if row is None:  # deleted between the insert and here (an erasure): nothing to say about it
        raise NotFound(f"no such answer: {message_id}")
    if created:
        return _rated(row, created=True, changed=True)
    changed = row.rating != rating
    if changed:
        row.rating = rating
        row.comment = text  # a 👎's comment does not survive a change of mind (and a 👍 has none)
        row.comment_requested_at = None
        row.updated_at = now
    elif text is not None and text != row.comment:
        row.comment = text
        row.updated_at = now
    return _rated(row, created=False, changed=changed)


async def add_comment(session: AsyncSession, *, tenant_id: str, message_id: str, rater_id: str, comment: str,
                      channel: str, asker: str | None = None) -> Rated:
    """The rater's comment on their 👎 (a comment without a rating yet is a 👎 with it)."""
    text = _comment(comment)
    if text is None:
        raise InvalidInput("the comment is empty")
    row = await FeedbackRepository(session, tenant_id).of_rater(message_id, rater_id[:255])
    if row is None or row.rating != DOWN:
        return await rate(session, tenant_id=tenant_id, message_id=message_id, rater_id=rater_id, rating=DOWN,
                          channel=channel, comment=text, asker=asker)
    changed = row.comment != text
    if changed:
        row.comment = text
        row.comment_requested_at = None
        row.updated_at = utcnow()
    return _rated(row, created=False, changed=False)


async def request_comment(session: AsyncSession, *, tenant_id: str, feedback_id: str) -> None:
    row = await FeedbackRepository(session, tenant_id).get(feedback_id)
    row.comment_requested_at = utcnow()


async def take_requested_comment(session: AsyncSession, *, tenant_id: str, channel: str, rater_id: str,
                                 text: str) -> Rated | None:
    """When the rater was asked for a comment on a 👎 here lately, ``text`` is it: stored, and the
    request closed. None: it is a message like any other."""
    repo = FeedbackRepository(session, tenant_id)
    row = await repo.awaiting_comment(channel=channel, rater_id=rater_id[:255], since=utcnow() - COMMENT_WINDOW)
    comment = (text or "").strip()
    if row is None or not comment:
        return None
    row.comment = comment[:MAX_COMMENT_CHARS]
    row.comment_requested_at = None
    row.updated_at = utcnow()
    return _rated(row, created=False, changed=False)


def feedback_json(row: AnswerFeedback) -> dict[str, Any]:
    return {"id": row.id, "message_id": row.message_id, "rating": row.rating, "comment": row.comment,
            "channel": row.channel, "rater_id": row.rater_id, "answerer": row.answerer,
            "created_at": row.created_at.isoformat() if row.created_at else None,
            "updated_at": row.updated_at.isoformat() if row.updated_at else None}
