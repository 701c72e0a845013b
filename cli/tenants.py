"""`parley tenants …` and `parley keys …`: the businesses that own an agent and their admin API keys."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from cli.app import Ctx, database, emit, err, main, out, run_async


def _tenant_row(t: Any) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "display_name": t.display_name,
        "status": t.status,
        "index_version": t.index_version,
        "created_at": t.created_at.isoformat(timespec="seconds") if t.created_at else None,
    }


@main.group()
def tenants() -> None:
    """Create and inspect tenants (the businesses that own an agent)."""


@tenants.command("create")
@click.argument("name")
@click.option("--display-name", default="", help="Human-readable name (default: NAME).")
@click.option("--persona", default="", help="How the agent should present itself in answers.")
@click.pass_obj
@run_async
async def tenants_create(ctx: Ctx, name: str, display_name: str, persona: str) -> None:
    """Create a tenant called NAME (lowercase letters, digits, dashes)."""
    from tenants import service

    async with database(ctx.settings) as db, db.admin() as session:
        tenant = await service.create_tenant(session, name=name, display_name=display_name, persona=persona)
        row = _tenant_row(tenant)
    if ctx.as_json:
        click.echo(json.dumps(row, default=str))
    else:
        out.print(f"created tenant [bold]{row['name']}[/bold] (id {row['id']})")


@tenants.command("list")
@click.pass_obj
@run_async
async def tenants_list(ctx: Ctx) -> None:
    """List all tenants."""
    from tenants.repository import TenantDirectory

    async with database(ctx.settings) as db, db.admin() as session:
        rows = [_tenant_row(t) for t in await TenantDirectory(session).all()]
    emit(ctx, rows, ["name", "id", "status", "index_version", "created_at"], title="tenants")


@tenants.command("show")
@click.argument("name_or_id")
@click.pass_obj
@run_async
async def tenants_show(ctx: Ctx, name_or_id: str) -> None:
    """Show one tenant with its channel installations and API keys (never their secrets)."""
    from tenants import service
    from tenants.repository import ApiKeyRepository

    async with database(ctx.settings) as db:
        async with db.admin() as session:
            row = _tenant_row(await service.get_tenant(session, name_or_id=name_or_id))
        async with db.scoped(row["id"]) as session:
            installs = [
                {"kind": i.kind.value, "external_id": i.external_id, "name": i.display_name, "status": i.status}
                for i in await service.list_installations(session, tenant_id=row["id"])
            ]
            keys = [
                {"id": k.id, "name": k.name, "prefix": k.prefix + "…", "revoked": bool(k.revoked_at)}
                for k in await ApiKeyRepository(session, row["id"]).list()
            ]
    if ctx.as_json:
        click.echo(json.dumps({**row, "installations": installs, "api_keys": keys}, default=str, indent=2))
        return
    table = Table(show_header=False, title=f"tenant {row['name']}")
    for key, value in row.items():
        table.add_row(key, str(value))
    out.print(table)
    emit(ctx, installs, ["kind", "external_id", "name", "status"], title="channel installations")
    emit(ctx, keys, ["id", "name", "prefix", "revoked"], title="API keys")


# --- API keys -------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Admin API keys of a tenant (stored hashed; a key is shown once, when created)."""


@keys.command("create")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--name", default="", help="A label for the key, e.g. who uses it.")
@click.pass_obj
@run_async
async def keys_create(ctx: Ctx, tenant_name: str, name: str) -> None:
    """Create an API key for a tenant and print it once."""
    from tenants import service

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            row, key = await service.create_api_key(session, tenant_id=tenant.id, name=name)
            key_id = row.id
    if ctx.as_json:
        click.echo(json.dumps({"id": key_id, "tenant": tenant.name, "key": key}))
    else:
        out.print(f"API key for tenant [bold]{tenant.name}[/bold] (id {key_id}):")
        click.echo(key)
        err.print("Store it now: it is shown only this once.")


@keys.command("list")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def keys_list(ctx: Ctx, tenant_name: str) -> None:
    """List a tenant's API keys (prefixes only)."""
    from tenants.repository import ApiKeyRepository

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            rows = [
                {
                    "id": k.id,
                    "name": k.name,
                    "prefix": k.prefix + "…",
                    "created_at": k.created_at.isoformat(timespec="seconds"),
                    "last_used_at": k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else None,
                    "revoked": bool(k.revoked_at),
                }
                for k in await ApiKeyRepository(session, tenant.id).list()
            ]
    emit(ctx, rows, ["id", "name", "prefix", "created_at", "last_used_at", "revoked"], title="API keys")


@keys.command("revoke")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.argument("key_id")
@click.pass_obj
@run_async
async def keys_revoke(ctx: Ctx, tenant_name: str, key_id: str) -> None:
    """Revoke the API key KEY_ID of a tenant."""
    from tenants import service

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            await service.revoke_api_key(session, tenant_id=tenant.id, key_id=key_id)
    out.print(f"revoked API key {key_id}")
