"""The knowledge base's audit log: who added, replaced, deleted, restored a document, or was refused.

Every change is recorded by `record` in the caller's unit of work, so the log row exists if and
only if the change does (`knowledge.service` does it for uploads, deletions and restores, the
document worker for the replacement step). An `Actor` is a person on a channel: a Slack user id,
an Instagram-scoped id, ``api_key:<id>`` on the web and in the dashboard, the operator's login
on the CLI.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from knowledge.models import Document, KnowledgeAction, KnowledgeEvent
from parley.repository import TenantRepository


@dataclass(frozen=True)
class Actor:
    channel: str  # slack / instagram / web / admin / cli / system
    user_id: str
    #: May replace a document someone else uploaded (decided by the tenant's uploader policy).
    may_replace: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "id": self.user_id, "may_replace": self.may_replace}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Actor | None:
        if not isinstance(data, dict) or not data.get("channel"):
            return None
        return cls(str(data["channel"]), str(data.get("id") or ""), bool(data.get("may_replace")))

    def is_uploader_of(self, document: Document) -> bool:
        """Did this person upload ``document``? (A document from before uploaders were recorded
        has no known uploader: nobody is its uploader.)"""
        other = Actor.from_json(document.uploader)
        return other is not None and (other.channel, other.user_id) == (self.channel, self.user_id) and bool(self.user_id)

    def __str__(self) -> str:
        return f"{self.channel}:{self.user_id}" if self.user_id else self.channel


#: Platform work no person asked for (re-indexing everything after a model change).
SYSTEM = Actor("system", "parley", may_replace=True)


def record(session: AsyncSession, *, tenant_id: str, action: KnowledgeAction, actor: Actor, filename: str,
           document_id: str | None = None, replaced_document_id: str | None = None, detail: str | None = None,
           at: dt.datetime | None = None) -> KnowledgeEvent:
    """Add one event to the caller's unit of work (committed, or rolled back, with the change)."""
    event = KnowledgeEventRepository(session, tenant_id).add(KnowledgeEvent(
        action=action, document_id=document_id, filename=filename[:512], actor_channel=actor.channel[:16],
        actor_id=actor.user_id[:255], replaced_document_id=replaced_document_id, detail=detail,
    ))
    if at is not None:
        event.at = at
    return event


class KnowledgeEventRepository(TenantRepository[KnowledgeEvent]):
    model = KnowledgeEvent
    noun = "knowledge event"

    async def list(self, *, limit: int = 100, document_id: str | None = None) -> list[KnowledgeEvent]:
        stmt = self.select().order_by(KnowledgeEvent.at.desc(), KnowledgeEvent.id.desc()).limit(limit)
        if document_id:
            stmt = stmt.where((KnowledgeEvent.document_id == document_id)
                              | (KnowledgeEvent.replaced_document_id == document_id))
        return list((await self.session.execute(stmt)).scalars())

    async def queued_by(self, document_id: str) -> Actor | None:
        """Who queued this version of the document last: its uploader, or whoever restored it."""
        stmt = (self.select().where(KnowledgeEvent.document_id == document_id,
                                    KnowledgeEvent.action.in_([KnowledgeAction.uploaded, KnowledgeAction.restored]))
                .order_by(KnowledgeEvent.at.desc(), KnowledgeEvent.id.desc()).limit(1))
        event = (await self.session.execute(stmt)).scalars().first()
        return Actor(event.actor_channel, event.actor_id) if event is not None else None


def event_json(event: KnowledgeEvent) -> dict[str, Any]:
    return {"id": event.id, "action": event.action.value, "document_id": event.document_id, "filename": event.filename,
            "actor": {"channel": event.actor_channel, "id": event.actor_id},
            "replaced_document_id": event.replaced_document_id, "detail": event.detail,
            "at": event.at.isoformat() if event.at else None}
