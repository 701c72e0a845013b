"""Messages that did not reach the customer (`bot.models.DeliveryFailure`): recorded, counted, shown.

A send refused by our own window check (``outside_window``) or by the vendor (``graph_refused``:
Graph's error message kept word for word), by the bot or by a person (a relayed staff reply), is
written in a transaction of its own (the caller's may roll back; the record must stay) and counted
in ``parley_gateway_delivery_failures``. The conversation view in the dashboard and
``/api/conversations/{id}`` list them with the conversation.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.metrics import GatewayMetrics
from bot.models import DeliveryFailure, InboundMessage
from parley.db import unit_of_work, utcnow
from parley.repository import TenantRepository

log = logging.getLogger("parley.gateway.delivery")

OUTSIDE_WINDOW, GRAPH_REFUSED = "outside_window", "graph_refused"


class DeliveryFailureRepository(TenantRepository[DeliveryFailure]):
    model = DeliveryFailure
    noun = "delivery failure"

    async def of_conversation(self, channel: str, conversation_id: str, *, limit: int = 50) -> list[DeliveryFailure]:
        stmt = self.select().where(DeliveryFailure.channel == channel, DeliveryFailure.conversation_id == conversation_id) \
            .order_by(DeliveryFailure.at.desc()).limit(limit)
        return list((await self.session.execute(stmt)).scalars())

    async def of_message(self, message_id: str) -> list[DeliveryFailure]:
        stmt = self.select().where(DeliveryFailure.message_id == message_id).order_by(DeliveryFailure.at)
        return list((await self.session.execute(stmt)).scalars())


async def by_message(session: AsyncSession, tenant_id: str, rows: list[InboundMessage]) -> dict[str, list[DeliveryFailure]]:
    """The delivery failures of the conversations of ``rows`` (newest first), each under its message,
    or (a person's reply, which answers no message) under the newest listed message of its conversation."""
    if not rows:
        return {}
    ids = {r.id for r in rows}
    newest: dict[tuple[str, str], str] = {}
    for r in sorted(rows, key=lambda r: r.received_at, reverse=True):
        newest.setdefault((r.channel, r.conversation_id), r.id)
    repo = DeliveryFailureRepository(session, tenant_id)
    stmt = repo.select().where(DeliveryFailure.conversation_id.in_({c for _, c in newest})).order_by(DeliveryFailure.at.desc())
    out: dict[str, list[DeliveryFailure]] = {}
    for f in (await session.execute(stmt.limit(1000))).scalars():
        key = f.message_id if f.message_id in ids else newest.get((f.channel, f.conversation_id))
        if key is not None:
            out.setdefault(key, []).append(f)
    return out


def failure_json(f: DeliveryFailure) -> dict[str, object]:
    return {"id": f.id, "channel": f.channel, "conversation_id": f.conversation_id, "message_id": f.message_id,
            "reason_code": f.reason_code, "detail": f.detail, "by": f.by, "at": f.at.isoformat() if f.at else None}


async def record_failure(sessions: async_sessionmaker[AsyncSession], metrics: GatewayMetrics | None, *, tenant_id: str,
                         channel: str, conversation_id: str, reason_code: str, detail: str, by: str,
                         message_id: str | None = None) -> None:
    """Write one `DeliveryFailure` (in its own transaction) and count it. A failure to write it is
    logged, never raised over the error the caller is about to raise."""
    if metrics is not None:
        metrics.delivery_failures.labels(channel, reason_code, by).inc()
    log.warning("message not delivered: %s", detail,
                extra={"tenant_id": tenant_id, "reason_code": reason_code, "by": by, "message_id": message_id})
    try:
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            DeliveryFailureRepository(session, tenant_id).add(DeliveryFailure(
                channel=channel, conversation_id=conversation_id[:255], message_id=message_id, reason_code=reason_code[:32],
                detail=detail[:4000], by=by[:8], at=utcnow()))
    except Exception:
        log.exception("could not record the delivery failure")
