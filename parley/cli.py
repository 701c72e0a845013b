"""`parley`: the admin CLI and the composition root (the only module that imports every package).

Every command builds its dependencies from `Settings()` and owns its transaction: it either
completes or changes nothing. Errors are printed as one readable line with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from parley.errors import ParleyError
from parley.settings import Settings

T = TypeVar("T")

out = Console()
err = Console(stderr=True)


class Ctx:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.settings = Settings()


def run_async(fn: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """Run an async command; domain errors become one red line and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except ParleyError as exc:
            err.print(f"[red]error:[/red] {exc.message}", highlight=False)
            sys.exit(1)
        except (ConnectionError, OSError) as exc:
            err.print(f"[red]error:[/red] cannot reach a service: {exc}", highlight=False)
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001 - the edge: unknown errors get an id, the traceback is logged
            eid = error_id()
            logging.getLogger("parley.cli").exception("unexpected error %s", eid)
            err.print(f"[red]unexpected error {eid}:[/red] {type(exc).__name__}: {exc}", highlight=False)
            sys.exit(1)

    return wrapper


def emit(ctx: Ctx, rows: list[dict[str, Any]], columns: list[str], *, title: str | None = None) -> None:
    if ctx.as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        out.print(f"(no {title or 'rows'})")
        return
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(table)


async def _database(settings: Settings, name: str):  # type: ignore[no-untyped-def]
    from parley.db import create_engine, create_sessionmaker

    engine = create_engine(settings, name)
    return engine, create_sessionmaker(engine)


async def _ensure_migrated(engine: Any) -> None:
    from parley import migrations

    current = await migrations.current_revision(engine)
    if current is None:
        raise ParleyError("the database has no schema yet: run `parley migrate` first", code="not_migrated")


# --- root -----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")
@click.version_option(package_name="parley")
@click.pass_context
def main(click_ctx: click.Context, as_json: bool) -> None:
    """Parley: an AI agent for each tenant's Slack and Instagram DMs, grounded in its documents and
    Shopify catalog.

    Configuration comes from PARLEY_* environment variables; with none set, everything runs on
    the embedded defaults under ./var (SQLite, local blobs and index, local embedding model,
    offline answerer). See README.md for the full table.
    """
    click_ctx.obj = Ctx(as_json)
    from parley.logging import configure_logging

    configure_logging(process_name="cli", level="WARNING", json_lines=False)


# --- migrate --------------------------------------------------------------------------------


@main.command()
@click.option("--revision", default="heads", show_default=True, help="Alembic revision to upgrade to.")
@click.pass_obj
@run_async
async def migrate(ctx: Ctx, revision: str) -> None:
    """Apply database migrations (alembic upgrade) to the configured database."""
    from parley import migrations

    engine, _ = await _database(ctx.settings, "cli")
    try:
        before = await migrations.current_revision(engine)
        await migrations.upgrade(engine, revision)
        after = await migrations.current_revision(engine)
    finally:
        await engine.dispose()
    if ctx.as_json:
        click.echo(json.dumps({"from": before, "to": after}))
    elif before == after:
        out.print(f"database is up to date (revision {after})")
    else:
        out.print(f"migrated {before or 'empty database'} -> {after}")


# --- tenants --------------------------------------------------------------------------------


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
    from parley.db import unit_of_work
    from tenants import service

    engine, sessions = await _database(ctx.settings, "cli")
    try:
        await _ensure_migrated(engine)
        async with unit_of_work(sessions, admin=True) as session:
            tenant = await service.create_tenant(session, name=name, display_name=display_name, persona=persona)
            row = _tenant_row(tenant)
    finally:
        await engine.dispose()
    if ctx.as_json:
        click.echo(json.dumps(row, default=str))
    else:
        out.print(f"created tenant [bold]{row['name']}[/bold] (id {row['id']})")


@tenants.command("list")
@click.pass_obj
@run_async
async def tenants_list(ctx: Ctx) -> None:
    """List all tenants."""
    from parley.db import unit_of_work
    from tenants.repository import TenantDirectory

    engine, sessions = await _database(ctx.settings, "cli")
    try:
        await _ensure_migrated(engine)
        async with unit_of_work(sessions, admin=True) as session:
            rows = [_tenant_row(t) for t in await TenantDirectory(session).all()]
    finally:
        await engine.dispose()
    emit(ctx, rows, ["name", "id", "status", "index_version", "created_at"], title="tenants")


@tenants.command("show")
@click.argument("name_or_id")
@click.pass_obj
@run_async
async def tenants_show(ctx: Ctx, name_or_id: str) -> None:
    """Show one tenant with its channel installations and API keys (never their secrets)."""
    from parley.db import unit_of_work
    from tenants import service
    from tenants.repository import ApiKeyRepository

    engine, sessions = await _database(ctx.settings, "cli")
    try:
        await _ensure_migrated(engine)
        async with unit_of_work(sessions, admin=True) as session:
            tenant = await service.get_tenant(session, name_or_id=name_or_id)
            row = _tenant_row(tenant)
        async with unit_of_work(sessions, tenant_id=row["id"]) as session:
            installs = [
                {"kind": i.kind.value, "external_id": i.external_id, "name": i.display_name, "status": i.status}
                for i in await service.list_installations(session, tenant_id=row["id"])
            ]
            keys = [
                {"id": k.id, "name": k.name, "prefix": k.prefix + "…", "revoked": bool(k.revoked_at)}
                for k in await ApiKeyRepository(session, row["id"]).list()
            ]
    finally:
        await engine.dispose()
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
    from parley.db import unit_of_work
    from tenants import service

    engine, sessions = await _database(ctx.settings, "cli")
    try:
        await _ensure_migrated(engine)
        async with unit_of_work(sessions, admin=True) as session:
            tenant = await service.get_tenant(session, name_or_id=tenant_name)
        async with unit_of_work(sessions, tenant_id=tenant.id) as session:
            row, key = await service.create_api_key(session, tenant_id=tenant.id, name=name)
            key_id = row.id
    finally:
        await engine.dispose()
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
    from parley.db import unit_of_work
    from tenants import service
    from tenants.repository import ApiKeyRepository

    engine, sessions = await _database(ctx.settings, "cli")
    try:
        await _ensure_migrated(engine)
        async with unit_of_work(sessions, admin=True) as session:
            tenant = await service.get_tenant(session, name_or_id=tenant_name)
        async with unit_of_work(sessions, tenant_id=tenant.id) as session:
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
    finally:
        await engine.dispose()
    emit(ctx, rows, ["id", "name", "prefix", "created_at", "last_used_at", "revoked"], title="API keys")


@keys.command("revoke")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.argument("key_id")
@click.pass_obj
@run_async
async def keys_revoke(ctx: Ctx, tenant_name: str, key_id: str) -> None:
    """Revoke the API key KEY_ID of a tenant."""
    from parley.db import unit_of_work
    from tenants import service

    engine, sessions = await _database(ctx.settings, "cli")
    try:
        await _ensure_migrated(engine)
        async with unit_of_work(sessions, admin=True) as session:
            tenant = await service.get_tenant(session, name_or_id=tenant_name)
        async with unit_of_work(sessions, tenant_id=tenant.id) as session:
            await service.revoke_api_key(session, tenant_id=tenant.id, key_id=key_id)
    finally:
        await engine.dispose()
    out.print(f"revoked API key {key_id}")


# --- config -------------------------------------------------------------------------------


def settings_markdown() -> str:
    from parley.settings import describe_settings

    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for env, default, description in describe_settings():
        lines.append(f"| `{env}` | {f'`{default}`' if default else ''} | {description.replace('|', '/')} |")
    return "\n".join(lines)


@main.command("config")
@click.option("--markdown", is_flag=True, help="Print the table of settings as Markdown (as in the README).")
@click.pass_obj
def config_cmd(ctx: Ctx, markdown: bool) -> None:
    """Show every setting: its environment variable, default and current value (secrets hidden)."""
    if markdown:
        click.echo(settings_markdown())
        return
    from parley.settings import describe_settings

    current = ctx.settings.model_dump()
    rows = []
    for (env, default, description), (name, value) in zip(describe_settings(), current.items(), strict=True):
        shown = "(set)" if "secret" in name or "key" in name else value
        rows.append({"variable": env, "value": "" if value is None else str(shown), "meaning": description})
    emit(ctx, rows, ["variable", "value", "meaning"], title="settings")


# --- up -------------------------------------------------------------------------------------


@main.command()
@click.option("--no-migrate", is_flag=True, help="Do not apply migrations before starting.")
@click.pass_obj
def up(ctx: Ctx, no_migrate: bool) -> None:
    """Start the whole local stack as supervised processes (Ctrl-C stops everything cleanly).

    Checks what is reachable, applies migrations, then starts each process of the platform,
    restarting one that dies, with ingestion workers at the lowest CPU priority.
    """
    from parley import supervisor

    settings = ctx.settings
    if not no_migrate:
        _run_migrations(settings)
    specs = [spec for spec in supervisor.platform_processes(settings) if spec.command[0] in main.commands]
    sys.exit(supervisor.run(specs, console=out))


def _run_migrations(settings: Settings) -> None:
    from parley import migrations

    async def go() -> str | None:
        engine, _ = await _database(settings, "cli")
        try:
            await migrations.upgrade(engine)
            return await migrations.current_revision(engine)
        finally:
            await engine.dispose()

    rev = asyncio.run(go())
    out.print(f"database ready at revision {rev} ({_describe_db(settings)})")


def _describe_db(settings: Settings) -> str:
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        return f"SQLite file {url.split(':///', 1)[1]}"
    return "PostgreSQL " + url.split("@")[-1]


def error_id() -> str:
    return uuid.uuid4().hex[:12]


if __name__ == "__main__":
    main()
