"""`parley dlq …`: dead letters, listed with their reason and replayed once the cause is fixed."""

from __future__ import annotations

import json
from typing import Any

import click

from cli.app import Ctx, database, emit, main, out, rabbit, run_async
from parley.english import plural
from parley.errors import InvalidInput

QUEUES = click.Choice(["documents", "catalog", "notifications", "webhooks"])


@main.group(section="operate", example="parley dlq list")
def dlq() -> None:
    """Dead letters: work that could not be done, with the reason; replay what trying again can fix."""


@dlq.command("list", example="parley dlq list --queue documents --all")
@click.option("--queue", type=QUEUES, help="Only this queue.")
@click.option("--tenant", "tenant_name", default=None, help="Only this tenant's (name or id).")
@click.option("--all", "include_replayed", is_flag=True, help="Include dead letters already replayed.")
@click.pass_obj
@run_async
async def dlq_list(ctx: Ctx, queue: str | None, tenant_name: str | None, include_replayed: bool) -> None:
    """List dead letters, newest first: the tenant and file each is about, why it failed, and
    whether replaying it can help (a failure for good is replayed only once something changed)."""
    from knowledge.retry import REPLAY_RULES as KNOWLEDGE_RULES
    from webhooks.service import REPLAY_RULES as WEBHOOK_RULES

    REPLAY_RULES = {**KNOWLEDGE_RULES, **WEBHOOK_RULES}
    from parley.bus import Failure, describe, list_dead_letters
    from parley.bus.dead_letters import check_replays

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name) if tenant_name else None
        async with db.admin() as session:
            found = await list_dead_letters(session, queue=queue, include_replayed=include_replayed,
                                            tenant_id=tenant.id if tenant else None)
            verdicts = await check_replays(session, found, rules=REPLAY_RULES)
            tenants, files = await _names(session, found)
    rows = []
    for r in found:
        verdict = verdicts[r.id]
        rows.append({**describe(r), "tenant": tenants.get(r.tenant_id or "", r.tenant_id), "file": files.get(r.id),
                     "replayable": verdict.allowed, "replay_note": verdict.why, "replay_todo": verdict.todo,
                     "failure": Failure(r.error_code, r.reason, False).human_reason()})
    if ctx.as_json:
        emit(ctx, rows, [])
        return
    if not rows:
        emit(ctx, rows, [], title="dead letters")
        return
    # One block per dead letter, not a table: a file name, a reason and what to do are long, and at
    # 80 columns a nine-column table cut every one of them to a few letters.
    out.print(f"[bold]{plural(len(rows), 'dead letter')}[/bold], newest first")
    for row in rows:
        replay = ("yes" + (f" ({row['replay_note']})" if row["replay_note"] else "")) if row["replayable"] \
            else ("no (already replayed)" if row["status"] != "dead" else f"no: {row['replay_todo'] or row['replay_note']}")
        where = " · ".join(str(x) for x in (row["tenant"], row["queue"], row["when"][:16].replace("T", " "),
                                             plural(row["attempts"] or 0, "attempt")) if x)
        out.print(f"\n[bold]{row['id']}[/bold]  {row['file'] or row['type']}", highlight=False, soft_wrap=True)
        out.print(f"    {where}", highlight=False)
        out.print(f"    failed: {row['failure']}", highlight=False)
        out.print(f"    replay: {replay}", highlight=False)


async def _names(session: Any, rows: Any) -> tuple[dict[str, str], dict[int, str]]:
    """Tenant id -> name, and dead letter id -> the file it is about (documents only)."""
    from sqlalchemy import select

    from knowledge.models import Document
    from knowledge.retry import document_id_of
    from tenants.models import Tenant

    tenant_ids = {r.tenant_id for r in rows if r.tenant_id}
    tenants = dict((await session.execute(select(Tenant.id, Tenant.name).where(Tenant.id.in_(tenant_ids)))).all()) \
        if tenant_ids else {}
    documents = {r.id: d for r in rows if (d := document_id_of(r))}
    names = dict((await session.execute(select(Document.id, Document.filename).where(
        Document.id.in_(set(documents.values()))))).all()) if documents else {}
    return tenants, {i: names[d] for i, d in documents.items() if d in names}


@dlq.command("replay", example="parley dlq replay 12 0a26b8f3")
@click.argument("refs", nargs=-1, metavar="[ID]...")
@click.option("--queue", type=QUEUES, default=None, help="With --all: only this queue's (ids need no queue).")
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter that replaying can help.")
@click.option("--force", is_flag=True,
              help="Replay even failures for good (after fixing their cause in code or configuration).")
@click.pass_obj
@run_async
async def dlq_replay(ctx: Ctx, refs: tuple[str, ...], queue: str | None, replay_all: bool, force: bool) -> None:
    """Re-queue dead letters with their attempts reset: by id (the first column of `parley dlq
    list`, or its message id or a unique prefix of that), or --all.

    A failure for good (a password-protected PDF, a file with no text) would fail the same way, so
    it is refused with what to do instead, unless something changed since (a newer version of the
    file was uploaded: then that version is indexed) or --force is given."""
    from knowledge.retry import REPLAY_RULES as KNOWLEDGE_RULES
    from webhooks.service import REPLAY_RULES as WEBHOOK_RULES

    REPLAY_RULES = {**KNOWLEDGE_RULES, **WEBHOOK_RULES}
    from parley.bus import OutboxRelay, list_dead_letters, replay
    from parley.bus.dead_letters import NotReplayable, check_replays, find_dead_letters

    if refs and replay_all:
        raise InvalidInput("give the ids of the dead letters to replay, or --all, not both")
    if not refs and not replay_all:
        raise InvalidInput("name the dead letters to replay (ids from `parley dlq list`), or pass --all")
    skipped: list[int] = []
    async with database(ctx.settings) as db:
        # Unknown ids and replays that cannot help are refused before anything (RabbitMQ included) is touched.
        async with db.admin() as session:
            named = await list_dead_letters(session, queue=queue, limit=100_000) if replay_all \
                else await find_dead_letters(session, refs)
            verdicts = await check_replays(session, named, rules=REPLAY_RULES, force=force)
        refused = [r for r in named if not verdicts[r.id].allowed]
        if refused and not replay_all:
            dead = any(r.status == "dead" for r in refused)
            hint = " (an operator who fixed the cause in code or configuration can add --force)" if dead else ""
            raise NotReplayable("cannot replay " + "; ".join(f"dead letter {r.id}: {verdicts[r.id].why}" for r in refused)
                                + hint)
        skipped = [r.id for r in refused]
        async with rabbit(ctx.settings, "cli-dlq") as broker:
            rows = await replay(db.sessions, broker, queue=queue, ids=None if replay_all else list(refs),
                                relay=OutboxRelay(db.sessions, broker), rules=REPLAY_RULES, force=force)
    if ctx.as_json:
        click.echo(json.dumps({"replayed": [r.id for r in rows], **({"skipped": skipped} if replay_all else {})}))
        return
    queues = ", ".join(sorted({r.queue for r in rows})) or "any queue"
    out.print(f"replayed {plural(len(rows), 'dead letter')} of {queues}")
    if skipped:
        out.print(f"skipped {plural(len(skipped), 'dead letter')} that replaying cannot help "
                  "(`parley dlq list` says why and what to do)")
