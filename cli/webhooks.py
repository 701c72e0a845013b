"""`parley webhooks …`: a tenant's outbound webhook endpoints, their secrets and delivery logs."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from cli.app import Ctx, database, emit, main, out, run_async
from parley.bus.contracts import EVENT_TYPES

T = TypeVar("T")
EVENTS_HELP = ("Comma-separated event types: document.indexed, document.failed, job.completed, catalog.synced, "
               "conversation.handed_off, quota.exceeded, process.completed, or 'all'.")


async def _for_tenant(ctx: Ctx, tenant_name: str, work: Callable[[Any, str], Awaitable[T]]) -> T:
    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            return await work(session, tenant.id)


def _when(value: dt.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else None


def endpoint_row(endpoint: Any) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": "all" if set(endpoint.event_types or []) >= set(EVENT_TYPES) else ",".join(endpoint.event_types or []),
        "status": "enabled" if endpoint.enabled else "disabled",
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": _when(endpoint.failing_since),
        "secret_overlap_until": _when(endpoint.previous_secret_expires_at),
        "created": _when(endpoint.created_at),
    }


def _secret_shown(ctx: Ctx, row: dict[str, Any], secret: str, verb: str) -> None:
    if ctx.as_json:
        click.echo(json.dumps({**row, "secret": secret}))
        return
    out.print(f"webhook endpoint [bold]{row['id']}[/bold] {verb}: {row['url']} ({row['events']})", highlight=False)
    out.print("Signing secret (shown once; verify the webhook-signature header with it):")
    click.echo(secret)


@main.group(section="channels", example="parley webhooks add --tenant acme https://acme.example/hooks --events all")
def webhooks() -> None:
    """Outbound webhooks: a tenant's URLs that get signed events (documents indexed or failed, jobs
    completed, catalog synced, hand-offs, quotas, pass-through results)."""


@webhooks.command("add", example="parley webhooks add --tenant acme https://acme.example/hooks "
                                 "--events document.indexed,job.completed")
@click.argument("url")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--events", required=True, help=EVENTS_HELP)
@click.option("--description", default="", help="A label for the endpoint.")
@click.pass_obj
@run_async
async def webhooks_add(ctx: Ctx, url: str, tenant_name: str, events: str, description: str) -> None:
    """Register URL for the given events and print its signing secret (shown this once).

    The URL must be https and its host must resolve to public addresses only
    (PARLEY_WEBHOOKS_ALLOW_PRIVATE allows http and local addresses, for development)."""
    from parley.crypto import load_secret_box
    from webhooks import service

    endpoint, secret = await _for_tenant(ctx, tenant_name, lambda session, tenant_id: service.create_endpoint(
        session, tenant_id=tenant_id, url=url, event_types=events, box=load_secret_box(ctx.settings),
        allow_private=ctx.settings.webhooks_allow_private, description=description))
    _secret_shown(ctx, endpoint_row(endpoint), secret, "added")


@webhooks.command("list", example="parley webhooks list --tenant acme")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def webhooks_list(ctx: Ctx, tenant_name: str) -> None:
    """List a tenant's endpoints: their events, whether enabled (and why not), failing since when."""
    from webhooks import service

    endpoints = await _for_tenant(ctx, tenant_name, lambda session, tenant_id: service.list_endpoints(
        session, tenant_id=tenant_id))
    rows = [endpoint_row(e) for e in endpoints]
    columns = ["id", "url", "events", "status", "failing_since"]
    if any(r["disabled_reason"] for r in rows):
        columns.append("disabled_reason")
    emit(ctx, rows, columns, title="webhook endpoints")


@webhooks.command("remove", example="parley webhooks remove ENDPOINT_ID --tenant acme")
@click.argument("endpoint_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def webhooks_remove(ctx: Ctx, endpoint_id: str, tenant_name: str) -> None:
    """Delete ENDPOINT_ID (a unique prefix will do) and its delivery log; nothing more is sent to it."""
    from webhooks import service

    endpoint = await _for_tenant(ctx, tenant_name, lambda session, tenant_id: service.remove_endpoint(
        session, tenant_id=tenant_id, ref=endpoint_id))
    if ctx.as_json:
        click.echo(json.dumps({"id": endpoint.id, "removed": True}))
    else:
        out.print(f"removed webhook endpoint {endpoint.id} ({endpoint.url})", highlight=False)


@webhooks.command("rotate-secret", example="parley webhooks rotate-secret ENDPOINT_ID --tenant acme")
@click.argument("endpoint_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--overlap-hours", type=click.FloatRange(min=0), default=None,
              help="How long the old secret keeps signing beside the new one (default: PARLEY_WEBHOOKS_SECRET_OVERLAP_HOURS, 24).")
@click.pass_obj
@run_async
async def webhooks_rotate(ctx: Ctx, endpoint_id: str, tenant_name: str, overlap_hours: float | None) -> None:
    """Give ENDPOINT_ID a new signing secret (shown once). Until the overlap ends every delivery is
    signed with both, so the receiver can switch to the new one without missing a delivery."""
    from parley.crypto import load_secret_box
    from webhooks import service

    hours = ctx.settings.webhooks_secret_overlap_hours if overlap_hours is None else overlap_hours
    endpoint, secret = await _for_tenant(ctx, tenant_name, lambda session, tenant_id: service.rotate_secret(
        session, tenant_id=tenant_id, ref=endpoint_id, box=load_secret_box(ctx.settings),
        overlap=dt.timedelta(hours=hours)))
    row = endpoint_row(endpoint)
    _secret_shown(ctx, row, secret, "has a new secret")
    if not ctx.as_json:
        out.print(f"the previous secret signs too until {row['secret_overlap_until']} UTC" if row["secret_overlap_until"]
                  else "the previous secret no longer signs", highlight=False)


def _toggle(enabled: bool) -> Callable[..., Any]:
    @click.argument("endpoint_id")
    @click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
    @click.pass_obj
    @run_async
    async def command(ctx: Ctx, endpoint_id: str, tenant_name: str) -> None:
        from webhooks import service

        endpoint = await _for_tenant(ctx, tenant_name, lambda session, tenant_id: service.set_enabled(
            session, tenant_id=tenant_id, ref=endpoint_id, enabled=enabled))
        row = endpoint_row(endpoint)
        if ctx.as_json:
            click.echo(json.dumps(row))
        else:
            out.print(f"webhook endpoint {row['id']} {row['status']} ({row['url']})", highlight=False)

    return command


webhooks.command("enable", example="parley webhooks enable ENDPOINT_ID --tenant acme",
                 help="Turn ENDPOINT_ID back on (after it was disabled for failing, or by hand); its failure "
                      "streak starts over. Replay its dead letters with `parley dlq replay`.")(_toggle(True))
webhooks.command("disable", example="parley webhooks disable ENDPOINT_ID --tenant acme",
                 help="Stop sending to ENDPOINT_ID until it is enabled again.")(_toggle(False))


@webhooks.command("deliveries", example="parley webhooks deliveries ENDPOINT_ID --tenant acme")
@click.argument("endpoint_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--status", type=click.Choice(["pending", "delivered", "failed", "dead"]), default=None,
              help="Only deliveries in this state.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True, help="Newest first, this many.")
@click.pass_obj
@run_async
async def webhooks_deliveries(ctx: Ctx, endpoint_id: str, tenant_name: str, status: str | None, limit: int) -> None:
    """The delivery log of ENDPOINT_ID: each event's webhook-id, type, state, attempts, last HTTP
    status and error, and the start of the receiver's answer."""
    from webhooks import service

    _, rows = await _for_tenant(ctx, tenant_name, lambda session, tenant_id: service.list_deliveries(
        session, tenant_id=tenant_id, ref=endpoint_id, limit=limit, status=status))
    emit(ctx, [delivery_row(d) for d in rows],
         ["webhook_id", "type", "status", "attempts", "last_status", "last_error", "created"], title="deliveries")


def delivery_row(delivery: Any) -> dict[str, Any]:
    return {
        "webhook_id": delivery.id,
        "type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status": delivery.last_status_code,
        "last_error": delivery.last_error,
        "response_excerpt": delivery.response_excerpt,
        "created": _when(delivery.created_at),
        "last_attempt": _when(delivery.last_attempt_at),
        "next_attempt": _when(delivery.next_attempt_at),
        "delivered": _when(delivery.delivered_at),
    }


@webhooks.command("test", example="parley webhooks test ENDPOINT_ID --tenant acme")
@click.argument("endpoint_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def webhooks_test(ctx: Ctx, endpoint_id: str, tenant_name: str) -> None:
    """Send ENDPOINT_ID a signed `webhook.test` event (even while it is disabled, to check a fixed
    receiver); the webhooks worker delivers it, see `parley webhooks deliveries`."""
    from cli import running
    from webhooks import service

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            delivery = await service.send_test(session, tenant_id=tenant.id, ref=endpoint_id)
        await running.deliver(ctx.settings, db, "webhooks", "cli-webhooks-test")
    if ctx.as_json:
        click.echo(json.dumps(delivery_row(delivery)))
    else:
        out.print(f"queued test delivery {delivery.id}; `parley webhooks deliveries {delivery.endpoint_id[:8]} "
                  f"--tenant {tenant_name}` shows how it went", highlight=False)
