"""Erasing one end customer: everything Parley holds about them, everywhere, and a report of it.

A customer is named ``<channel>:<their id on it>``: ``slack:U0123ABCD`` (a Slack user id),
``instagram:<IGSID>`` (an Instagram-scoped id), ``web:<sender>`` (the web chat's sender:
``api_key:<id>`` or ``visitor:<id>``). :func:`erase_customer` removes, for one tenant:

- their inbound messages (question, reply, citations, routing context) and the turns of their
  conversations (the bot's replies included);
- the handoff state of those conversations (``conversation``: the staff-thread references;
  ``handoff_event``; staff replies relayed to them, ``handoff_message``), the feedback they gave or that was given on their messages
  (``answer_feedback``), failed deliveries to them (``delivery_failure``);
- every document they uploaded, through `knowledge.privacy.erase_documents` (vectors, chunks,
  the file, the row); their id in the knowledge history becomes ``[erased]``; their listing as an
  uploader, if the tenant listed them;
- queued and dead-lettered messages that name them (outbox rows, dead letters), webhook
  deliveries whose body names them, and where a bulk upload's job reports to (``job.notify``);

and bumps the tenant's index version, so no cached answer built from their documents survives.
What stays: aggregate counters (plans' usage), the knowledge history's rows with the person and
file names replaced, the vendor dedupe keys (``webhook_event``: event ids, no content).

``dry_run`` counts the same things and changes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import models
from knowledge import privacy
from parley.blobs import BlobStore
from parley.bus.contracts import DOCUMENT_DELETED
from parley.bus.models import DeadLetter, OutboxMessage
from parley.errors import InvalidInput
from parley.settings import Settings
from parley.vectors import EmbeddedVectorIndex
from tenants import uploaders
from tenants.models import Uploader
from tenants.repository import TenantDirectory

CHANNELS = ("slack", "instagram", "web")
_ID = re.compile(r"^[A-Za-z0-9._:@+=-]{1,255}$")
EXAMPLES = "slack:U0123ABCD, instagram:<IGSID> or web:visitor:<id>"

#: The kinds a report counts, in the order they are shown.
KINDS = ("messages", "turns", "conversations", "handoff_events", "staff_messages", "feedback", "delivery_failures", "documents",
         "chunks", "vectors", "vectors_queued", "files", "history_rows", "uploader_listings", "queued_messages",
         "dead_letters", "webhook_deliveries", "job_notices")


@dataclass(frozen=True)
class Customer:
    channel: str
    user_id: str

    @classmethod
    def parse(cls, text: str) -> Customer:
        """``slack:U123`` -> Customer('slack', 'U123'); anything else is an `InvalidInput` that says the form."""
        value = (text or "").strip()
        channel, sep, user_id = value.partition(":")
        channel = channel.lower()
        if not sep or not user_id:
            raise InvalidInput(f"name the customer as <channel>:<id>, e.g. {EXAMPLES}; got {value!r}",
                               code="invalid_customer")
        if channel not in CHANNELS:
            raise InvalidInput(f"unknown channel {channel!r} in {value!r}: use one of {', '.join(CHANNELS)} "
                               f"(e.g. {EXAMPLES})", code="invalid_customer")
        if not _ID.fullmatch(user_id):
            raise InvalidInput(f"{user_id!r} is not a {channel} id: 1-255 letters, digits and . _ : @ + = -",
                               code="invalid_customer")
        return cls(channel, user_id)

    def __str__(self) -> str:
        return f"{self.channel}:{self.user_id}"


@dataclass
class ErasureReport:
    customer: str
    dry_run: bool
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "vectors_queued")

    def to_json(self) -> dict[str, Any]:
        return {"customer": self.customer, "dry_run": self.dry_run, "counts": dict(self.counts),
                "total": self.total, "notes": list(self.notes)}

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        shown = [f"{n} {k.replace('_', ' ')}" for k, n in self.counts.items() if n and k != "vectors_queued"]
        return f"{verb} " + (", ".join(shown) if shown else "nothing") + f" of {self.customer}"


class InTransactionVectors:
    """The embedded vector index written inside the erasure's own transaction (its rows live in the
    same database): what the gateway uses, having no vector index of its own. With Weaviate the
    gateway passes no index and the document worker removes the vectors (``document.deleted``)."""

    store = staticmethod(EmbeddedVectorIndex.store)


def vectors_for(settings: Settings) -> InTransactionVectors | None:
    return InTransactionVectors() if settings.vector_backend == "embedded" else None


def drop_vector_snapshot(settings: Settings, tenant_id: str, report: ErasureReport) -> None:
    """After an erasure that removed documents has committed: the embedded index's snapshot files of
    the tenant hold the text of their chunks until rewritten. Removed when no retrieval service owns
    them (the next one rebuilds from the store); else the report says when they are rewritten."""
    if report.dry_run or not report.counts["documents"] or settings.vector_backend != "embedded":
        return
    if not EmbeddedVectorIndex.drop_snapshot(settings.data_dir / "vectors", tenant_id):
        report.notes.append("a running retrieval service keeps this tenant's vector snapshot until its next "
                            "snapshot or stop, which writes it without the erased documents")


def _contains(column: Any, needle: str) -> Any:
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(f"%{escaped}%", escape="\\")


def _ids_in(column: Any, ids: Iterable[str]) -> Any:
    ids = list(ids)
    return column.in_(ids) if ids else false()  # nothing matches an empty list


async def _count(session: AsyncSession, model: Any, *where: Any) -> int:
    return int((await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one())


async def erase_customer(session: AsyncSession, *, tenant_id: str, customer: Customer | str, index: Any | None,
                         blobs: BlobStore, dry_run: bool = False) -> ErasureReport:
    """Erase one end customer of one tenant (see the module) in the caller's unit of work; the
    vectors go through ``index`` when given, else through the document worker after the commit."""
    who = customer if isinstance(customer, Customer) else Customer.parse(customer)
    report = ErasureReport(str(who), dry_run)
    c = report.counts
    M = models
    mine = (M.InboundMessage.tenant_id == tenant_id, M.InboundMessage.channel == who.channel,
            M.InboundMessage.sender_id == who.user_id)
    rows = list((await session.execute(select(M.InboundMessage.id, M.InboundMessage.conversation_id).where(*mine))).all())
    message_ids = [r[0] for r in rows]
    conversations = sorted({r[1] for r in rows})
    # Conversations the handoff machinery knows them by, even when no message of theirs is left.
    if hasattr(M, "Conversation"):
        known = (await session.execute(select(M.Conversation.conversation_id).where(
            M.Conversation.tenant_id == tenant_id, M.Conversation.channel == who.channel,
            M.Conversation.customer_id == who.user_id))).scalars()
        conversations = sorted(set(conversations) | set(known))
    # A DM has two parties, the customer and the bot: its turns and handoff rows are theirs. A
    # conversation someone else wrote in too (none today: Parley answers DMs only) keeps its turns.
    shared = set((await session.execute(select(M.InboundMessage.conversation_id).where(
        M.InboundMessage.tenant_id == tenant_id, M.InboundMessage.channel == who.channel,
        _ids_in(M.InboundMessage.conversation_id, conversations), M.InboundMessage.sender_id != who.user_id))).scalars())
    if shared:
        report.notes.append(f"{len(shared)} conversation(s) had other participants: only this customer's messages "
                            "were removed from them")
        conversations = [cv for cv in conversations if cv not in shared]
    c["messages"] = len(message_ids)
    turns = (M.ConversationTurn.tenant_id == tenant_id, _ids_in(M.ConversationTurn.conversation_id, conversations))
    c["turns"] = await _count(session, M.ConversationTurn, *turns)

    conv_where: tuple[Any, ...] = ()
    conv_ids: list[str] = []
    if hasattr(M, "Conversation"):
        conv_where = (M.Conversation.tenant_id == tenant_id, M.Conversation.channel == who.channel,
                      or_(_ids_in(M.Conversation.conversation_id, conversations),
                          M.Conversation.customer_id == who.user_id))
        conv_ids = list((await session.execute(select(M.Conversation.id).where(*conv_where))).scalars())
        c["conversations"] = len(conv_ids)
    if hasattr(M, "HandoffMessage"):
        c["staff_messages"] = await _count(session, M.HandoffMessage, M.HandoffMessage.tenant_id == tenant_id,
                                           _ids_in(M.HandoffMessage.conversation_id, conv_ids))
    if hasattr(M, "HandoffEvent"):
        c["handoff_events"] = await _count(session, M.HandoffEvent, M.HandoffEvent.tenant_id == tenant_id,
                                           _ids_in(M.HandoffEvent.conversation_id, conv_ids))
    feedback_where: tuple[Any, ...] = ()
    if hasattr(M, "AnswerFeedback"):
        feedback_where = (M.AnswerFeedback.tenant_id == tenant_id,
                          or_(_ids_in(M.AnswerFeedback.message_id, message_ids),
                              (M.AnswerFeedback.channel == who.channel) & (M.AnswerFeedback.rater_id == who.user_id)))
        c["feedback"] = await _count(session, M.AnswerFeedback, *feedback_where)
    failure_where: tuple[Any, ...] = ()
    if hasattr(M, "DeliveryFailure"):
        failure_where = (M.DeliveryFailure.tenant_id == tenant_id,
                         or_(_ids_in(M.DeliveryFailure.conversation_id, conversations),
                             _ids_in(M.DeliveryFailure.message_id, message_ids)))
        c["delivery_failures"] = await _count(session, M.DeliveryFailure, *failure_where)

    documents = await privacy.uploaded_by(session, tenant_id=tenant_id, channel=who.channel, user_id=who.user_id)
    c["documents"] = len(documents)

    history = await _history_rows(session, tenant_id, who)
    c["history_rows"] = history
    listing = (Uploader.tenant_id == tenant_id, Uploader.channel == who.channel, Uploader.user_id == who.user_id)
    c["uploader_listings"] = await _count(session, Uploader, *listing)

    # Ids as they appear in a JSON body (quoted whole), so another id that contains this one is not hit.
    # Their documents' ids too: events about them (``document.indexed`` to the tenant's webhooks)
    # carry the file's name. The ``document.deleted`` this erasure stages for the worker stays.
    needles = [f'"{n}"' for n in (who.user_id, str(who), *conversations, *(d.id for d in documents))]
    mentions = [_contains(OutboxMessage.body, n) for n in needles]
    outbox = (OutboxMessage.tenant_id == tenant_id, OutboxMessage.message_type != DOCUMENT_DELETED, or_(*mentions))
    c["queued_messages"] = await _count(session, OutboxMessage, *outbox)
    dead = (DeadLetter.tenant_id == tenant_id, or_(*[_contains(DeadLetter.body, n) for n in needles]))
    c["dead_letters"] = await _count(session, DeadLetter, *dead)
    deliveries = await _webhook_deliveries(session, tenant_id, needles, dry_run=True)
    c["webhook_deliveries"] = deliveries
    jobs = await _jobs_notifying(session, tenant_id, needles)
    c["job_notices"] = len(jobs)

    if dry_run:
        from knowledge.models import Chunk

        c["chunks"] = await _count(session, Chunk, Chunk.tenant_id == tenant_id,
                                   _ids_in(Chunk.document_id, [d.id for d in documents]))
        c["files"] = sum(1 for d in documents if d.original_deleted_at is None)
        _notes(report, index)
        return report

    # --- the erasure itself, children first --------------------------------------------------
    if feedback_where:
        await session.execute(delete(M.AnswerFeedback).where(*feedback_where).execution_options(synchronize_session=False))
    if failure_where:
        await session.execute(delete(M.DeliveryFailure).where(*failure_where).execution_options(synchronize_session=False))
    if hasattr(M, "HandoffMessage"):
        await session.execute(delete(M.HandoffMessage).where(M.HandoffMessage.tenant_id == tenant_id,
                                                             _ids_in(M.HandoffMessage.conversation_id, conv_ids))
                              .execution_options(synchronize_session=False))
    if hasattr(M, "HandoffEvent"):
        await session.execute(delete(M.HandoffEvent).where(M.HandoffEvent.tenant_id == tenant_id,
                                                           _ids_in(M.HandoffEvent.conversation_id, conv_ids))
                              .execution_options(synchronize_session=False))
    if conv_where:
        await session.execute(delete(M.Conversation).where(*conv_where).execution_options(synchronize_session=False))
    await session.execute(delete(M.ConversationTurn).where(*turns).execution_options(synchronize_session=False))
    await session.execute(delete(M.InboundMessage).where(M.InboundMessage.tenant_id == tenant_id,
                                                         _ids_in(M.InboundMessage.id, message_ids))
                          .execution_options(synchronize_session=False))
    removed = await privacy.erase_documents(session, tenant_id=tenant_id, documents=documents, index=index, blobs=blobs)
    for kind in ("chunks", "vectors", "vectors_queued", "files"):
        c[kind] = removed[kind]
    await privacy.scrub_actor(session, tenant_id=tenant_id, channel=who.channel, user_id=who.user_id)
    if c["uploader_listings"]:
        await uploaders.disallow(session, tenant_id=tenant_id, channel=who.channel, user_id=who.user_id)
    await session.execute(delete(OutboxMessage).where(*outbox).execution_options(synchronize_session=False))
    await session.execute(delete(DeadLetter).where(*dead).execution_options(synchronize_session=False))
    await _webhook_deliveries(session, tenant_id, needles, dry_run=False)
    for job in jobs:  # a bulk upload's report went to their DM: the job stays, where it reported does not
        job.notify = None
    await TenantDirectory(session).bump_index_version(tenant_id)  # no cached answer from their documents
    _notes(report, index)
    return report


def _notes(report: ErasureReport, index: Any | None) -> None:
    if report.counts["vectors_queued"] and not report.dry_run:
        report.notes.append("the document worker removes the documents' vectors from the index once this commits")
    if report.counts["conversations"]:
        report.notes.append("copies of their messages already posted into Slack staff threads live in Slack: "
                            "delete those threads there")


async def _jobs_notifying(session: AsyncSession, tenant_id: str, needles: list[str]) -> list[Any]:
    """Jobs (a bulk upload from a DM) whose progress notices go to the customer's conversation."""
    from knowledge.models import Job

    rows = (await session.execute(select(Job).where(Job.tenant_id == tenant_id, Job.notify.is_not(None)))).scalars()
    return [job for job in rows if any(n in json.dumps(job.notify) for n in needles)]


async def _history_rows(session: AsyncSession, tenant_id: str, who: Customer) -> int:
    from knowledge.models import KnowledgeEvent

    return await _count(session, KnowledgeEvent, KnowledgeEvent.tenant_id == tenant_id,
                        KnowledgeEvent.actor_channel == who.channel, KnowledgeEvent.actor_id == who.user_id)


async def _webhook_deliveries(session: AsyncSession, tenant_id: str, needles: list[str], *, dry_run: bool) -> int:
    """Outbound webhook deliveries (`webhooks`) whose body names the customer or their conversations."""
    try:
        from webhooks.models import WebhookDelivery
    except ImportError:  # pragma: no cover - the webhooks domain is part of the platform
        return 0
    where = (WebhookDelivery.tenant_id == tenant_id,
             or_(*[_contains(WebhookDelivery.body, n) for n in needles]))
    if dry_run:
        return await _count(session, WebhookDelivery, *where)
    result = await session.execute(delete(WebhookDelivery).where(*where).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)


# --- Shopify's customers/redact ------------------------------------------------------------------

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


async def redact_shopify_customer(session: AsyncSession, *, tenant_id: str, body: dict[str, Any], blobs: BlobStore,
                                  index: Any | None = None) -> dict[str, Any]:
    """Shopify's ``customers/redact`` through the same machinery. Parley stores no Shopify customer
    record: a Shopify customer is not one of our end customers (a Slack user, an Instagram id, a web
    visitor) and nothing links the two, except what the person wrote. So every end customer who
    wrote the customer's email address or phone number in a message to this tenant's bot is erased
    (:func:`erase_customer`); when none did, there was nothing to erase, and the answer says so."""
    customer = body.get("customer") if isinstance(body.get("customer"), dict) else {}
    needles = []
    email = str(customer.get("email") or "").strip().lower()
    if _EMAIL.fullmatch(email):
        needles.append(email)
    phone = re.sub(r"[^\d+]", "", str(customer.get("phone") or ""))
    if len(phone.lstrip("+")) >= 7:
        needles.append(phone)
    people: set[tuple[str, str]] = set()
    for needle in needles:
        rows = await session.execute(select(models.InboundMessage.channel, models.InboundMessage.sender_id).where(
            models.InboundMessage.tenant_id == tenant_id, _contains(func.lower(models.InboundMessage.text), needle)))
        people |= {(str(c), str(u)) for c, u in rows.all()}
    reports = []
    for channel, user_id in sorted(people):
        if channel in CHANNELS and _ID.fullmatch(user_id):
            report = await erase_customer(session, tenant_id=tenant_id, customer=Customer(channel, user_id),
                                          index=index, blobs=blobs)
            reports.append(report.to_json())
    if reports:
        detail = (f"Parley stores no Shopify customer data; erased {len(reports)} end customer(s) who wrote this "
                  "customer's email or phone number to the bot")
    else:
        detail = "Parley stores no Shopify customer data, and no conversation names this customer: nothing to erase."
    return {"status": "ok", "detail": detail, "erased": reports}


async def shop_products(session: AsyncSession, *, tenant_id: str, shop: str) -> int:
    """How many products of one shop the tenant holds (``shop/redact``'s report; the catalog worker
    removes them and their vectors)."""
    from knowledge.models import Product

    return await _count(session, Product, Product.tenant_id == tenant_id, Product.shop_domain == shop,
                        Product.deleted.is_(False))
