"""Builders for test inputs: well-formed, broken and hostile documents made in memory."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def build_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF with one Helvetica text line per string, one list per page."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(len(pages))), len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("cp1252")
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def encrypt_pdf(data: bytes, *, user_password: str, owner_password: str = "owner") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def blank_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def build_docx(build=None) -> bytes:
    """A .docx made by python-docx; `build(document)` adds the content."""
    from docx import Document

    document = Document()
    if build is not None:
        build(document)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def build_zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def amplifying_zip(members: int = 24, member_mb: int = 8) -> bytes:
    """The attack review's archive: ``members`` distinct members of ``member_mb`` MB that compress ~1000:1
    each (24 x 8 MB: a 198 KB zip of 192 MB), built one member at a time."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for i in range(members):
            archive.writestr(f"part-{i:02d}.txt", bytes([65 + i % 26]) * (member_mb * 1024 * 1024))
    return out.getvalue()


def zip_bomb_docx(expanded_mb: int = 20) -> bytes:
    """A DOCX-shaped zip whose document.xml inflates ~1000:1 (spaces compress that well)."""
    body = b"<w:document>" + b" " * (expanded_mb * 1024 * 1024) + b"</w:document>"
    return build_zip({"[Content_Types].xml": b"<Types/>", "word/document.xml": body})


HTML_LOGIN_PAGE = b"""<!DOCTYPE html>
<html><head><title>Sign in</title></head>
<body><form action="/login" method="post">
<h1>Sign in to continue</h1>
<label>Email <input name="email"></label><label>Password <input type="password" name="pw"></label>
<button>Sign in</button></form></body></html>
"""


def no_fork_server_plugin(path: Path, formats: str) -> Path:
    """A parser plugin file that keeps the sandbox's fork server from starting (so each call is a new
    interpreter), then runs ``formats`` (Python that may call ``register_format`` and use ``Block``)."""
    path.write_text(
        "import os, sys\n"
        "from ingestion.documents.extract import register_format\n"
        "from ingestion.documents.model import Block\n"
        "if 'ingestion.documents.sandbox.zygote' in sys.modules:\n"
        "    os._exit(1)  # a fork server cannot start with this plugin\n" + formats
    )
    return path
