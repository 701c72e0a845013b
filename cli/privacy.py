"""`parley erase`, `parley retention …` and `parley tenants delete`: what Parley keeps, and removing it."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from cli.app import Ctx, database, main, out, run_async
from cli.tenants import tenants


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("what")
    table.add_column("rows", justify="right")
    for kind, n in counts.items():
        table.add_row(kind.replace("_", " "), f"{n:,}")
    return table


async def _writer_index(ctx: Ctx, db: Any) -> Any:
    from parley.vectors import create_vector_index

    return create_vector_index(ctx.settings, role="writer", sessions=db.sessions)


# --- erasure of one end customer ----------------------------------------------------------------


@main.command("erase", section="operate", example="parley erase --tenant acme --customer slack:U0123ABCD --dry-run")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--customer", required=True,
              help="The end customer as <channel>:<id>: slack:<Slack user id>, instagram:<IGSID>, "
                   "web:api_key:<key id> or web:visitor:<id>.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@click.pass_obj
@run_async
async def erase(ctx: Ctx, tenant_name: str, customer: str, dry_run: bool) -> None:
    """Erase one end customer of a tenant everywhere: their messages, the bot's replies, conversation
    turns, handoff state and staff-thread references, feedback, failed deliveries, every document they
    uploaded (vectors, chunks, the file) and their id in the knowledge history; cached answers are
    invalidated. Prints what was removed, by kind."""
    from bot.privacy.erasure import Customer, drop_vector_snapshot, erase_customer
    from parley.blobs import BlobStore

    who = Customer.parse(customer)  # a malformed customer is an error before anything is opened
    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        index = None if dry_run else await _writer_index(ctx, db)
        try:
            async with db.scoped(tenant.id) as session:
                report = await erase_customer(session, tenant_id=tenant.id, customer=who, index=index,
                                              blobs=BlobStore(ctx.settings.effective_blob_dir), dry_run=dry_run)
        finally:
            if index is not None:
                await index.aclose()
    drop_vector_snapshot(ctx.settings, tenant.id, report)
    if ctx.as_json:
        click.echo(json.dumps({"tenant": tenant.name, **report.to_json()}))
        return
    out.print(_counts_table(f"{'would erase' if dry_run else 'erased'} {who} of tenant {tenant.name}",
                            {k: v for k, v in report.counts.items() if k != "vectors_queued"}))
    for note in report.notes:
        out.print(f"note: {note}")
    out.print(report.summary())


# --- retention ----------------------------------------------------------------------------------


@main.group(section="operate", example="parley retention set --tenant acme --transcript-days 90 --raw-files delete")
def retention() -> None:
    """What each tenant keeps and for how long: uploaded files after indexing, conversation
    transcripts, dead letters. The gateway applies it every PARLEY_RETENTION_SWEEP_INTERVAL_SECONDS;
    `parley retention run` applies it now."""


def _show(ctx: Ctx, name: str, value: Any) -> None:
    if ctx.as_json:
        click.echo(json.dumps({"tenant": name, **value.to_json(), "meaning": value.describe()}))
        return
    table = Table(title=f"retention of tenant {name}")
    for column in ("setting", "value", "from"):
        table.add_column(column)
    described = value.describe()
    for (label, text), key in zip(described.items(), ("raw_files", "transcript_days", "dead_letter_days"), strict=True):
        table.add_row(label, text, value.source[key])
    out.print(table)


@retention.command("show", example="parley retention show --tenant acme")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def retention_show(ctx: Ctx, tenant_name: str) -> None:
    """A tenant's retention settings, each with where it comes from (the tenant's own, or the default)."""
    from tenants.retention import get_retention

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            value = await get_retention(session, tenant_id=tenant.id, settings=ctx.settings)
    _show(ctx, tenant.name, value)


def _optional_days(text: str | None) -> Any:
    from tenants.retention import _UNSET

    if text is None:
        return _UNSET
    return None if text.strip().lower() == "default" else text


@retention.command("set", example="parley retention set --tenant acme --transcript-days 90 --dead-letter-days 14")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--raw-files", type=click.Choice(["keep", "delete", "default"]), default=None,
              help="Keep uploaded files after indexing, or delete them then (only chunks stay).")
@click.option("--transcript-days", default=None, metavar="DAYS|default",
              help="Days messages, replies and turns are kept (0: for ever).")
@click.option("--dead-letter-days", default=None, metavar="DAYS|default", help="Days dead letters are kept.")
@click.pass_obj
@run_async
async def retention_set(ctx: Ctx, tenant_name: str, raw_files: str | None, transcript_days: str | None,
                        dead_letter_days: str | None) -> None:
    """Change a tenant's retention settings; the ones not given stay, `default` goes back to the
    platform default (PARLEY_RETENTION_*)."""
    from parley.errors import InvalidInput
    from tenants.retention import _UNSET, set_retention

    if raw_files is None and transcript_days is None and dead_letter_days is None:
        raise InvalidInput("give at least one of --raw-files, --transcript-days, --dead-letter-days")
    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            value = await set_retention(
                session, tenant_id=tenant.id, settings=ctx.settings,
                raw_files=_UNSET if raw_files is None else (None if raw_files == "default" else raw_files),
                transcript_days=_optional_days(transcript_days), dead_letter_days=_optional_days(dead_letter_days))
    _show(ctx, tenant.name, value)


@retention.command("run", example="parley retention run --tenant acme")
@click.option("--tenant", "tenant_name", default=None, help="Only this tenant (default: every tenant, and dead "
              "letters of no tenant).")
@click.pass_obj
@run_async
async def retention_run(ctx: Ctx, tenant_name: str | None) -> None:
    """Apply the retention settings now: transcripts and dead letters past their days, uploaded files
    of tenants that keep only chunks. Prints what was removed."""
    from bot.privacy.retention import run_sweeps
    from parley.blobs import BlobStore

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name) if tenant_name else None
        report = await run_sweeps(db.sessions, settings=ctx.settings, blobs=BlobStore(ctx.settings.effective_blob_dir),
                                  tenant_id=tenant.id if tenant else None)
    if ctx.as_json:
        click.echo(json.dumps(report.to_json()))
        return
    totals = report.totals()
    if not any(totals.values()):
        out.print("retention: nothing to remove")
        return
    out.print(_counts_table("retention sweep: removed", {k: v for k, v in totals.items() if v}))


# --- deleting a tenant --------------------------------------------------------------------------


@tenants.command("delete", example="parley tenants delete acme --yes")
@click.argument("name_or_id")
@click.option("--yes", is_flag=True, help="Really delete (without it, nothing is deleted and the command says "
              "what would go).")
@click.pass_obj
@run_async
async def tenants_delete(ctx: Ctx, name_or_id: str, yes: bool) -> None:
    """Delete a tenant and everything of it: every row in every table (documents, chunks, messages,
    conversations, keys, channels, queued and dead-lettered messages, ...), its uploaded files, its
    vectors; messages of it still in RabbitMQ are dropped by the workers when they arrive. Without
    --yes it only shows what would be deleted."""
    from cli.migrations import load_models
    from parley.blobs import BlobStore
    from tenants.deletion import delete_tenant

    load_models()
    async with database(ctx.settings) as db:
        tenant = await db.tenant(name_or_id)
        index = await _writer_index(ctx, db) if yes else None
        try:
            async with db.admin() as session:
                report = await delete_tenant(session, tenant_id=tenant.id, blobs=BlobStore(ctx.settings.effective_blob_dir),
                                             index=index, vector_dir=ctx.settings.data_dir / "vectors", dry_run=not yes)
        finally:
            if index is not None:
                await index.aclose()
    if ctx.as_json:
        click.echo(json.dumps(report.to_json()))
        return
    rows = dict(sorted(report.rows.items()))
    rows["uploaded files"] = report.files
    rows["vector snapshot files"] = report.vector_files
    out.print(_counts_table(f"{'deleted' if yes else 'would delete'} tenant {report.name} ({report.tenant_id})", rows))
    if not yes:
        out.print(f"nothing was deleted: run `parley tenants delete {report.name} --yes` to delete it")
