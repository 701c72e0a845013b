"""Dead letters: the ``dead_letter`` table is the index, the broker's ``<queue>.dlq`` the copy.

RabbitMQ cannot list a queue without taking messages off it, so the consumer wrapper records every
dead letter in the table, in the same transaction as the domain's ``on_dead_letter`` hook, before
publishing the copy to the DLQ. ``parley dlq list`` reads the table; ``parley dlq replay`` stages a
fresh copy through the outbox (new message id, attempt reset to 1, same idempotency and correlation
ids, the replay recorded in ``x-parley-replay-of`` / ``x-parley-replayed-at`` headers), marks the
row replayed in the same transaction, and after the commit drains the replayed messages from the
broker's DLQ so it holds only what is still dead.

Not everything is worth replaying. A message that ran out of attempts on a transient error may
well succeed now; one dead-lettered at once failed for good (a password-protected PDF, a file with
no text) and would fail the same way, adding another dead letter. So :func:`check_replays` allows
a replay of a failure for good only when the message's domain says something changed since (a
``ReplayRule`` per message type: ``knowledge.retry`` says so when a newer version of the file was
uploaded), or when an operator forces it after fixing the cause in code or configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.bus.broker import Broker
from parley.bus.envelope import H_REPLAY_OF, H_REPLAYED_AT, Envelope
from parley.bus.errors import EXHAUSTED_PREFIX, HOOK_FAILED_NOTE, Failure
from parley.bus.models import DeadLetter
from parley.bus.outbox import OutboxRelay, stage
from parley.db import new_id, unit_of_work, utcnow
from parley.errors import AlreadyExists, InvalidInput, NotFound
from parley.repository import MIN_PREFIX, resolve_id

log = logging.getLogger(__name__)


async def record_dead_letter(
    session: AsyncSession,
    *,
    queue: str,
    message_id: str,
    message_type: str,
    tenant_id: str | None,
    correlation_id: str | None,
    failure: Failure,
    attempts: list[dict[str, Any]],
    body: bytes,
) -> DeadLetter:
    """Insert (or, for a redelivered copy of the same message, update) the dead letter's row."""
    found = await session.execute(select(DeadLetter).where(DeadLetter.queue == queue, DeadLetter.message_id == message_id))
    row = found.scalar_one_or_none()
    if row is None:
        row = DeadLetter(queue=queue, message_id=message_id)
        session.add(row)
    row.message_type = message_type
    row.tenant_id = tenant_id
    row.correlation_id = correlation_id
    row.error_code = failure.code
    row.reason = failure.reason
    row.attempts = attempts
    row.body = body.decode("utf-8", errors="replace")
    row.dead_lettered_at = utcnow()
    row.status = "dead"
    await session.flush()
    return row


async def is_dead_lettered(session: AsyncSession, *, queue: str, message_id: str) -> bool:
    """True if this very message (not a replay of it: those get a new id) already ended in the DLQ."""
    found = await session.execute(
        select(DeadLetter.id).where(DeadLetter.queue == queue, DeadLetter.message_id == message_id, DeadLetter.status == "dead")
    )
    return found.first() is not None


async def list_dead_letters(
    session: AsyncSession,
    *,
    queue: str | None = None,
    tenant_id: str | None = None,
    include_replayed: bool = False,
    limit: int = 100,
) -> Sequence[DeadLetter]:
    """Newest first. Each row: id, queue, message_id, message_type, tenant_id, reason, attempts, dead_lettered_at."""
    stmt = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
    if queue is not None:
        stmt = stmt.where(DeadLetter.queue == queue)
    if tenant_id is not None:
        stmt = stmt.where(DeadLetter.tenant_id == tenant_id)
    if not include_replayed:
        stmt = stmt.where(DeadLetter.status == "dead")
    return (await session.execute(stmt)).scalars().all()


class NotReplayable(AlreadyExists):
    """Replaying would not help (the message failed for good and nothing changed since), or the dead
    letter was replayed already: a conflict with the dead letter's state (409 over HTTP)."""

    code = "not_replayable"


@dataclass(frozen=True)
class ReplayCheck:
    """May a dead letter be replayed? ``why``: when refused, why and what to do instead; when
    allowed, anything worth saying (empty when it is a plain retry). ``payload``: the domain points
    the replay elsewhere (a document's newest version) by giving the payload to send instead."""

    allowed: bool
    why: str = ""
    payload: dict[str, Any] | None = None
    #: When refused: just what to do instead ("upload a new version of scan.pdf"), for short displays.
    todo: str = ""


#: A domain's say on dead letters of one message type that failed for good: a verdict per row id
#: (rows it leaves out are refused with the generic reason). Batched: one query for a whole list.
ReplayRule = Callable[[AsyncSession, Sequence[DeadLetter]], Awaitable[Mapping[int, ReplayCheck]]]


def failed_for_good(row: DeadLetter) -> bool:
    """True when trying the very same message again fails the same way: it was dead-lettered at
    once (a `Permanent` error, an invalid payload, an unreadable envelope). False when it ran out
    of attempts on a transient error, or our own dead-letter hook failed: a replay may succeed."""
    reason = row.reason or ""
    return not (reason.startswith(EXHAUSTED_PREFIX) or reason.endswith(HOOK_FAILED_NOTE))


async def check_replays(
    session: AsyncSession, rows: Sequence[DeadLetter], *, rules: Mapping[str, ReplayRule] | None = None,
    force: bool = False,
) -> dict[int, ReplayCheck]:
    """Whether each dead letter may be replayed: a transient failure may; a failure for good only
    when its domain's rule (by message type) says something changed, or with ``force`` (an operator
    who fixed the cause in code or configuration). A replayed one may not be replayed again."""
    verdicts: dict[int, ReplayCheck] = {}
    for_good: dict[str, list[DeadLetter]] = {}
    for row in rows:
        if row.status != "dead":
            verdicts[row.id] = ReplayCheck(False, f"dead letter {row.id} was already replayed")
        elif force or not failed_for_good(row):
            verdicts[row.id] = ReplayCheck(True)
        else:
            for_good.setdefault(row.message_type, []).append(row)
    for message_type, group in for_good.items():
        rule = (rules or {}).get(message_type)
        said = await rule(session, group) if rule is not None else {}
        for row in group:
            verdicts[row.id] = said.get(row.id) or ReplayCheck(False, _for_good(row))
    return verdicts


def _for_good(row: DeadLetter) -> str:
    reason = Failure(row.error_code, row.reason, False).human_reason()
    return (f"{reason}: it failed for good, and replaying the same message would fail the same way; "
            "fix the cause and send it again")


async def find_dead_letters(session: AsyncSession, refs: Sequence[str | int]) -> list[DeadLetter]:
    """The dead letters named by ``refs``: each a row id (``parley dlq list``'s first column) or its
    message id or a unique prefix of that (at least 4 characters). Ids are unique across queues.
    An unknown or ambiguous ref is an error that names it; nothing is returned partially."""
    found: dict[int, DeadLetter] = {}
    for ref in refs:
        text = str(ref).strip()
        row = None
        if text.isdigit():
            row = await session.get(DeadLetter, int(text))
            if row is None and len(text) < MIN_PREFIX:
                raise NotFound(f"no such dead letter: {text} (`parley dlq list --all` shows them)")
        if row is None:
            row = await resolve_id(session, select(DeadLetter), DeadLetter.message_id, text, noun="dead letter",
                                   label=DeadLetter.queue, hint="`parley dlq list --all` shows them")
        found[row.id] = row
    return list(found.values())


async def stage_replay(
    session: AsyncSession,
    *,
    queue: str | None = None,
    ids: Sequence[str | int] | None = None,
    rules: Mapping[str, ReplayRule] | None = None,
    force: bool = False,
) -> list[DeadLetter]:
    """Stage replays of the given dead letters (ids or message ids: see :func:`find_dead_letters`),
    or with ``ids=None`` of every still-dead one (of ``queue`` when given) that may be replayed.

    Services never commit: the caller's unit of work makes the replay real. Named dead letters that
    may not be replayed (:func:`check_replays`) raise :class:`NotReplayable` with the reason and
    what to do, and nothing is staged; unknown ones raise ``NotFound``. A malformed message (no
    readable envelope) cannot be replayed and raises :class:`InvalidInput`.
    """
    if ids is not None:
        rows = sorted(await find_dead_letters(session, ids), key=lambda r: r.id)
        if queue is not None and (elsewhere := [r.id for r in rows if r.queue != queue]):
            raise InvalidInput(f"dead letter(s) {', '.join(map(str, elsewhere))} are not in the {queue} queue")
    else:
        stmt = select(DeadLetter).where(DeadLetter.status == "dead").order_by(DeadLetter.id)
        if queue is not None:
            stmt = stmt.where(DeadLetter.queue == queue)
        rows = list((await session.execute(stmt)).scalars().all())
    verdicts = await check_replays(session, rows, rules=rules, force=force)
    if ids is not None:
        refused = [f"dead letter {r.id}: {verdicts[r.id].why}" for r in rows if not verdicts[r.id].allowed]
        if refused:
            raise NotReplayable("cannot replay " + "; ".join(refused))
    else:
        rows = [r for r in rows if verdicts[r.id].allowed]
    now = utcnow()
    for row in rows:
        try:
            original = Envelope.from_bytes(row.body)
        except ValueError as exc:
            raise InvalidInput(f"dead letter {row.id} has no readable envelope and cannot be replayed") from exc
        update: dict[str, Any] = {"id": new_id(), "attempt": 1}
        if verdicts[row.id].payload is not None:
            update["payload"] = verdicts[row.id].payload
        replay = original.model_copy(update=update)
        stage(session, replay, row.queue, headers={H_REPLAY_OF: row.message_id, H_REPLAYED_AT: now.isoformat()})
        row.status = "replayed"
        row.replayed_at = now
        row.replay_message_id = replay.id
    return rows


async def replay(
    sessions: async_sessionmaker[AsyncSession],
    broker: Broker,
    *,
    queue: str | None = None,
    ids: Sequence[str | int] | None = None,
    relay: OutboxRelay | None = None,
    rules: Mapping[str, ReplayRule] | None = None,
    force: bool = False,
) -> list[DeadLetter]:
    """The edge of a replay (CLI, dashboard): :func:`stage_replay` in one transaction, publish
    (through ``relay`` if given, else the process's running relays are nudged by the commit), then
    drain the replayed copies from each queue's DLQ."""
    async with unit_of_work(sessions, admin=True) as session:
        rows = await stage_replay(session, queue=queue, ids=ids, rules=rules, force=force)
    if relay is not None:
        await relay.flush()
    for name in sorted({row.queue for row in rows}):
        mine = {row.message_id for row in rows if row.queue == name}
        removed = await broker.drain_dead(name, mine)
        log.info("replayed %d dead letters of %s; %d removed from the dead-letter queue", len(mine), name, removed)
    return rows


def describe(row: DeadLetter) -> dict[str, Any]:
    """One line of ``parley dlq list``."""
    return {
        "id": row.id,
        "queue": row.queue,
        "message_id": row.message_id,
        "type": row.message_type,
        "tenant_id": row.tenant_id,
        "reason": row.reason,
        "attempts": len(row.attempts),
        "when": row.dead_lettered_at.isoformat(),
        "status": row.status,
        "failed_for_good": failed_for_good(row),
    }

