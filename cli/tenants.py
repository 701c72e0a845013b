"""`parley tenants …` and `parley keys …`: the businesses that own an agent and their admin API keys."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from cli.app import Ctx, database, emit, err, find_tenant, main, out, run_async


def _tenant_row(t: Any) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "display_name": t.display_name,
        "status": t.status,
        "index_version": t.index_version,
        "created_at": t.created_at.isoformat(timespec="seconds") if t.created_at else None,
    }


@main.group(section="setup", example="parley tenants create acme --display-name 'Acme Inc.'")
def tenants() -> None:
    """Create and inspect tenants (the businesses that own an agent)."""


@tenants.command("create", example="parley tenants create acme --display-name 'Acme Inc.'")
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


@tenants.command("list", example="parley tenants list --json")
@click.pass_obj
@run_async
async def tenants_list(ctx: Ctx) -> None:
    """List all tenants."""
    from tenants.repository import TenantDirectory

    async with database(ctx.settings) as db, db.admin() as session:
        rows = [_tenant_row(t) for t in await TenantDirectory(session).all()]
    emit(ctx, rows, ["name", "id", "status", "index_version", "created_at"], title="tenants")


@tenants.command("show", example="parley tenants show acme")
@click.argument("name_or_id")
@click.pass_obj
@run_async
async def tenants_show(ctx: Ctx, name_or_id: str) -> None:
    """Show one tenant with its channel installations and API keys (never their secrets)."""
    from tenants import service
    from tenants.repository import ApiKeyRepository

    async with database(ctx.settings) as db:
        async with db.admin() as session:
            row = _tenant_row(await find_tenant(session, name_or_id))
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


# --- uploaders ------------------------------------------------------------------------------

UPLOAD_CHANNELS = click.Choice(["slack", "instagram", "web"])


def operator() -> str:
    """Who runs this CLI (recorded with what they change)."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (a container without a passwd entry)
        return "cli"


@tenants.group("uploaders", example="parley tenants uploaders show --tenant acme")
def tenants_uploaders() -> None:
    """Who may add documents to a tenant's knowledge, channel by channel.

    \b
    Modes: admins (the default: on Slack the installing user and the workspace's admins and owners,
    on Instagram the account's configured uploaders, on the web anyone with an admin API key; plus
    the listed uploaders), listed (only the listed uploaders), anyone, nobody.
    Replacing a document someone else uploaded needs admin rights or a listing with --may-replace.
    """


async def _show_uploaders(ctx: Ctx, db: Any, tenant: Any) -> None:
    from tenants import uploaders

    async with db.scoped(tenant.id) as session:
        channels = await uploaders.describe(session, tenant_id=tenant.id)
    if ctx.as_json:
        click.echo(json.dumps(channels, default=str, indent=2))
        return
    for c in channels:
        out.print(f"[bold]{c['channel']}[/bold]: {c['mode']} — {c['meaning']}")
        for u in c["uploaders"]:
            rights = "may replace" if u["may_replace"] else "may add"
            out.print(f"  {u['user_id']}  ({rights}{', ' + u['note'] if u['note'] else ''})")


@tenants_uploaders.command("show", example="parley tenants uploaders show --tenant acme")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def uploaders_show(ctx: Ctx, tenant_name: str) -> None:
    """Show each channel's upload mode and its listed uploaders."""
    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        await _show_uploaders(ctx, db, tenant)


@tenants_uploaders.command("mode", example="parley tenants uploaders mode --tenant acme slack listed")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.argument("channel", type=UPLOAD_CHANNELS)
@click.argument("mode", type=click.Choice(["admins", "listed", "anyone", "nobody"]))
@click.pass_obj
@run_async
async def uploaders_mode(ctx: Ctx, tenant_name: str, channel: str, mode: str) -> None:
    """Set who may add documents through CHANNEL (admins, listed, anyone, nobody)."""
    from tenants import uploaders

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            await uploaders.set_mode(session, tenant_id=tenant.id, channel=channel, mode=mode)
        await _show_uploaders(ctx, db, tenant)


@tenants_uploaders.command("add", example="parley tenants uploaders add --tenant acme slack U024BE7LH --note 'Dana, support lead'")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.argument("channel", type=UPLOAD_CHANNELS)
@click.argument("user_id")
@click.option("--may-replace", is_flag=True, help="May also replace documents other people uploaded.")
@click.option("--note", default="", help="Who this is, for the next person reading the list.")
@click.pass_obj
@run_async
async def uploaders_add(ctx: Ctx, tenant_name: str, channel: str, user_id: str, may_replace: bool, note: str) -> None:
    """Allow USER_ID (a Slack user id, an Instagram-scoped id, api_key:ID) to add documents through CHANNEL."""
    from tenants import uploaders

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            await uploaders.allow(session, tenant_id=tenant.id, channel=channel, user_id=user_id, may_replace=may_replace,
                                  note=note, added_by=operator())
        await _show_uploaders(ctx, db, tenant)


@tenants_uploaders.command("remove", example="parley tenants uploaders remove --tenant acme slack U024BE7LH")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.argument("channel", type=UPLOAD_CHANNELS)
@click.argument("user_id")
@click.pass_obj
@run_async
async def uploaders_remove(ctx: Ctx, tenant_name: str, channel: str, user_id: str) -> None:
    """Take USER_ID off CHANNEL's uploaders."""
    from tenants import uploaders

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            removed = await uploaders.disallow(session, tenant_id=tenant.id, channel=channel, user_id=user_id)
        if not removed:
            err.print(f"[yellow]{user_id} was not listed for {channel}[/yellow]")
        await _show_uploaders(ctx, db, tenant)


# --- API keys -------------------------------------------------------------------------------


@main.group(section="setup", example="parley keys create --tenant acme --name ops")
def keys() -> None:
    """Admin API keys of a tenant (stored hashed; a key is shown once, when created)."""


@keys.command("create", example="parley keys create --tenant acme --name ops")
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


@keys.command("list", example="parley keys list --tenant acme")
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


@keys.command("revoke", example="parley keys revoke 5f1c --tenant acme")
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
            from tenants.repository import ApiKeyRepository

            key_id = (await ApiKeyRepository(session, tenant.id).resolve(
                key_id, hint=f"`parley keys list --tenant {tenant.name}` shows them")).id
            await service.revoke_api_key(session, tenant_id=tenant.id, key_id=key_id)
    if ctx.as_json:
        click.echo(json.dumps({"revoked": key_id}))
    else:
        out.print(f"revoked API key {key_id}")
