"""ZIP archives of documents: one upload, many documents, one job.

A tenant may send a ``.zip`` instead of 127 files. The gateway and the CLI accept it like any
upload (it is stored and queued as a document, so the ack stays instant); the document worker,
which owns the CPU budget for unpacking, finds it is an archive and expands it here:

* the central directory is checked before anything is inflated (member count, total size,
  compression ratio: `sniff.zip_limits_problem`), so a zip bomb fails as one readable reason;
* members that are folders, hidden files, macOS resource forks or nested archives are skipped
  (nested archives are not expanded: one level only, so a recursive bomb cannot grow);
* every other member becomes its own document, stored in the blob store and submitted with
  ``document.uploaded`` into one job, in the worker's unit of work: the members are queued
  exactly when the archive is marked unpacked (a redelivery finds it indexed and does nothing);
* the archive's own row ends ``indexed`` with 0 sections, and the person who sent it is told
  "unpacked <name>: N files queued"; the job's report ("115 of 127 indexed; 12 failed: ...")
  follows when the last member is done. When the archive was itself one item of a bigger upload,
  its members take its place in that job.

Member types are not judged here: a member the worker cannot read fails as its own item, with
its own reason, in the job's report.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from ingestion.documents.sniff import ZipLimits, zip_limits_problem
from parley import formats
from parley.blobs import BlobStore
from parley.bus import Permanent
from knowledge.service import create_job, submit_upload
from knowledge.models import Document, Job, JobItem, JobItemStatus

ZIP_MIME = formats.ZIP  # the registry names the archive format

#: Archives hold at most this many documents (a job of thousands belongs to `parley ingest DIR`).
ARCHIVE_LIMITS = ZipLimits(max_members=2_000, max_total_uncompressed=512 * 1024 * 1024)

_NESTED = (".zip", ".7z", ".rar", ".gz", ".tgz", ".bz2", ".xz", ".tar")


def is_archive(data: bytes) -> bool:
    """A ZIP that is not an Office document (DOCX/XLSX/PPTX/ODF/EPUB carry their own markers)."""
    if data[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError):
        return False  # the extractor reports the damage with its own reason
    office = {"word/document.xml", "xl/workbook.xml", "ppt/presentation.xml", "mimetype", "META-INF/MANIFEST.MF"}
    return not (names & office)


@dataclass(frozen=True)
class Member:
    name: str  # path inside the archive
    data: bytes


@dataclass(frozen=True)
class Unpacked:
    members: list[Member]
    skipped: list[str]  # "name: why"


def unpack(data: bytes, *, max_member_bytes: int, limits: ZipLimits = ARCHIVE_LIMITS) -> Unpacked:
    """Read the archive's documents (blocking: run it in a thread). Raises `Permanent` with a reason."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            problem = zip_limits_problem(infos, limits)
            if problem is not None:
                raise Permanent(f"the archive cannot be unpacked: {problem}", code="archive_bomb")
            members: list[Member] = []
            skipped: list[str] = []
            for info in infos:
                path = PurePosixPath(info.filename)
                if info.is_dir():
                    continue
                if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
                    continue  # hidden files and macOS resource forks: not the user's documents
                if path.suffix.lower() in _NESTED:
                    skipped.append(f"{info.filename}: archives inside archives are not unpacked")
                    continue
                if info.flag_bits & 0x1:
                    skipped.append(f"{info.filename}: encrypted in the archive")
                    continue
                if info.file_size == 0:
                    skipped.append(f"{info.filename}: empty")
                    continue
                if info.file_size > max_member_bytes:
                    skipped.append(f"{info.filename}: larger than the {_size(max_member_bytes)} limit")
                    continue
                members.append(Member(info.filename, archive.read(info)))
    except Permanent:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError, RuntimeError) as exc:
        raise Permanent(f"the archive is damaged and cannot be unpacked ({exc})", code="archive_damaged") from None
    if not members:
        why = "; ".join(skipped[:5]) if skipped else "it holds no files"
        raise Permanent(f"the archive contains no documents ({why})", code="archive_empty")
    return Unpacked(members, skipped)


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB" if n >= 1024 * 1024 else f"{max(n // 1024, 1)} KB"


async def expand_archive(session: AsyncSession, blobs: BlobStore, document: Document, data: bytes, *,
                         max_member_bytes: int) -> tuple[int, list[str]]:
    """Queue every member of the archive ``document`` as a document of one job.

    Runs in the worker's unit of work; returns (members queued, skipped descriptions)."""
    tenant_id = document.tenant_id
    unpacked = await asyncio.to_thread(unpack, data, max_member_bytes=max_member_bytes)
    n = len(unpacked.members)
    if document.job_id:
        # Part of a bigger upload (several files, `parley ingest DIR`): the archive's item in that
        # job is replaced by its members, so the report counts documents, not containers.
        job_id = document.job_id
        await session.execute(
            delete(JobItem).where(JobItem.tenant_id == tenant_id, JobItem.job_id == job_id,
                                  JobItem.item_key == document.id, JobItem.status == JobItemStatus.pending)
        )
        await session.execute(
            update(Job).where(Job.tenant_id == tenant_id, Job.id == job_id).values(total=Job.total + n - 1)
            .execution_options(synchronize_session=False)
        )
    else:
        job = await create_job(session, tenant_id=tenant_id, kind="documents", total=n,
                               description=f"{n} files from {document.filename}", notify=document.notify)
        job_id = job.id
    stem = document.filename
    for member in unpacked.members:
        blob = await blobs.put_bytes(tenant_id, member.data, max_bytes=max_member_bytes)
        await submit_upload(
            session, tenant_id=tenant_id, source=document.source, filename=f"{stem}/{member.name}"[:512],
            declared_mime=None, blob=blob, job_id=job_id, correlation_id=document.correlation_id,
        )
    return n, unpacked.skipped
