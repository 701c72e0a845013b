"""`parley tenants api-uploads` and `parley process …`: pass-through processing (nothing kept)."""

from __future__ import annotations

import json

import click

from cli.app import Ctx, database, emit, main, out, run_async
from cli.tenants import tenants

_MEANING = {
    "index": "POST /api/documents adds files to the knowledge base (the default)",
    "pass-through": "POST /api/documents is refused; API files go through POST /api/v1/process, which delivers "
                    "chunks and vectors to a webhook and keeps nothing",
}


@tenants.command("api-uploads", example="parley tenants api-uploads --tenant acme pass-through")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.argument("mode", required=False, type=click.Choice(["index", "pass-through"]))
@click.pass_obj
@run_async
async def tenants_api_uploads(ctx: Ctx, tenant_name: str, mode: str | None) -> None:
    """Show or set what the tenant's API uploads do: index (the default) or pass-through only.

    \b
    pass-through: POST /api/documents answers 403 pass_through_only, pointing to POST
    /api/v1/process, which extracts, chunks and embeds the file, delivers the result to one of the
    tenant's webhook endpoints and keeps nothing. Dashboard and DM uploads are not affected.
    """
    from passthrough import service

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.admin() as session:
            if mode is not None:
                await service.set_api_upload_mode(session, tenant_id=tenant.id, mode=mode)
            current = await service.api_upload_mode(session, tenant_id=tenant.id)
    if ctx.as_json:
        click.echo(json.dumps({"tenant": tenant.name, "api_uploads": current, "meaning": _MEANING[current]}))
    else:
        out.print(f"[bold]{tenant.name}[/bold] API uploads: {current} — {_MEANING[current]}")


@main.group(section="knowledge", example="parley process list --tenant acme")
def process() -> None:
    """Pass-through processing requests (POST /api/v1/process): their status, never their content."""


def _row(r: object) -> dict[str, object]:
    from passthrough.schemas import status_json

    return status_json(r)


@process.command("list", example="parley process list --tenant acme")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
@click.pass_obj
@run_async
async def process_list(ctx: Ctx, tenant_name: str, limit: int) -> None:
    """The tenant's recent pass-through requests: status, size, attempts, the last error."""
    from passthrough.repository import ProcessRequestRepository

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            rows = [_row(r) for r in await ProcessRequestRepository(session, tenant.id).recent(limit=max(1, limit))]
    emit(ctx, rows, ["id", "status", "result", "content_type", "size_bytes", "chunks", "attempts", "error", "created_at"],
         title="process requests")


@process.command("show", example="parley process show 0a26b8 --tenant acme")
@click.argument("request_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def process_show(ctx: Ctx, request_id: str, tenant_name: str) -> None:
    """One pass-through request (REQUEST_ID or a unique prefix of it)."""
    from passthrough import service

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            row = _row(await service.get_request(session, tenant_id=tenant.id, request_id=request_id))
    if ctx.as_json:
        click.echo(json.dumps(row, default=str, indent=2))
        return
    for key, value in row.items():
        if value is not None:
            out.print(f"{key:>16}  {value}")
