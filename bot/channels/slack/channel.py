"""Slack as a `Channel`: replies and notices with chat.postMessage, files downloaded with the bot token.

The bot token of the workspace comes from our installation table (decrypted, briefly cached by
`InstallationDirectory`). Slack's errors are mapped for the retry policy: 429 (with its
``Retry-After``), 5xx, timeouts and connection errors may pass; ``channel_not_found``,
``not_authed``, a revoked token ... cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.routing import InstallationDirectory
from bot.conversation.schemas import Attachment, DeliveryError, Download, Reply
from parley.errors import InvalidInput
from tenants.models import ChannelKind

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

    def __init__(self, *, client: AsyncWebClient, directory: InstallationDirectory, http: aiohttp.ClientSession,
                 download_timeout: float = 120.0) -> None:
        self.client = client
        self.directory = directory
        self.http = http
        self.download_timeout = aiohttp.ClientTimeout(total=download_timeout, sock_read=30)
        api_host = urlsplit(str(client.base_url)).hostname or ""
        self._token_hosts = {api_host}

    async def _token(self, tenant_id: str, route: dict[str, Any]) -> str:
        team = str(route.get("team") or "")
        found = await self.directory.find(ChannelKind.slack, team)
        if found is None or found.tenant_id != tenant_id or not found.secrets.get("bot_token"):
            raise DeliveryError(f"the Slack workspace {team} is no longer connected", retryable=False, code="slack_uninstalled")
        return str(found.secrets["bot_token"])

    async def send(self, *, tenant_id: str, route: dict[str, Any], reply: Reply, progress: dict[str, Any]) -> None:
        token = await self._token(tenant_id, route)
        try:
            await self.client.chat_postMessage(token=token, channel=str(route.get("channel_id")), text=format_reply(reply),
                                               unfurl_links=False, unfurl_media=False)
        except Exception as exc:
            raise slack_failure(exc, "chat.postMessage") from exc

    def _may_send_token(self, url: str) -> bool:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host in self._token_hosts:
            return True
        return parts.scheme == "https" and (host == "slack.com" or host.endswith(".slack.com"))

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
        if not self._may_send_token(str(url)):
            raise InvalidInput("the file's link does not point to Slack; refusing to send the bot token there")
        try:
            async with self.http.get(str(url), headers={"Authorization": f"Bearer {token}"}, timeout=self.download_timeout) as resp:
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
