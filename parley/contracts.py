"""Message contracts: the only thing producers and consumers share.

Types are `noun.past_tense_verb`. Payloads carry ids and references, never file bytes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

DOCUMENT_UPLOADED = "document.uploaded"
DOCUMENT_DELETED = "document.deleted"
NOTICE_REQUESTED = "notice.requested"

QUEUE_DOCUMENTS = "documents"
QUEUE_CATALOG = "catalog"
QUEUE_NOTIFICATIONS = "notifications"


class DocumentUploaded(BaseModel):
    document_id: str


class DocumentDeleted(BaseModel):
    document_id: str


class NoticeRequested(BaseModel):
    """A line for a person: posted back into the DM (or web chat) the upload came from."""

    text: str
    target: dict[str, Any] = Field(default_factory=dict)  # channel kind, conversation/channel id, user
    document_id: str | None = None
    job_id: str | None = None
    kind: str = "info"  # received / indexed / failed / job_done
