"""Meta's Instagram messaging webhooks, read.

A POST carries ``entry[]`` (one per professional account), each with ``messaging[]`` events; both
are lists and every item is handled. A customer's message becomes an `IncomingMessage`
identified by its ``mid``. Not for us: echoes (``is_echo``, or sent by the account itself),
deletions (``is_deleted``), unsupported messages, read receipts (``read``), reactions, postbacks
and ``standby`` events (another app holds the thread).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from bot.conversation.schemas import Attachment, IncomingMessage
from parley.crypto import constant_time_equals


def signature_valid(raw: bytes, header: str | None, secrets: Iterable[str]) -> bool:
    """``X-Hub-Signature-256: sha256=<hex>`` over the raw body, against each configured secret.
    Total: any header text (non-ASCII, invalid UTF-8, huge) is a True or a False, never an exception."""
    if not header or not header.startswith("sha256="):
        return False
    given = header[len("sha256="):].strip().lower()
    ok = False
    for secret in secrets:  # no early exit: the time taken does not say which secret matched
        expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        ok |= constant_time_equals(expected, given)
    return ok


def parse_timestamp(value: Any) -> dt.datetime | None:
    """Meta sends epoch milliseconds; older or hand-written payloads use seconds or ISO strings."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        try:
            parsed = dt.datetime.fromisoformat(str(value).replace("+0000", "+00:00").replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if number > 1e11:
        number /= 1000
    try:
        return dt.datetime.fromtimestamp(number, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class MessagingEvent:
    account_id: str
    event: dict[str, Any]


def _object(value: Any) -> dict[str, Any]:
    """A JSON object of the payload, or an empty one when a stranger sent something else there."""
    return value if isinstance(value, dict) else {}


def _array(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def messaging_events(payload: dict[str, Any]) -> Iterator[MessagingEvent]:
    for entry in _array(payload.get("entry")):
        if not isinstance(entry, dict):
            continue
        account = str(entry.get("id") or "")
        for event in _array(entry.get("messaging")):
            if isinstance(event, dict):
                yield MessagingEvent(account, event)


def ignore_reason(account_id: str, event: dict[str, Any]) -> str | None:
    message = event.get("message")
    if not isinstance(message, dict):
        return "read" if "read" in event else "not_a_message"
    sender = str(_object(event.get("sender")).get("id") or "")
    if message.get("is_echo") or sender == account_id:
        return "echo"
    if message.get("is_deleted"):
        return "deletion"
    if message.get("is_unsupported"):
        return "unsupported"
    if not message.get("mid") or not sender:
        return "incomplete"
    if not str(message.get("text") or "").strip() and not documents_of(message) and message.get("attachments"):
        return "no_text"  # a photo, a share, a story mention: not a question (a blank text gets a polite reply)
    return None


def _name_from_url(url: str) -> str:
    tail = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return tail if "." in tail else "document"


def documents_of(message: dict[str, Any]) -> list[Attachment]:
    """Attachments of type ``file`` (a document); media, shares and story mentions are not documents."""
    out = []
    for a in _array(message.get("attachments")):
        if not isinstance(a, dict) or a.get("type") != "file":
            continue
        payload = _object(a.get("payload"))
        url = payload.get("url")
        if url and isinstance(url, str):
            out.append(Attachment(name=payload.get("name") or payload.get("title") or _name_from_url(url), ref={"url": url}))
    return out


def to_incoming(tenant_id: str, account_id: str, event: dict[str, Any]) -> IncomingMessage:
    message = event["message"]
    sender = str(event["sender"]["id"])
    return IncomingMessage(
        channel="instagram",
        tenant_id=tenant_id,
        external_event_id=str(message["mid"]),
        conversation_id=f"instagram:{account_id}:{sender}",
        sender_id=sender,
        text=str(message.get("text") or ""),
        route={"account": account_id, "recipient": sender},
        sent_at=parse_timestamp(event.get("timestamp")),
        attachments=tuple(documents_of(message)),
        feedback=quick_reply_feedback(message),
    )


def quick_reply_feedback(message: dict[str, Any]) -> str | None:
    """A tap on one of our 👍/👎 quick replies (``quick_reply.payload`` ``feedback:...``), or None."""
    quick = message.get("quick_reply")
    payload = quick.get("payload") if isinstance(quick, dict) else None
    return payload if isinstance(payload, str) and payload.startswith("feedback:") else None
