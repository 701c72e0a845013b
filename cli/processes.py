"""The platform's processes: `parley up`, `parley gateway`, `parley retrieval`, `parley worker …`,
and `parley ask` (a question through the retrieval service)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click
from rich.panel import Panel
from rich.table import Table

from cli import compose
from cli.app import Ctx, database, err, has_command, main, out, run_async, settings_origin
from cli.ops import print_checks
from parley.english import plural
from parley.settings import Settings

# --- workers ------------------------------------------------------------------------------


@main.group(section="operate", example="parley worker documents")
def worker() -> None:
    """Background workers (indexing is throughput work: run them at low CPU priority)."""


@worker.command("documents", example="nice -n 19 parley worker documents")
@click.pass_obj
def worker_documents(ctx: Ctx) -> None:
    """Consume the documents queue: extract, chunk, embed and index uploaded files."""
    run_async(compose.run_worker)(ctx.settings, "documents")


@worker.command("catalog", example="nice -n 19 parley worker catalog")
@click.pass_obj
def worker_catalog(ctx: Ctx) -> None:
    """Consume the catalog queue: Shopify syncs and product webhooks, embedded and indexed."""
    run_async(compose.run_worker)(ctx.settings, "catalog")


@worker.command("webhooks", example="parley worker webhooks")
@click.pass_obj
def worker_webhooks(ctx: Ctx) -> None:
    """Consume the webhooks queue: fan tenant events out to their endpoints and deliver them, signed
    (network I/O only: it loads no model and opens no index)."""
    run_async(compose.run_worker)(ctx.settings, "webhooks")


# --- answering processes --------------------------------------------------------------------


@main.command(section="operate", example="PARLEY_RETRIEVAL_PORT=8081 parley retrieval")
@click.pass_obj
def retrieval(ctx: Ctx) -> None:
    """Run the retrieval service (POST /v1/query, /healthz, /readyz, /metrics) on
    PARLEY_RETRIEVAL_HOST:PARLEY_RETRIEVAL_PORT until Ctrl-C or SIGTERM."""
    run_async(compose.serve_retrieval)(ctx.settings)


@main.command(section="channels", example="PARLEY_SLACK_SIGNING_SECRET=… parley gateway")
@click.pass_obj
def gateway(ctx: Ctx) -> None:
    """Run the chat gateway (Slack, Instagram, Shopify, web chat at /, /healthz, /readyz, /metrics)
    on PARLEY_GATEWAY_HOST:PARLEY_GATEWAY_PORT until Ctrl-C or SIGTERM.

    Slack is mounted when PARLEY_SLACK_SIGNING_SECRET is set, Instagram when
    PARLEY_INSTAGRAM_APP_SECRETS is set; the web chat and Shopify routes are always there.
    """
    run_async(compose.serve_gateway)(ctx.settings)


@main.command(section="knowledge", example="parley ask \"Do you ship to Austria?\" --tenant acme")
@click.argument("question")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--local", is_flag=True, help="Answer in this process instead of asking the running retrieval service.")
@click.pass_obj
@run_async
async def ask(ctx: Ctx, question: str, tenant_name: str, local: bool) -> None:
    """Ask a tenant's agent a question and print the answer, its citations and stage timings.

    Asks the retrieval service at PARLEY_RETRIEVAL_URL; when it is not running (or with --local)
    the same service runs inside this command for one query.
    """
    from cli.running import running_platform
    from retrieval.schemas import QueryRequest, check_question

    question = check_question(question)  # empty, huge or wordless: one polite line (BadQuestion), no traceback
    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
    request = QueryRequest(tenant_id=tenant.id, conversation_id="cli", message=question)
    response = None
    platform = running_platform(ctx.settings)
    if platform is not None and platform.mode == "single-process":
        local = True  # that platform serves no retrieval port: answer here, on the same data
    if not local:
        from cli.running import running_retrieval

        async with running_retrieval(ctx.settings, request) as found:
            response = found[1] if found is not None else None
    if response is None:
        response = await compose.ask_in_process(ctx.settings, request)
    if ctx.as_json:
        click.echo(response.model_dump_json(indent=2))
        return
    out.print(response.answer, highlight=False)
    for c in response.citations:
        extra = f" {c.price} {c.currency or ''} {c.availability or ''} {c.url or ''}" if c.kind == "product" else ""
        where = " > ".join(c.heading_path)
        out.print(f"  [{c.n}] {c.title}{' > ' + where if where else ''}{extra}", highlight=False)
    timings = ", ".join(f"{k} {v:.1f}" for k, v in response.timings.items())
    out.print(f"[dim]tenant {tenant.name} | {'cache hit' if response.cached else 'cache miss'} | "
              f"{response.answered_by} | ms: {timings}[/dim]", highlight=False)


# --- up -------------------------------------------------------------------------------------

SINGLE_PROCESS_WARNING = (
    "[bold red]SINGLE-PROCESS MODE: for a quick look only.[/bold red]\n"
    "Everything runs in this one process, which is the coupling the design forbids: indexing shares\n"
    "the CPU (and the embedding model) with answering, so answers slow down while documents are\n"
    "indexed; the broker is in memory, so messages in flight are lost on exit (re-queued from the\n"
    "outbox at the next single-process start); and one crash stops everything.\n"
    "For real use run `parley up` (with RabbitMQ) or `docker compose up`."
)


@main.command(section="operate", example="parley up --single-process")
@click.option("--no-migrate", is_flag=True, help="Do not apply migrations before starting.")
@click.option("--single-process", is_flag=True,
              help="Everything in this one process with an in-memory broker: no RabbitMQ needed, a quick look only.")
@click.option("--retrieval-replicas", type=click.IntRange(1, 64), default=None, metavar="N",
              help="Start N retrieval processes (ports PARLEY_RETRIEVAL_PORT, +1, ...) and spread tenants over them, "
                   "with failover. Default: PARLEY_RETRIEVAL_REPLICAS (1).")
@click.pass_obj
def up(ctx: Ctx, no_migrate: bool, single_process: bool, retrieval_replicas: int | None) -> None:
    """Start the whole local stack as supervised processes (Ctrl-C stops everything cleanly).

    Checks what is reachable and configured (database, RabbitMQ, vector index, answerer,
    embedding model), applies migrations, then starts the gateway, the retrieval service (or N
    replicas of it with --retrieval-replicas N) and
    the three workers (documents, catalog, webhooks; at the lowest CPU priority), restarting one
    that dies, and prints what
    runs where. With --single-process all of it runs in this one process instead.
    """
    from cli import doctor, running, supervisor

    settings = ctx.settings
    if retrieval_replicas is not None:
        if single_process and retrieval_replicas > 1:
            raise click.UsageError("--retrieval-replicas needs separate processes: it cannot be combined with --single-process")
        settings = settings.model_copy(update={"retrieval_replicas": retrieval_replicas})
    already = running.running_platform(settings)
    if already is not None:
        err.print(f"[red]error:[/red] Parley is already running on this data directory ({already.mode}, pid "
                  f"{already.pid}, {already.gateway_url}); stop it first (Ctrl-C in its terminal, or "
                  f"`kill {already.pid}`)", highlight=False)
        sys.exit(1)
    out.print(settings_origin(settings), highlight=False)
    if single_process:
        err.print(Panel(SINGLE_PROCESS_WARNING, border_style="red"))
    try:
        checks = asyncio.run(doctor.preflight(settings, single_process=single_process, migrate=not no_migrate))
        print_checks(checks, title="preflight")
        if doctor.failed(checks):
            err.print("[red]not starting:[/red] fix what failed above (`parley doctor` checks everything)", highlight=False)
            sys.exit(1)
        if not no_migrate:
            _run_migrations(settings)
    except KeyboardInterrupt:  # Ctrl-C before anything started
        sys.exit(130)
    notes = [f"web chat: [bold]{settings.effective_public_url}/chat[/bold]  "
             "(it asks for an API key: `parley keys create --tenant NAME`)"]
    if single_process:
        try:
            sys.exit(run_async(_single_process)(settings, notes))
        finally:
            running.remove_marker(settings)
    specs = [spec for spec in supervisor.platform_processes(settings) if has_command(spec.command)]
    replica_urls = [url for _, _, url in supervisor.retrieval_replicas(settings)]
    try:
        sys.exit(supervisor.run(specs, console=out, notes=notes,
                                on_started=lambda pids: running.write_marker(settings, "processes", children=pids,
                                                                             retrieval_urls=replica_urls)))
    finally:
        running.remove_marker(settings)


async def _single_process(settings: Settings, notes: list[str]) -> int:
    from cli import running

    def ready(rows: list[tuple[str, str, str, str]], requeued: int) -> None:
        running.write_marker(settings, "single-process")  # from now on the CLI leaves work in the outbox for us
        table = Table(title="Parley is running in ONE process (Ctrl-C stops it)", title_justify="left")
        for column in ("process", "pid", "nice", "URL"):
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        out.print(table)
        for note in notes:
            out.print(note, highlight=False)
        if requeued:
            out.print(f"re-queued {plural(requeued, 'message')} the last single-process run left unfinished")

    dropped = await compose.run_single_process(settings, on_ready=ready)
    out.print("stopping…")
    if dropped:
        err.print(f"[yellow]{plural(dropped, 'message')} {'was' if dropped == 1 else 'were'} still in memory; the next `parley up --single-process` "
                  "re-queues them[/yellow]", highlight=False)
    out.print("stopped.")
    return 0


def _run_migrations(settings: Settings) -> None:
    from cli import migrations
    from cli.doctor import describe_database

    async def go() -> Any:
        async with database(settings, migrated=False) as db:
            await migrations.upgrade(db.engine)
            return await migrations.current_revision(db.engine)

    rev = asyncio.run(go())
    out.print(f"database ready at revision {rev} ({describe_database(settings)})")
