"""Seeding a tenant's end customers for the privacy tests, and searching every store for what an
erasure or a deletion must have removed.

`seed_customer` gives one Slack customer everything Parley can hold about a person: a DM question
and its answer, turns, a handoff (conversation row, its transitions, a staff reply relayed to
them), feedback, a failed delivery, a document they uploaded in the DM (its file in the blob
store, its chunk and vector in the embedded index, its knowledge-history row), their listing as an
uploader, a queued notice and a dead letter naming them, an outbound webhook delivery about them, a bulk upload's job reporting to their DM.
Every text carries the customer's marker, so a search for the marker finds whatever is left.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import models as M
from cli.migrations import load_models
from knowledge.audit import Actor
from knowledge.models import Chunk, DocumentStatus
from knowledge.service import create_job, submit_upload
from parley.blobs import BlobStore
from parley.bus import Envelope, Failure, record_dead_letter, stage
from parley.bus.contracts import NOTICE_REQUESTED, QUEUE_NOTIFICATIONS, stage_event
from parley.db import Base, utcnow
from parley.vectors import EmbeddedVectorIndex, IndexItem
from tenants import uploaders

TEAM = "T0PRIVACY1"


def conversation_of(user: str) -> str:
    return f"slack:{TEAM}:D{user}"


def vector(seed: str) -> np.ndarray:
    v = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16)).standard_normal(16)
    return (v / np.linalg.norm(v)).astype(np.float32)


async def seed_customer(session: AsyncSession, blobs: BlobStore, *, tenant_id: str, user: str, marker: str,
                        at: dt.datetime | None = None) -> dict[str, Any]:
    """Everything of one Slack customer (see the module), in the caller's unit of work (bound to the tenant)."""
    at = at or utcnow()
    conv = conversation_of(user)
    message = M.InboundMessage(
        tenant_id=tenant_id, channel="slack", external_event_id=f"{TEAM}:D{user}:{uuid.uuid4().hex}", conversation_id=conv,
        sender_id=user, text=f"Where is my parcel {marker}?", status="answered", reply=f"Your parcel {marker} ships today.",
        citations=[{"title": f"{marker}.md"}], context={"team": TEAM, "channel_id": f"D{user}", "user": user},
        received_at=at, answered_at=at)
    session.add(message)
    session.add_all([M.ConversationTurn(tenant_id=tenant_id, conversation_id=conv, role="user", text=f"parcel {marker}",
                                        created_at=at),
                     M.ConversationTurn(tenant_id=tenant_id, conversation_id=conv, role="assistant",
                                        text=f"ships today {marker}", created_at=at)])
    await session.flush()
    handoff = M.Conversation(tenant_id=tenant_id, channel="slack", conversation_id=conv, customer_id=user,
                             route={"team": TEAM, "user": user}, state="closed", handoff_reason="asked",
                             staff_channel_id="CSTAFF0001", staff_thread_ts=f"{at.timestamp():.6f}", created_at=at,
                             updated_at=at)
    session.add(handoff)
    await session.flush()
    session.add_all([
        M.HandoffEvent(tenant_id=tenant_id, conversation_id=handoff.id, from_state="bot", to_state="waiting_for_human",
                       trigger="asked", actor=user, at=at),
        M.HandoffMessage(tenant_id=tenant_id, conversation_id=handoff.id, external_id=f"CSTAFF0001:{uuid.uuid4().hex}",
                         author="staff", author_id="USTAFF0001", text=f"A person here: {marker} is on its way",
                         status="sent", created_at=at),
        M.AnswerFeedback(tenant_id=tenant_id, message_id=message.id, rating="down", comment=f"late {marker}",
                         channel="slack", rater_id=user, question=message.text, created_at=at, updated_at=at),
        M.DeliveryFailure(tenant_id=tenant_id, channel="slack", conversation_id=conv, message_id=message.id,
                          reason_code="graph_refused", detail=f"refused {marker}", at=at),
    ])
    # A document they sent in the DM, indexed: file, row, chunk, vector, history.
    content = f"# {marker}\n\nThe {marker} warranty lasts two years.\n".encode()
    blob = await blobs.put_bytes(tenant_id, content, max_bytes=1 << 20)
    submitted = await submit_upload(session, tenant_id=tenant_id, source="slack", filename=f"{marker}.md",
                                    declared_mime="text/markdown", blob=blob, actor=Actor("slack", user),
                                    notify={"channel": "slack", "conversation": conv, "user": user})
    document = submitted.document
    document.status, document.chunk_count, document.indexed_at = DocumentStatus.indexed, 1, at
    chunk_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{document.id}/0"))
    text = content.decode()
    session.add(Chunk(id=chunk_id, tenant_id=tenant_id, document_id=document.id, ordinal=0, heading_path=[marker],
                      text=text, content_hash=hashlib.sha256(content).hexdigest()))
    store = EmbeddedVectorIndex.store(session, tenant_id)
    await store.ensure_tenant()
    await store.upsert([IndexItem(id=chunk_id, document_id=document.id, text=text, vector=vector(marker),
                                  title=f"{marker}.md", heading_path=[marker])])
    # the tenant's webhooks hear of it (the document worker stages this when it indexes)
    stage_event(session, tenant_id=tenant_id, event_type="document.indexed", idempotency_key=f"indexed:{document.id}",
                data={"document_id": document.id, "filename": f"{marker}.md", "chunks": 1})
    await uploaders.allow(session, tenant_id=tenant_id, channel="slack", user_id=user, note=f"customer {marker}")
    await create_job(session, tenant_id=tenant_id, kind="documents", description="2 files from a DM", total=2,
                     notify={"channel": "slack", "conversation": conv, "user": user})
    notice = Envelope.new(NOTICE_REQUESTED, tenant_id=tenant_id, payload={
        "text": f"indexed {marker}.md (1 section)", "target": {"channel": "slack", "conversation": conv, "user": user}})
    stage(session, notice, QUEUE_NOTIFICATIONS)
    failure = Failure("slack_error", f"slack_error: could not post to {user}", False)
    await record_dead_letter(session, queue=QUEUE_NOTIFICATIONS, message_id=uuid.uuid4().hex, message_type=NOTICE_REQUESTED,
                             tenant_id=tenant_id, correlation_id=None, failure=failure, attempts=[],
                             body=notice.to_bytes())
    await _webhook_delivery(session, tenant_id, user, marker, conv)
    await session.flush()
    return {"message_id": message.id, "document_id": document.id, "blob_key": blob.key, "conversation": conv}


async def _webhook_delivery(session: AsyncSession, tenant_id: str, user: str, marker: str, conv: str) -> None:
    from webhooks.models import WebhookDelivery, WebhookEndpoint

    endpoint = (await session.execute(select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id))).scalars().first()
    if endpoint is None:
        endpoint = WebhookEndpoint(tenant_id=tenant_id, url="https://hooks.example.com/parley", event_types=[],
                                   secret_sealed="sealed")
        session.add(endpoint)
        await session.flush()
    body = json.dumps({"type": "conversation.handed_off", "data": {"customer": f"slack:{user}", "conversation_id": conv,
                                                                   "question": f"parcel {marker}"}})
    session.add(WebhookDelivery(id=uuid.uuid4().hex, tenant_id=tenant_id, endpoint_id=endpoint.id,
                                event_key=uuid.uuid4().hex, event_type="conversation.handed_off", status="delivered",
                                body=body, created_at=utcnow()))


def _text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


async def rows_containing(session: AsyncSession, needle: str) -> dict[str, int]:
    """Every table of the schema (`Base.metadata.sorted_tables`, all models loaded): how many of its
    rows hold ``needle`` in any column. Empty when it is nowhere."""
    load_models()
    found: dict[str, int] = {}
    for table in Base.metadata.sorted_tables:
        rows = (await session.execute(select(table))).all()
        n = sum(1 for row in rows if any(needle in _text(v) for v in row if v is not None))
        if n:
            found[table.name] = n
    return found


def files_containing(root: Path, needle: str) -> list[Path]:
    """Files under ``root`` (blobs, vector snapshots) whose bytes contain ``needle``."""
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]
