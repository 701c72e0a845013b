"""Files that become documents: type and size checks, streaming into the blob store, submission.

Every producer in the gateway (a file in a Slack or Instagram DM, the web chat's and the admin
dashboard's upload) goes through `UploadIntake`. It first refuses a file no format of the gateway's
registry claims (`parley.formats`: the built-in formats plus those of the parser plugins, loaded
at start-up, so the gateway accepts exactly what the document worker reads). Then the bytes
stream into the blob store under the tenant's size limit (refused the moment the limit is
passed), and `parley.documents.submit_upload` records the document and stages
``document.uploaded`` in one transaction. Several files at once become one job. Who may
upload at all is decided before (`tenants.uploaders`); a new version of someone else's document
is refused by `submit_upload`, and a file that does not become a document is discarded
(`UploadIntake.discard`): no blob is left without a document.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.blobs import BlobStore, StoredBlob
from parley.db import unit_of_work
from knowledge.audit import Actor
from knowledge.repository import DocumentRepository
from knowledge.service import create_job, submit_upload
from knowledge.usage import batch_refusal
from parley.errors import InvalidInput, TooLarge, UnsupportedType
from parley.formats import FormatRegistry, base_type
from tenants import quotas
from tenants.quotas import PlanDefaults, QuotaExceeded
from tenants.repository import TenantDirectory

log = logging.getLogger("parley.gateway.uploads")

def check_supported(name: str, mime: str | None, *, formats: FormatRegistry) -> str:
    """The MIME type the document will be read as (its extension decides, else its declared
    type); `UnsupportedType` with a reason otherwise."""
    claimed = formats.claimed(name, mime)
    if claimed is not None:
        return claimed.mime_type
    kind = base_type(mime) or (mimetypes.guess_type(name)[0] or "this type of file")
    raise UnsupportedType(f"{name} is {kind}, which I cannot read; send {formats.describe()}")


def check_download_type(name: str, expected: str, content_type: str | None) -> None:
    """An HTML page where a PDF (or any non-HTML document) was expected is a login or error page."""
    got = base_type(content_type)
    if got == "text/html" and expected != "text/html":
        raise InvalidInput(f"downloading {name} returned a web page instead of the file (is the app allowed to read files?)")


@dataclass(frozen=True)
class StoredFile:
    name: str
    mime_type: str
    blob: StoredBlob


@dataclass(frozen=True)
class SubmittedFile:
    document_id: str
    name: str
    status: str
    created: bool
    #: Why it was not taken (a new version of someone else's document); its blob is discarded.
    refused: str | None = None


@dataclass(frozen=True)
class Submission:
    files: list[SubmittedFile]
    job_id: str | None


class UploadIntake:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, *, default_max_bytes: int,
                 formats: FormatRegistry, plan: PlanDefaults | None = None) -> None:
        self.sessions = sessions
        self.blobs = blobs
        self.default_max_bytes = default_max_bytes
        #: The plan limits of tenants without their own (PARLEY_PLAN_MAX_*).
        self.plan = plan or PlanDefaults()
        #: What this gateway accepts (`parley.formats.load_format_plugins`, at start-up).
        self.formats = formats

    def check_supported(self, name: str, mime: str | None) -> str:
        """`check_supported` against this gateway's formats."""
        return check_supported(name, mime, formats=self.formats)

    async def limit_for(self, tenant_id: str) -> int:
        async with unit_of_work(self.sessions, admin=True) as session:
            tenant = await TenantDirectory(session).by_id(tenant_id)
        own = tenant.max_upload_bytes if tenant is not None else None
        return min(own, self.default_max_bytes) if own else self.default_max_bytes

    async def store(self, tenant_id: str, name: str, chunks: AsyncIterable[bytes], *, max_bytes: int,
                    declared_size: int | None = None) -> StoredBlob:
        blob = await self.blobs.put_stream(tenant_id, chunks, max_bytes=max_bytes)
        if declared_size is not None and blob.size != declared_size:
            await self.discard(tenant_id, [blob])
            raise InvalidInput(f"{name}: received {blob.size:,} bytes but the file has {declared_size:,}; the download was not the file")
        if blob.size == 0:
            await self.discard(tenant_id, [blob])
            raise InvalidInput(f"{name} is empty")
        return blob

    async def submit(self, tenant_id: str, *, source: str, files: list[StoredFile], notify: dict[str, Any] | None,
                     description: str, actor: Actor, sealed_password: str | None = None,
                     version_of: str | None = None) -> Submission:
        """One document per file, one job when there are several; published after the commit.

        ``actor`` sent them (with the rights the tenant's uploader policy gave them). A file that
        is not taken (refused, or the whole submission failed) leaves no blob behind.
        ``sealed_password`` and ``version_of``: see `knowledge.service.submit_upload`."""
        if not files:
            raise InvalidInput("no file to submit")
        try:
            async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
                job_id = None
                if len(files) > 1:
                    job = await create_job(session, tenant_id=tenant_id, kind="documents", total=len(files),
                                           description=description, notify=notify)
                    job_id = job.id
                out = []
                for f in files:
                    submitted = await submit_upload(session, tenant_id=tenant_id, source=source, filename=f.name,
                                                    declared_mime=f.mime_type, blob=f.blob, job_id=job_id, actor=actor,
                                                    sealed_password=sealed_password, version_of=version_of,
                                                    # items of a job speak through the job's report
                                                    notify=notify if job_id is None else None, plan=self.plan)
                    out.append(SubmittedFile(submitted.document.id, f.name, submitted.document.status.value,
                                             submitted.created, submitted.refused))
        except QuotaExceeded as exc:  # past the plan: nothing was kept; the refusal says what is stored now
            await asyncio.shield(self.discard(tenant_id, [f.blob for f in files]))
            refusal = await self._refusal_now(tenant_id, exc, files)
            await quotas.note_refusal(self.sessions, tenant_id=tenant_id, exc=refusal)
            raise refusal from None
        except BaseException:
            await asyncio.shield(self.discard(tenant_id, [f.blob for f in files]))
            raise
        await self.discard(tenant_id, [f.blob for f, s in zip(files, out, strict=True) if s.refused])
        return Submission(out, job_id)

    async def _refusal_now(self, tenant_id: str, exc: QuotaExceeded, files: list[StoredFile]) -> QuotaExceeded:
        """The refusal restated for the whole upload, with the use as it is after the rollback."""
        try:
            async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
                return await batch_refusal(session, exc, files=[(f.name, f.blob.size) for f in files], defaults=self.plan)
        except Exception:  # the refusal as it was met is still the answer
            return exc

    async def discard(self, tenant_id: str, blobs: list[StoredBlob]) -> None:
        """Delete stored files that did not become documents. Blobs are content-addressed, so one
        that a document points at (the same bytes uploaded before) is kept; when that cannot be
        checked (the database is down), every one is kept: a stray file beats a broken document."""
        keys = sorted({b.key for b in blobs})
        if not keys:
            return
        try:
            async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
                used = await DocumentRepository(session, tenant_id).blob_keys_in_use(keys)
        except Exception:
            log.warning("could not check which uploaded files are in use; keeping %d", len(keys), exc_info=True)
            return
        for key in keys:
            if key not in used:
                await self.blobs.delete(tenant_id, key)


async def capped(chunks: AsyncIterable[bytes], max_bytes: int, name: str) -> AsyncIterator[bytes]:
    """Pass chunks through, refusing as soon as more than ``max_bytes`` went by."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > max_bytes:
            raise TooLarge(f"{name} is larger than the limit of {max_bytes / 1024 / 1024:.1f} MB")
        yield chunk
