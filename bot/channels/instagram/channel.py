"""Instagram as a `Channel`: Graph Send API replies, split under 1,000 characters.

``POST {graph}/{version}/me/messages`` with ``{"recipient": {"id": IGSID}, "message": {"text": ...}}``
and the account's token as ``Authorization: Bearer`` (never in the URL, so never in logs).
A long answer goes out in parts cut at paragraph, then sentence, then word boundaries, each
under 1,000 UTF-8 bytes; ``progress`` remembers the parts already sent, so a retry after a
failure in the middle does not repeat the beginning.

Meta's messaging windows (`bot.conversation.windows`): the bot sends (``messaging_type``
``RESPONSE``) only within 24 hours of the customer's last message in the conversation, a person
(``by="human"``: a staff reply relayed from Slack) up to 7 days with ``messaging_type``
``MESSAGE_TAG`` and ``tag`` ``HUMAN_AGENT``. A send outside its window raises
`OutsideMessagingWindow` before anything reaches Graph; a send Graph refuses (a 4xx error body,
e.g. code 10 / subcode 2018278 "outside of allowed window") raises a `DeliveryError` with Graph's
message. Neither is swallowed: each is recorded as a ``delivery_failure`` row and counted
(`bot.conversation.failures`) before it propagates to the caller (the answer loop records it on
the message; the handoff relay posts it into the staff thread).

An answer that may be rated carries two quick replies (👍/👎) on its last part; a tap comes back as
a message with ``quick_reply.payload`` ``feedback:<up|down>:<message id>`` (`bot.feedback`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.downloads import META_FILE_HOSTS, Downloader, FilePolicy
from bot.channels.routing import InstallationDirectory
from bot.conversation.failures import GRAPH_REFUSED, OUTSIDE_WINDOW, record_failure
from bot.conversation.schemas import Attachment, DeliveryError, Download, Reply, Standing
from bot.conversation.windows import BOT, HUMAN, INSTAGRAM_WINDOW, OutsideMessagingWindow, last_inbound_at
from bot.feedback.service import quick_replies
from bot.metrics import GatewayMetrics
from parley.db import unit_of_work, utcnow
from parley.errors import InvalidInput
from tenants.models import ChannelKind

LIMIT_BYTES = 1000
CHUNK = 1 << 16
#: Graph error codes that mean "slow down" (application / account / page rate limits).
RATE_LIMIT_CODES = {4, 17, 32, 613, 80006}


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _pieces(text: str, pattern: str) -> list[str]:
    return [p.strip() for p in re.split(pattern, text) if p.strip()]


def split_message(text: str, limit: int = LIMIT_BYTES) -> list[str]:
    """Parts strictly under ``limit`` bytes, cut at the largest natural boundary that fits."""
    text = text.strip()
    if _size(text) < limit:
        return [text] if text else []
    out: list[str] = []
    for level, pattern in enumerate((r"\n\s*\n", r"(?<=[.!?…])\s+", r"\s+")):
        pieces = _pieces(text, pattern)
        if len(pieces) > 1:
            joiner = "\n\n" if level == 0 else " "
            current = ""
            for piece in pieces:
                candidate = f"{current}{joiner}{piece}" if current else piece
                if _size(candidate) < limit:
                    current = candidate
                    continue
                if current:
                    out.append(current)
                if _size(piece) < limit:
                    current = piece
                else:
                    out.extend(split_message(piece, limit))
                    current = ""
            if current:
                out.append(current)
            return out
    # one unbroken run: cut on character boundaries
    current = ""
    for ch in text:
        if _size(current + ch) >= limit:
            out.append(current)
            current = ""
        current += ch
    return out + ([current] if current else [])


def format_reply(reply: Reply) -> str:
    if not reply.citations:
        return reply.text
    sources = []
    for c in reply.citations:
        url = c.get("url")
        sources.append(f"[{c.get('n')}] {c.get('title') or 'source'}" + (f" {url}" if url else ""))
    return f"{reply.text}\n\nSources: " + "; ".join(sources)


def conversation_of(route: dict[str, Any]) -> str:
    """The conversation id of a route (as `bot.channels.instagram.events.to_incoming` makes it)."""
    return f"instagram:{route.get('account')}:{route.get('recipient')}"


class InstagramChannel:
    name = "instagram"
    reply_window = INSTAGRAM_WINDOW.bot
    window = INSTAGRAM_WINDOW

    def __init__(self, *, http: aiohttp.ClientSession, downloads: Downloader, directory: InstallationDirectory,
                 graph_url: str, version: str, timeout: float = 20.0, download_timeout: float = 120.0,
                 metrics: GatewayMetrics | None = None) -> None:
        self.http = http
        #: The window check reads the conversation's last inbound message; failures are written here too.
        self.sessions: async_sessionmaker[AsyncSession] = directory.sessions
        self.metrics = metrics
        self.downloads = downloads
        #: Attachments come from Meta's CDN over https (or the configured Graph origin: the emulator in tests).
        self.files = FilePolicy.of("Instagram", META_FILE_HOSTS, graph_url)
        self.directory = directory
        self.endpoint = f"{graph_url.rstrip('/')}/{version}/me/messages"
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.download_timeout = aiohttp.ClientTimeout(total=download_timeout, sock_read=30)

    async def _token(self, tenant_id: str, account: str) -> str:
        found = await self.directory.find(ChannelKind.instagram, account)
        token = found.secrets.get("access_token") if found is not None and found.tenant_id == tenant_id else None
        if not token:
            raise DeliveryError(f"the Instagram account {account} is no longer connected", retryable=False,
                                code="instagram_uninstalled")
        return str(token)

    async def standing(self, *, tenant_id: str, route: dict[str, Any], sender_id: str) -> Standing:
        """Instagram has no roles a webhook can ask about: the account's administrators are the
        uploaders configured on its installation (``details["uploaders"]``: Instagram-scoped ids)."""
        found = await self.directory.find(ChannelKind.instagram, str(route.get("account") or ""))
        configured = found.details.get("uploaders") if found is not None and found.tenant_id == tenant_id else None
        if isinstance(configured, list) and sender_id and sender_id in [str(u) for u in configured]:
            return Standing(admin=True, why="configured uploader of the Instagram account")
        return Standing(admin=False, why="Instagram user")

    async def send(self, *, tenant_id: str, route: dict[str, Any], reply: Reply, progress: dict[str, Any],
                   by: str = BOT) -> None:
        """Send ``reply`` to the customer of ``route``; ``by="human"``: a person's reply (7-day window,
        tagged HUMAN_AGENT). Raises `OutsideMessagingWindow` or `DeliveryError`, recorded first."""
        conversation = conversation_of(route)
        failure = {"tenant_id": tenant_id, "channel": self.name, "conversation_id": conversation, "by": by,
                   "message_id": reply.feedback_id}
        async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
            last = await last_inbound_at(session, tenant_id, self.name, conversation)
        try:
            self.window.check(last, now=utcnow(), by=by)
        except OutsideMessagingWindow as exc:
            await record_failure(self.sessions, self.metrics, reason_code=OUTSIDE_WINDOW, detail=exc.message, **failure)
            raise
        token = await self._token(tenant_id, str(route.get("account")))
        parts = split_message(format_reply(reply))
        rating = quick_replies(reply.feedback_id) if reply.feedback_id and by == BOT else None
        for i, part in enumerate(parts):
            if i < progress.get("sent", 0):
                continue
            try:
                await self._post(token, str(route.get("recipient")), part, by=by,
                                 quick=rating if i == len(parts) - 1 else None)
            except DeliveryError as exc:
                if not exc.retryable:  # Graph said no for good: recorded, counted, and raised to the caller
                    await record_failure(self.sessions, self.metrics, reason_code=GRAPH_REFUSED, detail=exc.message,
                                         **failure)
                raise
            progress["sent"] = i + 1

    async def _post(self, token: str, recipient: str, text: str, *, by: str = BOT,
                    quick: list[dict[str, str]] | None = None) -> None:
        message: dict[str, Any] = {"text": text}
        if quick:
            message["quick_replies"] = quick
        body: dict[str, Any] = {"recipient": {"id": recipient}, "message": message}
        if by == HUMAN:  # a person's reply, allowed up to 7 days after the customer's last message
            body.update(messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT")
        else:
            body["messaging_type"] = "RESPONSE"
        try:
            async with self.http.post(self.endpoint, json=body, headers={"Authorization": f"Bearer {token}"},
                                      timeout=self.timeout) as resp:
                if resp.status == 200:
                    return
                data: Any = await resp.json(content_type=None) if resp.content_length != 0 else {}
                retry_after = resp.headers.get("Retry-After")
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise DeliveryError(f"Instagram send failed: {type(exc).__name__}", retryable=True, code="instagram_unreachable") from exc
        error = (data or {}).get("error") or {} if isinstance(data, dict) else {}
        error = error if isinstance(error, dict) else {}
        code = error.get("code")
        subcode = error.get("error_subcode")
        message = str(error.get("message") or f"HTTP {status}")
        if status == 429 or status >= 500 or code in RATE_LIMIT_CODES or error.get("is_transient"):
            raise DeliveryError(f"Instagram answered {status}: {message}", retryable=True,
                                retry_after=float(retry_after) if retry_after else None, code="instagram_unavailable")
        which = f"code {code}" + (f", subcode {subcode}" if subcode else "") if code is not None else f"HTTP {status}"
        raise DeliveryError(f"Instagram refused the message: {message} ({which})", retryable=False,
                            code=f"instagram_{code or status}")

    @contextlib.asynccontextmanager
    async def download(self, *, tenant_id: str, route: dict[str, Any], attachment: Attachment) -> AsyncIterator[Download]:
        url = str(attachment.ref.get("url") or "")
        if not url.startswith(("https://", "http://")):
            raise InvalidInput("the attachment has no download link")
        try:  # Meta's CDN links are signed and short-lived: no token is sent with them
            async with self.downloads.open(url, policy=self.files, timeout=self.download_timeout) as resp:
                if resp.status == 429 or resp.status >= 500:
                    raise DeliveryError(f"attachment download: {resp.status}", retryable=True)
                if resp.status != 200:
                    raise InvalidInput(f"the attachment link no longer works ({resp.status}); please send it again")
                yield Download(content_type=resp.headers.get("Content-Type"), length=resp.content_length,
                               chunks=resp.content.iter_chunked(CHUNK), mime_type=resp.headers.get("Content-Type"))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise DeliveryError(f"attachment download failed: {type(exc).__name__}", retryable=True) from exc
