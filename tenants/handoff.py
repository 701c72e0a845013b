"""A tenant's handoff settings: where its staff answer (a Slack channel of its own workspace), when
they answer (hours, expected wait: told to the customer), how long they may take, and what hands a
conversation to them (a number of refused answers in a row, the tenant's keywords).

One row per tenant (table ``handoff_settings``); no row, or ``enabled`` false: the bot never hands
off. `configure` changes only what it is given; the conversation core reads `HandoffPolicy`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from parley.db import Base, TenantOwned, TimestampMixin, new_id
from parley.errors import InvalidInput
from parley.repository import TenantRepository

DEFAULT_TIMEOUT_MINUTES = 30
DEFAULT_AFTER_REFUSALS = 2
MAX_KEYWORDS = 50
_SLACK_CHANNEL = re.compile(r"^[CG][A-Z0-9]{4,20}$")


class HandoffSettings(TenantOwned, TimestampMixin, Base):
    __tablename__ = "handoff_settings"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True, unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: The Slack workspace (team id) whose installation posts into the staff channel.
    staff_team_id: Mapped[str | None] = mapped_column(String(64))
    staff_channel_id: Mapped[str | None] = mapped_column(String(64))
    hours: Mapped[str] = mapped_column(Text, default="")
    expected_wait: Mapped[str] = mapped_column(Text, default="")
    timeout_minutes: Mapped[int] = mapped_column(Integer, default=DEFAULT_TIMEOUT_MINUTES)
    after_refusals: Mapped[int] = mapped_column(Integer, default=DEFAULT_AFTER_REFUSALS)
    keywords: Mapped[list[str]] = mapped_column(JSON, default=list)


class HandoffSettingsRepository(TenantRepository[HandoffSettings]):
    model = HandoffSettings
    noun = "handoff settings"

    async def current(self) -> HandoffSettings | None:
        return (await self.session.execute(self.select())).scalar_one_or_none()


@dataclass(frozen=True)
class HandoffPolicy:
    """The settings as the conversation core uses them (detached from the session)."""

    enabled: bool = False
    staff_team_id: str | None = None
    staff_channel_id: str | None = None
    hours: str = ""
    expected_wait: str = ""
    timeout: dt.timedelta = dt.timedelta(minutes=DEFAULT_TIMEOUT_MINUTES)
    after_refusals: int = DEFAULT_AFTER_REFUSALS
    keywords: tuple[str, ...] = field(default_factory=tuple)

    @property
    def active(self) -> bool:
        """Hands off at all: enabled, with a staff channel to hand off to."""
        return self.enabled and bool(self.staff_channel_id)

    @classmethod
    def of(cls, row: HandoffSettings | None) -> HandoffPolicy:
        if row is None:
            return cls()
        return cls(enabled=bool(row.enabled), staff_team_id=row.staff_team_id, staff_channel_id=row.staff_channel_id,
                   hours=row.hours or "", expected_wait=row.expected_wait or "",
                   timeout=dt.timedelta(minutes=row.timeout_minutes or DEFAULT_TIMEOUT_MINUTES),
                   after_refusals=row.after_refusals if row.after_refusals is not None else DEFAULT_AFTER_REFUSALS,
                   keywords=tuple(row.keywords or ()))


async def policy_for(session: AsyncSession, tenant_id: str) -> HandoffPolicy:
    return HandoffPolicy.of(await HandoffSettingsRepository(session, tenant_id).current())


def settings_json(row: HandoffSettings | None) -> dict[str, Any]:
    p = HandoffPolicy.of(row)
    return {"configured": row is not None, "enabled": p.enabled, "active": p.active, "staff_team_id": p.staff_team_id,
            "staff_channel_id": p.staff_channel_id, "hours": p.hours, "expected_wait": p.expected_wait,
            "timeout_minutes": int(p.timeout.total_seconds() // 60), "after_refusals": p.after_refusals,
            "keywords": list(p.keywords)}


def parse_keywords(value: Any) -> list[str]:
    """``"refund, lawyer"`` or ``["refund", "lawyer"]`` -> ``["refund", "lawyer"]`` (lower case, unique)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise InvalidInput("keywords must be a comma-separated text or a list of words")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidInput("each keyword must be text")
        word = " ".join(item.lower().split())
        if len(word) > 64:
            raise InvalidInput(f"the keyword {word[:20]!r}… is longer than 64 characters")
        if word and word not in out:
            out.append(word)
    if len(out) > MAX_KEYWORDS:
        raise InvalidInput(f"at most {MAX_KEYWORDS} keywords")
    return out


async def configure(session: AsyncSession, *, tenant_id: str, enabled: bool | None = None,
                    staff_team_id: str | None = None, staff_channel_id: str | None = None, hours: str | None = None,
                    expected_wait: str | None = None, timeout_minutes: int | None = None,
                    after_refusals: int | None = None, keywords: Any = None) -> HandoffSettings:
    """Create or change the tenant's settings; what is None stays as it was. Checked: a Slack
    channel id (C… or G…), 1-1440 minutes, 0-20 refusals (0: never on refusals), texts ≤ 200."""
    repo = HandoffSettingsRepository(session, tenant_id)
    row = await repo.current()
    if row is None:
        row = repo.add(HandoffSettings(enabled=True, hours="", expected_wait="", timeout_minutes=DEFAULT_TIMEOUT_MINUTES,
                                       after_refusals=DEFAULT_AFTER_REFUSALS, keywords=[]))
    if staff_channel_id is not None:
        channel = staff_channel_id.strip()
        if channel and not _SLACK_CHANNEL.match(channel):
            raise InvalidInput(f"{channel!r} is not a Slack channel id: it looks like C0123ABCD (in Slack: the channel's "
                               "name > About > Channel ID at the bottom)")
        row.staff_channel_id = channel or None
    if staff_team_id is not None:
        row.staff_team_id = staff_team_id.strip() or None
    for name, text in (("hours", hours), ("expected wait", expected_wait)):
        if text is not None and len(text) > 200:
            raise InvalidInput(f"the {name} text is longer than 200 characters")
    if hours is not None:
        row.hours = hours.strip()
    if expected_wait is not None:
        row.expected_wait = expected_wait.strip()
    if timeout_minutes is not None:
        if not isinstance(timeout_minutes, int) or isinstance(timeout_minutes, bool) or not 1 <= timeout_minutes <= 1440:
            raise InvalidInput("the reply time limit must be 1 to 1440 minutes")
        row.timeout_minutes = timeout_minutes
    if after_refusals is not None:
        if not isinstance(after_refusals, int) or isinstance(after_refusals, bool) or not 0 <= after_refusals <= 20:
            raise InvalidInput("the number of refused answers must be 0 (never) to 20")
        row.after_refusals = after_refusals
    if keywords is not None:
        row.keywords = parse_keywords(keywords)
    if enabled is not None:
        row.enabled = bool(enabled)
    await session.flush()
    return row
