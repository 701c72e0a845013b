"""Which dead letters may be replayed, and how a person names them: a failure for good is refused
(it would fail the same way and add another dead letter) unless a domain rule says something changed
or an operator forces it; ids are unique across queues, message-id prefixes work, unknown or
ambiguous ones are clear errors that stage nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from sqlalchemy import func, select

from parley.bus import Envelope, Failure, record_dead_letter, stage_replay
from parley.bus.dead_letters import NotReplayable, ReplayCheck, check_replays, failed_for_good, find_dead_letters
from parley.bus.models import DeadLetter, OutboxMessage
from parley.db import unit_of_work
from parley.errors import InvalidInput, NotFound, Unavailable, UnsupportedType
from tests.conftest import Db


async def _dead(db: Db, failure: Failure, *, queue: str = "documents", message_id: str | None = None,
                payload: dict[str, Any] | None = None, message_type: str = "document.uploaded") -> DeadLetter:
    envelope = Envelope.new(message_type, tenant_id=None, payload=payload or {"document_id": "d1"})
    if message_id:
        envelope = envelope.model_copy(update={"id": message_id})
    async with unit_of_work(db.sessions, admin=True) as session:
        return await record_dead_letter(session, queue=queue, message_id=envelope.id, message_type=message_type,
                                        tenant_id=None, correlation_id=None, failure=failure,
                                        attempts=[{"attempt": 1, "error": failure.reason}], body=envelope.to_bytes())


def _for_good() -> Failure:
    return Failure.of(UnsupportedType("cannot parse scan.tiff"))


def _ran_out() -> Failure:
    return Failure.of(Unavailable("the embedding service did not answer")).exhausted(5)


async def _outbox(db: Db) -> int:
    async with unit_of_work(db.sessions, admin=True) as session:
        return (await session.execute(select(func.count()).select_from(OutboxMessage))).scalar_one()


async def test_only_transient_failures_are_replayable_by_default(db: Db) -> None:
    # Given a message that failed for good, one that ran out of attempts, and one already replayed
    permanent, transient, done = await _dead(db, _for_good()), await _dead(db, _ran_out()), await _dead(db, _ran_out())
    async with unit_of_work(db.sessions, admin=True) as session:
        await stage_replay(session, ids=[done.id])
    # When it is asked which may be replayed
    async with unit_of_work(db.sessions, admin=True) as session:
        rows = list((await session.execute(select(DeadLetter).order_by(DeadLetter.id))).scalars())
        verdicts = await check_replays(session, rows)
        forced = await check_replays(session, rows, force=True)
    # Then the transient failure may, the failure for good may not (saying why), the replayed one not again
    assert [failed_for_good(r) for r in rows] == [True, False, False]
    assert verdicts[transient.id] == ReplayCheck(True)
    assert not verdicts[permanent.id].allowed
    assert verdicts[permanent.id].why.startswith("cannot parse scan.tiff: it failed for good")
    assert verdicts[done.id] == ReplayCheck(False, f"dead letter {done.id} was already replayed")
    # And an operator who fixed the cause may force the failure for good, never a second replay
    assert forced[permanent.id].allowed and not forced[done.id].allowed


async def test_named_failure_for_good_is_refused_and_nothing_is_staged(db: Db) -> None:
    permanent, transient = await _dead(db, _for_good()), await _dead(db, _ran_out())
    # When both are named for a replay
    with pytest.raises(NotReplayable) as refused:
        async with unit_of_work(db.sessions, admin=True) as session:
            await stage_replay(session, ids=[permanent.id, transient.id])
    # Then the refusal names the one that cannot be helped and why; nothing moved (all or nothing)
    assert f"dead letter {permanent.id}: cannot parse scan.tiff" in refused.value.message
    assert str(transient.id) not in refused.value.message.replace(f"dead letter {permanent.id}", "")
    assert refused.value.code == "not_replayable"
    assert await _outbox(db) == 0
    # When every replayable one is replayed (no ids), the failure for good is left where it is
    async with unit_of_work(db.sessions, admin=True) as session:
        replayed = await stage_replay(session)
    assert [r.id for r in replayed] == [transient.id] and await _outbox(db) == 1
    async with unit_of_work(db.sessions, admin=True) as session:
        assert (await session.get(DeadLetter, permanent.id)).status == "dead"


async def test_a_domain_rule_may_allow_a_failure_for_good_and_point_it_elsewhere(db: Db) -> None:
    # Given a failure for good whose domain says the file changed since (a newer version: d2)
    row = await _dead(db, _for_good())

    async def newer_version(session: Any, rows: Sequence[DeadLetter]) -> Mapping[int, ReplayCheck]:
        return {r.id: ReplayCheck(True, "a newer version was uploaded", payload={"document_id": "d2"}) for r in rows}

    # When it is replayed under that rule
    async with unit_of_work(db.sessions, admin=True) as session:
        [replayed] = await stage_replay(session, ids=[row.id], rules={"document.uploaded": newer_version})
    # Then the replay carries the payload the rule gave, as a fresh first attempt
    async with unit_of_work(db.sessions, admin=True) as session:
        body = (await session.execute(select(OutboxMessage.body))).scalar_one()
    copy = Envelope.from_bytes(body)
    assert copy.payload == {"document_id": "d2"} and copy.attempt == 1 and copy.id == replayed.replay_message_id


async def test_dead_letters_are_named_by_id_or_message_id_prefix_in_any_queue(db: Db) -> None:
    # Given dead letters in two queues, two of them with message ids that share a prefix
    a = await _dead(db, _ran_out(), queue="documents", message_id="abcd1111" + "0" * 24)
    b = await _dead(db, _ran_out(), queue="catalog", message_id="abcd2222" + "0" * 24, message_type="catalog.sync_requested")
    async with unit_of_work(db.sessions, admin=True) as session:
        # When they are named by row id, by a unique message-id prefix, by a full message id
        by_id = await find_dead_letters(session, [str(b.id)])
        by_prefix = await find_dead_letters(session, ["abcd11"])
        by_message = await find_dead_letters(session, [b.message_id])
        # Then each finds its own, whatever its queue
        assert [r.id for r in by_id] == [b.id] and [r.id for r in by_prefix] == [a.id] and [r.id for r in by_message] == [b.id]
        # And an ambiguous prefix lists the candidates; an unknown id or a too-short prefix is "no such"
        with pytest.raises(InvalidInput) as ambiguous:
            await find_dead_letters(session, ["abcd"])
        assert ambiguous.value.code == "ambiguous_id"
        assert a.message_id in ambiguous.value.message and b.message_id in ambiguous.value.message
        with pytest.raises(NotFound, match="no such dead letter: 999"):
            await find_dead_letters(session, ["999"])
        with pytest.raises(NotFound, match="no such dead letter: ffff0000"):
            await find_dead_letters(session, ["ffff0000"])
        # When both are replayed by id without naming a queue, each goes back to its own queue
        replayed = await stage_replay(session, ids=[a.id, b.id])
    assert sorted(r.queue for r in replayed) == ["catalog", "documents"]
    async with unit_of_work(db.sessions, admin=True) as session:
        keys = sorted((await session.execute(select(OutboxMessage.routing_key))).scalars())
    assert len(keys) == 2 and keys[0].endswith("catalog") and keys[1].endswith("documents")


async def test_an_unknown_id_among_known_ones_stages_nothing(db: Db) -> None:
    row = await _dead(db, _ran_out())
    with pytest.raises(NotFound):
        async with unit_of_work(db.sessions, admin=True) as session:
            await stage_replay(session, ids=[row.id, 4242])
    assert await _outbox(db) == 0
