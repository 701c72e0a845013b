"""ZIP uploads: the archive is checked before anything is inflated, and its documents are streamed
into the blob store one level deep, within limits for the whole archive (see
ingestion/documents/archive.py). The worker round trip is in test_document_worker.py; the
reported 24 x 8 MB archive goes through the real worker in tests/faults/test_poison.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select

from ingestion.documents.archive import ArchiveLimits, expand_archive, is_archive, unpack
from knowledge.models import Document, DocumentStatus, Job
from parley.blobs import BlobStore
from parley.bus import Permanent
from parley.db import bind_tenant
from tenants.models import Tenant
from tests.ingestion.samples import amplifying_zip, build_docx

MB = 1024 * 1024
#: What the worker uses with the default settings: 25 MB uploads, 4 x that per archive.
DEFAULTS = ArchiveLimits(max_member_bytes=25 * MB, max_total_bytes=100 * MB)


def _zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for name, data in members.items():
            if name.endswith("/"):
                z.writestr(zipfile.ZipInfo(name), b"")
            else:
                z.writestr(name, data)
    return buf.getvalue()


def _stored(root: Path) -> list[Path]:
    """Every file in the blob store (temporary ones included)."""
    return [p for p in root.rglob("*") if p.is_file()]


async def test_documents_are_read_and_the_rest_is_skipped_with_reasons(tmp_path: Path) -> None:
    # Given an archive with documents, a folder, macOS junk, a hidden file, an empty file and a nested zip
    data = _zip({
        "kb/": b"", "kb/returns.md": b"# Returns\n\n30 days.\n", "kb/faq.txt": b"Open 9 to 5.\n",
        "__MACOSX/kb/._returns.md": b"\x00\x05\x16\x07", "kb/.DS_Store": b"\x00\x00\x00\x01Bud1",
        "kb/empty.txt": b"", "kb/more.zip": _zip({"a.txt": b"a"}), "kb/huge.txt": b"x" * 5000,
    })
    blobs = BlobStore(tmp_path)
    # When it is unpacked with a 4 KB member limit
    assert is_archive(data)
    out = await unpack(blobs, "t1", data, ArchiveLimits(max_member_bytes=4096, max_total_bytes=MB))
    # Then the documents come out whole, each in the blob store, and each skipped member says why
    assert {m.name: await blobs.read("t1", m.blob.key) for m in out.members} == {
        "kb/returns.md": b"# Returns\n\n30 days.\n", "kb/faq.txt": b"Open 9 to 5.\n"}
    assert sorted(out.skipped) == [
        "kb/empty.txt: empty", "kb/huge.txt: larger than the 4 KB limit",
        "kb/more.zip: archives inside archives are not unpacked",
    ]


async def test_24_members_of_8_mb_are_refused_as_a_whole_and_nothing_is_written(tmp_path: Path) -> None:
    # Given the archive of the attack review: 24 distinct members of 8 MB that compress ~1000:1, each
    # one just small enough for the per-member ratio check, 192 MB in all
    data = amplifying_zip(members=24, member_mb=8)
    assert len(data) < 300 * 1024
    blobs = BlobStore(tmp_path)
    # When the worker unpacks it with the default limits
    with pytest.raises(Permanent) as caught:
        await unpack(blobs, "t1", data, DEFAULTS)
    # Then it is refused as a zip bomb, for the archive as a whole, and not one byte reached the blob store
    assert caught.value.code == "archive_bomb"
    assert "as a whole, which only a zip bomb does" in str(caught.value)
    assert _stored(tmp_path) == []


async def test_an_archive_that_unpacks_past_the_total_limit_is_refused_before_writing(tmp_path: Path) -> None:
    # Given five members that do not compress (random bytes), 300 KB each: 1.5 MB unpacked
    data = _zip({f"scan-{i}.txt": os.urandom(300 * 1024) for i in range(5)})
    blobs = BlobStore(tmp_path)
    # When the archive may unpack to 1 MB in all (each member alone is under the member limit)
    with pytest.raises(Permanent) as caught:
        await unpack(blobs, "t1", data, ArchiveLimits(max_member_bytes=MB, max_total_bytes=MB))
    # Then it is refused with the sizes, and nothing was written
    assert caught.value.code == "archive_too_large"
    assert "it unpacks to 1.5 MB, over the 1 MB one archive may hold" in str(caught.value)
    assert _stored(tmp_path) == []


async def test_a_failure_halfway_deletes_what_the_archive_wrote_but_not_shared_content(tmp_path: Path) -> None:
    # Given a stored archive whose third member is damaged (its bytes no longer match their CRC), and
    # whose second member is a file the tenant had uploaded before
    shared = b"Opening hours: 9 to 5.\n"
    data = bytearray(_zip({"a.txt": b"Returns: 30 days.\n", "b.txt": shared, "c.txt": b"c" * 1000},
                          compression=zipfile.ZIP_STORED))
    at = data.find(b"c" * 1000)
    data[at + 500] = ord("d")
    blobs = BlobStore(tmp_path)
    before = await blobs.put_bytes("t1", shared, max_bytes=MB)
    # When it is unpacked
    with pytest.raises(Permanent) as caught:
        await unpack(blobs, "t1", bytes(data), DEFAULTS)
    # Then it fails as damaged; the first member's blob is gone again, the shared one is still there
    assert caught.value.code == "archive_damaged" and "CRC" in str(caught.value)
    assert [p.name for p in _stored(tmp_path)] == [before.sha256]
    assert await blobs.read("t1", before.key) == shared


async def test_the_unpacking_shares_the_parsers_time_limit(tmp_path: Path) -> None:
    # Given an archive of two documents and no time left for unpacking
    data = _zip({"a.txt": b"Returns: 30 days.\n", "b.txt": b"Open 9 to 5.\n"})
    # When it is unpacked
    with pytest.raises(Permanent) as caught:
        await unpack(BlobStore(tmp_path), "t1", data, ArchiveLimits(max_member_bytes=MB, max_total_bytes=MB, time_limit_s=0))
    # Then it fails like a parse that ran out of time, and leaves nothing behind
    assert caught.value.code == "parse_timeout" and "longer than 0 s" in str(caught.value)
    assert _stored(tmp_path) == []


async def test_too_many_entries_are_refused_before_zipfile_lists_them(tmp_path: Path) -> None:
    # Given an archive of 2,001 tiny files, and an Office-looking one of as many
    many = _zip({f"n/{i}.txt": f"note {i}".encode() for i in range(2_001)})
    office = _zip({"word/document.xml": b"<w:document/>", **{f"word/media/{i}.xml": b"<x/>" for i in range(2_001)}})
    # Then the first is an archive, refused for its size; the second is left to the parser sandbox
    assert is_archive(many) and not is_archive(office)
    with pytest.raises(Permanent) as caught:
        await unpack(BlobStore(tmp_path), "t1", many, DEFAULTS)
    assert caught.value.code == "archive_too_large" and "more than 2,000 files" in str(caught.value)
    assert _stored(tmp_path) == []


def test_a_directory_of_100000_entries_is_refused_without_listing_it(tmp_path: Path) -> None:
    # Given a 9 MB archive of 100,000 empty entries (zipfile would spend ~500 bytes of the worker's memory on each)
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for i in range(100_000):
            z.writestr(zipfile.ZipInfo(f"{i}.txt"), b"")
    # When a fresh interpreter reads it into memory, then checks and unpacks it as the worker does
    checked = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(tmp_path / "blobs")], capture_output=True,
                             text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert checked.returncode == 0, checked.stderr
    is_zip, code, grew_kb = checked.stdout.split()
    # Then it is an archive, refused for its size, and the refusal took less memory than the listing would
    assert (is_zip, code) == ("True", "archive_too_large")
    assert int(grew_kb) < 16 * 1024, f"peak memory grew by {int(grew_kb) // 1024} MB"


#: Peak RSS growth (KB) of is_archive + unpack, after the archive's bytes are in memory. (VmHWM, the
#: peak of this process's own memory: ru_maxrss would carry the parent's peak over the exec.)
_MEASURE = """
import asyncio, sys
from pathlib import Path
from ingestion.documents.archive import ArchiveLimits, is_archive, unpack
from parley.blobs import BlobStore
from parley.bus import Permanent
def peak_kb():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1])
data = Path(sys.argv[1]).read_bytes()
before = peak_kb()
is_zip = is_archive(data)
try:
    asyncio.run(unpack(BlobStore(Path(sys.argv[2])), "t1", data, ArchiveLimits(25 << 20, 100 << 20)))
    code = "unpacked"
except Permanent as exc:
    code = exc.code
print(is_zip, code, peak_kb() - before)
"""


async def test_members_are_held_to_the_tenants_own_upload_limit(db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Given a tenant whose uploads may be at most 1 KB, and its archive of a small and a 2 KB document
    data = _zip({"small.txt": b"Open 9 to 5.\n", "big.txt": b"Returns are accepted within 30 days. " * 60})
    blobs = BlobStore(tmp_path)
    archive_blob = await blobs.put_bytes("acme", data, max_bytes=MB)
    async with db.sessions() as session:
        session.add(Tenant(id="acme", name="acme", max_upload_bytes=1024))
        await session.flush()
        bind_tenant(session, "acme")
        document = Document(tenant_id="acme", source="api", filename="kb.zip", size_bytes=archive_blob.size,
                            sha256=archive_blob.sha256, blob_key=archive_blob.key, status=DocumentStatus.processing,
                            idempotency_key="kb.zip")
        session.add(document)
        await session.flush()
        # When the worker expands it with its own 25 MB member limit
        queued, skipped = await expand_archive(session, blobs, document, data, limits=DEFAULTS)
        # Then only the small document is queued, in a job of its own; the big one is skipped with the tenant's limit
        assert (queued, skipped) == (1, ["big.txt: larger than the 1 KB limit"])
        job = (await session.execute(select(Job))).scalar_one()
        assert job.total == 1


def test_office_documents_are_not_archives() -> None:
    # A DOCX is a ZIP too, but it is one document, not an archive of them
    assert not is_archive(build_docx(lambda d: d.add_paragraph("Hello")))
    assert not is_archive(b"%PDF-1.7 ...")
    assert not is_archive(b"PK\x03\x04 damaged")


async def test_a_zip_bomb_member_fails_before_anything_is_inflated(tmp_path: Path) -> None:
    # Given a member that compresses 1000:1 beside 2 MB that do not compress (about 10:1 as a whole)
    data = _zip({"bomb.txt": b"\x00" * (20 * MB), "photo.txt": os.urandom(2 * MB)})
    # When it is unpacked
    with pytest.raises(Permanent) as caught:
        await unpack(BlobStore(tmp_path), "t1", data, DEFAULTS)
    # Then the reason says what it is, and nothing was written
    assert caught.value.code == "archive_bomb"
    assert "a part is compressed" in str(caught.value) and "zip bomb" in str(caught.value)
    assert _stored(tmp_path) == []


async def test_an_archive_without_documents_fails_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(Permanent) as caught:
        await unpack(BlobStore(tmp_path), "t1", _zip({"a/": b"", "a/empty.txt": b""}), DEFAULTS)
    assert caught.value.code == "archive_empty"
    assert "empty" in str(caught.value)
