from __future__ import annotations

import random
from pathlib import Path

import pytest

from ingestion.documents import sniff as s
from ingestion.documents.errors import DocumentUnreadable, UnsupportedDocument
from tests.ingestion.samples import (
    HTML_LOGIN_PAGE,
    build_docx,
    build_pdf,
    build_zip,
    zip_bomb_docx,
)


def refused(data: bytes, **claims) -> UnsupportedDocument:
    with pytest.raises(UnsupportedDocument) as info:
        s.sniff(data, **claims)
    return info.value


# --- junk and binaries ---------------------------------------------------------------------------


def test_empty_file_is_refused() -> None:
    error = refused(b"", filename="notes.txt")
    assert (error.code, error.message) == ("empty_file", "the file is empty")


def test_random_bytes_are_refused_as_binary() -> None:
    junk = random.Random(1234).randbytes(4096)
    error = refused(junk, filename="report.txt", declared_mime="text/plain")
    assert error.code == "unsupported_type"
    assert "cannot be read as text" in error.message


def test_text_with_a_nul_byte_is_binary() -> None:
    error = refused(b"Hello there.\nThis line has a \x00 in it.\n", filename="a.txt")
    assert error.code == "unsupported_type"
    assert "NUL bytes" in error.message


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "a PNG image"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "a JPEG image"),
        (b"GIF89a\x01\x00\x01\x00", "a GIF image"),
        (b"\x7fELF\x02\x01\x01" + bytes(64), "a Linux executable"),
        (b"MZ\x90\x00\x03\x00\x00\x00" + bytes(64), "a Windows executable"),
        (b"\x1f\x8b\x08\x00" + bytes(16), "a gzip archive"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64), "a legacy Office file"),
        (b"{\\rtf1\\ansi Hello}", "an RTF document"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "an SVG image"),
        (b'<?xml version="1.0"?><order><id>1</id></order>', "XML data"),
    ],
)
def test_binary_and_non_document_formats_are_named(data: bytes, what: str) -> None:
    error = refused(data, filename="upload.pdf", declared_mime="application/pdf")
    assert error.code == "unsupported_type"
    assert error.message.startswith(f"this file is {what}")


def test_png_claiming_to_be_text_is_still_a_png() -> None:
    error = refused(b"\x89PNG\r\n\x1a\n" + bytes(32), filename="notes.md", declared_mime="text/markdown")
    assert "PNG image" in error.message


# --- claims versus content -------------------------------------------------------------------------


def test_html_login_page_pretending_to_be_a_pdf_is_a_type_mismatch() -> None:
    error = refused(HTML_LOGIN_PAGE, filename="invoice.pdf", declared_mime="application/pdf")
    assert error.code == "type_mismatch"
    assert error.message.startswith("the file claims to be a PDF but contains an HTML page")
    assert "login or error page" in error.message


def test_mime_claim_alone_also_catches_the_mismatch() -> None:
    error = refused(HTML_LOGIN_PAGE, filename=None, declared_mime="application/pdf; qs=0.9")
    assert error.code == "type_mismatch"


def test_text_named_docx_is_a_type_mismatch() -> None:
    error = refused(b"just some words", filename="contract.docx")
    assert error.code == "type_mismatch"
    assert "a Word document but contains plain text" in error.message


def test_real_pdf_wins_over_a_text_claim() -> None:
    sniffed = s.sniff(build_pdf([["Hello"]]), filename="notes.txt", declared_mime="text/plain")
    assert sniffed.mime_type == s.PDF


def test_pdf_header_after_leading_junk_is_still_a_pdf() -> None:
    assert s.sniff(b"\r\n\r\n" + build_pdf([["Hi"]])).mime_type == s.PDF


# --- text encodings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        ("Grüße aus Köln – naïve café".encode(), "utf-8"),
        ("\ufeffGrüße aus Köln".encode(), "utf-8"),
        ("Grüße aus Köln".encode("utf-16"), "utf-16"),
        ("Grüße aus Köln, plain and simple".encode("utf-16-le"), "utf-16"),
        ("Grüße aus Köln – café".encode("cp1252"), "cp1252"),
    ],
)
def test_text_encodings(data: bytes, encoding: str) -> None:
    sniffed = s.sniff(data, filename="greeting.txt")
    assert (sniffed.mime_type, sniffed.encoding) == (s.TEXT, encoding)
    assert sniffed.text is not None and "Grüße aus Köln" in sniffed.text


def test_utf8_cut_inside_its_last_character_is_still_text() -> None:
    data = "Prix: 10 €".encode()[:-1]
    sniffed = s.sniff(data, filename="prix.txt")
    assert sniffed.text == "Prix: 10 "


def test_bom_that_lies_is_refused() -> None:
    error = refused(b"\xff\xfe" + b"\x00\xd8" + b"a", filename="x.txt")  # odd length, lone surrogate
    assert error.code == "unsupported_type"


# --- text kinds ------------------------------------------------------------------------------------

MARKDOWN_TEXT = b"# Title\n\nSome *text* with a [link](https://example.com).\n\n- one\n- two\n"


def test_markdown_by_extension() -> None:
    assert s.sniff(b"plain words only", filename="README.md").mime_type == s.MARKDOWN


def test_markdown_by_declared_type() -> None:
    assert s.sniff(b"plain words only", declared_mime="text/markdown").mime_type == s.MARKDOWN


def test_markdown_by_content_without_a_hint() -> None:
    assert s.sniff(MARKDOWN_TEXT, filename="notes").mime_type == s.MARKDOWN


def test_txt_extension_keeps_markdown_looking_text_plain() -> None:
    assert s.sniff(MARKDOWN_TEXT, filename="notes.txt").mime_type == s.TEXT


def test_prose_without_hint_is_plain_text() -> None:
    assert s.sniff(b"Dear customer,\n\nthank you for your order.\n").mime_type == s.TEXT


def test_html_by_content_whatever_the_extension() -> None:
    page = b"<!-- saved page -->\n<html><body><p>Hi</p></body></html>"
    assert s.sniff(page, filename="page.txt").mime_type == s.HTML
    assert s.sniff(b"<div class='x'><p>Hello</p></div>", filename="fragment").mime_type == s.HTML


def test_markdown_file_starting_with_inline_html_stays_markdown() -> None:
    readme = b'<div align="center"><img src="logo.png"></div>\n\n# Project\n\nText.\n'
    assert s.sniff(readme, filename="README.md").mime_type == s.MARKDOWN


# --- zip containers --------------------------------------------------------------------------------


def test_docx_is_recognised() -> None:
    docx = build_docx(lambda d: d.add_paragraph("hello"))
    assert s.sniff(docx, filename="x.bin", declared_mime="application/octet-stream").mime_type == s.DOCX


@pytest.mark.parametrize(
    ("members", "what"),
    [
        ({"xl/workbook.xml": b"<workbook/>"}, "an Excel spreadsheet (.xlsx)"),
        ({"ppt/presentation.xml": b"<p/>"}, "a PowerPoint presentation (.pptx)"),
        ({"mimetype": b"application/vnd.oasis.opendocument.text"}, "an OpenDocument file"),
        ({"photos/cat.jpg": b"\xff\xd8\xff"}, "a ZIP archive"),
    ],
)
def test_other_zips_are_refused(members: dict[str, bytes], what: str) -> None:
    error = refused(build_zip(members), filename="report.docx")
    assert error.code == "unsupported_type"
    assert error.message.startswith(f"this file is {what}")


def test_zip_bomb_docx_is_refused_before_inflating() -> None:
    with pytest.raises(DocumentUnreadable) as info:
        s.sniff(zip_bomb_docx(expanded_mb=20), filename="bomb.docx")
    assert info.value.code == "archive_too_large"
    assert "only a zip bomb does" in info.value.message


def test_docx_expanding_past_the_total_limit_is_refused() -> None:
    docx = build_docx(lambda d: d.add_paragraph("small but over a tiny limit"))
    with pytest.raises(DocumentUnreadable) as info:
        s.sniff(docx, zip_limits=s.ZipLimits(max_total_uncompressed=1024))
    assert info.value.code == "archive_too_large"
    assert "expands to more than" in info.value.message


def test_damaged_zip_is_unreadable() -> None:
    with pytest.raises(DocumentUnreadable) as info:
        s.sniff(b"PK\x03\x04" + random.Random(7).randbytes(200), filename="x.docx")
    assert info.value.code == "docx_malformed"


# --- the real samples, under names that lie --------------------------------------------------------


@pytest.mark.shared
@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("md/pip-doc__installation.md", s.MARKDOWN),
        ("md/pip-doc__topics_authentication.md", s.MARKDOWN),
        ("html/libffi8-doc__Introduction.html", s.HTML),
        ("pdf/pypdf__crazyones.pdf", s.PDF),
        ("pdf/pdfminer__simple1.pdf", s.PDF),
        ("docx/python-docx__test.docx", s.DOCX),
    ],
)
def test_real_samples_sniff_by_content(shared_docs: Path, relative: str, expected: str) -> None:
    data = (shared_docs / relative).read_bytes()
    assert s.sniff(data, filename="upload", declared_mime="application/octet-stream").mime_type == expected
