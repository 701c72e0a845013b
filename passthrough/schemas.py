"""The body a webhook endpoint receives for a pass-through request (event type ``process.completed``).

Standard Webhooks shape: ``{"type", "timestamp", "data"}``. ``data.status`` is ``completed``
(``chunks`` holds every chunk with its vector) or ``failed`` (the file could not be read:
``error`` says why; ``chunks`` is empty). The same body, byte for byte apart from nothing, is
sent on every retry of one run; the ``webhook-id`` header (``msg_<request id>``) is the same on
every attempt of every run, so a receiver that saw it already can drop the copy.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

EVENT_TYPE = "process.completed"


def webhook_id(request_id: str) -> str:
    return f"msg_{request_id}"


class ProcessedChunk(BaseModel):
    ordinal: int
    text: str
    #: The headings the chunk sits under, outermost first.
    section: list[str] = Field(default_factory=list)
    token_count: int
    page_start: int | None = None
    page_end: int | None = None
    #: sha256 of the section and text (equal chunks, equal hash), as the index keeps it.
    content_hash: str
    vector: list[float]


class EmbeddingInfo(BaseModel):
    model: str
    dimension: int


class ProcessError(BaseModel):
    code: str
    message: str


class ProcessResult(BaseModel):
    request_id: str
    status: Literal["completed", "failed"]
    filename: str
    content_type: str
    size_bytes: int
    title: str | None = None
    page_count: int | None = None
    #: Every heading path of the document, in order (its outline).
    sections: list[list[str]] = Field(default_factory=list)
    embedding: EmbeddingInfo | None = None
    chunks: list[ProcessedChunk] = Field(default_factory=list)
    error: ProcessError | None = None


class ProcessCompleted(BaseModel):
    """The shape of every Parley webhook (`webhooks.service.event_body`): type, timestamp, id, data."""

    type: str = EVENT_TYPE
    timestamp: dt.datetime
    #: The ``webhook-id`` header again (``msg_<request id>``), for receivers that log bodies.
    id: str
    data: ProcessResult

    def body(self) -> bytes:
        return self.model_dump_json().encode()


def status_json(row: Any) -> dict[str, Any]:
    """A request as `GET /api/v1/process/{id}` and the dashboard show it: metadata only."""
    iso = lambda v: v.isoformat() if v is not None else None  # noqa: E731
    return {"id": row.id, "status": row.status, "result": row.result, "endpoint_id": row.endpoint_id,
            "content_type": row.content_type, "size_bytes": row.size_bytes, "chunks": row.chunk_count,
            "attempts": row.attempts, "last_status_code": row.last_status_code, "error_code": row.error_code,
            "error": row.error, "webhook_id": webhook_id(row.id), "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at), "delivered_at": iso(row.delivered_at), "finished_at": iso(row.finished_at)}
