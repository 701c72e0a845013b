"""`parley plans show|set` and `parley usage recount`: a tenant's plan limits and what it uses.

Limits default to the settings (``PARLEY_PLAN_MAX_*``); `parley plans set` gives a tenant its own
(0 = unlimited, ``--clear`` back to the defaults). A command refused by the plan anywhere in the
CLI (``parley ingest`` past the documents limit) exits with code 3 (`cli.shell.QUOTA_EXIT`).
"""

from __future__ import annotations

import json
from typing import Any

import click

from cli.app import Ctx, database, main, out, run_async

#: option name -> the limit it sets
LIMIT_OPTIONS = {
    "max_documents": "Documents the tenant may store.",
    "max_stored_bytes": "Bytes of uploaded files it may store (units KB, MB, GB: 1024-based).",
    "max_chunks": "Indexed sections (chunks) it may hold.",
    "max_products": "Catalog products it may hold.",
    "max_questions_per_day": "Customer questions answered per UTC day.",
    "max_questions_per_month": "Customer questions answered per UTC month.",
    "max_uploads_per_hour": "Files it may upload per UTC hour.",
}


def usage_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    from tenants.quotas import amount, bar

    rows = []
    for r in report["resources"]:
        limit = r["limit"]
        rows.append({**r, "shown_used": amount(r["resource"], r["used"]),
                     "shown_limit": "unlimited" if limit is None else amount(r["resource"], limit),
                     "bar": bar(r["used"], limit), "source": "default" if r["default"] else "tenant"})
    return rows


def print_usage(title: str, report: dict[str, Any]) -> None:
    """The usage table with bars (shared with `parley status`)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_edge=False)
    for column in ("resource", "used", "limit", "", "set by"):
        table.add_column(column, justify="right" if column in ("used", "limit") else "left")
    for r in usage_rows(report):
        table.add_row(r["label"], r["shown_used"], r["shown_limit"], r["bar"], r["source"])
    out.print(table)


async def _report(db: Any, tenant: Any, settings: Any) -> dict[str, Any]:
    from tenants.quotas import PlanDefaults, usage_report

    async with db.scoped(tenant.id) as session:
        report = await usage_report(session, tenant_id=tenant.id, defaults=PlanDefaults.from_settings(settings))
    return {**report, "tenant": tenant.name}


@main.group(section="setup", example="parley plans set --tenant acme --max-documents 500")
def plans() -> None:
    """A tenant's plan: its limits (documents, stored bytes, chunks, products, questions, uploads) and use."""


@plans.command("show", example="parley plans show --tenant acme")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def plans_show(ctx: Ctx, tenant_name: str) -> None:
    """Usage against limits, with a bar each; "default" limits come from PARLEY_PLAN_MAX_*."""
    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        report = await _report(db, tenant, ctx.settings)
    if ctx.as_json:
        click.echo(json.dumps(report))
        return
    plan = f" (plan {report['plan']})" if report["plan"] else ""
    print_usage(f"usage of {tenant.name}{plan}", report)


def _limit_options(fn: Any) -> Any:
    for name, help_text in reversed(LIMIT_OPTIONS.items()):
        fn = click.option(f"--{name.replace('_', '-')}", name, default=None, metavar="N",
                          help=f"{help_text} 0: unlimited; 'default': the settings' value.")(fn)
    return fn


@plans.command("set", example="parley plans set --tenant acme --max-documents 500 --max-stored-bytes 2GB")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--name", "plan_name", default=None, help="A label for the plan (free, pro, …); '' removes it.")
@click.option("--clear", is_flag=True, help="Back to the defaults first (then apply any limit given).")
@_limit_options
@click.pass_obj
@run_async
async def plans_set(ctx: Ctx, tenant_name: str, plan_name: str | None, clear: bool, **limits: str | None) -> None:
    """Give a tenant its own limits. Each is checked first (a whole number, not negative, not absurd);
    nothing is changed when one is wrong."""
    from parley.errors import InvalidInput
    from tenants.quotas import set_plan

    given = {k: (None if str(v).strip().lower() == "default" else v) for k, v in limits.items() if v is not None}
    if not given and not clear and plan_name is None:
        raise InvalidInput("give at least one limit (e.g. --max-documents 500), --name, or --clear")
    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            await set_plan(session, tenant_id=tenant.id, limits=given, name=plan_name, clear=clear)
        report = await _report(db, tenant, ctx.settings)
    if ctx.as_json:
        click.echo(json.dumps(report))
        return
    print_usage(f"plan of {tenant.name} set", report)


@main.group(section="operate", example="parley usage recount --tenant acme")
def usage() -> None:
    """Usage counters (`parley plans show` displays them)."""


@usage.command("recount", example="parley usage recount --tenant acme")
@click.option("--tenant", "tenant_name", default=None, help="Tenant name or id (default: every tenant).")
@click.pass_obj
@run_async
async def usage_recount(ctx: Ctx, tenant_name: str | None) -> None:
    """Recompute the stored counters (documents, bytes, chunks, products) from what is stored, to
    repair drift (counting keeps them exact; a restore from a backup or a hand edit may not)."""
    from knowledge.usage import recount
    from tenants.repository import TenantDirectory

    async with database(ctx.settings) as db:
        if tenant_name:
            tenants = [await db.tenant(tenant_name)]
        else:
            async with db.admin() as session:
                tenants = list(await TenantDirectory(session).all())
        results = []
        for tenant in tenants:
            async with db.scoped(tenant.id) as session:
                drift = await recount(session, tenant.id)
            results.append({"tenant": tenant.name, "drift": {k: {"counted": a, "stored": b} for k, (a, b) in drift.items()}})
    if ctx.as_json:
        click.echo(json.dumps(results))
        return
    for r in results:
        if not r["drift"]:
            out.print(f"{r['tenant']}: counters match what is stored")
        else:
            fixed = ", ".join(f"{k} {v['counted']:,} -> {v['stored']:,}" for k, v in r["drift"].items())
            out.print(f"{r['tenant']}: repaired {fixed}")
