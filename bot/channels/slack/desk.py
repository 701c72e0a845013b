"""The staff side of a handoff in Slack: one thread per handed-off conversation in the tenant's staff
channel, replies in it relayed to the customer, and its Take / Resolve / Hand back buttons.

* `SlackDesk` (a `bot.conversation.handoff.StaffDesk`) posts the thread's first message with
  ``chat.postMessage``: who the customer is and on which channel, why it was handed off, the last
  messages with the bot's attempts and their sources, the hours and time limit, and Block Kit
  buttons whose ``action_id`` is ``handoff:<take|resolve|hand_back>:<conversation id>``. It posts
  with the bot token of the tenant's Slack workspace named in the settings (or its only one).
* `is_thread_reply` / `take_staff_reply`: a person's message in a channel thread (not a DM; no
  ``bot_id``, no subtype: our own posts, other bots, edits and joins are not replies) arrives
  through ``/slack/events``. If the thread is a handoff thread, the reply is stored once (keyed by
  its ``ts``: Slack's retries change nothing) and relayed in the background; a restart leaves it
  ``pending`` for the sweep. Any other thread is ignored.
* `handoff_action`: the interactivity handler for the ``handoff`` prefix (`register_action`);
  the state machine makes a double click a no-op.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.routing import InstallationDirectory
from bot.channels.slack.channel import escape, slack_failure
from bot.channels.slack.interactivity import InteractionContext
from bot.channels.slack.store import find_workspace
from bot.context import Gateway
from bot.conversation.handoff import TRIGGER_TEXT, Thread, ThreadOpening
from bot.conversation.schemas import DeliveryError
from parley.db import unit_of_work
from parley.errors import InvalidInput
from tenants.models import ChannelKind
from tenants.repository import InstallationRepository

log = logging.getLogger("parley.gateway.slack.desk")

#: A reply in a handoff thread that starts with this stays among staff (not relayed to the customer).
NOTE_PREFIX = "//"
SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,20}$")
CHANNEL_NAMES = {"slack": "Slack DM", "instagram": "Instagram DM", "web": "web chat"}
BUTTONS = (("take", "Take", "primary"), ("resolve", "Resolve", None), ("hand_back", "Hand back to bot", "danger"))


def _cut(text: str, n: int) -> str:
    text = " ".join(text.split()) if "\n" not in text else text.strip()
    return text if len(text) <= n else text[: n - 1] + "…"


def opening_blocks(opening: ThreadOpening) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and the Block Kit blocks of a handoff thread's first message."""
    where = CHANNEL_NAMES.get(opening.channel, opening.channel)
    why = TRIGGER_TEXT.get(opening.trigger, opening.trigger)
    title = f":raising_hand: A customer needs a person ({where}, customer {escape(opening.customer_id)}): {why}."
    lines = []
    for line in opening.lines:
        who = {"customer": "*Customer*", "bot": "*Bot*", "staff": "*Staff*"}.get(line.role, line.role)
        text = escape(_cut(line.text, 500)).replace("\n", "\n>")
        entry = f">{who}: {text}"
        if line.sources:
            entry += f"\n>_Sources: {escape(', '.join(line.sources[:4]))}_"
        lines.append(entry)
    transcript = "\n".join(lines) or "_(no messages)_"
    terms = [f"Reply in this thread: your reply goes to the customer (start it with {NOTE_PREFIX} to keep it among staff). "
             f"No reply within {opening.timeout_minutes} minutes and they are told and offered to leave a message."]
    if opening.policy.hours:
        terms.append(f"Hours told to the customer: {escape(opening.policy.hours)}.")
    if opening.policy.expected_wait:
        terms.append(f"Expected wait told: {escape(opening.policy.expected_wait)}.")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": title}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(transcript, 2900)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(" ".join(terms), 1900)}]},
        {"type": "actions", "block_id": f"handoff:{opening.conversation_row_id}", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": label}, "action_id": f"handoff:{action}:{opening.conversation_row_id}",
             "value": opening.conversation_row_id, **({"style": style} if style else {})}
            for action, label, style in BUTTONS]},
    ]
    return title, blocks


class SlackDesk:
    def __init__(self, *, client: AsyncWebClient, directory: InstallationDirectory,
                 sessions: async_sessionmaker[AsyncSession]) -> None:
        self.client = client
        self.directory = directory
        self.sessions = sessions

    async def _workspace(self, tenant_id: str, team_id: str | None) -> tuple[str, str]:
        """(team id, bot token) of the workspace that posts into the staff channel."""
        team = team_id
        if not team:
            async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
                rows = [r for r in await InstallationRepository(session, tenant_id).list()
                        if r.kind == ChannelKind.slack and r.status == "active"]
            if not rows:
                raise DeliveryError("the tenant has no Slack workspace connected for its staff channel", retryable=False,
                                    code="slack_uninstalled")
            team = rows[0].external_id
        found = await self.directory.find(ChannelKind.slack, team)
        if found is None or found.tenant_id != tenant_id or not found.secrets.get("bot_token"):
            raise DeliveryError(f"the Slack workspace {team} is no longer connected", retryable=False, code="slack_uninstalled")
        return team, str(found.secrets["bot_token"])

    async def open(self, *, tenant_id: str, team_id: str | None, channel_id: str, opening: ThreadOpening) -> Thread:
        team, token = await self._workspace(tenant_id, team_id)
        text, blocks = opening_blocks(opening)
        try:
            response = await self.client.chat_postMessage(token=token, channel=channel_id, text=text, blocks=blocks,
                                                          unfurl_links=False, unfurl_media=False)
        except Exception as exc:
            raise slack_failure(exc, "chat.postMessage (staff channel)") from exc
        ts = str(response.get("ts") or "")
        if not ts:
            raise DeliveryError("Slack did not say where the staff thread is (no ts)", retryable=False, code="slack_no_ts")
        return Thread(team_id=team, channel_id=str(response.get("channel") or channel_id), ts=ts)

    async def post(self, *, tenant_id: str, thread: Thread, text: str, actor: str | None = None) -> None:
        _, token = await self._workspace(tenant_id, thread.team_id or None)
        line = escape(text)
        if actor:  # who did it: a Slack user is mentioned, the dashboard and the CLI are named
            who = f"<@{actor}>" if SLACK_USER.match(actor) else ("Someone on the dashboard" if actor.startswith("dashboard:")
                                                                 else escape(actor))
            line = f"{who} {line}"
        try:
            await self.client.chat_postMessage(token=token, channel=thread.channel_id, thread_ts=thread.ts,
                                               text=line, unfurl_links=False, unfurl_media=False)
        except Exception as exc:
            raise slack_failure(exc, "chat.postMessage (staff thread)") from exc


# --- staff replies arriving through /slack/events ----------------------------------------------

_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


def plain_text(text: str) -> str:
    """A Slack message's text as a customer should read it: ``<https://x|label>`` -> ``label (https://x)``,
    ``<https://x>`` -> the URL, mentions by their label, and ``&lt;`` ``&gt;`` ``&amp;`` unescaped."""
    def link(m: re.Match[str]) -> str:
        target, label = m.group(1), m.group(2)
        if target.startswith(("@", "#", "!")):
            return label or target.lstrip("@#!").split("^")[0]
        target = target.removeprefix("mailto:")
        return f"{label} ({target})" if label and label != target else target

    return html.unescape(_LINK.sub(link, text))



def is_thread_reply(event: dict[str, Any]) -> bool:
    """A person's message in a thread of a channel (where staff threads live), not a DM."""
    if event.get("type") != "message" or event.get("channel_type") == "im" or str(event.get("channel", "")).startswith("D"):
        return False
    thread, ts = event.get("thread_ts"), event.get("ts")
    if not isinstance(thread, str) or not thread or thread == ts:
        return False
    if event.get("subtype") not in (None, "thread_broadcast"):
        return False
    return bool(event.get("user")) and not (event.get("bot_id") or event.get("bot_profile") or event.get("hidden"))


async def take_staff_reply(gw: Gateway, *, team_id: str, enterprise_id: str | None, is_enterprise_install: bool | None,
                           event: dict[str, Any]) -> str:
    """Store a staff reply for relaying and start the relay; the outcome for the ack metric."""
    route = await find_workspace(gw.directory, enterprise_id, team_id, is_enterprise_install)
    if route is None:
        return "unknown_workspace"
    if gw.handoffs is None:
        return "ignored_no_handoff"
    text = plain_text(str(event.get("text") or ""))
    if text.lstrip().startswith(NOTE_PREFIX):  # a note among staff: never sent to the customer
        return "staff_note"
    outcome, relay_id = await gw.handoffs.staff_reply(
        tenant_id=route.tenant_id, channel_id=str(event.get("channel")), thread_ts=str(event.get("thread_ts")),
        message_ts=str(event.get("ts")), user_id=str(event.get("user")), text=text)
    if relay_id is not None:
        gw.spawn(gw.handoffs.relay(route.tenant_id, relay_id))
    return f"staff_{outcome}"


async def handoff_action(ctx: InteractionContext) -> None:
    """``handoff:<take|resolve|hand_back>:<conversation id>`` from a staff thread's buttons."""
    parts = ctx.action_id.split(":")
    if len(parts) != 3:
        raise InvalidInput(f"not a handoff action: {ctx.action_id[:80]!r}")
    _, action, row_id = parts
    handoffs = ctx.gateway.handoffs
    if handoffs is None:
        return
    changed, row = await handoffs.act(tenant_id=ctx.tenant_id, row_id=row_id, action=action, actor=ctx.user_id)
    log.info("handoff action", extra={"action": action, "changed": changed, "state": row.state, "tenant_id": ctx.tenant_id})
