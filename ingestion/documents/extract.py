"""Sniff + extract, in-process. Callers with untrusted bytes use `sandbox.extract_document`.

Each format lives in its own module, imported only when a document of that type arrives, so
the sandbox child pays for pypdf / python-docx / markdown-it only when it needs them.

`register_format` is the one extension seam: a plugin file (PARLEY_PARSER_PLUGINS, a test's
`plugins`) adds a format and its parser to the process's format registry (`parley.formats`), the
one the gateway's upload doors ask too. A format with a magic prefix is recognised by it, before
any built-in one; one without is a text format, read as such when the bytes are text and the
file's name (or declared type) claims it. Registrations exist only in the process that made them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from ingestion.documents import sniff as sniffing
from ingestion.documents.errors import DocumentUnreadable, UnsupportedDocument
from ingestion.documents.model import Block, ExtractedDocument, clean_text
from parley import formats

FormatExtractor = Callable[[bytes], Iterable[Block]]


def register_format(
    mime_type: str,
    *,
    extract: FormatExtractor,
    magic: bytes | None = None,
    extensions: Iterable[str] = (),
    aliases: Iterable[str] = (),
    label: str | None = None,
) -> None:
    """Read files of `mime_type` with `extract` (bytes -> blocks), and accept their uploads.

    `magic` (at least 4 bytes) recognises the format by its first bytes; without it the format
    is a text one, claimed by its `extensions` or by a declared type in `aliases`. `label`
    names it in messages ("send PDF, ... and notes (.note)"); by default its extensions do.
    """
    fmt = formats.Format(mime_type, label, tuple(extensions), tuple(aliases), magic, parser=extract)
    if fmt.magic is None and not fmt.extensions and not fmt.aliases:
        raise ValueError("a registered format needs a magic prefix, file extensions or MIME aliases")
    formats.register_format(fmt)


def extract(
    data: bytes,
    *,
    filename: str | None = None,
    declared_mime: str | None = None,
    zip_limits: sniffing.ZipLimits | None = None,
    password: str | None = None,
) -> ExtractedDocument:
    """Find the real type of `data` and extract its structured text.

    Raises an `ExtractionError` subclass (never a library exception) when the file cannot be
    used. `MemoryError` is let through: the sandbox reports it as a memory-limit failure.
    ``password`` opens a password-protected PDF (other formats ignore it).
    """
    fmt = formats.registry().by_magic(data)
    if fmt is not None and fmt.parser is not None:
        return finish(ExtractedDocument(fmt.mime_type, tuple(fmt.parser(data))))
    sniffed = sniffing.sniff(
        data, filename=filename, declared_mime=declared_mime, zip_limits=zip_limits
    )
    return finish(extract_sniffed(data, sniffed, password=password))


def extract_sniffed(data: bytes, sniffed: sniffing.Sniffed, *, password: str | None = None) -> ExtractedDocument:
    mime = sniffed.mime_type
    if mime == sniffing.TEXT:
        return ExtractedDocument(mime, tuple(text_blocks(sniffed.text or "")))
    if mime == sniffing.MARKDOWN:
        from ingestion.documents.extract_markdown import markdown_blocks

        return ExtractedDocument(mime, tuple(markdown_blocks(sniffed.text or "")))
    if mime == sniffing.HTML:
        from ingestion.documents.extract_html import html_document

        return html_document(sniffed.text or "")
    if mime == sniffing.PDF:
        from ingestion.documents.extract_pdf import pdf_document

        return pdf_document(data, password=password)
    if mime == sniffing.DOCX:
        from ingestion.documents.extract_docx import docx_document

        return docx_document(data)
    fmt = formats.registry().get(mime)
    if fmt is not None and fmt.parser is not None:  # a plugin's text format (sniff found its claim)
        return ExtractedDocument(mime, tuple(fmt.parser(data)))
    raise UnsupportedDocument("unsupported_type", f"no parser reads {mime} here")  # pragma: no cover


def finish(doc: ExtractedDocument) -> ExtractedDocument:
    """Clean every block, drop empty ones, and refuse a document with no text at all."""
    blocks = []
    for block in doc.blocks:
        text = clean_text(block.text, preformatted=block.kind == "code")
        if not text:
            continue
        level = block.level
        if block.kind == "heading":
            level = min(max(level, 1), 6)
            text = " ".join(text.split())
        elif block.kind == "list_item":
            level = max(level, 1)
        blocks.append(Block(block.kind, text, level, block.page))
    if not blocks:
        raise DocumentUnreadable("no_text", "document has no text")
    title = " ".join(doc.title.split()) if doc.title else None
    return ExtractedDocument(doc.mime_type, tuple(blocks), title or None, doc.page_count)


# --- plain text ----------------------------------------------------------------------------------

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_BULLET = re.compile(r"^\s*(?:[-*+\u2022\u2023\u25e6]|\d{1,3}[.)])\s+(\S.*)$")


def text_blocks(text: str) -> Iterable[Block]:
    """Paragraphs separated by blank lines; a paragraph whose every line is bulleted is a list."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    for para in _PARAGRAPH_BREAK.split(text):
        if not para.strip():
            continue
        lines = para.strip("\n").split("\n")
        items = [_BULLET.match(line) for line in lines]
        if len(lines) > 1 and all(items):
            yield from (Block("list_item", m.group(1), 1) for m in items if m)
        else:
            yield Block("paragraph", para)
