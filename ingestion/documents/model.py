"""The neutral structure every extractor produces: a flat list of typed blocks.

A flat list (not a tree) is enough for chunking: headings carry their level, so the
heading path of any block is rebuilt by walking the list. The structure crosses the
sandbox boundary as JSON, so `from_dict` validates everything it reads.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal, get_args

BlockKind = Literal["heading", "paragraph", "list_item", "table", "code"]
BLOCK_KINDS: frozenset[str] = frozenset(get_args(BlockKind))


@dataclass(frozen=True, slots=True)
class Block:
    """One structural unit of a document.

    - heading: `level` 1-6 (1 = top).
    - list_item: `level` = nesting depth, 1 for a top-level item.
    - table: one row per line, cells joined by " | ".
    - code: preformatted text, line breaks significant.
    - paragraph: prose; a line break inside is a hard break from the source.
    `page` is the 1-based page for PDFs, None elsewhere.
    """

    kind: BlockKind
    text: str
    level: int = 0
    page: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "level": self.level, "page": self.page}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Block:
        kind, text, level, page = data["kind"], data["text"], data["level"], data["page"]
        if kind not in BLOCK_KINDS or not isinstance(text, str) or type(level) is not int:
            raise ValueError("invalid block")
        if page is not None and type(page) is not int:
            raise ValueError("invalid block page")
        return Block(kind, text, level, page)


@dataclass(frozen=True)
class ExtractedDocument:
    mime_type: str
    blocks: tuple[Block, ...]
    title: str | None = None
    page_count: int | None = None

    @property
    def text(self) -> str:
        """Plain text of the whole document, blocks separated by blank lines."""
        return "\n\n".join(block.text for block in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mime_type": self.mime_type,
            "title": self.title,
            "page_count": self.page_count,
            "blocks": [block.to_dict() for block in self.blocks],
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ExtractedDocument:
        mime, title, pages = data["mime_type"], data["title"], data["page_count"]
        if not isinstance(mime, str) or not (title is None or isinstance(title, str)):
            raise ValueError("invalid document")
        if pages is not None and type(pages) is not int:
            raise ValueError("invalid page count")
        blocks = tuple(Block.from_dict(item) for item in data["blocks"])
        return ExtractedDocument(mime, blocks, title, pages)


# --- text hygiene shared by all extractors -------------------------------------------------

# Ligatures PDF fonts emit ("misﬁts"); NFKC would fix them but also rewrites ², ½, fullwidth forms.
_LIGATURES = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
     "\ufb05": "st", "\ufb06": "st"}
)
# Invisible characters that only hurt search: soft hyphen, zero-width space, word joiner, BOM.
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u2060\ufeff"))
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str, *, preformatted: bool = False) -> str:
    """Normalise extracted text: NFC, no control or invisible characters, no ligatures.

    Prose gets runs of spaces collapsed and each line stripped; preformatted text keeps its
    indentation and only loses trailing spaces and surrounding blank lines.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFC", text).translate(_LIGATURES).translate(_INVISIBLE)
    if preformatted:
        text = text.replace("\f", "\n")
        text = _CONTROL.sub("", text.expandtabs(4) if "\t" in text else text)
        lines = [line.rstrip() for line in text.split("\n")]
        return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n")
    text = _CONTROL.sub(" ", text.replace("\t", " "))
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
