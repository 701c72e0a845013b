"""PDF -> one or more paragraph blocks per page, with pypdf.

- Encrypted PDFs are opened with the empty user password (many "protected" PDFs only restrict
  printing), else with the password the uploader gave (the dashboard's upload or "retry with
  password", carried sealed in the job message); otherwise `pdf_encrypted`.
- pypdf raises a zoo of exception types on malformed files (PdfReadError, KeyError,
  TypeError, ...), so anything it raises while opening becomes `pdf_malformed`; a page that
  fails alone is skipped, the document fails only when no page could be read.
- No text at all (scanned images) is `pdf_no_text`; text whose fonts map to nonsense (a CID
  font without a usable ToUnicode map) is `garbled_text` - see `looks_garbled`.
PDFs carry no reliable heading structure, so every block is a paragraph tagged with its page.
"""

from __future__ import annotations

import io
import re
import unicodedata

from pypdf import PdfReader

from ingestion.documents.errors import DocumentUnreadable
from ingestion.documents.model import Block, ExtractedDocument

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_HYPHENATED = re.compile(r"(?<=[^\W\d_])-\n(?=[a-z])")


def pdf_document(data: bytes, *, password: str | None = None) -> ExtractedDocument:
    """``password``: the user (or owner) password a person gave for a protected PDF."""
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
    except MemoryError:
        raise
    except Exception as exc:  # see module docstring
        raise _malformed(exc) from None
    if encrypted:
        opened = _decrypt(reader, "")
        if not opened and password:
            if not _decrypt(reader, password):
                raise DocumentUnreadable("pdf_encrypted", "PDF is password-protected and the password given does not open it")
            opened = True
        if not opened:
            raise DocumentUnreadable("pdf_encrypted", "PDF is password-protected")
    try:
        pages = reader.pages
        page_count = len(pages)
    except MemoryError:
        raise
    except Exception as exc:  # same zoo of pypdf exceptions
        raise _malformed(exc) from None

    blocks: list[Block] = []
    failed = 0
    for number in range(1, page_count + 1):
        try:
            text = pages[number - 1].extract_text() or ""
        except MemoryError:
            raise
        except Exception:  # one broken page must not lose the others
            failed += 1
            continue
        blocks.extend(_page_blocks(text, number))
    if page_count and failed == page_count:
        raise DocumentUnreadable("pdf_malformed", "PDF is damaged: none of its pages can be read")
    text = "\n".join(block.text for block in blocks)
    if not text.strip():
        raise DocumentUnreadable(
            "pdf_no_text", "PDF has no extractable text (it may be a scan without a text layer)"
        )
    if looks_garbled(text):
        raise DocumentUnreadable(
            "garbled_text",
            "PDF text cannot be read: its fonts map to meaningless characters "
            "(try exporting the PDF again, or run OCR on it)",
        )
    return ExtractedDocument("application/pdf", tuple(blocks), None, page_count)


def _decrypt(reader: PdfReader, password: str) -> bool:
    try:
        return bool(reader.decrypt(password))
    except MemoryError:
        raise
    except Exception:  # unsupported or broken encryption dictionary
        return False


def _page_blocks(text: str, page: int) -> list[Block]:
    text = _HYPHENATED.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    parts = _PARAGRAPH_BREAK.split(text)
    return [Block("paragraph", part, 0, page) for part in parts if part.strip()]


def _malformed(exc: BaseException) -> DocumentUnreadable:
    detail = " ".join(str(exc).split())[:120] or type(exc).__name__
    return DocumentUnreadable("pdf_malformed", f"PDF is damaged and cannot be opened ({detail})")


# --- garbage detection ---------------------------------------------------------------------------

_CJK = {"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "HALFWIDTH", "IDEOGRAPHIC", "HANGUL"}


def _script(ch: str) -> str | None:
    """A cheap stand-in for the Unicode Script property: the first word of the character name."""
    name = unicodedata.name(ch, "")
    word = name.split(" ", 1)[0]
    if word in _CJK:
        return "CJK"
    if word in ("COMBINING", "MODIFIER", ""):
        return None
    return word


def looks_garbled(text: str, *, min_pairs: int = 20, max_switch_rate: float = 0.2) -> bool:
    """True when text is mojibake rather than language.

    Real text, even multilingual, writes words in one script at a time, so letters next to each
    other almost always share a script. Text decoded through a wrong font map jumps between
    unrelated scripts (Greek, Thaana, Bengali, IPA...) from one character to the next. We also
    count private-use and replacement characters, which only broken font maps produce.
    """
    sample = text[:20000]
    visible = [ch for ch in sample if not ch.isspace()]
    if not visible:
        return False
    junk = sum(
        1 for ch in visible if ch == "\ufffd" or unicodedata.category(ch) in ("Co", "Cn", "Cc")
    )
    if junk / len(visible) > 0.1:
        return True
    pairs = switches = 0
    previous: str | None = None
    for ch in sample:
        if not unicodedata.category(ch).startswith(("L", "M")):
            previous = None
            continue
        script = _script(ch)
        if script is None:
            continue
        if previous is not None:
            pairs += 1
            switches += script != previous
        previous = script
    return pairs >= min_pairs and switches / pairs > max_switch_rate
