"""`parley channels …`: connect Slack and Instagram without code, list, disconnect, rotate tokens,
and print the Slack OAuth install link.

Every check and store is `bot.channels.connect`'s, the same as the dashboard's Channels page. A
gateway that is running notices a change made here within its routing cache's 10 seconds (one made
on the dashboard, at once).
"""

from __future__ import annotations

import json
from typing import Any

import click

from cli.app import Ctx, database, emit, main, out, run_async
from cli.tenants import operator

KIND = click.Choice(["slack", "instagram", "shopify"])


def vendors(ctx: Ctx) -> Any:
    from bot.channels.connect import Vendors
    from bot.config import GatewayConfig
    from integrations.shopify.config import ShopifyConfig

    config = GatewayConfig.from_settings(ctx.settings)
    return Vendors(slack_api_url=config.slack_api_url, graph_api_url=config.graph_api_url,
                   graph_api_version=config.graph_api_version, public_url=config.public_url,
                   instagram_verify_token=config.instagram_verify_token,
                   shopify=ShopifyConfig.from_settings(ctx.settings))


def record_audit(ctx: Ctx) -> None:
    """The CLI logs at WARNING: its channel changes (`parley.audit`, INFO) go as JSON lines to
    ``<data dir>/logs/audit.log`` (mode 0600), beside ``cli-errors.log``."""
    import logging
    import os

    from parley.logging import JsonFormatter

    logger = logging.getLogger("parley.audit")
    folder = ctx.settings.data_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / "audit.log"
    if any(getattr(h, "baseFilename", None) == str(path.resolve()) for h in logger.handlers):
        return
    os.close(os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600))
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter("cli"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


async def _with_vendor_http(ctx: Ctx, work: Any) -> Any:
    """Run ``work(db, box, http)`` with the database, the secret box and an HTTP session."""
    import aiohttp

    from parley.crypto import load_secret_box

    record_audit(ctx)
    async with database(ctx.settings) as db, aiohttp.ClientSession() as http:
        return await work(db, load_secret_box(ctx.settings), http)


def _show(ctx: Ctx, row: dict[str, Any], title: str) -> None:
    if ctx.as_json:
        click.echo(json.dumps(row, default=str, indent=2))
        return
    details = row.get("details") or {}
    emit(ctx, [{"kind": row["kind"], "external_id": row["external_id"], "name": row.get("display_name", ""),
                "status": row.get("status", "active"), "id": row.get("id") or row.get("installation_id")}],
         ["kind", "external_id", "name", "status", "id"], title=title)
    if details.get("uploaders"):
        out.print(f"uploaders: {', '.join(details['uploaders'])}", highlight=False)
    setup = row.get("setup") or {}
    if details.get("messages_subscribed"):
        out.print("Meta sends the account's messages to the app's webhook (subscribed to 'messages').", highlight=False)
    elif details.get("subscribe_error"):
        out.print(details["subscribe_error"], highlight=False)
    if setup.get("webhook_url"):
        out.print("Now, in your Meta app (Instagram > API setup > Configure webhooks):", highlight=False)
        out.print(f"  callback URL:  {setup['webhook_url']}", highlight=False)
        out.print(f"  verify token:  {setup.get('verify_token') or '(none set: PARLEY_INSTAGRAM_VERIFY_TOKEN)'}",
                  highlight=False)
        out.print("  and subscribe the account to the 'messages' field.", highlight=False)
    elif setup.get("events_url") and details.get("own_app"):
        out.print(f"Your Slack app's Event Subscriptions Request URL: {setup['events_url']} (subscribe to message.im)",
                  highlight=False)


@main.group(section="channels", example="parley channels connect slack --tenant acme --bot-token xoxb-…")
def channels() -> None:
    """Connect Slack workspaces and Instagram accounts to a tenant, disconnect them, rotate tokens.

    \b
    Three ways in:
      Slack      OAuth (parley channels link --tenant T, or the dashboard's "Add to Slack") or a
                 single-workspace app's bot token:
                 parley channels connect slack --tenant T --bot-token xoxb-… [--signing-secret S]
      Instagram  the professional account's id and token, and who may add documents:
                 parley channels connect instagram --tenant T --account-id 1784… --token IGAA… --uploader IGSID
      Shopify    parley shopify connect (a custom app's token) or parley shopify link (OAuth)
    Tokens are checked with the vendor before anything is stored, and stored encrypted.
    """


@channels.command("list", example="parley channels list --tenant acme")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def channels_list(ctx: Ctx, tenant_name: str) -> None:
    """List the tenant's Slack workspaces, Instagram accounts and Shopify stores (never their secrets)."""
    from bot.channels.connect import list_channels

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        rows = await list_channels(db.sessions, tenant_id=tenant.id)
    if ctx.as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    emit(ctx, [{"kind": r["kind"], "external_id": r["external_id"], "name": r["display_name"], "status": r["status"],
                "via": r["details"].get("connected_via", "oauth" if r["kind"] == "slack" else ""), "id": r["id"]}
               for r in rows], ["kind", "external_id", "name", "status", "via", "id"], title="channels")
    if not rows:
        out.print("Connect one: parley channels connect slack|instagram --help, or parley shopify connect --help",
                  highlight=False)


@channels.group("connect", example="parley channels connect instagram --tenant acme --account-id 17841… --token IGAA…")
def channels_connect() -> None:
    """Connect a Slack workspace by its bot token, or an Instagram account by its id and token."""


@channels_connect.command("slack", example="parley channels connect slack --tenant acme --bot-token xoxb-… --signing-secret 8f…")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--bot-token", required=True, envvar="PARLEY_CONNECT_SLACK_BOT_TOKEN",
              help="The app's Bot User OAuth Token, xoxb-… (Slack app > OAuth & Permissions), or "
                   "PARLEY_CONNECT_SLACK_BOT_TOKEN. Checked with auth.test first.")
@click.option("--signing-secret", default=None, envvar="PARLEY_CONNECT_SLACK_SIGNING_SECRET",
              help="The app's own signing secret (Basic Information > App Credentials), when it is not the platform's "
                   "app: events signed with it are accepted for this workspace.")
@click.pass_obj
@run_async
async def connect_slack(ctx: Ctx, tenant_name: str, bot_token: str, signing_secret: str | None) -> None:
    """Connect a single-workspace Slack app by pasting its bot token (stored as an OAuth install is)."""
    from bot.channels import connect

    async def work(db: Any, box: Any, http: Any) -> Any:
        tenant = await db.tenant(tenant_name)
        return await connect.connect_slack(db.sessions, box, http, tenant_id=tenant.id, bot_token=bot_token,
                                           signing_secret=signing_secret, vendors=vendors(ctx), actor=operator())

    done = await _with_vendor_http(ctx, work)
    _show(ctx, done.to_json(), "connected")


@channels_connect.command("instagram", example="parley channels connect instagram --tenant acme --account-id 17841400000000001 "
                                              "--token IGAA… --uploader 1234567890123456")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--account-id", required=True, help="The Instagram professional account's id (Meta app > Instagram > API setup).")
@click.option("--token", required=True, envvar="PARLEY_CONNECT_INSTAGRAM_TOKEN",
              help="The account's access token (or PARLEY_CONNECT_INSTAGRAM_TOKEN); checked against Graph, whose "
                   "account id must be --account-id.")
@click.option("--app-secret", default=None, envvar="PARLEY_CONNECT_INSTAGRAM_APP_SECRET",
              help="The app secret of your own Meta app, when its webhooks are not signed by the platform's app.")
@click.option("--uploader", "uploaders", multiple=True, metavar="IGSID",
              help="An Instagram-scoped id who may add documents by DM (repeatable): the account's administrators.")
@click.pass_obj
@run_async
async def connect_instagram(ctx: Ctx, tenant_name: str, account_id: str, token: str, app_secret: str | None,
                            uploaders: tuple[str, ...]) -> None:
    """Connect an Instagram professional account; prints the webhook URL and verify token for Meta."""
    from bot.channels import connect

    async def work(db: Any, box: Any, http: Any) -> Any:
        tenant = await db.tenant(tenant_name)
        return await connect.connect_instagram(db.sessions, box, http, tenant_id=tenant.id, account_id=account_id,
                                               token=token, app_secret=app_secret, uploaders=list(uploaders),
                                               vendors=vendors(ctx), actor=operator())

    done = await _with_vendor_http(ctx, work)
    _show(ctx, done.to_json(), "connected")


@channels.command("disconnect", example="parley channels disconnect --tenant acme slack T043DB835ML")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.argument("kind", type=KIND)
@click.argument("ref", metavar="ID")
@click.pass_obj
@run_async
async def channels_disconnect(ctx: Ctx, tenant_name: str, kind: str, ref: str) -> None:
    """Disconnect a channel (ID: the team id, account id, shop, or the installation id from `channels list`).

    Its secrets are erased and it stops routing; a Slack token is revoked with auth.revoke too."""
    from bot.channels import connect

    async def work(db: Any, box: Any, http: Any) -> Any:
        tenant = await db.tenant(tenant_name)
        return await connect.disconnect(db.sessions, box, http, tenant_id=tenant.id, kind=kind, ref=ref,
                                        vendors=vendors(ctx), actor=operator())

    row = await _with_vendor_http(ctx, work)
    if ctx.as_json:
        click.echo(json.dumps(row, default=str, indent=2))
        return
    revoked = {True: "; Slack revoked the token", False: "; Slack did not confirm the revocation (the token is erased "
                                                         "here anyway)", None: ""}[row.get("revoked_at_vendor")]
    out.print(f"disconnected {kind} {row['external_id']}{revoked}", highlight=False)


@channels.command("rotate", example="parley channels rotate --tenant acme instagram 17841400000000001 --token IGAA…")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.argument("kind", type=KIND)
@click.argument("ref", metavar="ID")
@click.option("--token", required=True, envvar="PARLEY_CONNECT_NEW_TOKEN",
              help="The new token (or PARLEY_CONNECT_NEW_TOKEN): checked, and it must belong to the same workspace, "
                   "account or shop.")
@click.option("--signing-secret", default=None, help="Slack: a new signing secret of the workspace's own app.")
@click.option("--app-secret", default=None, help="Instagram: a new app secret of the account's own Meta app.")
@click.pass_obj
@run_async
async def channels_rotate(ctx: Ctx, tenant_name: str, kind: str, ref: str, token: str, signing_secret: str | None,
                          app_secret: str | None) -> None:
    """Replace a channel's token: the new one is checked first, then swapped in one update."""
    from bot.channels import connect

    async def work(db: Any, box: Any, http: Any) -> Any:
        tenant = await db.tenant(tenant_name)
        return await connect.rotate(db.sessions, box, http, tenant_id=tenant.id, kind=kind, ref=ref, token=token,
                                    signing_secret=signing_secret, app_secret=app_secret, vendors=vendors(ctx),
                                    actor=operator())

    row = await _with_vendor_http(ctx, work)
    if ctx.as_json:
        click.echo(json.dumps(row, default=str, indent=2))
    else:
        out.print(f"rotated the token of {kind} {row['external_id']}; the old one is no longer used", highlight=False)


@channels.command("link", example="parley channels link --tenant acme")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def channels_link(ctx: Ctx, tenant_name: str) -> None:
    """Print the "Add to Slack" link that installs the platform's Slack app for the tenant (OAuth).

    Single use (Slack's redirect back spends it) and valid for a day; the platform needs its
    Slack app's PARLEY_SLACK_CLIENT_ID and PARLEY_SLACK_CLIENT_SECRET."""
    from bot.channels.slack.oauth import install_link
    from bot.config import GatewayConfig
    from bot.signing import Signer, signing_key
    from parley.errors import ConfigurationError

    config = GatewayConfig.from_settings(ctx.settings)
    if not config.slack_oauth_enabled:
        raise ConfigurationError("Slack OAuth is not configured (PARLEY_SLACK_CLIENT_ID and PARLEY_SLACK_CLIENT_SECRET); "
                                 "connect a workspace by its bot token instead: parley channels connect slack --help")
    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
    link = install_link(Signer(signing_key(ctx.settings)), config.public_url, tenant.id, ttl=config.slack_install_link_ttl)
    if ctx.as_json:
        click.echo(json.dumps({"tenant": tenant.id, "link": link}))
    else:
        click.echo(link)
