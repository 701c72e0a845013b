"""Inbound messages and conversation turns: idempotent insert, claims, recovery queries.

A message is claimed by one conditional UPDATE on the (status, attempts) it was seen with
(``received -> answering``, or for a take-over ``answering -> answering`` once the holder's lease
ran out), so however many tasks, sweeps or processes race for it, exactly one wins. The claim's
attempts number is its token: the final UPDATE only lands if the message is still held by it.
The claim time is kept in ``context["claimed_at"]`` (no column for it in migration 0001; a
``claimed_at`` column would let the lease be filtered in SQL - see the gateway report).

A question sent with files waits in its own row (``waiting``, the files in ``context["awaits"]``),
so it needs no table of its own and outlives a restart; `wake` puts it back to ``received``
(compare-and-set) once `awaited_files` says they are read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.conversation.schemas import IncomingMessage
from bot.models import ConversationTurn, InboundMessage
from knowledge.models import Document, DocumentStatus
from knowledge.repository import DocumentRepository
from parley.db import bind_admin, new_id, unit_of_work, utcnow
from parley.repository import TenantRepository

RECEIVED, ANSWERING, ANSWERED, FAILED, IGNORED, EXPIRED = "received", "answering", "answered", "failed", "ignored", "expired"
#: A question sent with files, its files taken and being indexed: ``context["awaits"]`` names them
#: (``[{"id": document id, "name": filename}]``); `release_ready` turns it back into ``received``.
WAITING = "waiting"
#: Document statuses after which a waiting question is answered.
SETTLED = frozenset({DocumentStatus.indexed, DocumentStatus.failed, DocumentStatus.deleted})


class InboundRepository(TenantRepository[InboundMessage]):
    model = InboundMessage
    noun = "message"

    async def recent(self, *, limit: int = 50, channel: str | None = None) -> list[InboundMessage]:
        stmt = self.select().order_by(InboundMessage.received_at.desc()).limit(limit)
        if channel:
            stmt = stmt.where(InboundMessage.channel == channel)
        return list((await self.session.execute(stmt)).scalars())

    async def by_event(self, channel: str, external_event_id: str) -> InboundMessage | None:
        stmt = self.select().where(InboundMessage.channel == channel, InboundMessage.external_event_id == external_event_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()


@dataclass(frozen=True)
class Accepted:
    message_id: str
    created: bool  # False: a redelivery of a message already stored


def _row(msg: IncomingMessage) -> dict[str, Any]:
    context: dict[str, Any] = {"route": msg.route}
    if msg.sent_at is not None:
        context["sent_at"] = msg.sent_at.isoformat()
    if msg.attachments:
        context["attachments"] = [a.to_json() for a in msg.attachments]
    if msg.feedback:
        context["feedback"] = msg.feedback[:128]
    return {"id": new_id(), "tenant_id": msg.tenant_id, "channel": msg.channel,
            "external_event_id": msg.external_event_id[:255], "conversation_id": msg.conversation_id[:255],
            "sender_id": msg.sender_id[:255], "text": msg.text, "status": RECEIVED, "attempts": 0,
            "received_at": utcnow(), "context": context}


async def _insert_new(session: AsyncSession, rows: list[dict[str, Any]]) -> set[str]:
    """``INSERT ... ON CONFLICT (channel, external_event_id) DO NOTHING RETURNING id``: the ids of
    the rows that were new. The database decides, so concurrent redeliveries cannot both win."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as upsert
    else:  # pragma: no cover - other databases: one by one, the unique constraint still decides
        created = set()
        for row in rows:
            try:
                async with session.begin_nested():
                    await session.execute(insert(InboundMessage).values(**row))
                created.add(row["id"])
            except IntegrityError:
                pass
        return created
    table = InboundMessage.__table__
    # One statement with parameter sets (compiled once, cached): SQLAlchemy batches the rows into
    # multi-row INSERTs and gathers RETURNING from each; skipped duplicates return nothing.
    stmt = upsert(table).on_conflict_do_nothing(index_elements=["channel", "external_event_id"]).returning(table.c.id)
    return set((await session.execute(stmt, rows)).scalars())


class InboundWriter:
    """Stores inbound messages with natural group commit: requests that arrive while a commit is in
    flight are written together in the next one. At low load every message is its own transaction
    (no timer, no added latency); in a burst one commit carries many acks instead of one each."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, max_batch: int = 200) -> None:
        self.sessions = sessions
        self.max_batch = max_batch
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Sizes of the batches written (for the benchmark and tests).
        self.batches: list[int] = []

    async def accept(self, msg: IncomingMessage, *, want_existing: bool = False) -> Accepted:
        """Persist the message (before the channel acks). A redelivery returns ``created=False``
        (with the stored message's id when ``want_existing``)."""
        accepted = await self.add(msg)
        if not accepted.created and want_existing:
            return Accepted(await existing_id(self.sessions, msg) or "", created=False)
        return accepted

    async def add(self, msg: IncomingMessage) -> Accepted:
        row = _row(msg)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((row, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="parley-inbound-writer")
        if await future:
            return Accepted(row["id"], created=True)
        return Accepted("", created=False)

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch:]
            try:
                created = await self._write([row for row, _ in batch])
            except Exception:
                # One bad row must not fail its neighbours: write them one by one; a row that still
                # fails (the database is down) fails its own request, and the vendor retries it.
                for row, future in batch:
                    try:
                        self._settle(future, row["id"] in await self._write([row]))
                    except Exception as exc:
                        if not future.done():
                            future.set_exception(exc)
                continue
            self.batches.append(len(batch))
            del self.batches[:-1000]
            for row, future in batch:
                self._settle(future, row["id"] in created)

    async def _write(self, rows: list[dict[str, Any]]) -> set[str]:
        async with unit_of_work(self.sessions, admin=True) as session:
            return await _insert_new(session, rows)

    @staticmethod
    def _settle(future: asyncio.Future[bool], created: bool) -> None:
        if not future.done():
            future.set_result(created)


async def existing_id(sessions: async_sessionmaker[AsyncSession], msg: IncomingMessage) -> str | None:
    async with unit_of_work(sessions, tenant_id=msg.tenant_id) as session:
        row = await InboundRepository(session, msg.tenant_id).by_event(msg.channel, msg.external_event_id[:255])
        return row.id if row is not None else None


async def set_ack_ms(sessions: async_sessionmaker[AsyncSession], tenant_id: str, message_id: str, ack_ms: float) -> None:
    async with unit_of_work(sessions, tenant_id=tenant_id) as session:
        await session.execute(
            update(InboundMessage).where(InboundMessage.id == message_id, InboundMessage.ack_ms.is_(None))
            .values(ack_ms=ack_ms).execution_options(synchronize_session=False)
        )


async def claim(session: AsyncSession, message_id: str, *, status: str = RECEIVED,
                attempts: int | None = None) -> tuple[int, InboundMessage] | None:
    """Take the message for answering: compare-and-set on the (status, attempts) it was seen with,
    stamping the claim's time into ``context["claimed_at"]`` (the lease a take-over checks).
    Returns the claim's token (the new attempts count) and the row as it was seen, or None when
    someone else holds it or it is finished."""
    row = (await session.execute(select(InboundMessage).where(InboundMessage.id == message_id))).scalar_one_or_none()
    if row is None or row.status != status or (attempts is not None and row.attempts != attempts):
        return None
    seen_status, seen_attempts = row.status, row.attempts
    context = {**(row.context or {}), "claimed_at": utcnow().isoformat()}
    result = await session.execute(
        update(InboundMessage)
        .where(InboundMessage.id == message_id, InboundMessage.status == seen_status, InboundMessage.attempts == seen_attempts)
        .values(status=ANSWERING, attempts=seen_attempts + 1, context=context)
        .execution_options(synchronize_session=False)
    )
    return (seen_attempts + 1, row) if result.rowcount == 1 else None


async def finish(session: AsyncSession, message_id: str, token: int, **values: Any) -> bool:
    """Record the outcome, only if this claim still holds the message."""
    result = await session.execute(
        update(InboundMessage)
        .where(InboundMessage.id == message_id, InboundMessage.status == ANSWERING, InboundMessage.attempts == token)
        .values(**values).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def release(session: AsyncSession, message_id: str, token: int) -> None:
    """Give an unfinished claim back (graceful shutdown): the next start answers it."""
    await finish(session, message_id, token, status=RECEIVED)


async def recent_turns(session: AsyncSession, tenant_id: str, conversation_id: str, limit: int) -> list[ConversationTurn]:
    stmt = (
        select(ConversationTurn)
        .where(ConversationTurn.tenant_id == tenant_id, ConversationTurn.conversation_id == conversation_id)
        .order_by(ConversationTurn.created_at.desc(), ConversationTurn.id.desc())
        .limit(limit)
    )
    return list(reversed(list((await session.execute(stmt)).scalars())))


@dataclass(frozen=True)
class Recoverable:
    message_id: str
    tenant_id: str
    status: str
    attempts: int


async def recoverable(
    session: AsyncSession, *, younger_than: dt.timedelta, lease: dt.timedelta, received_grace: dt.timedelta = dt.timedelta(0),
    limit: int = 500,
) -> list[Recoverable]:
    """Unfinished messages of every tenant, oldest first (a cross-tenant query: admin session):
    ``received`` ones older than ``received_grace`` (nobody picked them up), and ``answering`` ones
    whose claim is older than ``lease`` (its holder died: a live holder finishes or gives up first)."""
    bind_admin(session)
    now = utcnow()
    stmt = (
        select(InboundMessage.id, InboundMessage.tenant_id, InboundMessage.status, InboundMessage.attempts,
               InboundMessage.context, InboundMessage.received_at)
        .where(InboundMessage.status.in_([RECEIVED, ANSWERING]), InboundMessage.received_at > now - younger_than)
        .order_by(InboundMessage.received_at)
        .limit(limit)
    )
    out = []
    for row in (await session.execute(stmt)).all():
        if row.status == RECEIVED and row.received_at > now - received_grace:
            continue
        if row.status == ANSWERING:
            claimed = (row.context or {}).get("claimed_at")
            if claimed and dt.datetime.fromisoformat(claimed) > now - lease:
                continue
        out.append(Recoverable(row.id, row.tenant_id, row.status, row.attempts))
    return out


# --- questions waiting for their files ------------------------------------------------------------


@dataclass(frozen=True)
class AwaitedFile:
    """A file a waiting question was sent with, as its document stands now."""

    document_id: str
    name: str
    status: str  # a DocumentStatus value, or "missing"
    error: str | None = None

    @property
    def settled(self) -> bool:
        return self.status == "missing" or DocumentStatus(self.status) in SETTLED


async def awaited_files(session: AsyncSession, tenant_id: str, awaits: list[dict[str, Any]]) -> list[AwaitedFile]:
    """The documents ``awaits`` names (``context["awaits"]`` of a waiting message), in its order."""
    ids = [str(a.get("id")) for a in awaits if a.get("id")]
    stmt = DocumentRepository(session, tenant_id).select(Document.id, Document.status, Document.error).where(Document.id.in_(ids))
    found = {row.id: row for row in (await session.execute(stmt)).all()} if ids else {}
    out = []
    for a in awaits:
        row = found.get(str(a.get("id")))
        out.append(AwaitedFile(str(a.get("id")), str(a.get("name") or "file"), row.status.value if row else "missing",
                               row.error if row else None))
    return out


async def waiting(session: AsyncSession, *, tenant_id: str | None, limit: int = 500) -> list[tuple[str, str, dict[str, Any], dt.datetime]]:
    """(id, tenant id, context, received_at) of waiting messages, oldest first: of one tenant, or
    of every tenant (``tenant_id`` None: the session must be an admin one)."""
    stmt = (select(InboundMessage.id, InboundMessage.tenant_id, InboundMessage.context, InboundMessage.received_at)
            .where(InboundMessage.status == WAITING).order_by(InboundMessage.received_at).limit(limit))
    if tenant_id is not None:
        stmt = stmt.where(InboundMessage.tenant_id == tenant_id)
    return [(r.id, r.tenant_id, dict(r.context or {}), r.received_at) for r in (await session.execute(stmt)).all()]


async def wake(session: AsyncSession, message_id: str) -> bool:
    """``waiting -> received`` (a compare-and-set: of the sweeps and notices racing for it, one wins)."""
    result = await session.execute(
        update(InboundMessage).where(InboundMessage.id == message_id, InboundMessage.status == WAITING)
        .values(status=RECEIVED).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1
