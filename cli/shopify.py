"""`parley shopify …`: connect Shopify stores to tenants and sync their catalogs."""

from __future__ import annotations

import json

import click

from cli import running
from cli.app import Ctx, database, emit, main, out, run_async


@main.group(section="channels", example="parley shopify connect --tenant acme --shop acme-store --token shpat_…")
def shopify() -> None:
    """Connect Shopify stores to tenants and sync their catalogs."""


@shopify.command("connect", example="parley shopify connect --tenant acme --shop acme-store --token shpat_…")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--shop", required=True, help="The store, e.g. my-shop or my-shop.myshopify.com.")
@click.option("--token", envvar="PARLEY_SHOPIFY_ADMIN_TOKEN", required=True,
              help="The custom app's Admin API access token (or PARLEY_SHOPIFY_ADMIN_TOKEN).")
@click.option("--webhook-secret", envvar="PARLEY_SHOPIFY_WEBHOOK_SECRET", default=None,
              help="The custom app's API secret key: registers product webhooks signed with it.")
@click.pass_obj
@run_async
async def shopify_connect(ctx: Ctx, tenant_name: str, shop: str, token: str, webhook_secret: str | None) -> None:
    """Connect a store with a custom app's Admin API token (checked before it is stored, encrypted),
    then start a full catalog sync."""
    from bot.channels.shopify import connect_custom_app
    from integrations.shopify.config import ShopifyConfig
    from parley.crypto import load_secret_box

    async with database(ctx.settings) as db:
        done = await connect_custom_app(db.sessions, load_secret_box(ctx.settings), tenant=tenant_name, shop=shop,
                                        token=token, config=ShopifyConfig.from_settings(ctx.settings),
                                        webhook_secret=webhook_secret)
        await running.deliver(ctx.settings, db, "catalog", "cli")
    emit(ctx, [{"shop": done.shop, "name": done.shop_name, "tenant": done.tenant_id, "sync_job": done.job_id,
                "webhooks": ", ".join(done.webhooks) or "(none: pass --webhook-secret)"}],
         ["shop", "name", "tenant", "sync_job", "webhooks"], title="connected")
    if not ctx.as_json:
        out.print(f"follow the sync with: parley jobs show {done.job_id} --tenant {tenant_name}", highlight=False)


@shopify.command("link", example="parley shopify link --tenant acme --shop acme-store")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--shop", default=None, help="Pre-fill the store's domain.")
@click.option("--ttl", default=24 * 3600.0, show_default=True, type=click.FloatRange(min=60, max=7 * 24 * 3600),
              help="Seconds the link stays valid (at most a week).")
@click.pass_obj
@run_async
async def shopify_link(ctx: Ctx, tenant_name: str, shop: str | None, ttl: float) -> None:
    """Print a signed install link to send a store owner (OAuth install of the public app). The link
    is single use: Shopify's redirect back to Parley spends it, so make one per store."""
    from bot.channels.shopify import install_link

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
    link = install_link(ctx.settings, tenant_id=tenant.id, ttl=ttl, shop=shop)
    if ctx.as_json:
        click.echo(json.dumps({"tenant": tenant.id, "link": link}))
    else:
        click.echo(link)


@shopify.command("sync", example="parley shopify sync --tenant acme --shop acme-store")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--shop", required=True, help="The connected store.")
@click.pass_obj
@run_async
async def shopify_sync(ctx: Ctx, tenant_name: str, shop: str) -> None:
    """Queue a full catalog sync of a connected store (products removed in Shopify are removed here)."""
    from integrations.shopify.hmac import normalize_shop
    from knowledge.service import request_sync

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            job = await request_sync(session, tenant_id=tenant.id, shop=normalize_shop(shop), reason="manual")
            job_id = job.id
        await running.deliver(ctx.settings, db, "catalog", "cli")
    emit(ctx, [{"shop": normalize_shop(shop), "sync_job": job_id}], ["shop", "sync_job"], title="sync queued")
