"""Slack as a `Channel`: replies and notices with chat.postMessage, files downloaded with the bot token.

The bot token of the workspace comes from our installation table (decrypted, briefly cached by
`InstallationDirectory`). Slack's errors are mapped for the retry policy: 429 (with its
``Retry-After``), 5xx, timeouts and connection errors may pass; ``channel_not_found``,
``not_authed``, a revoked token ... cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.downloads import SLACK_FILE_HOSTS, Downloader, FilePolicy
from bot.channels.routing import InstallationDirectory
from bot.conversation.schemas import Attachment, DeliveryError, Download, Reply, Standing
from parley.errors import InvalidInput
from tenants.models import ChannelKind

log = logging.getLogger("parley.gateway.slack")

CHUNK = 1 << 16
RETRYABLE_ERRORS = {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}


def escape(text: str) -> str:
    """Slack mrkdwn control characters (a customer's answer must not become a link or mention)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def format_reply(reply: Reply) -> str:
    text = escape(reply.text)
    if not reply.citations:
        return text
    sources = []
    for c in reply.citations:
        title = escape(str(c.get("title") or "source")).replace("|", "¦")
        url = c.get("url")
        sources.append(f"[{c.get('n')}] <{url}|{title}>" if url else f"[{c.get('n')}] {title}")
    return f"{text}\n\n_Sources:_ " + " · ".join(sources)


#: Slack's limit on a section block's text.
SECTION_CHARS = 3000
FEEDBACK_BLOCK = "feedback"
STATUS_BLOCK = "feedback_status"


def text_blocks(text: str) -> list[dict[str, Any]]:
    """The message text as section blocks (each under Slack's 3,000 characters, cut at a line or a space)."""
    blocks: list[dict[str, Any]] = []
    rest = text
    while rest:
        piece = rest
        if len(piece) > SECTION_CHARS:
            cut = max(piece.rfind("\n", 0, SECTION_CHARS), piece.rfind(" ", 0, SECTION_CHARS))
            piece = piece[:cut if cut > 0 else SECTION_CHARS]
        rest = rest[len(piece):].lstrip()
        if piece.strip():
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": piece}})
    return blocks[:45]


def feedback_buttons(message_id: str) -> dict[str, Any]:
    """The 👍/👎 actions block under an answer; action ids ``feedback:<up|down>:<message id>``."""
    return {"type": "actions", "block_id": FEEDBACK_BLOCK, "elements": [
        {"type": "button", "action_id": f"feedback:{rating}:{message_id}", "value": rating,
         "text": {"type": "plain_text", "text": emoji, "emoji": True}}
        for rating, emoji in (("up", "👍"), ("down", "👎"))]}


def answer_blocks(text: str, message_id: str, status: str | None = None) -> list[dict[str, Any]]:
    """An answer's blocks: its text, the rating buttons, and (after a click) what was recorded."""
    blocks = [*text_blocks(text), feedback_buttons(message_id)]
    if status:
        blocks.append({"type": "context", "block_id": STATUS_BLOCK, "elements": [{"type": "mrkdwn", "text": status}]})
    return blocks


def slack_failure(exc: Exception, what: str) -> DeliveryError:
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", 0) or 0
        headers = getattr(exc.response, "headers", {}) or {}
        data = getattr(exc.response, "data", None)
        error = data.get("error") if isinstance(data, dict) else None
        retry_after = headers.get("Retry-After") or headers.get("retry-after")
        if status == 429 or error in RETRYABLE_ERRORS or status >= 500:
            return DeliveryError(f"{what}: Slack answered {status} {error or ''}".strip(), retryable=True,
                                 retry_after=float(retry_after) if retry_after else None, code="slack_unavailable")
        return DeliveryError(f"{what}: Slack refused it ({error or status})", retryable=False, code=f"slack_{error or status}")
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)):
        return DeliveryError(f"{what}: Slack could not be reached ({type(exc).__name__})", retryable=True, code="slack_unreachable")
    raise exc


class SlackChannel:
    name = "slack"
    reply_window = None

    def __init__(self, *, client: AsyncWebClient, directory: InstallationDirectory, downloads: Downloader,
                 download_timeout: float = 120.0) -> None:
        self.client = client
        self.directory = directory
        self.downloads = downloads
        self.download_timeout = aiohttp.ClientTimeout(total=download_timeout, sock_read=30)
        # The bot token goes to files.slack.com over https, or to the API origin exactly as configured.
        self.files = FilePolicy.of("Slack", SLACK_FILE_HOSTS, str(client.base_url))

    async def _token(self, tenant_id: str, route: dict[str, Any]) -> str:
        team = str(route.get("install") or route.get("team") or "")  # install: enterprise:E… (org-wide)
        found = await self.directory.find(ChannelKind.slack, team)
        if found is None or found.tenant_id != tenant_id or not found.secrets.get("bot_token"):
            raise DeliveryError(f"the Slack workspace {team} is no longer connected", retryable=False, code="slack_uninstalled")
        return str(found.secrets["bot_token"])

    async def standing(self, *, tenant_id: str, route: dict[str, Any], sender_id: str) -> Standing:
        """The user who installed the app administers it; anyone else is asked about with
        ``users.info`` (scope ``users:read``): an admin or owner of *this* workspace does, a member,
        a guest, a deactivated account, a bot or someone from another organisation (Slack Connect:
        their ``is_admin`` is about their own workspace) does not."""
        team = str(route.get("team") or "")
        found = await self.directory.find(ChannelKind.slack, str(route.get("install") or team))
        if found is None or found.tenant_id != tenant_id or not found.secrets.get("bot_token"):
            raise DeliveryError(f"the Slack workspace {team} is no longer connected", retryable=False, code="slack_uninstalled")
        if sender_id and sender_id == found.details.get("installer_user_id"):
            return Standing(admin=True, why="installed the Slack app")
        try:
            info = await self.client.users_info(token=str(found.secrets["bot_token"]), user=sender_id)
        except Exception as exc:
            failure = slack_failure(exc, "users.info")
            if failure.retryable:
                raise failure from exc
            if failure.code == "slack_missing_scope":
                log.warning("the Slack app may not read users (users:read): reinstall it so workspace admins can add "
                            "documents", extra={"team_id": team})
            return Standing(admin=False, why=f"Slack would not say who this is ({failure.message})")
        user = info.get("user") or {}
        if user.get("deleted") or user.get("is_bot") or user.get("is_restricted") or user.get("is_ultra_restricted"):
            return Standing(admin=False, why="deactivated, guest or bot account")
        home = str(user.get("team_id") or "")
        organisation = str(found.details.get("enterprise_id") or "") if found.details.get("is_enterprise_install") else ""
        if organisation:  # an org-wide install: a member of any workspace of the organisation is at home
            theirs = str((user.get("enterprise_user") or {}).get("enterprise_id") or user.get("enterprise_id") or "")
            if user.get("is_stranger") or theirs != organisation:
                return Standing(admin=False, why=f"member of another organisation ({theirs or home or 'unknown'})")
        elif user.get("is_stranger") or (team.startswith("T") and home != team):
            return Standing(admin=False, why=f"member of another workspace ({home or 'unknown'})")
        if user.get("is_owner") or user.get("is_primary_owner"):
            return Standing(admin=True, why="owner of the Slack workspace")
        if user.get("is_admin"):
            return Standing(admin=True, why="admin of the Slack workspace")
        return Standing(admin=False, why="member of the Slack workspace")

    async def send(self, *, tenant_id: str, route: dict[str, Any], reply: Reply, progress: dict[str, Any],
                   by: str = "bot") -> None:
        """Post ``reply`` (``by``: the bot or a person; Slack has no messaging window). An answer that
        may be rated carries 👍/👎 buttons under its text (`answer_blocks`); the text stays the fallback."""
        token = await self._token(tenant_id, route)
        where: dict[str, str] = {"channel": str(route.get("channel_id"))}
        if route.get("thread_ts"):  # the question was asked in a thread: everything about it goes there
            where["thread_ts"] = str(route["thread_ts"])
        text = format_reply(reply)
        extra: dict[str, Any] = {}
        if reply.feedback_id and by == "bot":
            extra["blocks"] = answer_blocks(text, reply.feedback_id)
        try:
            await self.client.chat_postMessage(token=token, text=text, unfurl_links=False,
                                               unfurl_media=False, **where, **extra)
        except Exception as exc:
            raise slack_failure(exc, "chat.postMessage") from exc

    @contextlib.asynccontextmanager
    async def download(self, *, tenant_id: str, route: dict[str, Any], attachment: Attachment) -> AsyncIterator[Download]:
        token = await self._token(tenant_id, route)
        ref = dict(attachment.ref)
        name, mime, size = None, None, None
        if ref.get("stub"):  # Slack Connect: the event only names the file; files.info has the rest
            try:
                info = await self.client.files_info(token=token, file=str(ref.get("id")))
            except Exception as exc:
                raise slack_failure(exc, "files.info") from exc
            file = info.get("file") or {}
            ref["url"] = file.get("url_private_download") or file.get("url_private")
            name, mime, size = file.get("name"), file.get("mimetype"), file.get("size")
        url = ref.get("url")
        if not url:
            raise InvalidInput("Slack gave no download link for this file")
        try:  # the link is checked (bot.channels.downloads) before the token goes anywhere
            async with self.downloads.open(str(url), policy=self.files, token=token, timeout=self.download_timeout) as resp:
                if resp.status == 429 or resp.status >= 500:
                    retry_after = resp.headers.get("Retry-After")
                    raise DeliveryError(f"file download: Slack answered {resp.status}", retryable=True,
                                        retry_after=float(retry_after) if retry_after else None)
                if resp.status != 200:
                    raise InvalidInput(f"Slack refused the download ({resp.status}); is the app allowed to read files?")
                yield Download(content_type=resp.headers.get("Content-Type"), length=resp.content_length,
                               chunks=resp.content.iter_chunked(CHUNK), name=name, mime_type=mime, size=size)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise DeliveryError(f"file download failed: {type(exc).__name__}", retryable=True) from exc
