"""`parley dlq …`: dead letters, listed with their reason and replayed once the cause is fixed."""

from __future__ import annotations

import json

import click

from cli.app import Ctx, database, emit, main, out, rabbit, run_async
from parley.errors import ParleyError

QUEUES = click.Choice(["documents", "catalog", "notifications"])


@main.group()
def dlq() -> None:
    """Dead-letter queues: work that failed for good, with the reason; replay it once fixed."""


@dlq.command("list")
@click.option("--queue", type=QUEUES, help="Only this queue.")
@click.option("--all", "include_replayed", is_flag=True, help="Include dead letters already replayed.")
@click.pass_obj
@run_async
async def dlq_list(ctx: Ctx, queue: str | None, include_replayed: bool) -> None:
    """List dead letters, newest first."""
    from parley.bus import describe, list_dead_letters

    async with database(ctx.settings) as db, db.admin() as session:
        rows = [describe(r) for r in await list_dead_letters(session, queue=queue, include_replayed=include_replayed)]
    emit(ctx, rows, [c for c in ("id", "queue", "type", "tenant_id", "attempts", "reason", "status", "dead_lettered_at")
                     if not rows or c in rows[0]], title="dead letters")


@dlq.command("replay")
@click.argument("ids", nargs=-1, type=int)
@click.option("--queue", required=True, type=QUEUES)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter of the queue.")
@click.pass_obj
@run_async
async def dlq_replay(ctx: Ctx, ids: tuple[int, ...], queue: str, replay_all: bool) -> None:
    """Re-queue dead letters (by id from `parley dlq list`, or --all) with their attempts reset."""
    from parley.bus import OutboxRelay, replay

    if not ids and not replay_all:
        raise ParleyError("name the dead letters to replay (ids from `parley dlq list`) or pass --all", code="invalid_input")
    async with database(ctx.settings) as db, rabbit(ctx.settings, "cli-dlq") as broker:
        rows = await replay(db.sessions, broker, queue=queue, ids=list(ids) if ids else None,
                            relay=OutboxRelay(db.sessions, broker))
    if ctx.as_json:
        click.echo(json.dumps({"replayed": [r.id for r in rows]}))
    else:
        out.print(f"replayed {len(rows)} dead letter(s) of {queue}")
