"""The dashboard's tenant-scoped reads that no other package needs.

`dead_letter` and `webhook_event` are infrastructure tables (a message may belong to no tenant), so
the session's automatic tenant filter does not cover them: `DeadLetterRepository` and
`ChannelHealthReader` start every query from a statement filtered by the repository's tenant, the
same way `parley.repository.TenantRepository` does for tenant-owned rows (and they bind the session
to that tenant, so every tenant-owned query in the same unit of work is filtered too).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation.repository import ANSWERED, FAILED, InboundRepository
from bot.models import InboundMessage, WebhookEvent
from parley.bus.contracts import CATALOG_SYNC_JOB_KIND as CATALOG_JOB_KIND
from parley.bus.dead_letters import ReplayCheck, list_dead_letters
from parley.bus.models import DeadLetter
from parley.db import utcnow
from knowledge.repository import DocumentRepository, JobRepository
from knowledge.service import job_report
from parley.errors import NotFound
from knowledge.models import Document, Job
from parley.repository import scope_session
from tenants.models import ChannelInstallation, ChannelKind
from tenants.repository import InstallationRepository

#: Installation details that may be shown (never secrets; those are sealed in another column anyway).
SHOWN_DETAILS = ("team_id", "bot_user_id", "shop_name", "currency", "scopes", "username", "enterprise_id", "uploaders",
                 "connected_via", "connected_by", "token_rotated_at")


class _Scoped:
    def __init__(self, session: AsyncSession, tenant_id: str) -> None:
        self.session = scope_session(session, tenant_id)
        self.tenant_id = tenant_id


class DeadLetterRepository(_Scoped):
    """The dead letters of one tenant (a message with no tenant is only for the CLI's `parley dlq`)."""

    def select(self) -> Select[Any]:
        return select(DeadLetter).where(DeadLetter.tenant_id == self.tenant_id)

    async def list(self, *, include_replayed: bool = False, queue: str | None = None, limit: int = 100) -> Sequence[DeadLetter]:
        return await list_dead_letters(self.session, tenant_id=self.tenant_id, queue=queue,
                                       include_replayed=include_replayed, limit=limit)

    async def get(self, id_: int) -> DeadLetter:
        row = (await self.session.execute(self.select().where(DeadLetter.id == id_))).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no such dead letter: {id_}")
        return row

    async def count_dead(self) -> int:
        stmt = select(func.count()).select_from(DeadLetter).where(DeadLetter.tenant_id == self.tenant_id,
                                                                   DeadLetter.status == "dead")
        return int((await self.session.execute(stmt)).scalar_one())


def dead_letter_json(row: DeadLetter, names: dict[str, str] | None = None, verdict: ReplayCheck | None = None) -> dict[str, Any]:
    """A dead letter for the dashboard; with ``verdict`` (`parley.bus.dead_letters.check_replays`),
    whether it may be replayed (``replayable``) and why not or what the replay does (``replay_note``)."""
    payload = _payload(row)
    document_id = payload.get("document_id")
    return {"id": row.id, "queue": row.queue, "type": row.message_type, "error_code": row.error_code, "reason": row.reason,
            "attempts": len(row.attempts or []), "status": row.status, "dead_lettered_at": _iso(row.dead_lettered_at),
            "replayed_at": _iso(row.replayed_at), "document_id": document_id,
            "subject": (names or {}).get(document_id or "") or _subject(payload),
            "replayable": bool(verdict and verdict.allowed), "replay_note": verdict.why if verdict else ""}


async def document_names(session: AsyncSession, tenant_id: str, rows: Sequence[DeadLetter]) -> dict[str, str]:
    """Filenames of the tenant's documents the dead letters are about (to show a name, not an id)."""
    ids = {str(p["document_id"]) for p in map(_payload, rows) if p.get("document_id")}
    if not ids:
        return {}
    repo = DocumentRepository(session, tenant_id)
    found = await session.execute(repo.select(Document.id, Document.filename).where(Document.id.in_(ids)))
    return {id_: name for id_, name in found.all()}


def _subject(payload: dict[str, Any]) -> str | None:
    """What the message was about, for a person: the document or product in its payload."""
    for key in ("filename", "document_id", "product_id", "shop", "text"):
        if payload.get(key):
            return str(payload[key])[:200]
    return None


def _payload(row: DeadLetter) -> dict[str, Any]:
    try:
        payload = json.loads(row.body).get("payload")
    except (ValueError, AttributeError):
        return {}
    return payload if isinstance(payload, dict) else {}


class ChannelHealthReader(_Scoped):
    """Each installation of the tenant with what is known of its health: the last event received
    from it, the last success and the last error recorded (answers and notices for Slack and
    Instagram; webhooks, catalog syncs and catalog dead letters for Shopify). Events are counted per
    channel kind: inbound messages do not record which of two workspaces of one tenant they came from."""

    async def installations(self) -> list[dict[str, Any]]:
        rows = await InstallationRepository(self.session, self.tenant_id).list()
        cache: dict[str, dict[str, Any]] = {}
        out = []
        for row in rows:
            kind = row.kind.value
            if kind not in cache:
                cache[kind] = await (self._shopify() if row.kind == ChannelKind.shopify else self._dm(kind))
            out.append({**_installation_json(row), **cache[kind], "health": _health(row, cache[kind])})
        return out

    async def _dm(self, kind: str) -> dict[str, Any]:
        repo = InboundRepository(self.session, self.tenant_id)
        since = utcnow() - dt.timedelta(hours=24)
        stmt = repo.select(func.max(InboundMessage.received_at), func.count()).where(InboundMessage.channel == kind)
        last_event, total = (await self.session.execute(stmt)).one()
        recent = (await self.session.execute(repo.select(func.count()).where(
            InboundMessage.channel == kind, InboundMessage.received_at >= since))).scalar_one()
        last_ok = (await self.session.execute(repo.select(func.max(InboundMessage.answered_at)).where(
            InboundMessage.channel == kind, InboundMessage.status == ANSWERED))).scalar_one()
        failed = (await self.session.execute(repo.select().where(
            InboundMessage.channel == kind, InboundMessage.status == FAILED)
            .order_by(InboundMessage.received_at.desc()).limit(1))).scalar_one_or_none()
        error, error_at = (failed.error or "the answer failed", failed.answered_at or failed.received_at) if failed else (None, None)
        for dead in await DeadLetterRepository(self.session, self.tenant_id).list(queue="notifications", limit=20):
            if _payload(dead).get("target", {}).get("channel") == kind:
                if error_at is None or dead.dead_lettered_at > error_at:
                    error, error_at = f"notice not delivered: {dead.reason}", dead.dead_lettered_at
                break
        return {"last_event_at": _iso(last_event), "last_event": "direct message" if last_event else None,
                "events_total": int(total), "events_24h": int(recent), "last_ok_at": _iso(last_ok),
                "last_error": error, "last_error_at": _iso(error_at)}

    async def _shopify(self) -> dict[str, Any]:
        hook = (await self.session.execute(
            select(WebhookEvent).where(WebhookEvent.tenant_id == self.tenant_id, WebhookEvent.source == "shopify")
            .order_by(WebhookEvent.received_at.desc()).limit(1))).scalar_one_or_none()
        total, recent = (await self.session.execute(
            select(func.count(), func.count().filter(WebhookEvent.received_at >= utcnow() - dt.timedelta(hours=24)))
            .where(WebhookEvent.tenant_id == self.tenant_id, WebhookEvent.source == "shopify"))).one()
        jobs = JobRepository(self.session, self.tenant_id)
        sync = (await self.session.execute(jobs.select().where(Job.kind == CATALOG_JOB_KIND)
                                           .order_by(Job.created_at.desc()).limit(1))).scalar_one_or_none()
        [dead] = list(await DeadLetterRepository(self.session, self.tenant_id).list(queue="catalog", limit=1)) or [None]
        last_ok = sync.finished_at if sync is not None and sync.status.value == "done" else None
        return {"last_event_at": _iso(hook.received_at) if hook else None, "last_event": hook.topic if hook else None,
                "events_total": int(total), "events_24h": int(recent), "last_ok_at": _iso(last_ok),
                "last_sync": ({"status": sync.status.value, "report": await job_report(self.session, sync),
                               "at": _iso(sync.finished_at or sync.created_at)} if sync is not None else None),
                "last_error": dead.reason if dead else None, "last_error_at": _iso(dead.dead_lettered_at) if dead else None}


def _installation_json(row: ChannelInstallation) -> dict[str, Any]:
    details = {k: row.details[k] for k in SHOWN_DETAILS if isinstance(row.details, dict) and row.details.get(k)}
    return {"id": row.id, "kind": row.kind.value, "external_id": row.external_id, "display_name": row.display_name,
            "status": row.status, "installed_at": _iso(row.created_at), "revoked_at": _iso(row.revoked_at), "details": details}


def _health(row: ChannelInstallation, seen: dict[str, Any]) -> str:
    """revoked / failing (the last thing recorded is an error) / ok / idle (nothing recorded yet)."""
    if row.status != "active":
        return "revoked"
    error_at, ok_at = _when(seen.get("last_error_at")), _when(seen.get("last_ok_at") or seen.get("last_event_at"))
    if error_at and (not ok_at or error_at >= ok_at):
        return "failing"
    return "ok" if ok_at else "idle"


def latency_summary(messages: Sequence[InboundMessage]) -> dict[str, Any]:
    """Answer latency of the listed messages: count, median, 95th percentile, slowest (ms)."""
    answered = sorted(m.answer_ms for m in messages if m.answer_ms is not None)
    acks = [m.ack_ms for m in messages if m.ack_ms is not None]
    summary: dict[str, Any] = {"messages": len(messages), "answered": sum(m.status == ANSWERED for m in messages),
                               "failed": sum(m.status == FAILED for m in messages),
                               "answer_ms_p50": None, "answer_ms_p95": None, "answer_ms_max": None, "ack_ms_p50": None}
    if answered:
        summary.update(answer_ms_p50=round(statistics.median(answered), 1),
                       answer_ms_p95=round(answered[min(len(answered) - 1, int(0.95 * len(answered)))], 1),
                       answer_ms_max=round(answered[-1], 1))
    if acks:
        summary["ack_ms_p50"] = round(statistics.median(acks), 2)
    return summary


def _when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
