"""Find the real type of an uploaded file from its bytes.

The filename and the MIME type a channel declares are claims, not facts: only the content
decides. The claims are used for two things only:
- to choose between plain text and Markdown (both are "text"; the extension is the best hint),
- to catch a download that went wrong: a file that claims to be a PDF or Word document but is
  an HTML page (typically a login or error page saved instead of the file) is rejected with
  `type_mismatch` instead of being indexed as that page.

Text must decode as UTF-8, UTF-16 (with a BOM, or an unmistakable NUL pattern), or - only when
it still looks like text - cp1252 / latin-1. Anything else is binary and rejected.

The formats themselves (extensions, MIME types, what a refusal says is supported) come from the
format registry, `parley.formats`: a plugin's text format is returned when its extension or
declared type claims a file whose bytes are text.
"""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import PurePath

from ingestion.documents.errors import DocumentUnreadable, UnsupportedDocument
from parley import formats
from parley.formats import DOCX, HTML, MARKDOWN, PDF, TEXT

TEXT_TYPES = frozenset({TEXT, MARKDOWN, HTML})

_MARKDOWN_EXT = frozenset(formats.builtin(MARKDOWN).extensions)
_TEXT_EXT = frozenset(formats.builtin(TEXT).extensions)
_HTML_EXT = frozenset(formats.builtin(HTML).extensions)
_MARKDOWN_MIME = frozenset({MARKDOWN, *formats.builtin(MARKDOWN).aliases})
_BINARY_DOC_EXT = {".pdf": "a PDF", ".docx": "a Word document", ".doc": "a Word document"}
_BINARY_DOC_MIME = {PDF: "a PDF", DOCX: "a Word document", "application/msword": "a Word document"}

# (magic prefix, offset, what it is). Checked before any text decoding.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "a PNG image"),
    (b"\xff\xd8\xff", 0, "a JPEG image"),
    (b"GIF87a", 0, "a GIF image"),
    (b"GIF89a", 0, "a GIF image"),
    (b"WEBP", 8, "a WebP image"),
    (b"II*\x00", 0, "a TIFF image"),
    (b"MM\x00*", 0, "a TIFF image"),
    (b"\x00\x00\x01\x00", 0, "an icon image"),
    (b"ftypheic", 4, "a HEIC image"),
    (b"ftypavif", 4, "an AVIF image"),
    (b"\x7fELF", 0, "a Linux executable"),
    (b"MZ", 0, "a Windows executable"),
    (b"\xcf\xfa\xed\xfe", 0, "a macOS executable"),
    (b"\xca\xfe\xba\xbe", 0, "a Java class or macOS executable"),
    (b"\x00asm", 0, "a WebAssembly module"),
    (b"\x1f\x8b", 0, "a gzip archive"),
    (b"BZh", 0, "a bzip2 archive"),
    (b"\xfd7zXZ\x00", 0, "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7-Zip archive"),
    (b"Rar!\x1a\x07", 0, "a RAR archive"),
    (b"\x28\xb5\x2f\xfd", 0, "a zstd archive"),
    (b"ustar", 257, "a tar archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 0, "a legacy Office file (.doc/.xls/.ppt)"),  # OLE2
    (b"{\\rtf", 0, "an RTF document"),
    (b"%!PS", 0, "a PostScript file"),
    (b"SQLite format 3\x00", 0, "an SQLite database"),
    (b"ID3", 0, "an MP3 audio file"),
    (b"OggS", 0, "an Ogg media file"),
    (b"fLaC", 0, "a FLAC audio file"),
    (b"WAVE", 8, "a WAV audio file"),
    (b"AVI ", 8, "an AVI video"),
    (b"ftyp", 4, "an MP4/QuickTime media file"),
    (b"\x1a\x45\xdf\xa3", 0, "a Matroska/WebM video"),
)


@dataclass(frozen=True)
class ZipLimits:
    """Zip-bomb defence, checked on the central directory before any member is inflated.

    zipfile itself stops inflating a member at its declared size (and fails its CRC check if
    the data goes on), so the declared sizes checked here are the sizes that can be reached.
    """

    max_members: int = 5_000
    max_total_uncompressed: int = 256 * 1024 * 1024
    max_ratio: float = 100.0
    # A member smaller than this may compress as well as it likes (tiny XML parts do).
    ratio_applies_above: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class Sniffed:
    mime_type: str
    #: Codec the text was decoded with; None for PDF and DOCX.
    encoding: str | None = None
    #: Decoded text for the text types (so extraction does not decode twice).
    text: str | None = None


def sniff(
    data: bytes,
    *,
    filename: str | None = None,
    declared_mime: str | None = None,
    zip_limits: ZipLimits | None = None,
) -> Sniffed:
    """Return the real type of `data`, or raise `UnsupportedDocument` / `DocumentUnreadable`."""
    if not data:
        raise UnsupportedDocument("empty_file", "the file is empty")
    ext = PurePath(filename).suffix.lower() if filename else ""
    mime = (declared_mime or "").split(";")[0].strip().lower()

    if b"%PDF-" in data[:1024]:  # the spec tolerates junk before the header
        return Sniffed(PDF)
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _sniff_zip(data, zip_limits or ZipLimits())
    what = _binary_signature(data)
    if what:
        raise _unsupported(what)

    encoding, text = _decode_text(data, ext)
    plugin = _plugin_text_format(filename, mime)
    if plugin is not None:
        return Sniffed(plugin.mime_type, encoding, text)
    kind = _text_kind(text, ext, mime)
    claimed = _BINARY_DOC_EXT.get(ext) or _BINARY_DOC_MIME.get(mime)
    if claimed:
        actual = {HTML: "an HTML page", MARKDOWN: "Markdown text", TEXT: "plain text"}[kind]
        hint = ""
        if kind == HTML:
            hint = " (often a login or error page saved instead of the real file)"
        raise UnsupportedDocument(
            "type_mismatch", f"the file claims to be {claimed} but contains {actual}{hint}"
        )
    return Sniffed(kind, encoding, text)


def _plugin_text_format(filename: str | None, mime: str) -> formats.Format | None:
    """A plugin's text format (a parser, no magic) that the file's name or declared type claims."""
    claimed = formats.registry().claimed(filename, mime)
    if claimed is not None and claimed.parser is not None and claimed.magic is None:
        return claimed
    return None


def _supported() -> str:
    return f"{formats.registry().describe(archives=False)} documents"


def _unsupported(what: str) -> UnsupportedDocument:
    return UnsupportedDocument(
        "unsupported_type", f"this file is {what}; only {_supported()} are supported"
    )


def _binary_signature(data: bytes) -> str | None:
    for magic, offset, what in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            # "MZ" and "BZh" are also plausible starts of text; confirm with a NUL byte nearby.
            if magic in (b"MZ", b"BZh", b"ID3") and b"\x00" not in data[:512]:
                continue
            return what
    return None


# --- zip containers ---------------------------------------------------------------------------


def _sniff_zip(data: bytes, limits: ZipLimits) -> Sniffed:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            names = {info.filename for info in infos}
            if "word/document.xml" not in names:
                raise _unsupported(_zip_kind(names, archive))
            check_zip_limits(infos, limits)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError):
        raise DocumentUnreadable(
            "docx_malformed", "the file is a damaged ZIP container and cannot be opened"
        ) from None
    return Sniffed(DOCX)


def _zip_kind(names: set[str], archive: zipfile.ZipFile) -> str:
    if "xl/workbook.xml" in names:
        return "an Excel spreadsheet (.xlsx)"
    if "ppt/presentation.xml" in names:
        return "a PowerPoint presentation (.pptx)"
    if "mimetype" in names:
        try:
            kind = archive.read("mimetype")[:100].decode("ascii", "replace")
        except (zipfile.BadZipFile, ValueError, OSError, RuntimeError):
            kind = ""
        if "opendocument" in kind:
            return "an OpenDocument file (.odt/.ods/.odp)"
        if "epub" in kind:
            return "an EPUB e-book"
    if "META-INF/MANIFEST.MF" in names:
        return "a Java archive (.jar)"
    return "a ZIP archive"


def check_zip_limits(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> None:
    problem = zip_limits_problem(infos, limits)
    if problem is not None:
        raise _bomb(problem)


def zip_limits_problem(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> str | None:
    """Why the central directory looks like a zip bomb ("it contains more than ... files"), or None."""
    if len(infos) > limits.max_members:
        return f"it contains more than {limits.max_members} files"
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_uncompressed:
        mb = limits.max_total_uncompressed // (1024 * 1024)
        return f"it expands to more than {mb} MB when unpacked"
    for info in infos:
        if info.file_size > limits.ratio_applies_above:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                return f"a part is compressed {ratio:.0f}:1, which only a zip bomb does"
    return None


def _bomb(why: str) -> DocumentUnreadable:
    return DocumentUnreadable("archive_too_large", f"the Word document was refused: {why}")


# --- text ----------------------------------------------------------------------------------------


def _decode_text(data: bytes, ext: str) -> tuple[str, str]:
    for bom, codec in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return codec.removesuffix("-sig"), _require_text(data.decode(codec))
            except UnicodeDecodeError:
                why = f"it starts with a {codec.upper()} mark but is not valid {codec.upper()}"
                raise _not_text(why) from None
    if b"\x00" in data:
        codec = _bomless_utf16(data)
        if codec is None:
            raise _not_text("it contains NUL bytes, so it is binary data rather than text")
        try:
            return "utf-16", _require_text(data.decode(codec))
        except UnicodeDecodeError:
            raise _not_text("it contains NUL bytes, so it is binary data rather than text") from None
    try:
        return "utf-8", _require_text(_decode_utf8(data))
    except UnicodeDecodeError:
        pass
    # Legacy 8-bit text (Windows "ANSI" exports). Undecodable cp1252 bytes fall back to latin-1,
    # whose C1 controls then fail the "looks like text" test, as do random bytes.
    high = sum(1 for b in data[:65536] if b >= 0x80) / min(len(data), 65536)
    if high > 0.3:
        raise _not_text("it is neither valid UTF-8 nor plausible single-byte text")
    for codec in ("cp1252", "latin-1"):
        try:
            return codec, _require_text(data.decode(codec))
        except UnicodeDecodeError:
            continue
    raise _not_text("it is neither valid UTF-8 nor plausible single-byte text")  # pragma: no cover


def _decode_utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A file cut in the middle of its last character is still text.
        if exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8")
        raise


def _bomless_utf16(data: bytes) -> str | None:
    sample = data[:4096]
    if len(sample) < 4:
        return None
    even, odd = sample[0::2], sample[1::2]
    zeros_even, zeros_odd = even.count(0) / len(even), odd.count(0) / len(odd)
    if zeros_odd > 0.4 and zeros_even < 0.05:
        return "utf-16-le"
    if zeros_even > 0.4 and zeros_odd < 0.05:
        return "utf-16-be"
    return None


def _require_text(text: str) -> str:
    sample = text[:65536]
    if not sample:
        return text
    bad = sum(1 for ch in sample if _is_junk(ch))
    if bad / len(sample) > 0.01:
        raise _not_text("too many of its characters are control codes, so it is not text")
    return text


def _is_junk(ch: str) -> bool:
    if ch in "\t\n\r\f\v\x1b":
        return False
    return unicodedata.category(ch) in ("Cc", "Co", "Cn") or ch == "\ufffd"


def _not_text(why: str) -> UnsupportedDocument:
    return UnsupportedDocument(
        "unsupported_type",
        f"this file cannot be read as text: {why}; only {_supported()} are supported",
    )


_HTML_START = re.compile(
    r"<(?:!doctype\s+html|html|head|body|title|meta|div|p|h[1-6]|table|span|a|ul|ol"
    r"|section|article|main)\b",
    re.IGNORECASE,
)
_COMMENTS = re.compile(r"\s*(?:<!--.*?-->\s*)*", re.DOTALL)
_MD_SIGNALS = (
    re.compile(r"^#{1,6}\s+\S", re.MULTILINE),  # ATX heading
    re.compile(r"^(?:```|~~~)", re.MULTILINE),  # fenced code
    re.compile(r"^\S.*\n(?:=+|-+)[ \t]*$", re.MULTILINE),  # setext heading
    re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\S", re.MULTILINE),  # list item
    re.compile(r"\[[^\]\n]+\]\([^)\s]+\)"),  # inline link
    re.compile(r"^\|?.*\|.*\n\|?\s*:?-{3,}", re.MULTILINE),  # table
    re.compile(r"(\*\*|__)\S.*?\S\1"),  # bold
)


def _text_kind(text: str, ext: str, mime: str) -> str:
    head = text[:4096].lstrip("\ufeff")
    start = head[_COMMENTS.match(head).end() :].lower()  # type: ignore[union-attr]
    if start.startswith("<?xml"):
        if "<svg" in start:
            raise _unsupported("an SVG image")
        if "<html" not in start:
            raise _unsupported("XML data")
    if start.startswith("<svg"):
        raise _unsupported("an SVG image")
    is_html = start.startswith(("<!doctype html", "<html", "<?xml"))
    if not is_html and ext not in _MARKDOWN_EXT and _HTML_START.match(start) and "</" in start:
        is_html = True
    if is_html:
        return HTML
    if ext in _MARKDOWN_EXT or mime in _MARKDOWN_MIME:
        return MARKDOWN
    if ext in _TEXT_EXT or ext in _HTML_EXT or mime == TEXT:
        return TEXT
    sample = text[:65536]
    signals = sum(1 for pattern in _MD_SIGNALS if pattern.search(sample))
    return MARKDOWN if signals >= 2 else TEXT
