"""`parley ingest`, `parley documents …`, `parley reindex`, `parley jobs …`: a tenant's knowledge base."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import time
from pathlib import Path, PurePath
from typing import Any

import click

from cli import running
from cli.app import Ctx, database, emit, err, main, out, run_async
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


#: Left out of a folder unless asked for: checksum and signature manifests (they index as noise).
#: Dotfiles and dot-directories (.git, .DS_Store, .env) are left out too.
DEFAULT_EXCLUDES = ("SHA*SUMS", "MD5SUMS", "B2SUMS", "CHECKSUMS", "CHECKSUMS.txt", "*.sha1", "*.sha224", "*.sha256",
                    "*.sha384", "*.sha512", "*.md5", "*.sha256sum", "*.sha512sum", "*.md5sum", "*.asc", "*.sig",
                    "__MACOSX")


def _excluded(relative: PurePath, patterns: tuple[str, ...]) -> bool:
    """Does a pattern match the file's name, any folder it is in, or its path under the folder given?
    (In any case: SHA256SUMS and sha256sums are the same manifest.)"""
    lowered = [p.lower() for p in patterns]
    names = [part.lower() for part in relative.parts] + [relative.as_posix().lower()]
    return any(fnmatch.fnmatchcase(name, p) for p in lowered for name in names)


def _collect(paths: tuple[str, ...], exclude: tuple[str, ...] = ()) -> tuple[list[Path], list[Path]]:
    """The files to upload, and those left out: under a folder, dotfiles, dot-directories and
    `DEFAULT_EXCLUDES`; anywhere, what matches an ``--exclude`` glob (a file named explicitly is
    left out only by ``--exclude``)."""
    files: list[Path] = []
    excluded: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if not p.is_file():
                    continue
                relative = p.relative_to(path)
                hidden = any(part.startswith(".") for part in relative.parts)
                (excluded if hidden or _excluded(relative, DEFAULT_EXCLUDES + exclude) else files).append(p)
        elif path.is_file():
            (excluded if _excluded(PurePath(path.name), exclude) else files).append(path)
        else:
            raise ParleyError(f"no such file or directory: {raw}", code="not_found")
    if not files:
        raise ParleyError("nothing to ingest: the paths hold no files"
                          + (f" but {len(excluded):,} excluded ones (dotfiles, checksum manifests or --exclude)"
                             if excluded else ""), code="invalid_input")
    return files, excluded


@main.command(section="knowledge", example="parley ingest ./docs --tenant acme --exclude '*.tmp'")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Show live progress until every file is indexed or failed.")
@click.option("--timeout", default=3600.0, show_default=True, type=click.FloatRange(min=1), help="Seconds to wait with --wait.")
@click.option("--exclude", "exclude", multiple=True, metavar="GLOB",
              help="Leave out files whose name, folder or path under the folder matches GLOB (repeatable), "
                   "e.g. --exclude '*.tmp' --exclude drafts.")
@click.pass_obj
@run_async
async def ingest(ctx: Ctx, paths: tuple[str, ...], tenant_name: str, wait: bool, timeout: float,
                 exclude: tuple[str, ...]) -> None:
    """Upload files (or every file under directories) for a tenant through the real pipeline.

    The files become one job whose progress is shown live; the document workers index them.
    Under a folder, dotfiles, dot-directories and checksum manifests (SHA256SUMS, *.sha256,
    MD5SUMS, *.md5, …) are left out, and so is whatever matches --exclude.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from knowledge.repository import DocumentRepository, JobRepository
    from knowledge.service import create_job, job_report, submit_upload
    from knowledge.usage import batch_refusal
    from parley.blobs import BlobStore
    from parley.errors import QuotaExceeded, TooLarge
    from tenants import quotas
    from tenants.quotas import PlanDefaults

    files, excluded = _collect(paths, exclude)
    if excluded and not ctx.as_json:
        shown = ", ".join(str(p) for p in excluded[:5]) + (", …" if len(excluded) > 5 else "")
        err.print(f"skipped {len(excluded):,} (excluded): {shown}", highlight=False, markup=False)
    settings = ctx.settings
    async with database(settings) as db:
        tenant = await db.tenant(tenant_name)
        # where the work will be done (RabbitMQ, or the single-process platform's outbox), or refuse now
        chosen = await running.route(settings, "documents", waiting=wait)
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
        plan = PlanDefaults.from_settings(settings)
        try:
            async with db.scoped(tenant.id) as session:
                job = await create_job(session, tenant_id=tenant.id, kind="documents", total=len(stored),
                                       description=f"ingest of {len(stored)} files by the CLI")
                job_id = job.id
                for path, blob in stored:
                    await submit_upload(session, tenant_id=tenant.id, source="cli", filename=path.name, declared_mime=None,
                                        blob=blob, job_id=job_id, idempotency_key=None, actor=cli_actor(), plan=plan)
        except QuotaExceeded as exc:  # nothing was recorded: the files stored for it go too (exit code 3)
            async with db.scoped(tenant.id) as session:
                used = await DocumentRepository(session, tenant.id).blob_keys_in_use([b.key for _, b in stored])
                exc = await batch_refusal(session, exc, files=[(p.name, b.size) for p, b in stored], defaults=plan)
            for _, blob in stored:
                if blob.created and blob.key not in used:
                    await blobs.delete(tenant.id, blob.key)
            await quotas.note_refusal(db.sessions, tenant_id=tenant.id, exc=exc)
            raise QuotaExceeded(f"nothing was queued: {exc.message} (`parley plans show --tenant {tenant.name}`)",
                                resource=exc.resource, limit=exc.limit, used=exc.used, requested=exc.requested,
                                rate=exc.rate, retry_after=exc.retry_after) from None
        await running.send(settings, db, chosen, "cli-ingest")
        if not ctx.as_json:
            out.print(f"queued {len(stored)} files for tenant [bold]{tenant.name}[/bold] as job {job_id}")
        chosen.show(out, err, quiet=ctx.as_json)
        if not wait:
            if ctx.as_json:
                click.echo(json.dumps({"job_id": job_id, "queued": len(stored), "excluded": len(excluded)}))
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
        click.echo(json.dumps({"job_id": job_id, "total": job.total, "done": job.done, "failed": job.failed, "report": report,
                               "excluded": len(excluded)}))
    else:
        out.print(report)


def _doc_row(d: Any) -> dict[str, Any]:
    return {"id": d.id, "filename": d.filename, "status": d.status.value, "chunks": d.chunk_count,
            "error": d.error or ("original not kept (retention)" if d.original_deleted_at is not None else None),
            "original_kept": d.original_deleted_at is None, "size": d.size_bytes,
            "updated_at": d.updated_at.isoformat(timespec="seconds") if d.updated_at else None}


@main.group(section="knowledge", example="parley documents list --tenant acme --status failed")
def documents() -> None:
    """A tenant's documents and their indexing status."""


@documents.command("list", example="parley documents list --tenant acme --status failed")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--status", type=click.Choice(["queued", "processing", "indexed", "failed", "deleted"]), help="Only this status.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000), help="At most this many, newest first.")
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


@documents.command("delete", example="parley documents delete 0a26b8 --tenant acme")
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
                document_id = (await _document(session, tenant, document_id)).id
                document = await delete_document(session, index, tenant_id=tenant.id, document_id=document_id,
                                                 actor=cli_actor())
                name = document.filename
        finally:
            await index.aclose()
    if ctx.as_json:
        click.echo(json.dumps({"deleted": document_id, "filename": name}))
    else:
        out.print(f"deleted {name} ({document_id})")


async def _document(session: Any, tenant: Any, id_or_prefix: str) -> Any:
    """The tenant's document with this id or unique id prefix."""
    from knowledge.repository import DocumentRepository

    return await DocumentRepository(session, tenant.id).resolve(
        id_or_prefix, hint=f"`parley documents list --tenant {tenant.name}` shows them")


@documents.command("history", example="parley documents history --tenant acme --document 0a26b8")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--document", "document_id", default=None, help="Only the events about this document.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000), help="At most this many, newest first.")
@click.pass_obj
@run_async
async def documents_history(ctx: Ctx, tenant_name: str, document_id: str | None, limit: int) -> None:
    """The knowledge base's audit log, newest first: uploads, replacements, deletions, restores, refusals."""
    from knowledge.audit import KnowledgeEventRepository, event_json

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            if document_id:
                document_id = (await _document(session, tenant, document_id)).id
            rows = [event_json(e) for e in await KnowledgeEventRepository(session, tenant.id).list(
                limit=limit, document_id=document_id)]
    for row in rows:
        row["who"] = f"{row['actor']['channel']}:{row['actor']['id']}" if row["actor"]["id"] else row["actor"]["channel"]
    emit(ctx, rows, ["at", "action", "filename", "document_id", "who", "replaced_document_id", "detail"],
         title="knowledge history")


@documents.command("restore", example="parley documents restore 0a26b8 --tenant acme")
@click.argument("document_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def documents_restore(ctx: Ctx, document_id: str, tenant_name: str) -> None:
    """Bring back a replaced or deleted document: it is indexed again and takes the current version's place."""
    from knowledge.service import restore_document
    from tenants.quotas import PlanDefaults

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            document_id = (await _document(session, tenant, document_id)).id
            document = await restore_document(session, tenant_id=tenant.id, document_id=document_id, actor=cli_actor(),
                                              plan=PlanDefaults.from_settings(ctx.settings))
            name, replaces = document.filename, document.replaces_id
        await running.deliver(ctx.settings, db, "documents", "cli-restore")
    if ctx.as_json:
        click.echo(json.dumps({"restored": document_id, "filename": name, "replaces": replaces}))
    else:
        out.print(f"restored {name} ({document_id}): queued for indexing" + (f", in place of {replaces}" if replaces else ""))


@main.command(section="knowledge", example="parley reindex --tenant acme")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def reindex(ctx: Ctx, tenant_name: str) -> None:
    """Re-index every document of a tenant (after changing the embedding model), as one job.

    Follow it with `parley jobs show JOB --tenant T`. The tenant stays searchable meanwhile.
    """
    from knowledge.service import requeue_all

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        chosen = await running.route(ctx.settings, "documents", waiting=False)
        async with db.scoped(tenant.id) as session:
            done = await requeue_all(session, tenant_id=tenant.id, reason=f"reindex of {tenant.name} requested by the CLI")
            job_id, total = (done.job.id, done.job.total) if done.job else (None, 0)
            skipped = done.skipped_summary()
        await running.send(ctx.settings, db, chosen, "cli-reindex")
    if ctx.as_json:
        click.echo(json.dumps({"job_id": job_id, "documents": total, "skipped_for_good": sorted(done.for_good),
                               "skipped_superseded": sorted(d.id for d in done.superseded)}))
        return
    if job_id is None:
        out.print(f"tenant {tenant.name} has no documents to re-index")
    else:
        out.print(f"re-indexing {total} documents of {tenant.name} as job {job_id}")
        chosen.show(out, err)
    if skipped:
        out.print(skipped, highlight=False)


@main.group(section="knowledge", example="parley jobs list --tenant acme")
def jobs() -> None:
    """Bulk jobs (multi-file uploads, catalog syncs) and their progress."""


@jobs.command("list", example="parley jobs list --tenant acme")
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


@jobs.command("resume", example="parley jobs resume 0a26b8 --tenant acme")
@click.argument("job_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def jobs_resume(ctx: Ctx, job_id: str, tenant_name: str) -> None:
    """Re-queue the pending items of a stalled job (see `parley status`: its reason and pending count).

    Exactly the items still pending are queued again, through the outbox: an item that finished
    meanwhile is not, and resuming twice queues them once (the second finds the job running).
    """
    from knowledge.repository import JobRepository
    from knowledge.stalls import resume

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        chosen = await running.route(ctx.settings, "documents", waiting=False)
        async with db.scoped(tenant.id) as session:
            job = await JobRepository(session, tenant.id).resolve(
                job_id, hint=f"`parley jobs list --tenant {tenant.name}` shows them")
            done = await resume(session, tenant_id=tenant.id, job_id=job.id)
        if done.requeued:
            await running.send(ctx.settings, db, chosen, "cli-jobs-resume")
    if ctx.as_json:
        click.echo(json.dumps({"job_id": done.job_id, "requeued": done.requeued, "already_running": done.already_running}))
    elif done.already_running:
        out.print(f"job {done.job_id} is running, not stalled: nothing re-queued")
    else:
        out.print(f"job {done.job_id} resumed: re-queued {len(done.requeued)} pending item(s)"
                  + (f": {', '.join(done.requeued[:10])}" if done.requeued else ""), highlight=False)
        if done.requeued:
            chosen.show(out, err)


@jobs.command("show", example="parley jobs show 0a26b8 --tenant acme")
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
            job = await JobRepository(session, tenant.id).resolve(
                job_id, hint=f"`parley jobs list --tenant {tenant.name}` shows them")
            row = {"id": job.id, "status": job.status.value, "done": job.done, "failed": job.failed, "total": job.total,
                   "report": await job_report(session, job)}
    if ctx.as_json:
        click.echo(json.dumps(row))
    else:
        out.print(f"job {row['id']} ({row['status']}): {row['report']}")
