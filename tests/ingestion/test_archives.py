"""ZIP uploads: the archive is checked before anything is inflated, and its documents are read
one level deep (see ingestion/documents/archive.py). The worker round trip is in
test_document_worker.py."""

from __future__ import annotations

import io
import zipfile

import pytest

from ingestion.documents.archive import is_archive, unpack
from ingestion.documents.sniff import ZipLimits
from parley.bus import Permanent
from tests.ingestion.samples import build_docx


def _zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for name, data in members.items():
            if name.endswith("/"):
                z.writestr(zipfile.ZipInfo(name), b"")
            else:
                z.writestr(name, data)
    return buf.getvalue()


def test_documents_are_read_and_the_rest_is_skipped_with_reasons() -> None:
    # Given an archive with documents, a folder, macOS junk, a hidden file, an empty file and a nested zip
    data = _zip({
        "kb/": b"", "kb/returns.md": b"# Returns\n\n30 days.\n", "kb/faq.txt": b"Open 9 to 5.\n",
        "__MACOSX/kb/._returns.md": b"\x00\x05\x16\x07", "kb/.DS_Store": b"\x00\x00\x00\x01Bud1",
        "kb/empty.txt": b"", "kb/more.zip": _zip({"a.txt": b"a"}), "kb/huge.txt": b"x" * 5000,
    })
    # When it is unpacked with a 4 KB member limit
    assert is_archive(data)
    out = unpack(data, max_member_bytes=4096)
    # Then the documents come out whole, and each skipped member says why
    assert {m.name: m.data for m in out.members} == {"kb/returns.md": b"# Returns\n\n30 days.\n", "kb/faq.txt": b"Open 9 to 5.\n"}
    assert sorted(out.skipped) == [
        "kb/empty.txt: empty", "kb/huge.txt: larger than the 4 KB limit",
        "kb/more.zip: archives inside archives are not unpacked",
    ]


def test_office_documents_are_not_archives() -> None:
    # A DOCX is a ZIP too, but it is one document, not an archive of them
    assert not is_archive(build_docx(lambda d: d.add_paragraph("Hello")))
    assert not is_archive(b"%PDF-1.7 ...")
    assert not is_archive(b"PK\x03\x04 damaged")


def test_a_zip_bomb_fails_before_anything_is_inflated() -> None:
    # Given a member that compresses 1000:1
    data = _zip({"bomb.txt": b"\x00" * (20 * 1024 * 1024)})
    # When it is unpacked with the ratio checked from 1 MB on
    with pytest.raises(Permanent) as caught:
        unpack(data, max_member_bytes=64 * 1024 * 1024, limits=ZipLimits(ratio_applies_above=1024 * 1024))
    # Then the reason says what it is
    assert caught.value.code == "archive_bomb"
    assert "zip bomb" in str(caught.value)


def test_an_archive_without_documents_fails_with_a_reason() -> None:
    with pytest.raises(Permanent) as caught:
        unpack(_zip({"a/": b"", "a/empty.txt": b""}), max_member_bytes=1024)
    assert caught.value.code == "archive_empty"
    assert "empty" in str(caught.value)
