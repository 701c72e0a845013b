"""Gateway tables: inbound messages (idempotent on the vendor's event id), webhook dedupe, conversation turns."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from parley.db import Base, TenantOwned, UTCDateTime, new_id, utcnow


class InboundMessage(TenantOwned, Base):
    __tablename__ = "inbound_message"
    __table_args__ = (
        UniqueConstraint("channel", "external_event_id"),
        Index("ix_inbound_message_status_received", "status", "received_at"),
        # a conversation's messages, newest first (the messaging window's last message, the handoff's transcript)
        Index("ix_inbound_message_conversation", "tenant_id", "conversation_id", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # slack / instagram / web
    external_event_id: Mapped[str] = mapped_column(String(255))
    conversation_id: Mapped[str] = mapped_column(String(255))
    sender_id: Mapped[str] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(Text, default="")
    # received -> answering -> answered | failed | expired | ignored | waiting (for its files; then received again)
    status: Mapped[str] = mapped_column(String(16), default="received")
    reply: Mapped[str | None] = mapped_column(Text)
    citations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    ack_ms: Mapped[float | None] = mapped_column(Float)
    answer_ms: Mapped[float | None] = mapped_column(Float)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # channel routing data for the reply
    #: What became of it, set when it finishes: answered / refused (nothing found) / handed_off (a
    #: person was asked for) / silent (a person owns the conversation) / bad_question (empty, huge, wordless).
    outcome: Mapped[str | None] = mapped_column(String(16))


class WebhookEvent(Base):
    """Dedupe of vendor webhooks on (source, external id); processed only when new."""

    __tablename__ = "webhook_event"
    __table_args__ = (UniqueConstraint("source", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))  # slack / instagram / shopify
    external_id: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(128), default="")
    tenant_id: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="received")
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ConversationTurn(TenantOwned, Base):
    """One turn of a DM conversation, kept so a follow-up question is understood."""

    __tablename__ = "conversation_turn"
    __table_args__ = (Index("ix_conversation_turn_conv", "tenant_id", "conversation_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # user / assistant
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Conversation(TenantOwned, Base):
    """Who owns a customer conversation: the bot, or a person (`bot.conversation.handoff`).

    ``conversation_id`` is ``inbound_message.conversation_id``. A row exists once something about
    the conversation had to be remembered (a refused answer, a handoff); no row means ``bot``.
    States: bot -> waiting_for_human -> with_human -> closed (or back to bot); ``route`` is the
    customer's channel routing data, so a staff reply can be sent to them.
    """

    __tablename__ = "conversation"
    __table_args__ = (
        UniqueConstraint("tenant_id", "channel", "conversation_id"),
        Index("ix_conversation_state_deadline", "state", "reply_deadline_at"),
        Index("ix_conversation_staff_thread", "staff_channel_id", "staff_thread_ts"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    conversation_id: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[str] = mapped_column(String(255), default="")
    route: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(24), default="bot")  # bot / waiting_for_human / with_human / closed
    handoff_reason: Mapped[str | None] = mapped_column(String(32))  # asked / keyword / refusals / thumbs_down / staff
    refused_streak: Mapped[int] = mapped_column(Integer, default=0)
    handed_off_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    first_human_reply_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    staff_team_id: Mapped[str | None] = mapped_column(String(64))
    staff_channel_id: Mapped[str | None] = mapped_column(String(64))
    staff_thread_ts: Mapped[str | None] = mapped_column(String(64))
    reply_deadline_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class HandoffEvent(TenantOwned, Base):
    """One transition of a conversation (or a timeout), with what caused it and who."""

    __tablename__ = "handoff_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[str] = mapped_column(String(32), ForeignKey("conversation.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str] = mapped_column(String(24))
    to_state: Mapped[str] = mapped_column(String(24))
    trigger: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(255), default="")
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class HandoffMessage(TenantOwned, Base):
    """A message to the customer that is not the bot's answer to a question: a staff member's reply
    relayed from the staff thread (``author`` staff), or a handoff notice (``author`` bot: the
    timeout, the hand-back). Deduplicated on ``external_id`` (the Slack message); ``status``
    pending -> sent | failed, so a relay interrupted by a restart is sent by the next sweep. The
    web chat shows these by polling (it has no push)."""

    __tablename__ = "handoff_message"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_id"),
        Index("ix_handoff_message_conv", "conversation_id", "created_at"),
        Index("ix_handoff_message_status", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[str] = mapped_column(String(32), ForeignKey("conversation.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    author: Mapped[str] = mapped_column(String(16))  # staff / bot
    author_id: Mapped[str] = mapped_column(String(255), default="")
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending / sent / failed
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class AnswerFeedback(TenantOwned, Base):
    """A rater's 👍/👎 on one answer (`bot.feedback`), with what the answer was made of: the question,
    its sources (the answer's citations) and the answerer (extractive, or the chat model). One row
    per (answer, rater): a re-click changes the rating, a duplicate changes nothing."""

    __tablename__ = "answer_feedback"
    __table_args__ = (
        UniqueConstraint("message_id", "rater_id"),
        Index("ix_answer_feedback_tenant_created", "tenant_id", "created_at"),
        Index("ix_answer_feedback_rater", "tenant_id", "channel", "rater_id"),  # a rater's pending comment; erasure
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    #: The inbound_message (the question) whose answer is rated.
    message_id: Mapped[str] = mapped_column(String(32), ForeignKey("inbound_message.id", ondelete="CASCADE"))
    rating: Mapped[str] = mapped_column(String(8))  # up / down
    comment: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(16))
    rater_id: Mapped[str] = mapped_column(String(255))
    question: Mapped[str] = mapped_column(Text, default="")
    sources: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    answerer: Mapped[str] = mapped_column(String(64), default="")
    #: When the rater was asked for a comment in the conversation (Instagram: "what was wrong?"):
    #: their next message there, soon after, is the comment instead of a question.
    comment_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DeliveryFailure(TenantOwned, Base):
    """A message to a customer that did not go out, and why: outside the vendor's messaging window
    (``outside_window``), refused by the vendor (``graph_refused``), ... ``by``: the bot's answer or
    a person's reply. Shown with the conversation; never silently lost."""

    __tablename__ = "delivery_failure"
    __table_args__ = (
        Index("ix_delivery_failure_tenant_at", "tenant_id", "at"),
        Index("ix_delivery_failure_conversation", "tenant_id", "channel", "conversation_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    conversation_id: Mapped[str] = mapped_column(String(255))
    #: The inbound_message being answered, when it was the bot's answer.
    message_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("inbound_message.id", ondelete="CASCADE"),
                                                   index=True)
    reason_code: Mapped[str] = mapped_column(String(32))  # outside_window / graph_refused / ...
    detail: Mapped[str] = mapped_column(Text, default="")
    by: Mapped[str] = mapped_column(String(8), default="bot")  # bot / human
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
