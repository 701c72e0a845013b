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
from rich.panel import Panel
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


# --- workers ------------------------------------------------------------------------------


@main.group()
def worker() -> None:
    """Background workers (indexing is throughput work: run them at low CPU priority)."""


@worker.command("documents")
@click.pass_obj
def worker_documents(ctx: Ctx) -> None:
    """Consume the documents queue: extract, chunk, embed and index uploaded files."""
    from ingestion.documents.consumer import run_document_worker
    from parley.logging import configure_logging

    configure_logging(process_name="documents-worker", level=ctx.settings.log_level, json_lines=ctx.settings.log_json)
    run_async(run_document_worker)(ctx.settings)


@worker.command("catalog")
@click.pass_obj
def worker_catalog(ctx: Ctx) -> None:
    """Consume the catalog queue: Shopify syncs and product webhooks, embedded and indexed."""
    from ingestion.catalog.consumer import run_catalog_worker
    from parley.logging import configure_logging

    configure_logging(process_name="catalog-worker", level=ctx.settings.log_level, json_lines=ctx.settings.log_json)
    run_async(run_catalog_worker)(ctx.settings)


# --- answering processes --------------------------------------------------------------------


@main.command()
@click.pass_obj
def retrieval(ctx: Ctx) -> None:
    """Run the retrieval service (POST /v1/query, /healthz, /readyz, /metrics) on
    PARLEY_RETRIEVAL_HOST:PARLEY_RETRIEVAL_PORT until Ctrl-C or SIGTERM."""
    from retrieval.app import serve

    run_async(serve)(ctx.settings)


@main.command()
@click.pass_obj
def gateway(ctx: Ctx) -> None:
    """Run the chat gateway (Slack, Instagram, Shopify, web chat at /, /healthz, /readyz, /metrics)
    on PARLEY_GATEWAY_HOST:PARLEY_GATEWAY_PORT until Ctrl-C or SIGTERM.

    Slack is mounted when PARLEY_SLACK_SIGNING_SECRET is set, Instagram when
    PARLEY_INSTAGRAM_APP_SECRETS is set; the web chat and Shopify routes are always there.
    """
    run_async(_serve_gateway)(ctx.settings)


async def _serve_gateway(settings: Settings) -> None:
    from bot.app import GatewayDeps, serve
    from bot.channels.shopify import setup_shopify
    from parley.crypto import load_secret_box

    engine, sessions = await _database(settings, "gateway")
    try:
        await _ensure_migrated(engine)
        box = load_secret_box(settings)
        deps = GatewayDeps(
            sessions=sessions, box=box,
            route_installers=[lambda app: setup_shopify(app, settings=settings, sessions=sessions, box=box)],
        )
        await serve(settings, deps=deps)
    finally:
        await engine.dispose()


@main.command()
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
    from retrieval.schemas import QueryRequest

    engine, sessions = await _database(ctx.settings, "cli")
    try:
        await _ensure_migrated(engine)
        tenant_id, name = await _tenant_id(sessions, tenant_name)
    finally:
        await engine.dispose()
    request = QueryRequest(tenant_id=tenant_id, conversation_id="cli", message=question)
    response = None
    if not local:
        from retrieval.client import HttpRetrievalClient

        client = HttpRetrievalClient(ctx.settings.effective_retrieval_url, timeout=60.0)
        try:
            response = await client.query(request)
        except ParleyError as exc:
            import aiohttp

            if not isinstance(exc.__cause__, aiohttp.ClientConnectorError):
                raise  # it answered, with an error: that is the answer
            err.print(f"retrieval service not reachable at {ctx.settings.effective_retrieval_url}; answering in-process",
                      highlight=False)
        finally:
            await client.aclose()
    if response is None:
        response = await _ask_in_process(ctx.settings, request)
    if ctx.as_json:
        click.echo(response.model_dump_json(indent=2))
        return
    out.print(response.answer, highlight=False)
    for c in response.citations:
        extra = f" {c.price} {c.currency or ''} {c.availability or ''} {c.url or ''}" if c.kind == "product" else ""
        where = " > ".join(c.heading_path)
        out.print(f"  [{c.n}] {c.title}{' > ' + where if where else ''}{extra}", highlight=False)
    timings = ", ".join(f"{k} {v:.1f}" for k, v in response.timings.items())
    out.print(f"[dim]tenant {name} | {'cache hit' if response.cached else 'cache miss'} | "
              f"{response.answered_by} | ms: {timings}[/dim]", highlight=False)


async def _ask_in_process(settings: Settings, request: Any) -> Any:
    from aiohttp import web

    from retrieval.app import create_app
    from retrieval.client import InProcessRetrievalClient
    from retrieval.routes import SERVICE

    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()  # opens the service's resources (cleanup_ctx) without listening
    try:
        return await InProcessRetrievalClient(app[SERVICE]).query(request)
    finally:
        await runner.cleanup()


# --- Shopify --------------------------------------------------------------------------------


@main.group()
def shopify() -> None:
    """Connect Shopify stores to tenants and sync their catalogs."""


@shopify.command("connect")
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
    from parley.bus import OutboxRelay
    from parley.crypto import load_secret_box
    from parley.runtime import rabbit_broker

    engine, sessions = await _database(ctx.settings, "cli")
    try:
        await _ensure_migrated(engine)
        done = await connect_custom_app(sessions, load_secret_box(ctx.settings), tenant=tenant_name, shop=shop,
                                        token=token, config=ShopifyConfig.from_settings(ctx.settings),
                                        webhook_secret=webhook_secret)
        broker = rabbit_broker(ctx.settings, "cli")
        await broker.start()
        try:
            await OutboxRelay(sessions, broker).flush()
        finally:
            await broker.close()
    finally:
        await engine.dispose()
    emit(ctx, [{"shop": done.shop, "name": done.shop_name, "tenant": done.tenant_id, "sync_job": done.job_id,
                "webhooks": ", ".join(done.webhooks) or "(none: pass --webhook-secret)"}],
         ["shop", "name", "tenant", "sync_job", "webhooks"], title="connected")
    if not ctx.as_json:
        out.print(f"follow the sync with: parley jobs show {done.job_id} --tenant {tenant_name}", highlight=False)


@shopify.command("link")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--shop", default=None, help="Pre-fill the store's domain.")
@click.option("--ttl", default=7 * 24 * 3600.0, show_default=True, help="Seconds the link stays valid.")
@click.pass_obj
@run_async
async def shopify_link(ctx: Ctx, tenant_name: str, shop: str | None, ttl: float) -> None:
    """Print a signed install link to send a store owner (OAuth install of the public app)."""
    from bot.channels.shopify import install_link

    engine, sessions = await _database(ctx.settings, "cli")
    try:
        await _ensure_migrated(engine)
        tenant_id, _ = await _tenant_id(sessions, tenant_name)
    finally:
        await engine.dispose()
    link = install_link(ctx.settings, tenant_id=tenant_id, ttl=ttl, shop=shop)
    if ctx.as_json:
        click.echo(json.dumps({"tenant": tenant_id, "link": link}))
    else:
        click.echo(link)


@shopify.command("sync")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--shop", required=True, help="The connected store.")
@click.pass_obj
@run_async
async def shopify_sync(ctx: Ctx, tenant_name: str, shop: str) -> None:
    """Queue a full catalog sync of a connected store (products removed in Shopify are removed here)."""
    from integrations.shopify.hmac import normalize_shop
    from integrations.shopify.messages import request_sync
    from parley.bus import OutboxRelay
    from parley.db import unit_of_work
    from parley.runtime import rabbit_broker

    engine, sessions = await _database(ctx.settings, "cli")
    try:
        await _ensure_migrated(engine)
        tenant_id, _ = await _tenant_id(sessions, tenant_name)
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            job = await request_sync(session, tenant_id=tenant_id, shop=normalize_shop(shop), reason="manual")
            job_id = job.id
        broker = rabbit_broker(ctx.settings, "cli")
        await broker.start()
        try:
            await OutboxRelay(sessions, broker).flush()
        finally:
            await broker.close()
    finally:
        await engine.dispose()
    emit(ctx, [{"shop": normalize_shop(shop), "sync_job": job_id}], ["shop", "sync_job"], title="sync queued")


# --- documents, ingest, jobs ----------------------------------------------------------------


async def _tenant_id(sessions: Any, name_or_id: str) -> tuple[str, str]:
    from parley.db import unit_of_work
    from tenants import service

    async with unit_of_work(sessions, admin=True) as session:
        tenant = await service.get_tenant(session, name_or_id=name_or_id)
        return tenant.id, tenant.name


def _collect(paths: tuple[str, ...]) -> list[Any]:
    from pathlib import Path

    files = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise ParleyError(f"no such file or directory: {raw}", code="not_found")
    if not files:
        raise ParleyError("nothing to ingest: the paths hold no files", code="invalid_input")
    return files


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Show live progress until every file is indexed or failed.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait with --wait.")
@click.pass_obj
@run_async
async def ingest(ctx: Ctx, paths: tuple[str, ...], tenant_name: str, wait: bool, timeout: float) -> None:
    """Upload files (or every file under directories) for a tenant through the real pipeline.

    The files become one job whose progress is shown live; the document workers index them.
    """
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from parley.blobs import BlobStore
    from parley import runtime
    from parley.bus import OutboxRelay
    from parley.db import unit_of_work
    from parley.documents import JobRepository, create_job, job_report, submit_upload
    from parley.errors import TooLarge

    files = _collect(paths)
    settings = ctx.settings
    engine, sessions = await _database(settings, "cli")
    broker = runtime.rabbit_broker(settings, "cli-ingest")
    try:
        await _ensure_migrated(engine)
        tenant_id, tenant = await _tenant_id(sessions, tenant_name)
        blobs = BlobStore(settings.effective_blob_dir)
        stored, skipped = [], []
        for path in files:
            try:
                stored.append((path, await blobs.put_file(tenant_id, path, max_bytes=settings.max_upload_bytes)))
            except TooLarge as exc:
                skipped.append((path, exc.message))
        for path, why in skipped:
            err.print(f"[yellow]skipped {path}: {why}[/yellow]")
        if not stored:
            raise ParleyError("no file could be uploaded", code="invalid_input")
        await broker.start()
        relay = OutboxRelay(sessions, broker)
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            job = await create_job(session, tenant_id=tenant_id, kind="documents", total=len(stored),
                                   description=f"ingest of {len(stored)} files by the CLI")
            job_id = job.id
            for path, blob in stored:
                await submit_upload(session, tenant_id=tenant_id, source="cli", filename=path.name, declared_mime=None,
                                    blob=blob, job_id=job_id, idempotency_key=None)
        await relay.flush()
        if not ctx.as_json:
            out.print(f"queued {len(stored)} files for tenant [bold]{tenant}[/bold] as job {job_id}")
        if not wait:
            if ctx.as_json:
                click.echo(json.dumps({"job_id": job_id, "queued": len(stored)}))
            return
        deadline = time.monotonic() + timeout
        with Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
                      TimeElapsedColumn(), console=err, disable=ctx.as_json) as progress:
            bar = progress.add_task("job", total=len(stored), failed=0)
            while True:
                async with unit_of_work(sessions, tenant_id=tenant_id) as session:
                    job = await JobRepository(session, tenant_id).get(job_id)
                    progress.update(bar, completed=job.done + job.failed, failed=job.failed)
                    if job.status.value != "running":
                        report = await job_report(session, job)
                        break
                if time.monotonic() > deadline:
                    raise ParleyError(f"still running after {timeout:.0f}s; follow it with `parley jobs show {job_id} --tenant {tenant}`", code="timeout")
                await asyncio.sleep(0.5)
        if ctx.as_json:
            click.echo(json.dumps({"job_id": job_id, "total": job.total, "done": job.done, "failed": job.failed, "report": report}))
        else:
            out.print(report)
    finally:
        await broker.close()
        await engine.dispose()


def _doc_row(d: Any) -> dict[str, Any]:
    return {"id": d.id, "filename": d.filename, "status": d.status.value, "chunks": d.chunk_count,
            "error": d.error, "size": d.size_bytes, "updated_at": d.updated_at.isoformat(timespec="seconds") if d.updated_at else None}


@main.group()
def documents() -> None:
    """A tenant's documents and their indexing status."""


@documents.command("list")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--status", type=click.Choice(["queued", "processing", "indexed", "failed", "deleted"]), help="Only this status.")
@click.option("--limit", default=100, show_default=True)
@click.pass_obj
@run_async
async def documents_list(ctx: Ctx, tenant_name: str, status: str | None, limit: int) -> None:
    """List documents, newest first, with their status and error."""
    from parley.db import unit_of_work
    from parley.documents import DocumentRepository
    from parley.models import DocumentStatus

    engine, sessions = await _database(ctx.settings, "cli")
    try:
        await _ensure_migrated(engine)
        tenant_id, _ = await _tenant_id(sessions, tenant_name)
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            rows = [_doc_row(d) for d in await DocumentRepository(session, tenant_id).list(
                status=DocumentStatus(status) if status else None, limit=limit)]
    finally:
        await engine.dispose()
    emit(ctx, rows, ["id", "filename", "status", "chunks", "error", "updated_at"], title="documents")


@documents.command("delete")
@click.argument("document_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def documents_delete(ctx: Ctx, document_id: str, tenant_name: str) -> None:
    """Delete a document: its vectors and chunks are removed and cached answers invalidated."""
    from parley.db import unit_of_work
    from parley.documents import delete_document
    from parley.vectors import create_vector_index

    engine, sessions = await _database(ctx.settings, "cli")
    index = create_vector_index(ctx.settings, role="writer", sessions=sessions)
    try:
        await _ensure_migrated(engine)
        tenant_id, _ = await _tenant_id(sessions, tenant_name)
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            document = await delete_document(session, index, tenant_id=tenant_id, document_id=document_id)
            name = document.filename
    finally:
        await index.aclose()
        await engine.dispose()
    out.print(f"deleted {name} ({document_id})")


@main.command()
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def reindex(ctx: Ctx, tenant_name: str) -> None:
    """Re-index every document of a tenant (after changing the embedding model), as one job.

    Follow it with `parley jobs show JOB --tenant T`. The tenant stays searchable meanwhile.
    """
    from parley import runtime
    from parley.bus import OutboxRelay
    from parley.db import unit_of_work
    from parley.documents import requeue_all

    engine, sessions = await _database(ctx.settings, "cli")
    broker = runtime.rabbit_broker(ctx.settings, "cli-reindex")
    try:
        await _ensure_migrated(engine)
        tenant_id, tenant = await _tenant_id(sessions, tenant_name)
        await broker.start()
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            job = await requeue_all(session, tenant_id=tenant_id, reason=f"reindex of {tenant} requested by the CLI")
            job_id, total = (job.id, job.total) if job else (None, 0)
        await OutboxRelay(sessions, broker).flush()
    finally:
        await broker.close()
        await engine.dispose()
    if ctx.as_json:
        click.echo(json.dumps({"job_id": job_id, "documents": total}))
    elif job_id is None:
        out.print(f"tenant {tenant} has no documents to re-index")
    else:
        out.print(f"re-indexing {total} documents of {tenant} as job {job_id}")


@main.group()
def jobs() -> None:
    """Bulk jobs (multi-file uploads, catalog syncs) and their progress."""


@jobs.command("list")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def jobs_list(ctx: Ctx, tenant_name: str) -> None:
    """List a tenant's jobs with their counters."""
    from parley.db import unit_of_work
    from parley.documents import JobRepository

    engine, sessions = await _database(ctx.settings, "cli")
    try:
        await _ensure_migrated(engine)
        tenant_id, _ = await _tenant_id(sessions, tenant_name)
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            rows = [{"id": j.id, "kind": j.kind, "status": j.status.value, "done": j.done, "failed": j.failed,
                     "total": j.total, "description": j.description} for j in await JobRepository(session, tenant_id).list()]
    finally:
        await engine.dispose()
    emit(ctx, rows, ["id", "kind", "status", "done", "failed", "total", "description"], title="jobs")


@jobs.command("show")
@click.argument("job_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def jobs_show(ctx: Ctx, job_id: str, tenant_name: str) -> None:
    """Show one job: its counters and the report with grouped failure reasons."""
    from parley.db import unit_of_work
    from parley.documents import JobRepository, job_report

    engine, sessions = await _database(ctx.settings, "cli")
    try:
        await _ensure_migrated(engine)
        tenant_id, _ = await _tenant_id(sessions, tenant_name)
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            job = await JobRepository(session, tenant_id).get(job_id)
            row = {"id": job.id, "status": job.status.value, "done": job.done, "failed": job.failed, "total": job.total,
                   "report": await job_report(session, job)}
    finally:
        await engine.dispose()
    if ctx.as_json:
        click.echo(json.dumps(row))
    else:
        out.print(f"job {row['id']} ({row['status']}): {row['report']}")


# --- dead letters ---------------------------------------------------------------------------


@main.group()
def dlq() -> None:
    """Dead-letter queues: work that failed for good, with the reason; replay it once fixed."""


@dlq.command("list")
@click.option("--queue", type=click.Choice(["documents", "catalog", "notifications"]), help="Only this queue.")
@click.option("--all", "include_replayed", is_flag=True, help="Include dead letters already replayed.")
@click.pass_obj
@run_async
async def dlq_list(ctx: Ctx, queue: str | None, include_replayed: bool) -> None:
    """List dead letters, newest first."""
    from parley.bus import describe, list_dead_letters
    from parley.db import unit_of_work

    engine, sessions = await _database(ctx.settings, "cli")
    try:
        await _ensure_migrated(engine)
        async with unit_of_work(sessions, admin=True) as session:
            rows = [describe(r) for r in await list_dead_letters(session, queue=queue, include_replayed=include_replayed)]
    finally:
        await engine.dispose()
    emit(ctx, rows, [c for c in ("id", "queue", "type", "tenant_id", "attempts", "reason", "status", "dead_lettered_at")
                     if not rows or c in rows[0]], title="dead letters")


@dlq.command("replay")
@click.argument("ids", nargs=-1, type=int)
@click.option("--queue", required=True, type=click.Choice(["documents", "catalog", "notifications"]))
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter of the queue.")
@click.pass_obj
@run_async
async def dlq_replay(ctx: Ctx, ids: tuple[int, ...], queue: str, replay_all: bool) -> None:
    """Re-queue dead letters (by id from `parley dlq list`, or --all) with their attempts reset."""
    from parley import runtime
    from parley.bus import OutboxRelay, replay

    if not ids and not replay_all:
        raise ParleyError("name the dead letters to replay (ids from `parley dlq list`) or pass --all", code="invalid_input")
    engine, sessions = await _database(ctx.settings, "cli")
    broker = runtime.rabbit_broker(ctx.settings, "cli-dlq")
    try:
        await _ensure_migrated(engine)
        await broker.start()
        rows = await replay(sessions, broker, queue=queue, ids=list(ids) if ids else None,
                            relay=OutboxRelay(sessions, broker))
    finally:
        await broker.close()
        await engine.dispose()
    if ctx.as_json:
        click.echo(json.dumps({"replayed": [r.id for r in rows]}))
    else:
        out.print(f"replayed {len(rows)} dead letter(s) of {queue}")


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

SINGLE_PROCESS_WARNING = (
    "[bold red]SINGLE-PROCESS MODE: for a quick look only.[/bold red]\n"
    "Everything runs in this one process, which is the coupling the design forbids: indexing shares\n"
    "the CPU (and the embedding model) with answering, so answers slow down while documents are\n"
    "indexed; the broker is in memory, so messages in flight are lost on exit (re-queued from the\n"
    "outbox at the next single-process start); and one crash stops everything.\n"
    "For real use run `parley up` (with RabbitMQ) or `docker compose up`."
)


@main.command()
@click.option("--no-migrate", is_flag=True, help="Do not apply migrations before starting.")
@click.option("--single-process", is_flag=True,
              help="Everything in this one process with an in-memory broker: no RabbitMQ needed, a quick look only.")
@click.pass_obj
def up(ctx: Ctx, no_migrate: bool, single_process: bool) -> None:
    """Start the whole local stack as supervised processes (Ctrl-C stops everything cleanly).

    Checks what is reachable and configured (database, RabbitMQ, vector index, answerer,
    embedding model), applies migrations, then starts the gateway, the retrieval service and
    the two workers (at the lowest CPU priority), restarting one that dies, and prints what
    runs where. With --single-process all of it runs in this one process instead.
    """
    from parley import doctor, supervisor

    settings = ctx.settings
    if single_process:
        err.print(Panel(SINGLE_PROCESS_WARNING, border_style="red"))
    try:
        checks = asyncio.run(doctor.preflight(settings, single_process=single_process, migrate=not no_migrate))
        _print_checks(checks, title="preflight")
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
        sys.exit(run_async(_run_single_process)(settings, notes))
    specs = [spec for spec in supervisor.platform_processes(settings) if _has_command(spec.command)]
    sys.exit(supervisor.run(specs, console=out, notes=notes))


def _print_checks(checks: list[Any], *, title: str) -> None:
    colour = {"ok": "green", "warn": "yellow", "fail": "red"}
    table = Table(title=title, title_justify="left")
    for column in ("check", "status", "detail"):
        table.add_column(column)
    for c in checks:
        detail = c.detail + (f"\n[dim]fix:[/dim] {c.fix}" if c.fix and c.status != "ok" else "")
        table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/{colour[c.status]}]", detail)
    out.print(table)


async def _run_single_process(settings: Settings, notes: list[str]) -> int:
    """The gateway, the retrieval service (mounted in-process), both workers and the outbox relay
    in one event loop, on an in-memory broker. Ctrl-C or SIGTERM stops it."""
    import os
    import signal

    import aiohttp
    from aiohttp import web

    from bot.app import GatewayDeps
    from bot.app import create_app as create_gateway
    from bot.channels.shopify import setup_shopify
    from ingestion.catalog.consumer import catalog_consumer
    from ingestion.catalog.service import CatalogDeps
    from ingestion.documents import sandbox
    from ingestion.documents.consumer import document_consumer
    from ingestion.documents.service import IndexingDeps
    from integrations.shopify.config import ShopifyConfig
    from parley import runtime
    from parley.blobs import BlobStore
    from parley.bus import InMemoryBroker, consuming
    from parley.bus.outbox import requeue_unfinished
    from parley.crypto import load_secret_box
    from parley.db import create_engine, create_sessionmaker
    from parley.logging import configure_logging
    from parley.vectors import create_vector_index
    from retrieval.app import RetrievalDeps
    from retrieval.app import create_app as create_retrieval
    from retrieval.client import InProcessRetrievalClient
    from retrieval.routes import SERVICE

    configure_logging(process_name="parley-single", level=settings.log_level, json_lines=settings.log_json)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    engine = create_engine(settings, "single-process")
    sessions = create_sessionmaker(engine)
    box = load_secret_box(settings)
    broker = InMemoryBroker(runtime.topology(settings))
    await broker.start()
    requeued = await requeue_unfinished(sessions)  # what the last single-process run left in memory
    embedder = await asyncio.to_thread(runtime.embedder, settings, query_cache_size=1024)
    # One reader index for both sides: the workers' writes are searchable at once (read your writes).
    index = create_vector_index(settings, role="reader", sessions=sessions)
    http = aiohttp.ClientSession()
    retrieval_runner = web.AppRunner(
        create_retrieval(settings, deps=RetrievalDeps(sessions=sessions, embedder=embedder, index=index)), handle_signals=False)
    gateway_runner: web.AppRunner | None = None
    try:
        await retrieval_runner.setup()  # opens the service's resources without listening
        gateway = create_gateway(settings, deps=GatewayDeps(
            sessions=sessions, box=box, broker=broker, retrieval=InProcessRetrievalClient(retrieval_runner.app[SERVICE]),
            route_installers=[lambda app: setup_shopify(app, settings=settings, sessions=sessions, box=box)]))
        gateway_runner = web.AppRunner(gateway, access_log=None, handle_signals=False, shutdown_timeout=10.0)
        await gateway_runner.setup()
        await web.TCPSite(gateway_runner, settings.gateway_host, settings.gateway_port).start()
        documents = document_consumer(IndexingDeps(
            sessions=sessions, blobs=BlobStore(settings.effective_blob_dir), embedder=embedder, index=index,
            max_member_bytes=settings.max_upload_bytes, parse_time_limit_s=settings.parse_time_limit_seconds,
            parse_memory_limit_mb=settings.parse_memory_limit_mb, parser_plugins=settings.parser_plugin_paths,
        ), broker, max_attempts=settings.max_attempts)
        catalog = catalog_consumer(CatalogDeps(sessions=sessions, embedder=embedder, index=index, box=box, http=http,
                                               config=ShopifyConfig.from_settings(settings)),
                                   broker, max_attempts=settings.max_attempts)
        async with consuming(documents, catalog, shutdown_timeout=10.0):
            table = Table(title="Parley is running in ONE process (Ctrl-C stops it)", title_justify="left")
            for column in ("process", "pid", "nice", "URL"):
                table.add_column(column)
            table.add_row("gateway + retrieval + workers", str(os.getpid()), str(os.nice(0)),
                          f"http://{settings.gateway_host}:{settings.gateway_port}")
            out.print(table)
            for note in notes:
                out.print(note, highlight=False)
            if requeued:
                out.print(f"re-queued {requeued} message(s) the last single-process run left unfinished")
            await stop.wait()
            out.print("stopping…")
    finally:
        if gateway_runner is not None:
            await gateway_runner.cleanup()
        await retrieval_runner.cleanup()
        dropped = broker.pending()
        await index.aclose()
        await embedder.aclose()
        await http.close()
        await sandbox.aclose()
        await broker.close()
        await engine.dispose()
    if dropped:
        err.print(f"[yellow]{dropped} message(s) were still in memory; the next `parley up --single-process` "
                  "re-queues them[/yellow]", highlight=False)
    out.print("stopped.")
    return 0


def _has_command(path: list[str]) -> bool:
    """Is `parley <path...>` a command of this build? (Processes not built yet are not started.)"""
    command: click.Command = main
    for name in path:
        if not isinstance(command, click.Group) or name not in command.commands:
            return False
        command = command.commands[name]
    return True


def _run_migrations(settings: Settings) -> None:
    from parley import migrations
    from parley.doctor import describe_database

    async def go() -> str | None:
        engine, _ = await _database(settings, "cli")
        try:
            await migrations.upgrade(engine)
            return await migrations.current_revision(engine)
        finally:
            await engine.dispose()

    rev = asyncio.run(go())
    out.print(f"database ready at revision {rev} ({describe_database(settings)})")


# --- status and doctor ----------------------------------------------------------------------


@main.command()
@click.pass_obj
@run_async
async def status(ctx: Ctx) -> None:
    """What the platform is doing now: each queue's ready messages, workers (consumers) and dead
    letters (from RabbitMQ), its backlog and oldest unfinished message, the outbox backlog,
    documents by status per tenant and jobs in progress. Exit code 1 when RabbitMQ cannot be asked."""
    from parley import runtime
    from parley import status as st
    from parley.db import unit_of_work
    from parley.doctor import describe_broker
    from tenants.repository import TenantDirectory

    settings = ctx.settings
    topology = runtime.topology(settings)
    engine, sessions = await _database(settings, "cli")
    try:
        await _ensure_migrated(engine)
        async with unit_of_work(sessions, admin=True) as session:
            backlog = await st.pending_backlog(session)
            outbox = await st.outbox_backlog(session)
            documents = await st.documents_by_status(session)
            jobs = await st.running_jobs(session)
            names = {t.id: t.name for t in await TenantDirectory(session).all()}
    finally:
        await engine.dispose()
    try:
        stats, broker = await st.broker_queue_stats(settings.amqp_url, topology), "ok"
    except (ConnectionError, OSError, asyncio.TimeoutError) as exc:  # the database figures are still worth showing
        stats, broker = None, f"RabbitMQ not reachable at {describe_broker(settings)}: {exc or type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - likewise
        stats, broker = None, f"could not read the queues from RabbitMQ at {describe_broker(settings)}: {exc!r}"
    queues = st.queue_reports(topology, stats, backlog)
    statuses = ("queued", "processing", "indexed", "failed", "deleted")
    doc_rows = [{"tenant": names.get(tid, tid), **{s: counts.get(s, 0) for s in statuses}}
                for tid, counts in sorted(documents.items(), key=lambda kv: names.get(kv[0], kv[0]))]
    for job in jobs:
        job["tenant"] = names.get(job["tenant_id"], job["tenant_id"])
    if ctx.as_json:
        click.echo(json.dumps({"broker": broker, "queues": [vars(q) for q in queues],
                               "outbox": {"unpublished": outbox.count, "oldest_age_s": outbox.age_seconds()},
                               "documents": doc_rows, "jobs": jobs}, indent=2, default=str))
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
        emit(ctx, doc_rows, ["tenant", *statuses], title="documents")
        emit(ctx, [{**j, "progress": f"{j['done'] + j['failed']}/{j['total']}"} for j in jobs],
             ["tenant", "id", "kind", "progress", "failed", "started", "description"], title="jobs in progress")
    if broker != "ok":
        sys.exit(1)


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


@main.command("doctor")
@click.pass_obj
@run_async
async def doctor_cmd(ctx: Ctx) -> None:
    """Check configuration and connectivity: database (reachable, migrated), RabbitMQ, the secret
    key (present, decrypts a stored channel secret), embedding model, storage, vector index,
    answerer, public URL, Slack / Instagram / Shopify. Exit code 1 if anything fails."""
    from parley import doctor

    checks = await doctor.doctor(ctx.settings, secret_probe=_stored_secret)
    if ctx.as_json:
        click.echo(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        _print_checks(checks, title="parley doctor")
        fails, warns = (sum(c.status == s for c in checks) for s in ("fail", "warn"))
        out.print(f"{fails} failed, {warns} warning(s)" if fails or warns else "all good")
    if doctor.failed(checks):
        sys.exit(1)


async def _stored_secret(sessions: Any) -> str | None:
    from sqlalchemy import select

    from parley.db import unit_of_work
    from tenants.models import ChannelInstallation

    async with unit_of_work(sessions, admin=True) as session:
        found = await session.execute(select(ChannelInstallation.secrets_encrypted)
                                      .where(ChannelInstallation.secrets_encrypted.is_not(None)).limit(1))
        return found.scalar_one_or_none()


def error_id() -> str:
    return uuid.uuid4().hex[:12]


if __name__ == "__main__":
    main()
