"""Whether a failed document is worth trying again: `parley reindex` and dead-letter replays ask here.

A document that failed on a transient error (the parser crashed, the database was away) may well
index now. One that failed for good (password-protected, no text, not a type we read) fails the
same way every time: re-running it only adds another dead letter. It is worth trying again once
something changed: a newer version of the file was uploaded (then that version is what gets
indexed), it was retried with its password (`knowledge.service.retry_with_password`), or it was
queued or indexed again since. Whether a failure was for good is read from the document's last
dead letter (`parley.bus.dead_letters.failed_for_good`), the record of how it failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from knowledge.models import Document, DocumentStatus
from parley.bus.contracts import DOCUMENT_UPLOADED, QUEUE_DOCUMENTS
from parley.bus.dead_letters import ReplayCheck, ReplayRule, failed_for_good
from parley.bus.errors import Failure
from parley.bus.models import DeadLetter

#: Failure codes of a file that needs its password (`ingestion.documents.extract_pdf`).
PASSWORD_CODES = frozenset({"pdf_encrypted"})


def advice(document: Document, code: str | None = None) -> str:
    """What a person can do about a document that failed for good."""
    if (code or document.error_code) in PASSWORD_CODES:
        return "give the password (Retry with its password, on its dashboard page) or upload a version without one"
    return f"upload a new version of {document.filename}"


def document_id_of(row: DeadLetter) -> str | None:
    """The document a `document.uploaded` dead letter is about."""
    try:
        payload = json.loads(row.body).get("payload")
    except (ValueError, AttributeError):
        return None
    value = payload.get("document_id") if isinstance(payload, dict) else None
    return str(value) if value else None


async def newest_version(session: AsyncSession, document: Document) -> Document | None:
    """The newest document uploaded as a new version of this one (same source and name, or naming
    it as the version it replaces), if any."""
    stmt = (
        select(Document)
        .where(Document.tenant_id == document.tenant_id, Document.id != document.id,
               or_(Document.replaces_id == document.id,
                   (Document.source == document.source) & (Document.filename == document.filename)
                   & (Document.created_at > document.created_at)))
        .order_by(Document.created_at.desc(), Document.id.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalars().first()


async def document_replay_rule(session: AsyncSession, rows: Sequence[DeadLetter]) -> Mapping[int, ReplayCheck]:
    """The `ReplayRule` of `document.uploaded` dead letters that failed for good (see the module)."""
    ids = {row.id: document_id_of(row) for row in rows}
    wanted = {i for i in ids.values() if i}
    documents = {d.id: d for d in (await session.execute(select(Document).where(Document.id.in_(wanted)))).scalars()} \
        if wanted else {}
    verdicts: dict[int, ReplayCheck] = {}
    for row in rows:
        document = documents.get(ids[row.id] or "")
        reason = Failure(row.error_code, row.reason, False).human_reason()
        if document is None:
            verdicts[row.id] = ReplayCheck(False, f"{reason}; its document no longer exists, so there is nothing to "
                                                  "index again")
            continue
        newer = await newest_version(session, document)
        if newer is None and document.original_deleted_at is not None:
            verdicts[row.id] = ReplayCheck(False, f"{reason}; the original of {document.filename} was not kept (the "
                                                  "retention policy deletes files once indexed): upload it again",
                                           todo=f"upload {document.filename} again")
        elif newer is not None:
            verdicts[row.id] = _newer(row, document, newer)
        elif document.status == DocumentStatus.deleted:
            verdicts[row.id] = ReplayCheck(False, f"{document.filename} was deleted since; restore it to index it again")
        elif document.status != DocumentStatus.failed:
            verdicts[row.id] = ReplayCheck(True, f"{document.filename} was queued again since ({document.status.value})")
        else:
            todo = advice(document, row.error_code)
            verdicts[row.id] = ReplayCheck(False, f"{document.filename}: {reason}; trying the same file again would fail "
                                                  f"the same way: {todo}", todo=todo)
    return verdicts


def _newer(row: DeadLetter, document: Document, newer: Document) -> ReplayCheck:
    if newer.status == DocumentStatus.failed:
        why, todo = newer.error or "see its own dead letter", advice(newer)
        return ReplayCheck(False, f"the newer version of {document.filename} failed too ({why}): {todo}", todo=todo)
    if newer.status == DocumentStatus.deleted:
        return ReplayCheck(False, f"the newer version of {document.filename} was deleted since; restore it to index "
                                  "it again")
    payload: dict[str, Any] = {"document_id": newer.id}  # the new bytes; an old password is for the old bytes
    return ReplayCheck(True, f"a newer version of {document.filename} was uploaded: the replay indexes that one "
                             f"({newer.id}, {newer.status.value})", payload=payload)


#: The replay rules of the knowledge domain, by message type (for `parley.bus.replay`).
REPLAY_RULES: Mapping[str, ReplayRule] = {DOCUMENT_UPLOADED: document_replay_rule}


async def failed_for_good_documents(session: AsyncSession, tenant_id: str,
                                    documents: Iterable[Document]) -> dict[str, DeadLetter]:
    """Of these failed documents, those whose last failure was for good, with that dead letter.

    Reads the tenant's `document.uploaded` dead letters newest first (the last one of a document
    is how it last failed). A failed document without a dead letter is not counted as for good."""
    failed = {d.id for d in documents if d.status == DocumentStatus.failed}
    if not failed:
        return {}
    stmt = (select(DeadLetter)
            .where(DeadLetter.tenant_id == tenant_id, DeadLetter.queue == QUEUE_DOCUMENTS,
                   DeadLetter.message_type == DOCUMENT_UPLOADED)
            .order_by(DeadLetter.id.desc()))
    last: dict[str, DeadLetter] = {}
    for row in (await session.execute(stmt)).scalars():
        document_id = document_id_of(row)
        if document_id in failed and document_id not in last:
            last[document_id] = row
            if len(last) == len(failed):
                break
    return {i: row for i, row in last.items() if failed_for_good(row)}
