"""Word (.docx) -> blocks with python-docx, body content in document order.

- Headings come from paragraph styles: "Title" is level 1, "Heading N" is level N (capped at
  6). A document using both will see Heading 1 replace the title in the heading path, which is
  what readers expect of a title page.
- List paragraphs: "List ..." styles or numbering properties (w:numPr); the level is ilvl + 1.
- Tables: one line per row, cells joined by " | "; a merged cell is printed once.
- Headers and footers are left out on purpose: they repeat on every page (company name, page
  numbers, "Confidential") and would add the same noise to many chunks. Text boxes, comments
  and footnotes are not read either.
The caller (`sniff`) has already checked the archive against zip-bomb limits.
"""

from __future__ import annotations

import io
import re

from docx import Document
from docx.table import Table, _Cell
from docx.text.paragraph import Paragraph

from ingestion.documents.errors import DocumentUnreadable
from ingestion.documents.model import Block, ExtractedDocument

_HEADING_STYLE = re.compile(r"^heading\s*(\d+)$", re.IGNORECASE)
_MAX_NESTING = 3
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def docx_document(data: bytes) -> ExtractedDocument:
    try:
        document = Document(io.BytesIO(data))
        blocks: list[Block] = []
        for item in document.iter_inner_content():
            if isinstance(item, Paragraph):
                block = _paragraph(item)
                if block:
                    blocks.append(block)
            elif isinstance(item, Table):
                text = _table_text(item)
                if text:
                    blocks.append(Block("table", text))
        title = document.core_properties.title or None
    except MemoryError:
        raise
    except Exception:  # python-docx/lxml raise many types on broken packages
        raise DocumentUnreadable(
            "docx_malformed", "the Word document is damaged and cannot be read"
        ) from None
    return ExtractedDocument(DOCX_MIME, tuple(blocks), title)


def _paragraph(paragraph: Paragraph) -> Block | None:
    text = paragraph.text
    if not text.strip():
        return None
    style = _style_name(paragraph)
    if style.lower() == "title":
        return Block("heading", text, 1)
    heading = _HEADING_STYLE.match(style)
    if heading:
        return Block("heading", text, min(int(heading.group(1)), 6) or 1)
    list_level = _list_level(paragraph, style)
    if list_level:
        return Block("list_item", text, list_level)
    return Block("paragraph", text)


def _style_name(paragraph: Paragraph) -> str:
    try:
        style = paragraph.style
    except (KeyError, ValueError):
        return ""
    return (style.name or "") if style is not None else ""


def _list_level(paragraph: Paragraph, style: str) -> int:
    # python-docx has no public numbering API; w:pPr/w:numPr is the documented OOXML marker.
    ppr = paragraph._p.pPr
    numpr = ppr.numPr if ppr is not None else None
    if numpr is not None:
        ilvl = numpr.ilvl.val if numpr.ilvl is not None and numpr.ilvl.val is not None else 0
        return int(ilvl) + 1
    return 1 if style.lower().startswith("list") else 0


def _table_text(table: Table, depth: int = 0) -> str:
    rows = []
    for row in table.rows:
        cells, previous = [], None
        for cell in row.cells:
            if previous is not None and cell._tc is previous:  # horizontally merged cell
                continue
            previous = cell._tc
            cells.append(_cell_text(cell, depth))
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _cell_text(cell: _Cell, depth: int) -> str:
    """Cell paragraphs and nested tables (flattened into the cell, rows separated by ";")."""
    parts = []
    for item in cell.iter_inner_content():
        if isinstance(item, Paragraph):
            parts.append(item.text)
        elif depth < _MAX_NESTING:
            parts.append(_table_text(item, depth + 1).replace("\n", "; "))
    return " ".join(" ".join(parts).split())
