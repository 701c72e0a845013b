"""`parley ingest`, `parley documents …`, `parley reindex`, `parley jobs …`: a tenant's knowledge base."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import click

from cli.app import Ctx, database, emit, err, main, out, publish_outbox, rabbit, run_async
from parley.errors import ParleyError


def cli_actor() -> Any:
    """The operator running this command, as the audit log records them (an operator may replace)."""
    import getpass

    from knowledge.audit import Actor

    try:
        user = getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        user = ""
    return Actor("cli", user, may_replace=True)


def _collect(paths: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from knowledge.repository import JobRepository
    from knowledge.service import create_job, job_report, submit_upload
    from parley.blobs import BlobStore
    from parley.errors import TooLarge

    files = _collect(paths)
    settings = ctx.settings
    async with database(settings) as db, rabbit(settings, "cli-ingest") as broker:
        tenant = await db.tenant(tenant_name)
        blobs = BlobStore(settings.effective_blob_dir)
        stored, skipped = [], []
        for path in files:
            try:
                stored.append((path, await blobs.put_file(tenant.id, path, max_bytes=settings.max_upload_bytes)))
            except TooLarge as exc:
                skipped.append((path, exc.message))
        for path, why in skipped:
            err.print(f"[yellow]skipped {path}: {why}[/yellow]")
        if not stored:
            raise ParleyError("no file could be uploaded", code="invalid_input")
        async with db.scoped(tenant.id) as session:
            job = await create_job(session, tenant_id=tenant.id, kind="documents", total=len(stored),
                                   description=f"ingest of {len(stored)} files by the CLI")
            job_id = job.id
            for path, blob in stored:
                await submit_upload(session, tenant_id=tenant.id, source="cli", filename=path.name, declared_mime=None,
                                    blob=blob, job_id=job_id, idempotency_key=None, actor=cli_actor())
        await publish_outbox(db, broker)
        if not ctx.as_json:
            out.print(f"queued {len(stored)} files for tenant [bold]{tenant.name}[/bold] as job {job_id}")
        if not wait:
            if ctx.as_json:
                click.echo(json.dumps({"job_id": job_id, "queued": len(stored)}))
            return
        deadline = time.monotonic() + timeout
        with Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
                      TimeElapsedColumn(), console=err, disable=ctx.as_json) as progress:
            bar = progress.add_task("job", total=len(stored), failed=0)
            while True:
                async with db.scoped(tenant.id) as session:
                    job = await JobRepository(session, tenant.id).get(job_id)
                    progress.update(bar, completed=job.done + job.failed, failed=job.failed)
                    if job.status.value != "running":
                        report = await job_report(session, job)
                        break
                if time.monotonic() > deadline:
                    raise ParleyError(f"still running after {timeout:.0f}s; follow it with "
                                      f"`parley jobs show {job_id} --tenant {tenant.name}`", code="timeout")
                await asyncio.sleep(0.5)
    if ctx.as_json:
        click.echo(json.dumps({"job_id": job_id, "total": job.total, "done": job.done, "failed": job.failed, "report": report}))
    else:
        out.print(report)


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
    from knowledge.models import DocumentStatus
    from knowledge.repository import DocumentRepository

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            rows = [_doc_row(d) for d in await DocumentRepository(session, tenant.id).list(
                status=DocumentStatus(status) if status else None, limit=limit)]
    emit(ctx, rows, ["id", "filename", "status", "chunks", "error", "updated_at"], title="documents")


@documents.command("delete")
@click.argument("document_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def documents_delete(ctx: Ctx, document_id: str, tenant_name: str) -> None:
    """Delete a document: its vectors and chunks are removed and cached answers invalidated."""
    from knowledge.service import delete_document
    from parley.vectors import create_vector_index

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        index = create_vector_index(ctx.settings, role="writer", sessions=db.sessions)
        try:
            async with db.scoped(tenant.id) as session:
                document = await delete_document(session, index, tenant_id=tenant.id, document_id=document_id,
                                                 actor=cli_actor())
                name = document.filename
        finally:
            await index.aclose()
    out.print(f"deleted {name} ({document_id})")


@documents.command("history")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--document", "document_id", default=None, help="Only the events about this document.")
@click.option("--limit", default=100, show_default=True)
@click.pass_obj
@run_async
async def documents_history(ctx: Ctx, tenant_name: str, document_id: str | None, limit: int) -> None:
    """The knowledge base's audit log, newest first: uploads, replacements, deletions, restores, refusals."""
    from knowledge.audit import KnowledgeEventRepository, event_json

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            rows = [event_json(e) for e in await KnowledgeEventRepository(session, tenant.id).list(
                limit=limit, document_id=document_id)]
    for row in rows:
        row["who"] = f"{row['actor']['channel']}:{row['actor']['id']}" if row["actor"]["id"] else row["actor"]["channel"]
    emit(ctx, rows, ["at", "action", "filename", "document_id", "who", "replaced_document_id", "detail"],
         title="knowledge history")


@documents.command("restore")
@click.argument("document_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def documents_restore(ctx: Ctx, document_id: str, tenant_name: str) -> None:
    """Bring back a replaced or deleted document: it is indexed again and takes the current version's place."""
    from knowledge.service import restore_document

    async with database(ctx.settings) as db, rabbit(ctx.settings, "cli-restore") as broker:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            document = await restore_document(session, tenant_id=tenant.id, document_id=document_id, actor=cli_actor())
            name, replaces = document.filename, document.replaces_id
        await publish_outbox(db, broker)
    out.print(f"restored {name} ({document_id}): queued for indexing" + (f", in place of {replaces}" if replaces else ""))


@main.command()
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def reindex(ctx: Ctx, tenant_name: str) -> None:
    """Re-index every document of a tenant (after changing the embedding model), as one job.

    Follow it with `parley jobs show JOB --tenant T`. The tenant stays searchable meanwhile.
    """
    from knowledge.service import requeue_all

    async with database(ctx.settings) as db, rabbit(ctx.settings, "cli-reindex") as broker:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            job = await requeue_all(session, tenant_id=tenant.id, reason=f"reindex of {tenant.name} requested by the CLI")
            job_id, total = (job.id, job.total) if job else (None, 0)
        await publish_outbox(db, broker)
    if ctx.as_json:
        click.echo(json.dumps({"job_id": job_id, "documents": total}))
    elif job_id is None:
        out.print(f"tenant {tenant.name} has no documents to re-index")
    else:
        out.print(f"re-indexing {total} documents of {tenant.name} as job {job_id}")


@main.group()
def jobs() -> None:
    """Bulk jobs (multi-file uploads, catalog syncs) and their progress."""


@jobs.command("list")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def jobs_list(ctx: Ctx, tenant_name: str) -> None:
    """List a tenant's jobs with their counters."""
    from knowledge.repository import JobRepository

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            rows = [{"id": j.id, "kind": j.kind, "status": j.status.value, "done": j.done, "failed": j.failed,
                     "total": j.total, "description": j.description} for j in await JobRepository(session, tenant.id).list()]
    emit(ctx, rows, ["id", "kind", "status", "done", "failed", "total", "description"], title="jobs")


@jobs.command("show")
@click.argument("job_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def jobs_show(ctx: Ctx, job_id: str, tenant_name: str) -> None:
    """Show one job: its counters and the report with grouped failure reasons."""
    from knowledge.repository import JobRepository
    from knowledge.service import job_report

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            job = await JobRepository(session, tenant.id).get(job_id)
            row = {"id": job.id, "status": job.status.value, "done": job.done, "failed": job.failed, "total": job.total,
                   "report": await job_report(session, job)}
    if ctx.as_json:
        click.echo(json.dumps(row))
    else:
        out.print(f"job {row['id']} ({row['status']}): {row['report']}")
