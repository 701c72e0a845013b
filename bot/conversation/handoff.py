"""Handoff to a person, as a state machine in code (not a magic string in model output).

A customer conversation (``conversation`` row; none means ``bot``) is in one of four states::

    bot ──(trigger)──> waiting_for_human ──(first staff reply / Take)──> with_human
     ^                   │        │                                       │
     └──(Hand back)──────┘        └──(Resolve)──> closed <──(Resolve)──────┘
                                                    │
                   (a new trigger) ─ waiting_for_human

Triggers (`detect`): the customer asks for a person in plain words (`bot.conversation.triggers`: English,
Spanish, Portuguese, French, German, Italian, Dutch; words, not substrings), one of the tenant's
keywords, the tenant's number of refused answers in a row, or a thumbs-down on the last answer
followed by another question. Staff act from the Slack thread (Take / Resolve / Hand back, and a
reply, which moves ``waiting_for_human`` to ``with_human``) or from the dashboard and the CLI.

Every transition is one conditional UPDATE on the state it was seen in (compare-and-set), so a
double click, a Slack retry or two replicas racing change it once; each one that lands is logged
in ``handoff_event`` and the handoff itself stages ``conversation.handed_off`` in the same unit of
work. While a person owns the conversation the bot answers nothing in it: the customer's messages
are posted into the staff thread instead. The staff side is a `StaffDesk` (Slack:
`bot.channels.slack.desk`); this module never imports a channel.

`Handoffs.sweep` (the gateway's periodic sweep) finds conversations waiting past their reply
deadline (tells the customer once, offers to leave a message, flags the thread), threads that
could not be opened (Slack was down, the process died), and staff replies not yet delivered.
Everything is in the database, so a restarted gateway carries on.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.conversation.retry import RetryPolicy, retrying
from bot.conversation.schemas import Channel, Reply
from bot.conversation.triggers import asks_for_person, keyword_in
from bot.metrics import GatewayMetrics
from bot.models import Conversation, HandoffEvent, HandoffMessage, InboundMessage
from parley.bus.contracts import stage_event
from parley.db import Base, bind_admin, unit_of_work, utcnow
from parley.errors import InvalidInput, NotFound, ParleyError
from parley.repository import TenantRepository
from tenants.handoff import HandoffPolicy, policy_for

log = logging.getLogger("parley.gateway.handoff")

BOT, WAITING, WITH_HUMAN, CLOSED = "bot", "waiting_for_human", "with_human", "closed"
STATES = (BOT, WAITING, WITH_HUMAN, CLOSED)
#: A person owns the conversation: the bot stays silent in it.
PERSON_OWNS = frozenset({WAITING, WITH_HUMAN})
#: to-state -> the states it may be reached from (anything else is a no-op).
ALLOWED: dict[str, frozenset[str]] = {
    WAITING: frozenset({BOT, CLOSED}),
    WITH_HUMAN: frozenset({WAITING, BOT, CLOSED}),
    CLOSED: frozenset({WAITING, WITH_HUMAN}),
    BOT: frozenset({WAITING, WITH_HUMAN}),
}
#: What staff can do from the thread, the dashboard or the CLI, and the state each leads to.
ACTIONS = {"take": WITH_HUMAN, "resolve": CLOSED, "hand_back": BOT}
TRIGGERS = ("asked", "keyword", "refusals", "thumbs_down", "staff")

# --- the phrase matcher: bot.conversation.triggers (asks_for_person, keyword_in, normalize) ----------


# --- state -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationState:
    """A conversation as the core sees it when a message is claimed (detached)."""

    policy: HandoffPolicy
    row_id: str | None = None
    state: str = BOT
    refused_streak: int = 0
    since: dt.datetime | None = None  # the last handoff or close: feedback before it no longer counts

    @property
    def person_owns(self) -> bool:
        return self.state in PERSON_OWNS


class ConversationRepository(TenantRepository[Conversation]):
    model = Conversation
    noun = "conversation"
    label = "conversation_id"

    async def find_by(self, channel: str, conversation_id: str) -> Conversation | None:
        stmt = self.select().where(Conversation.channel == channel, Conversation.conversation_id == conversation_id[:255])
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def listing(self, *, state: str | None = None, limit: int = 100) -> list[Conversation]:
        stmt = self.select().order_by(Conversation.updated_at.desc()).limit(limit)
        if state == "handed_off":
            stmt = stmt.where(Conversation.state.in_(PERSON_OWNS))
        elif state:
            stmt = stmt.where(Conversation.state == state)
        else:
            stmt = stmt.where(Conversation.handed_off_at.is_not(None))
        return list((await self.session.execute(stmt)).scalars())

    async def events(self, row_id: str) -> list[HandoffEvent]:
        stmt = select(HandoffEvent).where(HandoffEvent.tenant_id == self.tenant_id, HandoffEvent.conversation_id == row_id) \
            .order_by(HandoffEvent.at, HandoffEvent.id)
        return list((await self.session.execute(stmt)).scalars())

    async def messages(self, row: Conversation, *, limit: int = 50) -> list[InboundMessage]:
        stmt = select(InboundMessage).where(InboundMessage.tenant_id == self.tenant_id,
                                            InboundMessage.channel == row.channel,
                                            InboundMessage.conversation_id == row.conversation_id) \
            .order_by(InboundMessage.received_at.desc()).limit(limit)
        return list(reversed(list((await self.session.execute(stmt)).scalars())))

    async def relayed(self, row_id: str, *, after: int = 0, limit: int = 200) -> list[HandoffMessage]:
        stmt = select(HandoffMessage).where(HandoffMessage.tenant_id == self.tenant_id,
                                            HandoffMessage.conversation_id == row_id, HandoffMessage.id > after) \
            .order_by(HandoffMessage.id).limit(limit)
        return list((await self.session.execute(stmt)).scalars())


async def load(session: AsyncSession, *, tenant_id: str, channel: str, conversation_id: str) -> ConversationState:
    """The tenant's policy and the conversation's state, for the message being answered."""
    policy = await policy_for(session, tenant_id)
    row = await ConversationRepository(session, tenant_id).find_by(channel, conversation_id)
    if row is None:
        return ConversationState(policy=policy)
    since = max([t for t in (row.handed_off_at, row.closed_at) if t is not None], default=None)
    return ConversationState(policy=policy, row_id=row.id, state=row.state, refused_streak=row.refused_streak or 0,
                             since=since)


async def ensure(session: AsyncSession, *, tenant_id: str, channel: str, conversation_id: str, customer_id: str,
                 route: Mapping[str, Any]) -> Conversation:
    """The conversation's row, created in state ``bot`` if it has none (a race creates it once)."""
    repo = ConversationRepository(session, tenant_id)
    row = await repo.find_by(channel, conversation_id)
    if row is not None:
        return row
    try:
        async with session.begin_nested():
            now = utcnow()
            row = repo.add(Conversation(channel=channel, conversation_id=conversation_id[:255], customer_id=customer_id[:255],
                                        route=dict(route), state=BOT, refused_streak=0, flagged=False, created_at=now,
                                        updated_at=now))
            await session.flush()
            return row
    except IntegrityError:
        found = await repo.find_by(channel, conversation_id)
        if found is None:
            raise
        return found


async def transition(session: AsyncSession, *, tenant_id: str, row_id: str, to: str, trigger: str, actor: str = "",
                     values: Mapping[str, Any] | None = None) -> str | None:
    """Move the conversation to ``to`` if its current state allows it: a compare-and-set on the state
    it was read in, logged in ``handoff_event``. Returns the state it left, or None (a no-op: it was
    already there, or the move is not allowed from where it is)."""
    row = await ConversationRepository(session, tenant_id).find(row_id)
    if row is None:
        raise NotFound(f"no such conversation: {row_id}")
    seen = row.state
    if seen not in ALLOWED[to]:
        return None
    now = utcnow()
    result = await session.execute(
        update(Conversation).where(Conversation.id == row_id, Conversation.tenant_id == tenant_id, Conversation.state == seen)
        .values(state=to, updated_at=now, **(values or {})).execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return None
    session.add(HandoffEvent(tenant_id=tenant_id, conversation_id=row_id, from_state=seen, to_state=to, trigger=trigger,
                             actor=actor[:255], at=now))
    await session.flush()
    return seen


async def thumbs_down_on_last_answer(session: AsyncSession, *, tenant_id: str, channel: str, conversation_id: str,
                                     before_message: str, since: dt.datetime | None) -> bool:
    """Was the conversation's last answer (before this message, after the last handoff) rated down?
    Reads the feedback table (``answer_feedback``) when this installation has it."""
    feedback = Base.metadata.tables.get("answer_feedback")
    if feedback is None:
        return False
    stmt = select(InboundMessage.id).where(
        InboundMessage.tenant_id == tenant_id, InboundMessage.channel == channel,
        InboundMessage.conversation_id == conversation_id, InboundMessage.id != before_message,
        InboundMessage.outcome.in_(("answered", "refused"))).order_by(InboundMessage.received_at.desc()).limit(1)
    if since is not None:
        stmt = stmt.where(InboundMessage.received_at > since)
    last = (await session.execute(stmt)).scalar_one_or_none()
    if last is None:
        return False
    rated = await session.execute(select(feedback.c.id).where(
        feedback.c.tenant_id == tenant_id, feedback.c.message_id == last, feedback.c.rating == "down").limit(1))
    return rated.first() is not None


async def detect(session: AsyncSession, *, tenant_id: str, channel: str, conversation_id: str, message_id: str,
                 text: str, state: ConversationState) -> str | None:
    """The trigger this message pulls (before it is answered), or None. Refusals are counted after."""
    if not state.policy.active or state.person_owns:
        return None
    if asks_for_person(text):
        return "asked"
    if keyword_in(text, state.policy.keywords):
        return "keyword"
    if await thumbs_down_on_last_answer(session, tenant_id=tenant_id, channel=channel, conversation_id=conversation_id,
                                        before_message=message_id, since=state.since):
        return "thumbs_down"
    return None


def refusals_trigger(state: ConversationState) -> bool:
    """Would one more refused answer reach the tenant's threshold?"""
    threshold = state.policy.after_refusals
    return state.policy.active and not state.person_owns and threshold > 0 and state.refused_streak + 1 >= threshold


# --- what the customer is told ---------------------------------------------------------------


def handoff_notice(policy: HandoffPolicy) -> str:
    lines = ["I'm handing this conversation to a person from our team: they will answer you right here."]
    if policy.expected_wait:
        lines.append(f"Expected wait: {policy.expected_wait}.")
    if policy.hours:
        lines.append(f"Our team's hours: {policy.hours}.")
    lines.append("Until then I'll stay out of the way; anything you add here goes to them too.")
    return " ".join(lines)


def timeout_notice(policy: HandoffPolicy) -> str:
    hours = f" (our team's hours: {policy.hours})" if policy.hours else ""
    return ("Sorry, nobody from our team has been able to answer yet. Leave a message here with your question and how "
            f"to reach you, and they will get back to you as soon as they can{hours}.")


RESOLVED_NOTICE = "Our team has marked this conversation as resolved. If you have another question, just ask: I'm here."
HANDED_BACK_NOTICE = "You're back with the assistant: ask me anything, or ask for a person again at any time."

TRIGGER_TEXT = {"asked": "the customer asked for a person", "keyword": "a keyword of yours",
                "refusals": "the bot could not answer several questions in a row",
                "thumbs_down": "a thumbs-down on an answer, then another question", "staff": "taken by staff"}


# --- the staff side --------------------------------------------------------------------------


@dataclass(frozen=True)
class TranscriptLine:
    role: str  # customer / bot / staff
    text: str
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class ThreadOpening:
    """What the staff thread's first message shows."""

    conversation_row_id: str
    channel: str
    customer_id: str
    trigger: str
    lines: tuple[TranscriptLine, ...]
    policy: HandoffPolicy
    timeout_minutes: int


@dataclass(frozen=True)
class Thread:
    team_id: str
    channel_id: str
    ts: str


class StaffDesk(Protocol):
    """Where staff work (Slack). Raises `ParleyError` (a `DeliveryError`) when it cannot post."""

    async def open(self, *, tenant_id: str, team_id: str | None, channel_id: str, opening: ThreadOpening) -> Thread: ...

    async def post(self, *, tenant_id: str, thread: Thread, text: str, actor: str | None = None) -> None:
        """A line in the thread; ``actor`` (who did it: a Slack user id, ``dashboard:…``, ``cli``) leads it."""
        ...


def transcript(rows: Sequence[InboundMessage], *, limit: int = 6) -> tuple[TranscriptLine, ...]:
    lines: list[TranscriptLine] = []
    for m in rows[-limit:]:
        if m.text:
            lines.append(TranscriptLine("customer", m.text[:600]))
        if m.reply:
            sources = tuple(str(c.get("title") or "source") for c in (m.citations or []) if isinstance(c, dict))
            lines.append(TranscriptLine("bot", m.reply[:600], sources))
    return tuple(lines)


def conversation_json(row: Conversation) -> dict[str, Any]:
    def iso(v: dt.datetime | None) -> str | None:
        return v.isoformat() if v is not None else None

    return {"id": row.id, "channel": row.channel, "conversation_id": row.conversation_id, "customer_id": row.customer_id,
            "state": row.state, "handoff_reason": row.handoff_reason, "refused_streak": row.refused_streak,
            "handed_off_at": iso(row.handed_off_at), "first_human_reply_at": iso(row.first_human_reply_at),
            "closed_at": iso(row.closed_at), "reply_deadline_at": iso(row.reply_deadline_at), "flagged": row.flagged,
            "staff_channel_id": row.staff_channel_id, "staff_thread_ts": row.staff_thread_ts,
            "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}


@dataclass
class Handoffs:
    """The handoff's moving parts: handing off, the staff thread, relays, staff actions, the sweep."""

    sessions: async_sessionmaker[AsyncSession]
    channels: Mapping[str, Channel]
    desk: StaffDesk | None = None
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: A staff reply not yet sent after this long is sent by the sweep (its task died with a process).
    relay_grace: dt.timedelta = dt.timedelta(seconds=15)
    #: A thread not opened after this long is opened by the sweep.
    open_grace: dt.timedelta = dt.timedelta(seconds=10)

    # --- handing off (called by the conversation core, in its unit of work) ------------------
    async def hand_off(self, session: AsyncSession, *, tenant_id: str, channel: str, conversation_id: str,
                       customer_id: str, route: Mapping[str, Any], trigger: str, policy: HandoffPolicy,
                       actor: str = "") -> str | None:
        """``bot``/``closed`` -> ``waiting_for_human``: the row id when it happened, else None."""
        row = await ensure(session, tenant_id=tenant_id, channel=channel, conversation_id=conversation_id,
                           customer_id=customer_id, route=route)
        now = utcnow()
        left = await transition(session, tenant_id=tenant_id, row_id=row.id, to=WAITING, trigger=trigger,
                                actor=actor or customer_id, values={
                                    "handoff_reason": trigger, "handed_off_at": now, "reply_deadline_at": now + policy.timeout,
                                    "flagged": False, "first_human_reply_at": None, "closed_at": None, "refused_streak": 0,
                                    "staff_team_id": policy.staff_team_id, "staff_channel_id": policy.staff_channel_id,
                                    "staff_thread_ts": None, "route": dict(route), "customer_id": customer_id[:255]})
        if left is None:
            return None
        stage_event(session, tenant_id=tenant_id, event_type="conversation.handed_off",
                    data={"conversation_id": row.id, "channel": channel, "trigger": trigger, "customer_id": customer_id,
                          "handed_off_at": now.isoformat()},
                    idempotency_key=f"handoff:{row.id}:{now.isoformat()}")
        self.metrics.handoffs.labels(trigger).inc()
        log.info("conversation handed off", extra={"tenant_id": tenant_id, "trigger": trigger, "conversation": row.id})
        return row.id

    async def count_refusal(self, session: AsyncSession, *, tenant_id: str, channel: str, conversation_id: str,
                            customer_id: str, route: Mapping[str, Any]) -> None:
        row = await ensure(session, tenant_id=tenant_id, channel=channel, conversation_id=conversation_id,
                           customer_id=customer_id, route=route)
        await session.execute(update(Conversation).where(Conversation.id == row.id, Conversation.tenant_id == tenant_id)
                              .values(refused_streak=Conversation.refused_streak + 1, updated_at=utcnow())
                              .execution_options(synchronize_session=False))

    async def reset_refusals(self, session: AsyncSession, *, tenant_id: str, row_id: str) -> None:
        await session.execute(update(Conversation).where(Conversation.id == row_id, Conversation.tenant_id == tenant_id,
                                                         Conversation.refused_streak != 0)
                              .values(refused_streak=0).execution_options(synchronize_session=False))

    # --- the staff thread ------------------------------------------------------------------------
    async def open_thread(self, tenant_id: str, row_id: str) -> Thread | None:
        """Post the thread's first message into the staff channel (once: a thread that exists is kept)."""
        if self.desk is None:
            return None
        async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
            repo = ConversationRepository(session, tenant_id)
            row = await repo.find(row_id)
            if row is None or row.state not in PERSON_OWNS or row.staff_thread_ts or not row.staff_channel_id:
                return None
            policy = await policy_for(session, tenant_id)
            lines = transcript(await repo.messages(row, limit=10))
            opening = ThreadOpening(conversation_row_id=row.id, channel=row.channel, customer_id=row.customer_id,
                                    trigger=row.handoff_reason or "asked", lines=lines, policy=policy,
                                    timeout_minutes=int(policy.timeout.total_seconds() // 60))
            team, channel_id = row.staff_team_id, row.staff_channel_id
        try:
            thread = await retrying(lambda: self.desk.open(tenant_id=tenant_id, team_id=team, channel_id=channel_id,  # type: ignore[union-attr]
                                                           opening=opening), policy=self.retry, what="staff thread")
        except ParleyError as exc:
            log.warning("could not open the staff thread (the sweep tries again): %s", exc, extra={"tenant_id": tenant_id})
            return None
        async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
            await session.execute(update(Conversation).where(Conversation.id == row_id, Conversation.tenant_id == tenant_id,
                                                             Conversation.staff_thread_ts.is_(None))
                                  .values(staff_thread_ts=thread.ts, staff_team_id=thread.team_id,
                                          staff_channel_id=thread.channel_id).execution_options(synchronize_session=False))
        return thread

    async def tell_staff(self, tenant_id: str, row_id: str, text: str, *, actor: str | None = None) -> bool:
        """A line in the conversation's staff thread (False: no thread, or Slack refused)."""
        if self.desk is None:
            return False
        async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
            row = await ConversationRepository(session, tenant_id).find(row_id)
            if row is None or not row.staff_thread_ts or not row.staff_channel_id:
                return False
            thread = Thread(row.staff_team_id or "", row.staff_channel_id, row.staff_thread_ts)
        try:
            await retrying(lambda: self.desk.post(tenant_id=tenant_id, thread=thread, text=text, actor=actor),  # type: ignore[union-attr]
                           policy=self.retry, what="staff thread post")
        except ParleyError as exc:
            log.warning("could not post into the staff thread: %s", exc, extra={"tenant_id": tenant_id})
            return False
        return True

    async def customer_said(self, tenant_id: str, row_id: str, text: str, files: Sequence[str] = ()) -> bool:
        """A customer's message while a person owns the conversation: into the staff thread."""
        body = text.strip() or "(no text)"
        if files:
            body += f"\n(sent {', '.join(files)})"
        return await self.tell_staff(tenant_id, row_id, f"Customer: {body}")

    # --- staff replies -------------------------------------------------------------------------
    async def staff_reply(self, *, tenant_id: str, channel_id: str, thread_ts: str, message_ts: str, user_id: str,
                          text: str) -> tuple[str, int | None]:
        """Store a staff member's reply in a handoff thread for relaying (once per Slack message).
        Returns (outcome, relay id): ``queued``, ``duplicate``, ``not_a_handoff_thread``, ``not_owned``."""
        async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
            stmt = ConversationRepository(session, tenant_id).select().where(
                Conversation.staff_channel_id == channel_id, Conversation.staff_thread_ts == thread_ts)
            row = (await session.execute(stmt)).scalars().first()
            if row is None:
                return "not_a_handoff_thread", None
            # not owned by a person (handed back, closed): kept as not sent, and staff told once
            state, row_id = (row.state if row.state not in PERSON_OWNS else None), row.id
            try:
                async with session.begin_nested():
                    message = HandoffMessage(
                        tenant_id=tenant_id, conversation_id=row.id, external_id=f"slack:{channel_id}:{message_ts}"[:255],
                        author="staff", author_id=user_id[:255], text=text, attempts=0, created_at=utcnow(),
                        status="pending" if state is None else "not_sent",
                        error=None if state is None else f"the conversation was {state.replace('_', ' ')}")
                    session.add(message)
                    await session.flush()
            except IntegrityError:
                return "duplicate", None
            relay_id = message.id
        if state is not None:
            await self.tell_staff(tenant_id, row_id, f"Not sent to the customer: the conversation is {state.replace('_', ' ')}. "
                                                     "Press Take to answer them yourself.")
            return "not_owned", None
        return "queued", relay_id

    async def relay(self, tenant_id: str, relay_id: int) -> str:
        """Send a stored staff reply (or notice) to the customer on their channel: sent / failed / skipped."""
        async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
            claimed = await session.execute(
                update(HandoffMessage).where(HandoffMessage.id == relay_id, HandoffMessage.tenant_id == tenant_id,
                                             HandoffMessage.status == "pending")
                .values(status="sending", attempts=HandoffMessage.attempts + 1).execution_options(synchronize_session=False))
            if claimed.rowcount != 1:
                return "skipped"
            message = (await session.execute(select(HandoffMessage).where(HandoffMessage.id == relay_id,
                                                                          HandoffMessage.tenant_id == tenant_id))).scalar_one()
            row = await ConversationRepository(session, tenant_id).get(message.conversation_id)
            channel_name, route, text, author = row.channel, dict(row.route or {}), message.text, message.author
            author_id, row_id = message.author_id, row.id
        channel = self.channels.get(channel_name)
        problem: str | None = None
        if channel is None:
            problem = f"the {channel_name} channel is not configured in this gateway"
        else:
            try:
                # a staff reply is a person's message (Instagram: the HUMAN_AGENT tag past the 24-hour window)
                by = "human" if author == "staff" else "bot"
                await retrying(lambda: channel.send(tenant_id=tenant_id, route=route, reply=Reply(text), progress={},
                                                    by=by), policy=self.retry, what=f"{channel_name} relay")
            except ParleyError as exc:
                problem = exc.message
        now = utcnow()
        async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
            await session.execute(update(HandoffMessage).where(HandoffMessage.id == relay_id, HandoffMessage.tenant_id == tenant_id)
                                  .values(status="failed" if problem else "sent", error=problem,
                                          sent_at=None if problem else now).execution_options(synchronize_session=False))
            if problem is None and author == "staff":
                await session.execute(update(Conversation).where(
                    Conversation.id == row_id, Conversation.tenant_id == tenant_id, Conversation.first_human_reply_at.is_(None))
                    .values(first_human_reply_at=now).execution_options(synchronize_session=False))
                await transition(session, tenant_id=tenant_id, row_id=row_id, to=WITH_HUMAN, trigger="staff_reply",
                                 actor=author_id)
        self.metrics.relayed.labels(channel_name, "failed" if problem else "sent").inc()
        if problem is not None:
            log.warning("relay to the customer failed: %s", problem, extra={"tenant_id": tenant_id})
            what = "Your reply was not delivered" if author == "staff" else "The notice was not delivered"
            await self.tell_staff(tenant_id, row_id, f":warning: {what} to the customer: {problem}")
            return "failed"
        return "sent"

    async def notify_customer(self, session: AsyncSession, *, tenant_id: str, row_id: str, key: str, text: str) -> int | None:
        """Stage a notice to the customer (sent by `relay` after the commit; shown by the web chat's poll)."""
        try:
            async with session.begin_nested():
                message = HandoffMessage(tenant_id=tenant_id, conversation_id=row_id, external_id=key[:255], author="bot",
                                         author_id="", text=text, status="pending", attempts=0, created_at=utcnow())
                session.add(message)
                await session.flush()
        except IntegrityError:
            return None
        return message.id

    # --- staff actions (Slack buttons, dashboard, CLI) ------------------------------------------
    async def act(self, *, tenant_id: str, row_id: str, action: str, actor: str) -> tuple[bool, Conversation]:
        """Take / resolve / hand back. (changed, row): a repeated action changes nothing."""
        if action not in ACTIONS:
            raise InvalidInput(f"unknown action {action!r}; use take, resolve or hand_back")
        to = ACTIONS[action]
        now = utcnow()
        values: dict[str, Any] = {}
        if to == CLOSED:
            values = {"closed_at": now, "refused_streak": 0}
        elif to == BOT:
            values = {"refused_streak": 0}
        notice = None
        async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
            repo = ConversationRepository(session, tenant_id)
            row = await repo.resolve(row_id, hint="see `parley handoff list` or the dashboard's Handoff page")
            left = await transition(session, tenant_id=tenant_id, row_id=row.id, to=to, trigger=action, actor=actor,
                                    values=values)
            if left is not None and to in (CLOSED, BOT):
                text = RESOLVED_NOTICE if to == CLOSED else HANDED_BACK_NOTICE
                notice = await self.notify_customer(session, tenant_id=tenant_id, row_id=row.id,
                                                    key=f"{action}:{row.id}:{now.isoformat()}", text=text)
            row = await repo.get(row.id)
            await session.refresh(row)
        if left is not None:
            self.metrics.handoff_actions.labels(action).inc()
            verb = {"take": "took this conversation", "resolve": "resolved this conversation",
                    "hand_back": "handed this conversation back to the bot"}[action]
            await self.tell_staff(tenant_id, row.id, f"{verb}.", actor=actor)
            if notice is not None and self.channels:  # else (the CLI) the gateway's sweep sends it
                await self.relay(tenant_id, notice)
        return left is not None, row

    # --- the sweep -----------------------------------------------------------------------------
    async def sweep(self) -> dict[str, int]:
        """Timeouts (once each), threads not yet opened, staff replies not yet sent. Never raises."""
        done = {"timeouts": 0, "threads": 0, "relays": 0}
        try:
            now = utcnow()
            async with unit_of_work(self.sessions, admin=True) as session:
                bind_admin(session)
                overdue = list((await session.execute(
                    select(Conversation.id, Conversation.tenant_id).where(
                        Conversation.state == WAITING, Conversation.flagged.is_(False),
                        Conversation.reply_deadline_at < now).limit(200))).all())
                unopened = list((await session.execute(
                    select(Conversation.id, Conversation.tenant_id).where(
                        Conversation.state.in_(PERSON_OWNS), Conversation.staff_thread_ts.is_(None),
                        Conversation.staff_channel_id.is_not(None),
                        Conversation.handed_off_at < now - self.open_grace).limit(200))).all()) if self.desk else []
                # a relay whose process died mid-send: offered again (a send is at least once, at most 3 times)
                await session.execute(update(HandoffMessage).where(
                    HandoffMessage.status == "sending", HandoffMessage.attempts < 3,
                    HandoffMessage.created_at < now - dt.timedelta(minutes=5)).values(status="pending")
                    .execution_options(synchronize_session=False))
                pending = list((await session.execute(
                    select(HandoffMessage.id, HandoffMessage.tenant_id).where(
                        HandoffMessage.status == "pending", HandoffMessage.created_at < now - self.relay_grace)
                    .order_by(HandoffMessage.id).limit(200))).all())
            for row_id, tenant_id in overdue:
                if await self.time_out(tenant_id, row_id):
                    done["timeouts"] += 1
            for row_id, tenant_id in unopened:
                if await self.open_thread(tenant_id, row_id) is not None:
                    done["threads"] += 1
            for relay_id, tenant_id in pending:
                if await self.relay(tenant_id, relay_id) == "sent":
                    done["relays"] += 1
        except Exception:
            log.exception("handoff sweep failed; the next one tries again")
        return done

    async def time_out(self, tenant_id: str, row_id: str) -> bool:
        """No reply in time: flag it (once), tell the customer, say so in the thread."""
        async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
            now = utcnow()
            flagged = await session.execute(
                update(Conversation).where(Conversation.id == row_id, Conversation.tenant_id == tenant_id,
                                           Conversation.state == WAITING, Conversation.flagged.is_(False),
                                           Conversation.reply_deadline_at < now)
                .values(flagged=True, updated_at=now).execution_options(synchronize_session=False))
            if flagged.rowcount != 1:
                return False
            row = await ConversationRepository(session, tenant_id).get(row_id)
            session.add(HandoffEvent(tenant_id=tenant_id, conversation_id=row_id, from_state=WAITING, to_state=WAITING,
                                     trigger="timeout", actor="", at=now))
            policy = await policy_for(session, tenant_id)
            minutes = int(policy.timeout.total_seconds() // 60)
            notice = await self.notify_customer(session, tenant_id=tenant_id, row_id=row_id,
                                                key=f"timeout:{row_id}:{row.handed_off_at.isoformat() if row.handed_off_at else ''}",
                                                text=timeout_notice(policy))
        self.metrics.handoff_timeouts.inc()
        log.info("handoff timed out", extra={"tenant_id": tenant_id, "conversation": row_id})
        if notice is not None:
            await self.relay(tenant_id, notice)
        await self.tell_staff(tenant_id, row_id, f":rotating_light: No reply within {minutes} minutes: the customer was "
                                                 "told and offered to leave a message. This thread is flagged.")
        return True


async def updates(session: AsyncSession, *, tenant_id: str, channel: str, conversation_id: str, after: int = 0) -> dict[str, Any]:
    """Who owns a conversation now, and the messages sent to its customer outside the answers (staff
    replies, handoff notices) after the cursor ``after``: the web chat's poll (it has no push)."""
    repo = ConversationRepository(session, tenant_id)
    row = await repo.find_by(channel, conversation_id)
    if row is None:
        return {"state": BOT, "messages": [], "cursor": after}
    messages = [m for m in await repo.relayed(row.id, after=after) if m.status in ("pending", "sending", "sent")]
    cursor = max([after, *(m.id for m in messages)])
    return {"state": row.state, "cursor": cursor,
            "messages": [{"id": m.id, "author": m.author, "text": m.text,
                          "at": m.created_at.isoformat() if m.created_at else None} for m in messages]}
