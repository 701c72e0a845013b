"""`parley migrate`, `parley config`, `parley status`, `parley doctor`: running the platform."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click
from rich.table import Table

from cli.app import Ctx, database, emit, err, main, out, run_async, settings_origin
from parley.english import plural

# --- migrate --------------------------------------------------------------------------------


@main.command(section="setup", example="parley migrate")
@click.option("--revision", default="heads", show_default=True, help="Alembic revision to upgrade to.")
@click.pass_obj
@run_async
async def migrate(ctx: Ctx, revision: str) -> None:
    """Apply database migrations (alembic upgrade) to the configured database."""
    from cli import migrations

    async with database(ctx.settings, migrated=False) as db:
        before = await migrations.current_revision(db.engine)
        await migrations.upgrade(db.engine, revision)
        after = await migrations.current_revision(db.engine)
    if ctx.as_json:
        click.echo(json.dumps({"from": before, "to": after}))
    elif before == after:
        out.print(f"database is up to date (revision {after})")
    else:
        out.print(f"migrated {before or 'empty database'} -> {after}")


# --- config ---------------------------------------------------------------------------------


def settings_markdown() -> str:
    from parley.settings import describe_settings

    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for env, default, description in describe_settings():
        lines.append(f"| `{env}` | {f'`{default}`' if default else ''} | {description.replace('|', '/')} |")
    return "\n".join(lines)


@main.command("config", section="setup", example="parley config --json")
@click.option("--markdown", is_flag=True, help="Print the table of settings as Markdown (as in the README).")
@click.pass_obj
def config_cmd(ctx: Ctx, markdown: bool) -> None:
    """Show every setting: its environment variable and current value (credentials shown as "(set)",
    passwords in URLs as ***)."""
    if markdown:
        click.echo(settings_markdown())
        return
    from parley.settings import Settings, current_settings, env_file, setting_sources

    sources = setting_sources(dotenv=env_file())
    rows = [{"variable": env, "value": value, "from": sources[name], "meaning": description}
            for (env, value, description), name in zip(current_settings(ctx.settings), Settings.model_fields, strict=True)]
    emit(ctx, rows, ["variable", "value", "from", "meaning"], title="settings")
    if not ctx.as_json:
        out.print(settings_origin(ctx.settings) + " (the environment wins over .env, .env over defaults)",
                  highlight=False)


# --- status ---------------------------------------------------------------------------------


@main.command(section="operate", example="parley status --json")
@click.pass_obj
@run_async
async def status(ctx: Ctx) -> None:
    """What the platform is doing now: each queue's ready messages, workers (consumers) and dead
    letters (from RabbitMQ), its backlog and oldest unfinished message, the outbox backlog,
    documents by status per tenant, jobs in progress, and each retrieval replica's readiness (its
    /readyz). Exit code 1 when RabbitMQ cannot be asked."""
    from cli.doctor import describe_broker
    from knowledge.repository import documents_by_status, running_jobs
    from parley import runtime
    from parley.bus import stats as st
    from tenants.quotas import PlanDefaults, usage_report
    from tenants.repository import TenantDirectory

    settings = ctx.settings
    topology = runtime.topology(settings)
    async with database(settings) as db, db.admin() as session:
        backlog = await st.pending_backlog(session)
        outbox = await st.outbox_backlog(session)
        documents = await documents_by_status(session)
        jobs = await running_jobs(session)
        names = {t.id: t.name for t in await TenantDirectory(session).all()}
        plan_defaults = PlanDefaults.from_settings(settings)
        usage = [{"tenant": names[tid], **await usage_report(session, tenant_id=tid, defaults=plan_defaults)}
                 for tid in sorted(names, key=lambda t: names[t])]
    try:
        stats, broker = await st.broker_queue_stats(settings.amqp_url, topology), "ok"
    except (ConnectionError, OSError, asyncio.TimeoutError) as exc:  # the database figures are still worth showing
        stats, broker = None, f"RabbitMQ not reachable at {describe_broker(settings)}: {exc or type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - likewise
        stats, broker = None, f"could not read the queues from RabbitMQ at {describe_broker(settings)}: {exc!r}"
    queues = st.queue_reports(topology, stats, backlog)
    retrieval = await _retrieval_report(settings)
    statuses = ("queued", "processing", "indexed", "failed", "deleted")
    doc_rows = [{"tenant": names.get(tid, tid), **{s: counts.get(s, 0) for s in statuses}}
                for tid, counts in sorted(documents.items(), key=lambda kv: names.get(kv[0], kv[0]))]
    for job in jobs:
        job["tenant"] = names.get(job["tenant_id"], job["tenant_id"])
    if ctx.as_json:
        click.echo(json.dumps({"broker": broker, "queues": [vars(q) for q in queues],
                               "outbox": {"unpublished": outbox.count, "oldest_age_s": outbox.age_seconds()},
                               "documents": doc_rows, "jobs": jobs, "usage": usage, "retrieval": retrieval},
                              indent=2, default=str))
    else:
        if broker != "ok":
            err.print(f"[red]{broker}[/red]: queue depths and workers unknown", highlight=False)
        elif stats is not None and all(v is None for v in stats.values()):
            err.print("no queue is declared yet: no gateway or worker has started with this PARLEY_AMQP_PREFIX")
        emit(ctx, [{"queue": q.queue, "ready": _or_dash(q.ready), "workers": _or_dash(q.consumers),
                    "dead letters": _or_dash(q.dead_letters), "unfinished": q.backlog,
                    "oldest unfinished": _age(q.oldest_age_s)} for q in queues],
             ["queue", "ready", "workers", "dead letters", "unfinished", "oldest unfinished"],
             title=f"queues ({describe_broker(settings)}{', prefix ' + repr(settings.amqp_prefix) if settings.amqp_prefix else ''})")
        out.print(f"outbox: {outbox.count} unpublished" + (f", oldest {_age(outbox.age_seconds())} old" if outbox.count else ""))
        if retrieval:
            emit(ctx, [{"replica": r["url"], "status": r["status"],
                        "not ok": ", ".join(f"{k}: {v}" for k, v in r["checks"].items()) or "-"} for r in retrieval],
                 ["replica", "status", "not ok"], title="retrieval (each replica's /readyz)")
        emit(ctx, doc_rows, ["tenant", *statuses], title="documents")
        emit(ctx, [usage_summary(u) for u in usage], ["tenant", *USAGE_COLUMNS, "fullest"],
             title="usage against plan limits (`parley plans show --tenant T` for one)")
        emit(ctx, [{**j, "progress": f"{j['done'] + j['failed']}/{j['total']}", "reason": j["reason"] or ""} for j in jobs],
             ["tenant", "id", "kind", "status", "progress", "failed", "pending", "started", "reason"],
             title="jobs in progress (a stalled one: `parley jobs resume ID --tenant T`)")
    if broker != "ok":
        sys.exit(1)


async def _retrieval_report(settings: Any) -> list[dict[str, Any]]:
    """Each retrieval process's /readyz: those the running `parley up` started, else the configured URLs."""
    from cli.running import running_platform
    from retrieval.replicas import replica_report

    platform = running_platform(settings)
    if platform is not None and platform.mode == "single-process":
        return []  # it answers in its own process: no retrieval port to ask
    urls = (platform.retrieval_urls if platform is not None and platform.retrieval_urls else None) \
        or settings.effective_retrieval_urls
    return await replica_report(urls)


#: `parley status`'s usage columns: column -> resource.
USAGE_COLUMNS = {"documents": "documents", "stored": "stored_bytes", "chunks": "chunks", "products": "products",
                 "questions today": "questions_per_day", "this month": "questions_per_month",
                 "uploads this hour": "uploads_per_hour"}


def usage_summary(report: dict[str, Any]) -> dict[str, Any]:
    """One tenant's row: 'used / limit' per resource and a bar of the fullest one."""
    from tenants.quotas import amount, bar

    by = {r["resource"]: r for r in report["resources"]}
    row: dict[str, Any] = {"tenant": report["tenant"]}
    for column, name in USAGE_COLUMNS.items():
        r = by[name]
        row[column] = f"{amount(name, r['used'])} / {'∞' if r['limit'] is None else amount(name, r['limit'])}"
    limited = [r for r in report["resources"] if r["limit"]]
    fullest = max(limited, key=lambda r: r["used"] / r["limit"], default=None)
    row["fullest"] = f"{fullest['label']} {bar(fullest['used'], fullest['limit'], 10)}" if fullest else "unlimited"
    return row


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


# --- doctor ---------------------------------------------------------------------------------


def print_checks(checks: list[Any], *, title: str) -> None:
    colour = {"ok": "green", "warn": "yellow", "fail": "red"}
    table = Table(title=title, title_justify="left")
    for column in ("check", "status", "detail"):
        table.add_column(column)
    for c in checks:
        detail = c.detail + (f"\n[dim]fix:[/dim] {c.fix}" if c.fix and c.status != "ok" else "")
        table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/{colour[c.status]}]", detail)
    out.print(table)


@main.command("doctor", section="setup", example="parley doctor")
@click.pass_obj
@run_async
async def doctor_cmd(ctx: Ctx) -> None:
    """Check configuration and connectivity: database (reachable, migrated), RabbitMQ, the secret
    key (present, decrypts a stored channel secret), the service token (set, or its file readable
    and private), embedding model, storage, vector index, answerer, public URL, Slack / Instagram /
    Shopify. Exit code 1 if anything fails."""
    from cli import doctor

    checks = await doctor.doctor(ctx.settings)
    if ctx.as_json:
        click.echo(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        print_checks(checks, title="parley doctor")
        fails, warns = (sum(c.status == s for c in checks) for s in ("fail", "warn"))
        out.print(f"{fails} failed, {plural(warns, 'warning')}" if fails or warns else "all good")
    if doctor.failed(checks):
        sys.exit(1)
