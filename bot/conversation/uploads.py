"""Files that become documents: type and size checks, streaming into the blob store, submission.

Every producer in the gateway (a file in a Slack or Instagram DM, the web upload) goes through
`UploadIntake`: the bytes stream into the blob store under the tenant's size limit (refused the
moment the limit is passed), and `parley.documents.submit_upload` records the document and stages
``document.uploaded`` in one transaction. Several files at once become one job.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.blobs import BlobStore, StoredBlob
from parley.db import unit_of_work
from parley.documents import create_job, submit_upload
from parley.errors import InvalidInput, TooLarge, UnsupportedType
from tenants.repository import TenantDirectory

log = logging.getLogger("parley.gateway.uploads")

#: What the document worker can read, by extension and by MIME type.
SUPPORTED_EXTENSIONS = {
    ".txt": "text/plain", ".text": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown",
    ".html": "text/html", ".htm": "text/html", ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".zip": "application/zip",  # unpacked by the document worker: each file inside becomes a document
}
SUPPORTED_TYPES = set(SUPPORTED_EXTENSIONS.values()) | {"text/x-markdown", "application/xhtml+xml", "application/x-zip-compressed"}
SUPPORTED_HUMAN = "PDF, Word (.docx), text, Markdown and HTML (or a .zip of them)"


def _ext(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def _base_type(mime: str | None) -> str | None:
    return mime.split(";", 1)[0].strip().lower() if mime else None


def check_supported(name: str, mime: str | None) -> str:
    """The MIME type the document will be read as; `UnsupportedType` with a reason otherwise."""
    by_ext = SUPPORTED_EXTENSIONS.get(_ext(name))
    base = _base_type(mime)
    if by_ext:
        return by_ext
    if base in SUPPORTED_TYPES:
        return base
    kind = base or (mimetypes.guess_type(name)[0] or "this type of file")
    raise UnsupportedType(f"{name} is {kind}, which I cannot read; send {SUPPORTED_HUMAN}")


def check_download_type(name: str, expected: str, content_type: str | None) -> None:
    """An HTML page where a PDF (or any non-HTML document) was expected is a login or error page."""
    got = _base_type(content_type)
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


@dataclass(frozen=True)
class Submission:
    files: list[SubmittedFile]
    job_id: str | None


class UploadIntake:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, *, default_max_bytes: int) -> None:
        self.sessions = sessions
        self.blobs = blobs
        self.default_max_bytes = default_max_bytes

    async def limit_for(self, tenant_id: str) -> int:
        async with unit_of_work(self.sessions, admin=True) as session:
            tenant = await TenantDirectory(session).by_id(tenant_id)
        own = tenant.max_upload_bytes if tenant is not None else None
        return min(own, self.default_max_bytes) if own else self.default_max_bytes

    async def store(self, tenant_id: str, name: str, chunks: AsyncIterable[bytes], *, max_bytes: int,
                    declared_size: int | None = None) -> StoredBlob:
        blob = await self.blobs.put_stream(tenant_id, chunks, max_bytes=max_bytes)
        if declared_size is not None and blob.size != declared_size:
            await self.blobs.delete(tenant_id, blob.key)
            raise InvalidInput(f"{name}: received {blob.size:,} bytes but the file has {declared_size:,}; the download was not the file")
        if blob.size == 0:
            await self.blobs.delete(tenant_id, blob.key)
            raise InvalidInput(f"{name} is empty")
        return blob

    async def submit(self, tenant_id: str, *, source: str, files: list[StoredFile], notify: dict[str, Any] | None,
                     description: str) -> Submission:
        """One document per file, one job when there are several; published after the commit."""
        if not files:
            raise InvalidInput("no file to submit")
        async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
            job_id = None
            if len(files) > 1:
                job = await create_job(session, tenant_id=tenant_id, kind="documents", total=len(files),
                                       description=description, notify=notify)
                job_id = job.id
            out = []
            for f in files:
                submitted = await submit_upload(session, tenant_id=tenant_id, source=source, filename=f.name,
                                                declared_mime=f.mime_type, blob=f.blob, job_id=job_id,
                                                # items of a job speak through the job's report
                                                notify=notify if job_id is None else None)
                out.append(SubmittedFile(submitted.document.id, f.name, submitted.document.status.value, submitted.created))
        return Submission(out, job_id)


async def capped(chunks: AsyncIterable[bytes], max_bytes: int, name: str) -> AsyncIterator[bytes]:
    """Pass chunks through, refusing as soon as more than ``max_bytes`` went by."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > max_bytes:
            raise TooLarge(f"{name} is larger than the limit of {max_bytes / 1024 / 1024:.1f} MB")
        yield chunk
