"""The channel-neutral contracts of the conversation core.

A channel (Slack, Instagram, web) turns its vendor payload into one `IncomingMessage`, and
implements `Channel` so the core can reply, post notices and fetch attachments without knowing
which vendor it talks to. `route` is the channel's own routing data for the reply (Slack: team,
channel id, user; Instagram: account, recipient); the core stores it and hands it back untouched.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from parley.errors import ParleyError


@dataclass(frozen=True)
class Attachment:
    """A file sent in a DM. ``ref`` is whatever the channel needs to download it (url, file id)."""

    name: str
    mime_type: str | None = None
    size: int | None = None
    ref: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "mime_type": self.mime_type, "size": self.size, "ref": self.ref}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attachment:
        return cls(name=data.get("name") or "file", mime_type=data.get("mime_type"), size=data.get("size"),
                   ref=dict(data.get("ref") or {}))


@dataclass(frozen=True)
class IncomingMessage:
    channel: str  # slack / instagram / web
    tenant_id: str
    external_event_id: str  # unique per channel: a redelivery carries the same one
    conversation_id: str
    sender_id: str
    text: str
    route: dict[str, Any] = field(default_factory=dict)
    sent_at: dt.datetime | None = None  # the vendor's timestamp (reply windows are measured from it)
    attachments: tuple[Attachment, ...] = ()
    #: A rating control was used instead of typing (Instagram quick reply): ``feedback:<up|down>:<message id>``.
    feedback: str | None = None


@dataclass(frozen=True)
class Standing:
    """What the channel knows of a sender: whether they administer the workspace or account the
    message came through (Slack: installed the app, or a workspace admin or owner), and how it knows.
    What that allows is the tenant's uploader policy (`tenants.uploaders.decide`)."""

    admin: bool
    why: str = ""


@dataclass(frozen=True)
class Reply:
    text: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    #: The inbound message this reply answers, when the answer may be rated (👍/👎, `bot.feedback`):
    #: the channel puts its rating controls under it (Slack buttons, Instagram quick replies).
    feedback_id: str | None = None


@dataclass
class Download:
    """An open download: the vendor's declared type and length, and the body as chunks."""

    content_type: str | None
    length: int | None
    chunks: AsyncIterator[bytes]
    #: What the vendor says the file is, when the message itself did not (Slack Connect stubs).
    name: str | None = None
    mime_type: str | None = None
    size: int | None = None


class DeliveryError(ParleyError):
    """A vendor call failed. ``retryable``: 429, 5xx, timeouts, connection errors; ``retry_after``
    in seconds when the vendor said how long to wait."""

    code = "delivery_failed"

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retryable = retryable
        self.retry_after = retry_after


class Channel(Protocol):
    name: str
    #: How long after the customer's message a reply is still allowed (Instagram: 24 h); None: always.
    reply_window: dt.timedelta | None

    async def send(self, *, tenant_id: str, route: dict[str, Any], reply: Reply, progress: dict[str, Any],
                   by: str = "bot") -> None:
        """Post the reply into the conversation. ``progress`` survives retries of the same reply
        (a channel that sends in parts records what went out, so a retry does not repeat it).
        ``by``: ``bot`` (an answer, a notice) or ``human`` (a person's reply relayed by the handoff;
        Instagram allows it a longer window). Raises `DeliveryError`, or `OutsideMessagingWindow`
        (`bot.conversation.windows`) when the vendor's window does not allow the send."""
        ...

    def download(self, *, tenant_id: str, route: dict[str, Any], attachment: Attachment) -> AbstractAsyncContextManager[Download]:
        """Open an attachment for streaming. Raises `DeliveryError` or `ParleyError` with a reason."""
        ...

    async def standing(self, *, tenant_id: str, route: dict[str, Any], sender_id: str) -> Standing:
        """Does the sender administer the workspace / account? Raises a retryable `DeliveryError`
        when the vendor could not be asked right now."""
        ...
