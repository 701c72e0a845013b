"""Processed-message markers: a redelivered or duplicated message changes nothing twice.

The consumer wrapper uses these around every handler (opt out per consumer), keyed by
(consumer name, envelope idempotency key):

1. before the handler, a plain read: a message already processed is acked without running it;
2. after the handler, in the same transaction, an insert that does nothing on conflict: if another
   delivery of the same message committed meanwhile, the insert reports it and the wrapper rolls
   this one back. On PostgreSQL the second insert waits for the first transaction and then sees
   its row; on SQLite writers are serialised.

Writing the marker last (not first) keeps a long handler from holding SQLite's write lock while it
computes. The marker only covers database effects; effects outside the database (vector upserts,
a Slack message) need their own idempotency (deterministic ids, a "sent" column).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from parley.bus.models import ProcessedMessage
from parley.db import utcnow


async def already_processed(session: AsyncSession, consumer: str, key: str) -> bool:
    found = await session.execute(
        select(ProcessedMessage.key).where(ProcessedMessage.consumer == consumer, ProcessedMessage.key == key)
    )
    return found.first() is not None


async def mark_processed(session: AsyncSession, consumer: str, key: str, message_id: str) -> bool:
    """Record the message as processed in the caller's transaction; False if it already was."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = (
        insert(ProcessedMessage)
        .values(consumer=consumer, key=key, message_id=message_id, processed_at=utcnow())
        .on_conflict_do_nothing(index_elements=["consumer", "key"])
    )
    result = await session.execute(stmt)
    return (result.rowcount or 0) == 1


async def prune_processed(session: AsyncSession, *, older_than: dt.timedelta) -> int:
    """Forget markers older than any redelivery could be (days, not minutes)."""
    result = await session.execute(delete(ProcessedMessage).where(ProcessedMessage.processed_at < utcnow() - older_than))
    return result.rowcount or 0
