"""Messaging windows: how long after the customer's last message a business may still write to them.

Instagram (Meta's rule): the bot may reply within 24 hours of the customer's last message; a person
may reply up to 7 days after it with the ``HUMAN_AGENT`` tag; after that nobody may until the
customer writes again. A send outside its window is refused *before* it reaches the vendor with
`OutsideMessagingWindow`, whose message says why in words ("the customer's last message was 26
hours ago; Instagram allows replies for 24 hours"), so the conversation, the staff thread and the
logs can show it. Slack and the web chat have no window.

The last message is the newest inbound message of the conversation (its vendor timestamp when it
has one, else when we received it): `last_inbound_at`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from bot.models import InboundMessage
from parley.errors import ParleyError
from parley.repository import TenantRepository

BOT, HUMAN = "bot", "human"
AUTHORS = (BOT, HUMAN)


class OutsideMessagingWindow(ParleyError):
    """A send the vendor's messaging window does not allow (Instagram: 24 h for the bot, 7 days
    for a person with the HUMAN_AGENT tag)."""

    code = "outside_messaging_window"

    def __init__(self, message: str, *, age: dt.timedelta | None = None, allowed: dt.timedelta | None = None,
                 by: str = BOT) -> None:
        super().__init__(message)
        self.age = age
        self.allowed = allowed
        self.by = by


def describe(span: dt.timedelta) -> str:
    """'26 hours', '3 days', '45 minutes' (rounded down; a person reads it, not a program)."""
    seconds = max(0, int(span.total_seconds()))
    if seconds >= 2 * 86400:
        n, unit = seconds // 86400, "day"
    elif seconds >= 2 * 3600:
        n, unit = seconds // 3600, "hour"
    elif seconds >= 120:
        n, unit = seconds // 60, "minute"
    else:
        n, unit = seconds, "second"
    return f"{n} {unit}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class MessagingWindow:
    vendor: str
    bot: dt.timedelta
    #: None: a person has no longer window than the bot.
    human: dt.timedelta | None = None
    human_tag: str | None = None

    def allowed(self, by: str) -> dt.timedelta:
        return self.human if by == HUMAN and self.human is not None else self.bot

    def check(self, last_inbound: dt.datetime | None, *, now: dt.datetime, by: str = BOT) -> dt.timedelta | None:
        """The age of the customer's last message when a send by ``by`` is allowed now; raises
        `OutsideMessagingWindow` when it is not (or when the customer never wrote)."""
        if by not in AUTHORS:
            raise ValueError(f"by is one of {AUTHORS}, not {by!r}")
        allowed = self.allowed(by)
        if last_inbound is None:
            raise OutsideMessagingWindow(f"the customer has not written to us on {self.vendor}; {self.vendor} only "
                                         "allows replies to a customer's message", allowed=allowed, by=by)
        age = now - last_inbound
        if age > allowed:
            who = "a person's replies" if by == HUMAN else "replies"
            tagged = f" (tagged {self.human_tag})" if by == HUMAN and self.human_tag else ""
            more = ""
            if by == BOT and self.human is not None and age <= self.human:
                more = f"; a person can still reply for up to {describe(self.human)}"
            raise OutsideMessagingWindow(
                f"the customer's last message was {describe(age)} ago; {self.vendor} allows {who}{tagged} for "
                f"{describe(allowed)}{more}", age=age, allowed=allowed, by=by)
        return age


#: How each channel is named to a person.
VENDORS = {"instagram": "Instagram", "slack": "Slack", "web": "the web chat"}


def outside_window(channel: str, age: dt.timedelta, allowed: dt.timedelta) -> str:
    """Why the bot did not answer a message that was already too old to answer."""
    vendor = VENDORS.get(channel, channel)
    return f"the customer's last message was {describe(age)} ago; {vendor} allows replies for {describe(allowed)}"


INSTAGRAM_WINDOW = MessagingWindow(vendor="Instagram", bot=dt.timedelta(hours=24), human=dt.timedelta(days=7),
                                   human_tag="HUMAN_AGENT")


class _Inbound(TenantRepository[InboundMessage]):
    model = InboundMessage
    noun = "message"


async def last_inbound_at(session: AsyncSession, tenant_id: str, channel: str, conversation_id: str) -> dt.datetime | None:
    """When the customer last wrote in the conversation: the newest of its latest inbound messages,
    by the vendor's timestamp when stored (``context["sent_at"]``), else by when it was received."""
    repo = _Inbound(session, tenant_id)
    rows = (await session.execute(
        repo.select().where(InboundMessage.channel == channel, InboundMessage.conversation_id == conversation_id)
        .order_by(InboundMessage.received_at.desc()).limit(5))).scalars()
    newest: dt.datetime | None = None
    for row in rows:
        sent = (row.context or {}).get("sent_at")
        try:
            at = dt.datetime.fromisoformat(sent) if isinstance(sent, str) else row.received_at
        except ValueError:
            at = row.received_at
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.timezone.utc)
        if newest is None or at > newest:
            newest = at
    return newest
