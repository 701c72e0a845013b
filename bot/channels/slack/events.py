"""Slack's message events, read: which ones are a customer talking to the bot in a DM, and the
channel-neutral `IncomingMessage` they become.

Answered: ``message`` events in a DM (``channel_type == "im"``) from a person, with no subtype
(text), ``file_share`` (files, with or without a question in ``text``) or ``thread_broadcast``
(a thread reply also sent to the DM). A reply in a thread (``thread_ts`` other than its own
``ts``) carries the thread in its route, so the answer and every notice about it (upload
received / indexed / failed, "slow down", an apology) go into that thread, and the thread is its
own conversation (its turns are the follow-up history); a top-level DM stays top-level. A blank
DM is answered too (politely: what would you like to know?). Ignored: other bots (``bot_id``,
``bot_message``), edits (``message_changed``), deletions (``message_deleted``), hidden and system
subtypes, channels.
Our own bot's messages never get here: Bolt's self-event middleware drops them first.

The message is identified by ``team:channel:ts`` - ``ts`` is unique within a channel - so
Slack's retries (same ``event_id``) and any second delivery of the same message under another
event id are the same row.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bot.conversation.schemas import Attachment, IncomingMessage

ANSWERED_SUBTYPES = {None, "file_share", "thread_broadcast"}


def ignore_reason(event: dict[str, Any]) -> str | None:
    """Why this message event is not for us, or None when it is a person's DM to answer."""
    if event.get("type") != "message":
        return "not_a_message"
    if event.get("channel_type") != "im" and not str(event.get("channel", "")).startswith("D"):
        return "not_a_dm"
    subtype = event.get("subtype")
    if subtype not in ANSWERED_SUBTYPES:
        return {"message_changed": "edit", "message_deleted": "deletion", "bot_message": "bot"}.get(subtype, "subtype")
    if event.get("bot_id") or event.get("bot_profile") or not event.get("user"):
        return "bot"
    if event.get("hidden"):
        return "hidden"
    return None  # a blank message too: it gets a polite "what would you like to know?"


def _attachment(f: dict[str, Any]) -> Attachment:
    if f.get("file_access") == "check_file_info" or not (f.get("url_private_download") or f.get("url_private")):
        return Attachment(name=f.get("name") or f.get("title") or f"file {f.get('id', '')}".strip(),
                          ref={"id": f.get("id"), "stub": True})
    return Attachment(
        name=f.get("name") or f.get("title") or f.get("id") or "file",
        mime_type=f.get("mimetype"),
        size=f.get("size") if isinstance(f.get("size"), int) else None,
        ref={"id": f.get("id"), "url": f.get("url_private_download") or f.get("url_private")},
    )


def to_incoming(tenant_id: str, team_id: str, event: dict[str, Any], *, install: str | None = None) -> IncomingMessage:
    """``install``: the installation's key when it is not the team id (``enterprise:E…``, an
    org-wide install): replies are sent with that installation's token."""
    channel_id = str(event.get("channel"))
    ts = str(event.get("ts") or event.get("event_ts"))
    try:
        sent_at = dt.datetime.fromtimestamp(float(ts), dt.UTC)
    except ValueError:
        sent_at = None
    files = tuple(_attachment(f) for f in event.get("files") or [] if isinstance(f, dict))
    user = str(event.get("user"))
    route = {"team": team_id, "channel_id": channel_id, "user": user}
    if install and install != team_id:
        route["install"] = install
    conversation = f"slack:{team_id}:{channel_id}"
    thread = event.get("thread_ts")
    if isinstance(thread, str) and thread and thread != ts:  # a reply in a thread: answered in that thread
        route["thread_ts"] = thread
        conversation += f":{thread}"
    return IncomingMessage(
        channel="slack",
        tenant_id=tenant_id,
        external_event_id=f"{team_id}:{channel_id}:{ts}",
        conversation_id=conversation,
        sender_id=user,
        text=str(event.get("text") or ""),
        route=route,
        sent_at=sent_at,
        attachments=files if event.get("subtype") == "file_share" else (),
    )
