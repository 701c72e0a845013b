"""`parley widgets …`: a tenant's web chat widgets (its chat on its own site) and their snippets."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from cli.app import Ctx, database, emit, main, out, run_async

T = TypeVar("T")
ORIGIN_HELP = "A site that may show the widget (scheme and host, e.g. https://shop.example); repeat for several."


def _rows(settings: Any, widgets: list[Any]) -> list[dict[str, Any]]:
    from bot.channels.web.widget import widget_info

    return [widget_info(settings.effective_public_url, w) for w in widgets]


async def _for_tenant(ctx: Ctx, tenant_name: str, work: Callable[[Any, str], Awaitable[T]]) -> T:
    """``work(session, tenant_id)`` in one unit of work of the named tenant."""
    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            return await work(session, tenant.id)


def _show(ctx: Ctx, row: dict[str, Any], verb: str) -> None:
    if ctx.as_json:
        click.echo(json.dumps(row))
        return
    out.print(f"widget [bold]{row['id']}[/bold] {verb}: {row['status']}, shown on {' '.join(row['allowed_origins'])}")
    if row["status"] == "active":
        out.print("Paste this into the pages of those sites:")
        click.echo(row["snippet"])


@main.group(section="channels", example="parley widgets create --tenant acme --origin https://acme.example")
def widgets() -> None:
    """The web chat widget: a tenant's chat on its own site (a <script> snippet, anonymous visitors)."""


@widgets.command("create", example="parley widgets create --tenant acme --origin https://acme.example")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--origin", "origins", multiple=True, required=True, help=ORIGIN_HELP)
@click.option("--name", default="", help="A label, e.g. the site's name (default: its first origin).")
@click.pass_obj
@run_async
async def widgets_create(ctx: Ctx, tenant_name: str, origins: tuple[str, ...], name: str) -> None:
    """Create a widget for the given sites and print the snippet to paste into them."""
    from tenants import widgets as service

    widget = await _for_tenant(ctx, tenant_name, lambda session, tenant_id: service.create_widget(
        session, tenant_id=tenant_id, origins=list(origins), name=name))
    _show(ctx, _rows(ctx.settings, [widget])[0], "created")


@widgets.command("list", example="parley widgets list --tenant acme")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def widgets_list(ctx: Ctx, tenant_name: str) -> None:
    """List a tenant's widgets with their sites and snippets."""
    from tenants import widgets as service

    rows = _rows(ctx.settings, await _for_tenant(ctx, tenant_name, lambda session, tenant_id: service.list_widgets(
        session, tenant_id=tenant_id)))
    for row in rows:
        row["sites"] = " ".join(row["allowed_origins"])
    emit(ctx, rows, ["id", "status", "sites", "snippet"], title="widgets")


@widgets.command("origins", example="parley widgets origins WIDGET_ID --tenant acme --origin https://shop.acme.example")
@click.argument("widget_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--origin", "origins", multiple=True, required=True, help=ORIGIN_HELP)
@click.pass_obj
@run_async
async def widgets_origins(ctx: Ctx, widget_id: str, tenant_name: str, origins: tuple[str, ...]) -> None:
    """Replace the sites that may show WIDGET_ID."""
    from tenants import widgets as service

    widget = await _for_tenant(ctx, tenant_name, lambda session, tenant_id: service.set_origins(
        session, tenant_id=tenant_id, widget_id=widget_id, origins=list(origins)))
    _show(ctx, _rows(ctx.settings, [widget])[0], "changed")


@widgets.command("revoke", example="parley widgets revoke WIDGET_ID --tenant acme")
@click.argument("widget_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def widgets_revoke(ctx: Ctx, widget_id: str, tenant_name: str) -> None:
    """Switch WIDGET_ID off: it stops showing at once, on every site."""
    from tenants import widgets as service

    widget = await _for_tenant(ctx, tenant_name, lambda session, tenant_id: service.revoke_widget(
        session, tenant_id=tenant_id, widget_id=widget_id))
    _show(ctx, _rows(ctx.settings, [widget])[0], "switched off")
