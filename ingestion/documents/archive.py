"""ZIP archives of documents: one upload, many documents, one job.

A tenant may send a ``.zip`` instead of 127 files. The gateway and the CLI accept it like any
upload (it is stored and queued as a document, so the ack stays instant); the document worker,
which owns the CPU budget for unpacking, finds it is an archive and expands it here:

* the central directory is checked before anything is inflated (`ArchiveLimits`): at most 2,000
  files (counted in the raw directory before zipfile lists it: each listed entry costs the worker
  ~500 bytes), at most ``max_total_bytes`` unpacked all together (PARLEY_ARCHIVE_MAX_UNPACKED_BYTES,
  4 x the upload limit by default), and past 8 MB neither a member nor the archive as a whole
  compressed more than 100:1; a zip bomb fails as one readable reason and nothing is written;
* members that are folders, hidden files, macOS resource forks or nested archives are skipped
  (nested archives are not expanded: one level only, so a recursive bomb cannot grow), and so is
  a member over the tenant's upload limit, each with its reason;
* every other member is streamed into the blob store 256 KB at a time (never held whole), against
  a running total and a time budget for the whole archive (PARLEY_PARSE_TIME_LIMIT_SECONDS, the
  parser's); zipfile inflates no member past its declared size, the running total holds even if
  it did. Whatever fails, the blobs the archive created are deleted again (content that other
  documents share stays) and the archive fails with its reason (`archive_bomb`,
  `archive_too_large`, `archive_damaged`, `archive_empty`, `parse_timeout`);
* each stored member becomes its own document, submitted with
  ``document.uploaded`` into one job, in the worker's unit of work: the members are queued
  exactly when the archive is marked unpacked (a redelivery finds it indexed and does nothing);
* the archive's own row ends ``indexed`` with 0 sections, and the person who sent it is told
  "unpacked <name>: N files queued"; the job's report ("115 of 127 indexed; 12 failed: ...")
  follows when the last member is done. When the archive was itself one item of a bigger upload,
  its members take its place in that job.

Member types are not judged here: a member the worker cannot read fails as its own item, with
its own reason, in the job's report.

Why here and not in the parser sandbox: the sandbox child may not write files and answers in
JSON, and the members must end up as blobs; streaming them keeps the worker's memory at a few
chunks whatever the archive holds (bench/archive_memory.py measures it), and the limits above
bound the disk and the time. The archive itself is at most the upload limit.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zipfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley import formats
from parley.blobs import BlobStore, StoredBlob
from parley.bus import Permanent
from parley.english import plural
from parley.errors import TooLarge
from knowledge.audit import SYSTEM, Actor
from knowledge.repository import DocumentRepository
from knowledge.service import create_job, submit_upload
from knowledge.models import Document, Job, JobItem, JobItemStatus
from tenants import quotas
from tenants.quotas import PlanDefaults, QuotaExceeded
from tenants.repository import TenantDirectory

ZIP_MIME = formats.ZIP  # the registry names the archive format

#: Archives hold at most this many documents (a job of thousands belongs to `parley ingest DIR`).
MAX_MEMBERS = 2_000
#: Bytes inflated per read: what one member costs the worker's memory at a time.
READ_CHUNK = 256 * 1024

_NESTED = (".zip", ".7z", ".rar", ".gz", ".tgz", ".bz2", ".xz", ".tar")
_OFFICE = ("word/document.xml", "xl/workbook.xml", "ppt/presentation.xml", "mimetype", "META-INF/MANIFEST.MF")
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError, OSError, RuntimeError)
_END, _CENTRAL, _ZIP64_LOCATOR = b"PK\x05\x06", b"PK\x01\x02", b"PK\x06\x07"


@dataclass(frozen=True)
class ArchiveLimits:
    """What one archive may unpack to (the worker builds it from its settings and the tenant's limit)."""

    #: Largest member taken (the upload limit); a bigger one is skipped with that reason.
    max_member_bytes: int
    #: Every member together (PARLEY_ARCHIVE_MAX_UNPACKED_BYTES).
    max_total_bytes: int
    max_members: int = MAX_MEMBERS
    #: No honest document compresses this well, per member or across the whole archive ...
    max_ratio: float = 100.0
    #: ... once it unpacks to more than this (small files may compress as well as they like).
    ratio_applies_above: int = 8 * 1024 * 1024
    #: Seconds for inflating and storing every member (the parser's PARLEY_PARSE_TIME_LIMIT_SECONDS).
    time_limit_s: float = 60.0


def _end_record(data: bytes) -> int:
    """Offset of the end-of-central-directory record, found the way zipfile finds it; -1 when none."""
    last = len(data) - 22
    if last >= 0 and data[last:last + 4] == _END and data[-2:] == b"\0\0":
        return last
    return data.rfind(_END, max(0, len(data) - 65_535 - 22))


def directory_entries(data: bytes) -> tuple[int, int, int] | None:
    """(at most how many entries zipfile will list, where its central directory can start, end),
    counted on the raw bytes without listing anything; None when there is no end record."""
    end = _end_record(data)
    if end < 0 or end + 22 > len(data):
        return None
    (size,) = struct.unpack_from("<L", data, end + 12)
    zip64 = end >= 20 and data[end - 20:end - 16] == _ZIP64_LOCATOR
    # zipfile reads the directory as the `size` bytes before the end record (or the ZIP64 one, before it)
    start = 0 if zip64 or size > end else end - size
    return data.count(_CENTRAL, start, end), start, end


def is_archive(data: bytes) -> bool:
    """A ZIP that is not an Office document (DOCX/XLSX/PPTX/ODF/EPUB carry their own markers)."""
    if data[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        return False
    found = directory_entries(data)
    if found is None:
        return False  # the extractor reports the damage with its own reason
    entries, start, end = found
    if entries > MAX_MEMBERS:
        # Too many entries to list in the worker: the markers are looked for in the raw names. An
        # archive is refused for its size without being listed; anything else goes to the sandbox.
        return not any(data.find(marker.encode(), start, end) >= 0 for marker in _OFFICE)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except _ZIP_ERRORS:
        return False
    return not (names & set(_OFFICE))


@dataclass(frozen=True)
class Member:
    name: str  # path inside the archive
    blob: StoredBlob


@dataclass(frozen=True)
class Unpacked:
    members: list[Member]
    skipped: list[str]  # "name: why"


def _cannot(why: str, code: str) -> Permanent:
    return Permanent(f"the archive cannot be unpacked: {why}", code=code)


def survey(archive: zipfile.ZipFile, limits: ArchiveLimits) -> tuple[list[zipfile.ZipInfo], list[str]]:
    """The members to unpack and the ones skipped ("name: why"), from the central directory alone
    (nothing is inflated). Raises `Permanent` when the archive as a whole is refused."""
    entries = archive.infolist()
    if len(entries) > limits.max_members:  # folders count too, as in the raw count of `_open`
        raise _cannot(f"it contains more than {limits.max_members:,} files; send them in parts", "archive_too_large")
    files = [info for info in entries if not info.is_dir()]
    total = sum(info.file_size for info in files)
    packed = sum(info.compress_size for info in files)
    if total > limits.ratio_applies_above and total / max(packed, 1) > limits.max_ratio:
        raise _cannot(f"it is compressed {total / max(packed, 1):.0f}:1 as a whole, which only a zip bomb does",
                      "archive_bomb")
    for info in files:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_applies_above and ratio > limits.max_ratio:
            raise _cannot(f"a part is compressed {ratio:.0f}:1, which only a zip bomb does", "archive_bomb")
    if total > limits.max_total_bytes:
        raise _cannot(f"it unpacks to {_size(total)}, over the {_size(limits.max_total_bytes)} one archive may hold; "
                      "send it in parts", "archive_too_large")
    members: list[zipfile.ZipInfo] = []
    skipped: list[str] = []
    for info in files:
        path = PurePosixPath(info.filename)
        if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
            continue  # hidden files and macOS resource forks: not the user's documents
        if path.suffix.lower() in _NESTED:
            skipped.append(f"{info.filename}: archives inside archives are not unpacked")
        elif info.flag_bits & 0x1:
            skipped.append(f"{info.filename}: encrypted in the archive")
        elif info.file_size == 0:
            skipped.append(f"{info.filename}: empty")
        elif info.file_size > limits.max_member_bytes:
            skipped.append(f"{info.filename}: larger than the {_size(limits.max_member_bytes)} limit")
        else:
            members.append(info)
    if not members:
        why = "; ".join(skipped[:5]) if skipped else "it holds no files"
        raise Permanent(f"the archive contains no documents ({why})", code="archive_empty")
    return members, skipped


def _open(data: bytes, limits: ArchiveLimits) -> zipfile.ZipFile:
    found = directory_entries(data)
    if found is not None and found[0] > limits.max_members:
        raise _cannot(f"it contains more than {limits.max_members:,} files; send them in parts", "archive_too_large")
    return zipfile.ZipFile(io.BytesIO(data))


class _Budget:
    """What the archive has left of its unpacked bytes and its time, spent as members are read."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.left = limits.max_total_bytes
        self.deadline = time.monotonic() + limits.time_limit_s

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise _cannot(f"it unpacks to more than the {_size(self.limits.max_total_bytes)} one archive may hold",
                          "archive_too_large")
        if time.monotonic() > self.deadline:
            raise Permanent(f"unpacking the archive took longer than {self.limits.time_limit_s:g} s", code="parse_timeout")


async def _chunks(handle: zipfile.ZipExtFile, budget: _Budget) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(handle.read, READ_CHUNK):
        budget.spend(len(chunk))
        yield chunk


async def unpack(blobs: BlobStore, tenant_id: str, data: bytes, limits: ArchiveLimits) -> Unpacked:
    """Stream the archive's documents into the blob store, one bounded chunk at a time.

    Raises `Permanent` with a reason; every blob this call created is then deleted again."""
    members: list[Member] = []
    try:
        archive = await asyncio.to_thread(_open, data, limits)
        with archive:
            infos, skipped = survey(archive, limits)
            budget = _Budget(limits)
            for info in infos:
                handle = await asyncio.to_thread(archive.open, info)
                try:
                    blob = await blobs.put_stream(tenant_id, _chunks(handle, budget), max_bytes=limits.max_member_bytes)
                except TooLarge:
                    raise _cannot(f"{info.filename} unpacks to more than it declares", "archive_damaged") from None
                finally:
                    handle.close()
                members.append(Member(info.filename, blob))
    except _ZIP_ERRORS as exc:
        await discard(blobs, tenant_id, members)
        raise Permanent(f"the archive is damaged and cannot be unpacked ({exc})", code="archive_damaged") from None
    except BaseException:
        await discard(blobs, tenant_id, members)
        raise
    return Unpacked(members, skipped)


async def discard(blobs: BlobStore, tenant_id: str, members: list[Member]) -> None:
    """Delete the blobs these members created (not content that was stored before: it is shared)."""
    for member in members:
        if member.blob.created:
            await blobs.delete(tenant_id, member.blob.key)


def _size(n: int) -> str:
    mb = n / (1024 * 1024)
    if mb >= 1:
        return f"{mb:.0f} MB" if mb >= 10 or mb == int(mb) else f"{mb:.1f} MB"
    return f"{max(n // 1024, 1)} KB"


async def expand_archive(session: AsyncSession, blobs: BlobStore, document: Document, data: bytes, *,
                         limits: ArchiveLimits, plan: PlanDefaults | None = None) -> tuple[int, list[str]]:
    """Queue every member of the archive ``document`` as a document of one job.

    Runs in the worker's unit of work; returns (members queued, skipped descriptions). The members
    are charged to the tenant's plan as documents and bytes (the archive was the one upload); past
    a limit the whole archive fails with `QuotaExceeded` and the blobs it created are deleted."""
    tenant_id = document.tenant_id
    tenant = await TenantDirectory(session).by_id(tenant_id)
    if tenant is not None and tenant.max_upload_bytes:  # a member is an upload: the tenant's own limit holds
        limits = replace(limits, max_member_bytes=min(limits.max_member_bytes, tenant.max_upload_bytes))
    unpacked = await unpack(blobs, tenant_id, data, limits)
    try:
        return await _queue_members(session, blobs, document, unpacked, plan=plan)
    except QuotaExceeded:
        await discard(blobs, tenant_id, unpacked.members)  # the rows roll back with the worker's unit of work
        raise


async def _queue_members(session: AsyncSession, blobs: BlobStore, document: Document, unpacked: Unpacked, *,
                         plan: PlanDefaults | None) -> tuple[int, list[str]]:
    tenant_id = document.tenant_id
    # The tenant's usage row first, before the job's: a sibling document being indexed holds it and
    # then updates the same job; taking them in the same order never deadlocks (PostgreSQL).
    await quotas.lock_usage(session, tenant_id)
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
                               description=f"{plural(n, 'file')} from {document.filename}", notify=document.notify)
        job_id = job.id
    stem = document.filename
    skipped = list(unpacked.skipped)
    for member in unpacked.members:
        blob = member.blob
        submitted = await submit_upload(
            session, tenant_id=tenant_id, source=document.source, filename=f"{stem}/{member.name}"[:512],
            declared_mime=None, blob=blob, job_id=job_id, correlation_id=document.correlation_id,
            # the archive's sender, with the rights they had when they sent it
            actor=Actor.from_json(document.uploader) or SYSTEM,
            plan=plan, counts_as_upload=False,
        )
        if submitted.refused:  # a new version of someone else's document: not kept
            n -= 1
            skipped.append(f"{member.name}: not replaced ({submitted.refused})")
            if not await DocumentRepository(session, tenant_id).blob_keys_in_use([blob.key]):
                await blobs.delete(tenant_id, blob.key)
    return n, skipped
