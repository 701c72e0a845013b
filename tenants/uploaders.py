"""Who may add documents to a tenant's knowledge, channel by channel (a tenant setting).

Each channel has a mode (`UploadMode`; no row means ``admins``) and a list of uploaders:

    admins   the channel's own administrators, plus the listed uploaders (the default). Slack: the
             user who installed the app and the workspace's admins and owners; Instagram: the
             account's configured uploaders; web: whoever holds one of the tenant's admin API keys
    listed   only the listed uploaders
    anyone   anyone who can message the bot
    nobody   nobody: uploads through the channel are closed

Replacing a document someone else uploaded (a new version under the same name) is a right of its
own: administrators have it, a listed uploader has it when listed with ``may_replace``, nobody
else. Whether a sender is an administrator is the channel's knowledge (the gateway asks Slack's
``users.info``); what that means for uploads is decided here, once, for every channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from parley.db import utcnow
from parley.errors import InvalidInput
from tenants.models import Uploader, UploaderPolicy, UploadMode
from tenants.repository import UploaderPolicyRepository, UploaderRepository

#: The channels a person can send documents through.
UPLOAD_CHANNELS = ("slack", "instagram", "web")

#: What ``admins`` means on each channel.
ADMINS = {
    "slack": "the user who installed the app and the workspace's admins and owners",
    "instagram": "the account's configured uploaders",
    "web": "anyone with one of the tenant's admin API keys",
}

MEANING = {
    UploadMode.admins: "{admins}, and the listed uploaders",
    UploadMode.listed: "only the listed uploaders",
    UploadMode.anyone: "anyone who can message the bot (replacing someone else's document still needs the right)",
    UploadMode.nobody: "nobody: uploads through this channel are closed",
}


@dataclass(frozen=True)
class UploadPermission:
    may_upload: bool
    #: May replace a document someone else uploaded.
    may_replace: bool
    #: Why, in words (the audit log keeps it with a refusal).
    reason: str


def check_channel(channel: str) -> str:
    if channel not in UPLOAD_CHANNELS:
        raise InvalidInput(f"unknown upload channel {channel!r}; use one of {', '.join(UPLOAD_CHANNELS)}")
    return channel


def parse_mode(mode: str) -> UploadMode:
    try:
        return UploadMode(mode)
    except ValueError as exc:
        raise InvalidInput(f"unknown upload mode {mode!r}; use one of {', '.join(m.value for m in UploadMode)}") from exc


def meaning(channel: str, mode: UploadMode) -> str:
    return MEANING[mode].format(admins=ADMINS.get(channel, "the channel's administrators"))


async def mode_of(session: AsyncSession, *, tenant_id: str, channel: str) -> UploadMode:
    policy = await UploaderPolicyRepository(session, tenant_id).for_channel(channel)
    return policy.mode if policy is not None else UploadMode.admins


async def decide(session: AsyncSession, *, tenant_id: str, channel: str, user_id: str, channel_admin: bool,
                 admin_reason: str = "") -> UploadPermission:
    """May this sender add documents (and replace other people's)? ``channel_admin``: the channel
    says the sender administers it (`ADMINS`); ``admin_reason`` says how it knows."""
    mode = await mode_of(session, tenant_id=tenant_id, channel=channel)
    if mode == UploadMode.nobody:
        return UploadPermission(False, False, f"uploads through {channel} are closed for this tenant")
    if channel_admin and mode in (UploadMode.admins, UploadMode.anyone):
        return UploadPermission(True, True, admin_reason or f"administrator on {channel}")
    listed = await UploaderRepository(session, tenant_id).find_user(channel, user_id) if user_id else None
    if listed is not None:
        return UploadPermission(True, listed.may_replace, "listed uploader" + (" (may replace)" if listed.may_replace else ""))
    if mode == UploadMode.anyone:
        return UploadPermission(True, False, f"anyone may upload through {channel}")
    return UploadPermission(False, False, f"{user_id or 'this sender'} is not allowed to add documents through "
                                          f"{channel} ({meaning(channel, mode)} may)")


async def set_mode(session: AsyncSession, *, tenant_id: str, channel: str, mode: UploadMode | str) -> UploaderPolicy:
    check_channel(channel)
    mode = parse_mode(mode) if isinstance(mode, str) else mode
    repo = UploaderPolicyRepository(session, tenant_id)
    policy = await repo.for_channel(channel)
    if policy is None:
        policy = repo.add(UploaderPolicy(channel=channel, mode=mode))
    policy.mode = mode
    await session.flush()
    return policy


async def allow(session: AsyncSession, *, tenant_id: str, channel: str, user_id: str, may_replace: bool = False,
                note: str = "", added_by: str = "") -> Uploader:
    """List ``user_id`` as an uploader of the channel (listing again updates the rights)."""
    check_channel(channel)
    user_id = (user_id or "").strip()
    if not user_id or len(user_id) > 255:
        raise InvalidInput("an uploader needs the person's id on the channel (1-255 characters)")
    repo = UploaderRepository(session, tenant_id)
    row = await repo.find_user(channel, user_id)
    if row is None:
        row = repo.add(Uploader(channel=channel, user_id=user_id, created_at=utcnow(), added_by=added_by[:255]))
    row.may_replace = may_replace
    row.note = note[:255]
    await session.flush()
    return row


async def disallow(session: AsyncSession, *, tenant_id: str, channel: str, user_id: str) -> bool:
    """Remove ``user_id`` from the channel's uploaders; False when they were not listed."""
    check_channel(channel)
    repo = UploaderRepository(session, tenant_id)
    row = await repo.find_user(channel, user_id)
    if row is None:
        return False
    await session.delete(row)
    await session.flush()
    return True


async def describe(session: AsyncSession, *, tenant_id: str) -> list[dict[str, Any]]:
    """Every upload channel with its mode, what the mode means, and its listed uploaders."""
    modes = {p.channel: p.mode for p in await UploaderPolicyRepository(session, tenant_id).list()}
    listed = await UploaderRepository(session, tenant_id).list()
    out = []
    for channel in UPLOAD_CHANNELS:
        mode = modes.get(channel, UploadMode.admins)
        out.append({"channel": channel, "mode": mode.value, "meaning": meaning(channel, mode),
                    "uploaders": [{"user_id": u.user_id, "may_replace": u.may_replace, "note": u.note,
                                   "added_by": u.added_by, "added_at": u.created_at.isoformat() if u.created_at else None}
                                  for u in listed if u.channel == channel]})
    return out
